"""Forward-accept rules per network, made by podplay instead of the CNI ``firewall`` plugin.

The firewall plugin runs for every pod, on ADD and on DEL: a process start and several iptables
runs each time, to accept that one pod's address in FORWARD. podplay instead keeps two rules per
subnet of a network (as podman's netavark does), in a chain of its own jumped to from the top of
FORWARD, so that a FORWARD policy of DROP (as Docker sets) still lets the pods out:

    -A FORWARD -m comment --comment "podplay: pod networks" -j PODPLAY-FORWARD
    -A PODPLAY-FORWARD -d 10.129.0.0/24 -m conntrack --ctstate RELATED,ESTABLISHED
                       -m comment --comment "podplay pp1234abcd podplay" -j ACCEPT
    -A PODPLAY-FORWARD -s 10.129.0.0/24 -m comment --comment "podplay pp1234abcd podplay" -j ACCEPT

The comment names the storage root's tag and the network, so each root owns its rules (two roots
on one subnet each keep a pair) and can find them again after its run root was wiped. The rules
are made when the network's first pod attaches and removed when its last pod detaches, each time
with one listing and one ``iptables-restore --noflush`` batch under a host-wide lock (several
podplay roots share FORWARD); the chain and its jump go with the last rule.

Only for networks with a ``bridge`` plugin (their traffic is routed by the host) and no
``firewall`` plugin: a conflist that lists the plugin keeps using it, unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shlex
import subprocess
from collections.abc import Iterable, Iterator

from reconciler import sha
from reconciler.errors import NetworkError
from reconciler.network.config import NetworkConfig

CHAIN = "PODPLAY-FORWARD"
JUMP_COMMENT = "podplay: pod networks"
# Host-wide: every podplay root (and every parallel test) edits the same FORWARD chain.
LOCK = "/run/lock/podplay-forward.lock"
_TOOLS = {4: "iptables", 6: "ip6tables"}
_RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}


def wants_forward_rules(net: NetworkConfig) -> bool:
    """Whether podplay accepts this network's traffic in FORWARD itself: a bridge network whose
    configuration does not run the firewall plugin."""
    types = {p.get("type") for p in net.plugins}
    return "bridge" in types and "firewall" not in types


def forward_comment(tag: str, network: str) -> str:
    comment = f"podplay {tag} {network}"
    if len(comment) > 200:  # iptables takes 255 characters; a hash keeps long names apart
        comment = f"podplay {tag} {network[:100]}~{sha.sha256(network.encode()).hexdigest()[:16]}"
    return comment


def _rules(subnet: str, comment: str) -> list[str]:
    c = f'"{comment}"'  # network names and tags hold no quotes or spaces (config._NAME)
    return [f"-A {CHAIN} -d {subnet} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment {c} -j ACCEPT",
            f"-A {CHAIN} -s {subnet} -m comment --comment {c} -j ACCEPT"]


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=stdin, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"cannot run {argv[0]}: {exc}") from None


@contextlib.contextmanager
def host_lock(path: str = LOCK) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Filter:
    """The filter table as ``iptables -S`` prints it: our chain's rules, and whether the chain
    and the jump to it exist."""

    def __init__(self, version: int):
        self.version = version
        tool = _TOOLS[version]
        listing = _run([tool, "-w", "-t", "filter", "-S"])
        if listing.returncode != 0:
            raise NetworkError(f"{tool} -t filter -S failed: {listing.stderr.strip()[-300:]}")
        lines = listing.stdout.splitlines()
        self.chain = f"-N {CHAIN}" in lines
        self.jumps = [ln for ln in lines if ln.startswith("-A FORWARD ") and ln.endswith(f"-j {CHAIN}")]
        self.rules = [ln for ln in lines if ln.startswith(f"-A {CHAIN} ")]

    def apply(self, batch: list[str]) -> None:
        if not batch:
            return
        text = "*filter\n" + "\n".join(batch) + "\nCOMMIT\n"
        res = _run([_RESTORE[self.version], "-w", "--noflush"], text)
        if res.returncode != 0:
            raise NetworkError(f"{_RESTORE[self.version]} failed to update chain {CHAIN}: "
                               f"{res.stderr.strip()[-300:]}")

    def drop_chain_if_empty(self, remaining: list[str], batch: list[str]) -> None:
        if self.chain and not remaining:
            batch += ["-D" + j[2:] for j in self.jumps] + [f"-X {CHAIN}"]


def _same(rule: str, other: str) -> bool:
    return shlex.split(rule) == shlex.split(other)


def _canonical(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet, strict=False))


def ensure_forward_rules(tag: str, network: str, subnets: Iterable[str]) -> None:
    """Make the rules of ``network``'s subnets (those that are missing: idempotent)."""
    comment = forward_comment(tag, network)
    by_version: dict[int, list[str]] = {}
    for s in subnets:
        by_version.setdefault(ipaddress.ip_network(s, strict=False).version, []).append(_canonical(s))
    with host_lock():
        for version, nets in sorted(by_version.items()):
            table = _Filter(version)
            batch: list[str] = []
            if not table.chain:
                batch.append(f":{CHAIN} - [0:0]")
            if not table.jumps:
                batch.append(f'-I FORWARD 1 -m comment --comment "{JUMP_COMMENT}" -j {CHAIN}')
            for net in nets:
                for rule in _rules(net, comment):
                    if not any(_same(rule, have) for have in table.rules):
                        batch.append(rule)
            table.apply(batch)


