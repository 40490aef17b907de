"""Removing the bridge plugin's masquerade rules when the plugin itself cannot.

The bridge plugin (1.1.1, and still upstream) learns which address to un-masquerade from the
interface it deletes inside the netns; when the netns is already gone (crash, reboot of the
infra process, pid reuse) its DEL releases the IP but leaves ``-A POSTROUTING -s <ip> -j
CNI-…`` and the ``CNI-…`` chain behind. The chain name and comment are derived from the
network name and container id exactly as the plugins derive them, so they can be found.
"""

from __future__ import annotations

import shlex
import subprocess

from reconciler import sha
from reconciler.errors import NetworkError

_TOOLS = {4: "iptables", 6: "ip6tables"}


def masquerade_chain(network: str, container_id: str) -> str:
    # The plugins' utils.FormatChainName: "CNI-" + sha512(name + id) in hex, 28 characters in all.
    return ("CNI-" + sha.sha512((network + container_id).encode()).hexdigest())[:28]


def masquerade_comment(network: str, container_id: str) -> str:
    return f'name: "{network}" id: "{container_id}"'


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"cannot run {argv[0]}: {exc}") from None


def sweep_masquerade(network: str, container_id: str, ip_versions: tuple[int, ...] = (4,)) -> bool:
    """Delete the attachment's masquerade jump and chain if they are still there; whether
    anything was found."""
    chain = masquerade_chain(network, container_id)
    found = False
    for version in ip_versions:
        tool = _TOOLS[version]
        listing = _run([tool, "-w", "-t", "nat", "-S"])
        if listing.returncode != 0:
            raise NetworkError(f"{tool} -t nat -S failed: {listing.stderr.strip()}")
        lines = listing.stdout.splitlines()
        if f"-N {chain}" not in lines:
            continue
        found = True
        for line in lines:
            words = shlex.split(line)
            if words[:2] == ["-A", "POSTROUTING"] and words[-2:] == ["-j", chain]:
                res = _run([tool, "-w", "-t", "nat", "-D", *words[1:]])
                if res.returncode != 0:
                    raise NetworkError(f"cannot delete masquerade rule {line!r}: {res.stderr.strip()}")
        for flag in ("-F", "-X"):
            res = _run([tool, "-w", "-t", "nat", flag, chain])
            if res.returncode != 0:
                raise NetworkError(f"cannot remove masquerade chain {chain}: {res.stderr.strip()}")
    return found
