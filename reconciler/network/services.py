"""ServiceDriver on iptables: ClusterIPs and nodePorts as kube-proxy's iptables mode does them.

iptables rather than nftables: the CNI plugins podplay runs (bridge's masquerade, portmap)
write iptables rules, Debian 12's iptables is the nf_tables-backed one, and kube-proxy's
iptables mode is the behaviour users compare against. Everything is written with one
``iptables-restore --noflush`` (atomic per table), into chains named after the storage root's
tag, so two roots never touch each other's rules:

    nat     PREROUTING, OUTPUT → <tag>-SVC: ClusterIP:port → <tag>-S… (one per Service port);
            addresses of the host → <tag>-NP: nodePort (and LoadBalancer port) → the same chain
            <tag>-S… → <tag>-E… with probability 1/n, 1/(n-1)… (uniform over the ready endpoints);
            with sessionAffinity ClientIP, first to the endpoint a client's address went to
            within the timeout (the ``recent`` match, one list per endpoint chain, as kube-proxy)
            <tag>-E… → DNAT to pod IP:targetPort (a hostNetwork pod's: the host's address); a
            pod reaching itself (hairpin) or a request from 127.0.0.1 is marked and
            masqueraded in POSTROUTING → <tag>-POST. Traffic that came in on a nodePort is
            marked too (externalTrafficPolicy Cluster), or only when the host itself sent it
            (Local: the endpoint sees the client's address)
    filter  OUTPUT, FORWARD, INPUT → <tag>-FW: a Service port without endpoints is rejected
            (else the packet would follow the default route off the host)

Each Service's entry hash is a comment rule in <tag>-SVC (``observe`` reads it back); the hash
of the names written into the pods' /etc/hosts is one in <tag>-POST. A sync with no Services
removes every chain and jump.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import sha
from reconciler.errors import NetworkError
from reconciler.paths import HostPaths

if TYPE_CHECKING:  # the Services' model loads when a sync writes them: observing reads comments only
    from reconciler.services import ServiceEntry, ServiceSync

MASQ_MARK = "0x8000"  # kube-proxy uses 0x4000, portmap 0x2000
_OTHER_SVC_RULE = re.compile(r"^-A (pp[0-9a-f]{8})-SVC -d ([0-9.]+)/32 ")
HOSTS_BEGIN = "# Services (podplay: rewritten as Services and their endpoints change).\n"


def _run(argv: list[str], data: str | None = None) -> str:
    try:
        res = subprocess.run(argv, input=data, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"cannot run {argv[0]}: {exc}") from None
    if res.returncode != 0:
        raise NetworkError(f"{' '.join(argv[:3])} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def _short(text: str) -> str:
    return sha.sha256(text.encode()).hexdigest()[:10].upper()


class IptablesServices:
    def __init__(self, paths: HostPaths, attachments=None):
        self.paths = paths
        self.tag = paths.tag
        self.attachments = attachments  # () → [ObservedAttachment]: resolves endpoints made in this tick
        self._nat = ""  # the nat table as observe() last read it

    # --- names ---------------------------------------------------------------------------------

    def chain(self, suffix: str) -> str:
        return f"{self.tag}-{suffix}"

    def _own(self, table: str) -> tuple[list[str], list[str]]:
        """(our chains, our rules in the built-in chains) in `table`, as iptables-save prints them."""
        text = _run(["iptables-save", "-t", table])
        prefix = self.tag + "-"
        chains = [line[1:].split()[0] for line in text.splitlines() if line.startswith(":" + prefix)]
        jumps = [line for line in text.splitlines() if line.startswith("-A ") and f"-j {prefix}" in line
                 and not line.split()[1].startswith(prefix)]
        return chains, jumps

    # --- ServiceDriver ----------------------------------------------------------------------------

    def observe(self) -> tuple[dict[str, str], str]:
        try:
            text = self._nat = _run(["iptables-save", "-t", "nat"])
        except NetworkError:
            return {}, ""
        services, hosts = {}, ""
        for chain in (self.chain("SVC"), self.chain("POST")):
            for line in text.splitlines():
                if not line.startswith(f"-A {chain} "):
                    continue
                words = shlex.split(line)
                if "--comment" not in words:
                    continue
                comment = words[words.index("--comment") + 1].split()
                if len(comment) == 3 and comment[0] == "svc":
                    services[comment[1]] = comment[2]
                elif len(comment) == 2 and comment[0] == "hosts":
                    hosts = comment[1]
        return services, hosts

    def addresses_elsewhere(self) -> list[str]:
        """ClusterIPs in the Service chains of other storage roots (pp<8 hex>-SVC, another tag)."""
        text = self._nat
        if not text:
            try:
                text = _run(["iptables-save", "-t", "nat"])
            except NetworkError:
                return []
        out = []
        for line in text.splitlines():
            m = _OTHER_SVC_RULE.match(line)
            if m and m.group(1) != self.tag:
                out.append(m.group(2))
        return out

    def sync(self, sync: ServiceSync) -> None:
        from reconciler.services import hosts_hash

        entries = self._resolve(sync.entries)
        written = self._write_hosts(entries, sync.hosts)
        if entries:
            self._write_rules(entries, hosts_hash(entries, written))
        else:
            self._remove_rules()

    def remove_all(self) -> None:
        self._remove_rules()

    # --- endpoints made in this tick ---------------------------------------------------------------

    def _resolve(self, entries: tuple[ServiceEntry, ...]) -> list[ServiceEntry]:
        if not any(not e.ip for s in entries for e in s.endpoints):
            return list(entries)
        ips = {a.pod_uid: a.status.ip for a in (self.attachments() if self.attachments else [])}
        out = []
        for s in entries:
            eps = tuple(e if e.ip else dataclasses.replace(e, ip=ips.get(e.uid, "")) for e in s.endpoints)
            out.append(dataclasses.replace(s, endpoints=tuple(e for e in eps if e.ip)))
        return out

    # --- /etc/hosts ----------------------------------------------------------------------------

    def _write_hosts(self, entries: list[ServiceEntry], pods: tuple[tuple[str, str], ...]) -> list[str]:
        """Rewrite the Services section of each pod's hosts file in place (containers bind-mount
        the file: a rename would leave them with the old one). Returns the pods written."""
        written = []
        for uid, namespace in pods:
            path = self.paths.pods_run / uid / "hosts"
            try:
                with open(path, "r+") as f:
                    text = f.read()
                    base = text.split(HOSTS_BEGIN, 1)[0]
                    from reconciler.services import render_hosts_section

                    section = render_hosts_section(entries, namespace)
                    new = base + (HOSTS_BEGIN + section if section else "")
                    if new != text:
                        f.seek(0)
                        f.write(new)
                        f.truncate()
            except FileNotFoundError:
                continue  # the pod went away (or never came): nothing to name
            except OSError as exc:
                raise NetworkError(f"{path}: cannot write the Services' names: {exc}") from None
            written.append(uid)
        return written

    # --- rules ---------------------------------------------------------------------------------

    def _write_rules(self, entries: list[ServiceEntry], hosts: str) -> None:
        from reconciler.services import entry_hash

        svc, np, post, fw = (self.chain(x) for x in ("SVC", "NP", "POST", "FW"))
        nat_chains, nat_jumps = self._own("nat")
        filter_chains, filter_jumps = self._own("filter")
        nat: list[str] = [f":{svc} - [0:0]", f":{np} - [0:0]", f":{post} - [0:0]"]
        rules: list[str] = []
        filt: list[str] = [f":{fw} - [0:0]"]
        frules: list[str] = []
        made = {svc, np, post}
        local = "-m addrtype --dst-type LOCAL"
        for e in entries:
            rules.append(f'-A {svc} -m comment --comment "svc {e.ref} {entry_hash(e)}"')
            for i, p in enumerate(e.ports):
                if not e.cluster_ip:
                    continue  # headless: names only
                sc = self.chain("S" + _short(f"{e.ref}/{i}"))
                nat.append(f":{sc} - [0:0]")
                made.add(sc)
                what = f"-p {p.protocol}"
                rules.append(f"-A {svc} -d {e.cluster_ip}/32 {what} --dport {p.port} -j {sc}")
                published = [p.node_port] if p.node_port else []
                if e.type == "LoadBalancer" and p.node_port:
                    published.append(p.port)
                for port in published:
                    # kube-proxy masquerades what reaches a nodePort unless the policy is Local,
                    # which keeps the client's address (the host's own requests still need it).
                    src = "-m addrtype --src-type LOCAL " if e.local else ""
                    rules.append(f"-A {np} {what} --dport {port} {src}-j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}")
                    rules.append(f"-A {np} {what} --dport {port} -j {sc}")
                eps = [x for x in e.endpoints if x.targets and x.targets[i]]
                if not eps:
                    frules.append(f"-A {fw} -d {e.cluster_ip}/32 {what} --dport {p.port} -j REJECT")
                    for port in published:
                        frules.append(f"-A {fw} {local} {what} --dport {port} -j REJECT")
                    continue
                # Requests from the host's loopback (nodePort on 127.0.0.1) leave with a pod-side
                # source after masquerading; route_localnet lets them be routed at all.
                if published:
                    rules.append(f"-A {sc} -s 127.0.0.0/8 -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}")
                chains = [self.chain("E" + _short(f"{e.ref}/{i}/{x.uid}")) for x in eps]
                if e.affinity:
                    # A client seen within the timeout goes back to its endpoint; --reap forgets
                    # the older entries of the list as it is checked.
                    rules += [f"-A {sc} -m recent --name {ec} --rcheck --seconds {e.affinity} --reap -j {ec}"
                              for ec in chains]
                for n, (x, ec) in enumerate(zip(eps, chains, strict=True)):
                    nat.append(f":{ec} - [0:0]")
                    made.add(ec)
                    left = len(eps) - n
                    prob = f"-m statistic --mode random --probability {1 / left:.10f} " if left > 1 else ""
                    rules.append(f"-A {sc} {prob}-j {ec}")
                    rules.append(f"-A {ec} -s {x.ip}/32 -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}")
                    remember = f"-m recent --name {ec} --set " if e.affinity else ""
                    rules.append(f"-A {ec} {what} {remember}-j DNAT --to-destination {x.ip}:{x.targets[i]}")
        rules.append(f"-A {svc} {local} -j {np}")
        rules.append(f'-A {post} -m comment --comment "hosts {hosts}"')
        rules.append(f"-A {post} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j MASQUERADE")
        stale = [c for c in nat_chains if c not in made]
        nat += [f":{c} - [0:0]" for c in stale]
        want_nat = [f"-A PREROUTING -j {svc}", f"-A OUTPUT -j {svc}", f"-A POSTROUTING -j {post}"]
        rules += [j.replace("-A ", "-I ", 1).replace(" -j", " 1 -j", 1) for j in want_nat if j not in nat_jumps]
        rules += [f"-X {c}" for c in stale]
        want_filter = [f"-A OUTPUT -j {fw}", f"-A FORWARD -j {fw}", f"-A INPUT -j {fw}"]
        frules += [j.replace("-A ", "-I ", 1).replace(" -j", " 1 -j", 1) for j in want_filter
                   if j not in filter_jumps]
        del filter_chains
        if any(p.node_port for e in entries for p in e.ports):
            _route_localnet()
        text = "*nat\n" + "\n".join(nat + rules) + "\nCOMMIT\n*filter\n" + "\n".join(filt + frules) + "\nCOMMIT\n"
        _run(["iptables-restore", "-w", "--noflush"], text)

    def _remove_rules(self) -> None:
        parts = []
        for table in ("nat", "filter"):
            chains, jumps = self._own(table)
            if not chains and not jumps:
                continue
            lines = [f":{c} - [0:0]" for c in chains]
            lines += ["-D " + shlex.join(shlex.split(j)[1:]) for j in jumps]
            lines += [f"-X {c}" for c in chains]
            parts.append(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n")
        if parts:
            _run(["iptables-restore", "-w", "--noflush"], "".join(parts))


def _route_localnet() -> None:
    """kube-proxy's condition for nodePorts on 127.0.0.1: the kernel must route 127/8 sources."""
    path = Path("/proc/sys/net/ipv4/conf/all/route_localnet")
    with contextlib.suppress(OSError):
        if path.read_text().strip() != "1":
            path.write_text("1\n")