def remove_forward_rules(tag: str, network: str | None = None, *, keep: Iterable[str] = (),
                         versions: Iterable[int] = (4, 6)) -> list[str]:
    """Remove the rules of ``network`` made by the root ``tag`` (with ``network`` None: of every
    network of the root but those in ``keep``), and the chain with its jump once nothing is left
    in it; the rules removed."""
    if network is None:
        spared = {forward_comment(tag, n) for n in keep}

        def owned(comment: str) -> bool:
            return comment.startswith(f"podplay {tag} ") and comment not in spared
    else:
        target = forward_comment(tag, network)

        def owned(comment: str) -> bool:
            return comment == target
    removed: list[str] = []
    with host_lock():
        for version in sorted(set(versions)):
            if not _tool_present(version):
                continue
            table = _Filter(version)
            mine = [r for r in table.rules if owned(_comment(r))]
            remaining = [r for r in table.rules if r not in mine]
            batch = ["-D" + r[2:] for r in mine]
            table.drop_chain_if_empty(remaining, batch)
            table.apply(batch)
            removed += mine
    return removed


def chain_left_empty(versions: Iterable[int] = (4, 6), *, drop: bool = False) -> list[int]:
    """The IP versions whose chain exists with no rule in it (a leak: the last rule's removal
    takes the chain along); with ``drop`` the chain and its jump are removed as well."""
    out = []
    with host_lock():
        for version in sorted(set(versions)):
            if not _tool_present(version):
                continue
            table = _Filter(version)
            if table.chain and not table.rules:
                out.append(version)
                if drop:
                    batch: list[str] = []
                    table.drop_chain_if_empty([], batch)
                    table.apply(batch)
    return out


def forward_rules_present(tag: str, network: str, subnets: Iterable[str]) -> bool:
    """Whether every rule ``ensure_forward_rules`` makes for these subnets exists."""
    comment = forward_comment(tag, network)
    for s in subnets:
        net = ipaddress.ip_network(s, strict=False)
        table = _Filter(net.version)
        if not table.jumps:
            return False
        for rule in _rules(str(net), comment):
            if not any(_same(rule, have) for have in table.rules):
                return False
    return True


def _comment(rule: str) -> str:
    words = shlex.split(rule)
    return words[words.index("--comment") + 1] if "--comment" in words[:-1] else ""


def _tool_present(version: int) -> bool:
    if version == 4:
        return True  # required: a missing iptables is an error worth reporting
    from shutil import which

    return which(_TOOLS[version]) is not None and os.path.exists("/proc/net/if_inet6")
