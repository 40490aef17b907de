"""Removing the bridge plugin's masquerade rules when the plugin itself cannot.

The bridge plugin (1.1.1, and still upstream) learns which address to un-masquerade from the
interface it deletes inside the netns; when the netns is already gone (crash, reboot of the
infra process, pid reuse) its DEL releases the IP but leaves ``-A POSTROUTING -s <ip> -j
CNI-…`` and the ``CNI-…`` chain behind. The chain name and comment are derived from the
network name and container id exactly as the plugins derive them, so they can be found.
"""

from __future__ import annotations

import re
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


_ID_COMMENT = re.compile(r'name: \\?"([^"\\]+)\\?" id: \\?"([^"\\]+)\\?"')
_SOURCE = re.compile(r"-s (\S+?)(?:/\d+)? ")


def rules_by_container(prefix: str, ip_versions: tuple[int, ...] = (4,)) -> dict[str, tuple[str, set[str]]]:
    """Container ids starting with `prefix` that CNI plugins left rules for in the nat table
    (portmap's and the bridge's comments name the network and the id): id → (network, the
    pod addresses those rules match)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for version in ip_versions:
        listing = _run([_TOOLS[version], "-w", "-t", "nat", "-S"])
        if listing.returncode != 0:
            raise NetworkError(f"{_TOOLS[version]} -t nat -S failed: {listing.stderr.strip()}")
        for line in listing.stdout.splitlines():
            m = _ID_COMMENT.search(line)
            if m is None or not m.group(2).startswith(prefix):
                continue
            network, ips = found.setdefault(m.group(2), (m.group(1), set()))
            src = _SOURCE.search(line)
            if src is not None:
                ips.add(src.group(1))
    return found


def sweep_rules_of(container_id: str, ip_versions: tuple[int, ...] = (4,)) -> None:
    """Delete every rule whose comment names `container_id` (portmap's DNAT entries, the
    bridge's masquerade jumps), then the CNI chains those rules jumped to. For attachments whose
    plugins can no longer clean up after themselves: their DEL needs the port mappings and the
    result the lost record held."""
    for version in ip_versions:
        tool = _TOOLS[version]
        for table in ("nat", "filter"):
            listing = _run([tool, "-w", "-t", table, "-S"])
            if listing.returncode != 0:
                raise NetworkError(f"{tool} -t {table} -S failed: {listing.stderr.strip()}")
            chains: list[str] = []
            for line in listing.stdout.splitlines():
                m = _ID_COMMENT.search(line)
                if m is None or m.group(2) != container_id or not line.startswith("-A "):
                    continue
                words = shlex.split(line)
                if "-j" in words and words[words.index("-j") + 1].startswith("CNI-"):
                    chains.append(words[words.index("-j") + 1])
                _run([tool, "-w", "-t", table, "-D", *words[1:]])
            for chain in dict.fromkeys(chains):
                if chain.startswith(("CNI-HOSTPORT", "CNI-FORWARD", "CNI-ADMIN")):
                    continue  # shared by every attachment
                _run([tool, "-w", "-t", table, "-F", chain])
                _run([tool, "-w", "-t", table, "-X", chain])
