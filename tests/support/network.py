"""A CNI network of its own for every host test, and the check that the test left it clean.

Use it from a conftest (``from tests.support.network import test_network  # noqa: F401``):

    def test_x(test_network, host_paths):
        ns = test_network.make_netns()                 # /run/netns/…, deleted at teardown
        pod = test_network.pod("web", ports=[(80, 8080)])   # DesiredPod on this network
        …

Each test gets a slot 1…254 in 10.222.0.0/16, held with an flock in /tmp so that parallel
workers and parallel pytest sessions never share one: network ``pptnet-NNN``, bridge
``pptbrNNN``, subnet ``10.222.NNN.0/24``. After the test the fixture reports as leaks any
attachment record, host-local allocation, veth on the bridge, iptables rule mentioning the
network, bridge or an address of the subnet (podplay's PODPLAY-FORWARD rules included, and
that chain left behind empty), or process in a netns the test made; then it
cleans all of that up (so one failure does not cascade) and deletes the bridge, which the
bridge plugin always leaves behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import shlex
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.desired import ANN_NETWORK, DEFAULT_NETWORK, Loaded, build_desired
from reconciler.model.kube import Container, ContainerPort, ObjectMeta, Pod, PodSpec
from reconciler.network.config import default_conflist, routed_networks
from reconciler.network.forward import CHAIN as FORWARD_CHAIN
from reconciler.network.forward import chain_left_empty
from reconciler.network.ports import parse_proc_net
from reconciler.paths import HostPaths

POOL = ipaddress.IPv4Network("10.222.0.0/16")
SLOT_DIR = Path("/tmp/podplay-test-networks")
# Chains the plugins make per attachment: portmap's CNI-DN-<hash>, bridge's masquerade CNI-<hash>.
_ATTACHMENT_CHAIN = re.compile(r"^CNI-(DN-)?[0-9a-f]{16,24}$")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\d.])")


def _run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _claim_slot() -> tuple[int, int]:
    """(slot, fd holding its lock). The lock dies with the process, so a crashed run frees it."""
    SLOT_DIR.mkdir(exist_ok=True)
    routed = routed_networks()
    slots = list(range(1, 255))
    random.shuffle(slots)
    for n in slots:
        subnet = ipaddress.IPv4Network(f"10.222.{n}.0/24")
        if any(subnet.overlaps(r) and not _is_our_bridge_route(r, n) for r in routed):
            continue
        fd = os.open(SLOT_DIR / f"{n:03d}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return n, fd
    raise RuntimeError("no free test network slot in 10.222.0.0/16")


def _is_our_bridge_route(route: ipaddress.IPv4Network, n: int) -> bool:
    # A crashed earlier run may have left the slot's bridge (and so its route): reclaimable.
    return route == ipaddress.IPv4Network(f"10.222.{n}.0/24") and Path(f"/sys/class/net/pptbr{n:03d}").exists()


def free_port(protocol: str = "tcp") -> int:
    """A port nothing on the host is bound to, outside the ephemeral range (so that no
    outgoing connection of another test can collide with a hostPort DNAT rule)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    for _ in range(200):
        port = random.randint(20000, 29999)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def host_address() -> str:
    """The host's own IPv4 address on its default-route interface (not 127.0.0.1)."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"], check=True).stdout or "[]")
    devs = [r["dev"] for r in routes if r.get("dev")]
    addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show"], check=True).stdout or "[]")
    for link in sorted(addrs, key=lambda a: a["ifname"] not in devs):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global" and ipaddress.IPv4Address(a["local"]) not in POOL:
                return a["local"]
    raise RuntimeError("the host has no global IPv4 address")


@dataclass
class TestNetwork:
    slot: int
    paths: HostPaths
    name: str = ""
    bridge: str = ""
    subnet: ipaddress.IPv4Network = field(default=POOL)
    conflist: Path = field(default=Path())
    _netns: list[tuple[str, int]] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _counter: int = 0

    __test__ = False  # not a test class, despite the name

    def __post_init__(self):
        self.name = f"pptnet-{self.slot:03d}"
        self.bridge = f"pptbr{self.slot:03d}"
        self.subnet = ipaddress.IPv4Network(f"10.222.{self.slot}.0/24")
        self.conflist = self.paths.network_dir / f"{self.name}.conflist"

    # --- configuration ----------------------------------------------------------------------

    @property
    def ipam_dir(self) -> Path:
        return self.paths.cni / "ipam"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def conflist_doc(self) -> dict:
        return default_conflist(self.name, self.bridge, str(self.subnet), str(self.ipam_dir))

    def write_conflist(self, doc: dict | None = None, path: Path | None = None) -> Path:
        path = path or self.conflist
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc or self.conflist_doc(), indent=2))
        return path

    def pod(self, name: str, ports: list[tuple] = (), *, namespace: str = "default", network: str | None = None,
            host_network: bool = False):
        """A DesiredPod on this network (on ``network``; with ``network=""`` on the default one,
        without annotation). ``ports``: (containerPort, hostPort[, protocol[, hostIP]])."""
        cports = tuple(ContainerPort(p[0], p[1], p[2] if len(p) > 2 else "TCP", p[3] if len(p) > 3 else "")
                       for p in ports)
        annotations = {} if network == "" else {ANN_NETWORK: network or self.name}
        meta = ObjectMeta(name, namespace, annotations=annotations)
        spec = PodSpec(containers=(Container("app", "localhost/busybox:latest", ports=cports),),
                       host_network=host_network)
        state = build_desired([Loaded(Pod(meta, spec), f"{name}.yaml")])
        return state.pods[f"{namespace}/{name}"]

    # --- namespaces and processes -----------------------------------------------------------

    def make_netns(self, name: str = "") -> str:
        """A named netns (``ip netns add``); its path. Deleted at teardown if the test did not.
        Passing the name of a deleted one makes a new namespace at the same path."""
        if not name:
            self._counter += 1
            name = f"pptns{self.slot:03d}-{self._counter}"
        _run(["ip", "netns", "add", name], check=True)
        path = f"/run/netns/{name}"
        self._netns.append((path, os.stat(path).st_ino))
        return path

    def delete_netns(self, path: str) -> None:
        _run(["ip", "netns", "delete", os.path.basename(path)])

    def netns_process(self) -> tuple[subprocess.Popen, str]:
        """A sleeping process in a fresh netns, like an infra container: (process, /proc/PID/ns/net)."""
        proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
        self._procs.append(proc)
        own = os.stat("/proc/self/ns/net").st_ino
        path = f"/proc/{proc.pid}/ns/net"
        deadline = time.monotonic() + 30
        while True:  # unshare has to run before the namespace exists
            with contextlib.suppress(OSError):
                ino = os.stat(path).st_ino
                if ino != own:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("unshare --net did not start")
            time.sleep(0.01)
        self._netns.append((path, ino))
        return proc, path

    def run_in(self, netns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` inside ``netns``; killed at teardown."""
        proc = subprocess.Popen(["nsenter", f"--net={netns}", "--", *argv], **kw)
        self._procs.append(proc)
        return proc

    def exec_in(self, netns: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={netns}", "--", *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def _wait_bound(self, proc: subprocess.Popen, protocol: str, port: int) -> None:
        """Until ``proc`` (in its netns) has bound ``port``: read from /proc/PID/net, which shows
        the process's own namespace, so no client has to poke the server."""
        deadline = time.monotonic() + 30
        while True:
            tables = (f"/proc/{proc.pid}/net/{protocol}", f"/proc/{proc.pid}/net/{protocol}6")
            for table in tables:
                with contextlib.suppress(OSError), open(table) as f:
                    if any(s.port == port for s in parse_proc_net(f.read(), protocol)):
                        return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {proc.args} did not bind {protocol} port {port}")
            time.sleep(0.02)

    def serve_http(self, netns: str, docroot: Path, port: int = 80) -> subprocess.Popen:
        """busybox httpd serving ``docroot`` on ``port`` inside ``netns``, ready when this returns."""
        proc = self.run_in(netns, ["busybox", "httpd", "-f", "-p", str(port), "-h", str(docroot)])
        self._wait_bound(proc, "tcp", port)
        return proc

    def serve_udp_echo(self, netns: str, port: int) -> subprocess.Popen:
        """A UDP server inside ``netns`` answering every datagram with b"echo:" + datagram."""
        code = ("import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.bind(('0.0.0.0', {port}))\n"
                "while True:\n"
                "    data, peer = s.recvfrom(2048)\n"
                "    s.sendto(b'echo:' + data, peer)\n")
        proc = self.run_in(netns, ["python3", "-c", code])
        self._wait_bound(proc, "udp", port)
        return proc

    def http_get(self, url: str, netns: str = "") -> str:
        """The body at ``url`` fetched from the host, or from inside ``netns``."""
        if not netns:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.read().decode()
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=30).read().decode(), end='')"
        res = self.exec_in(netns, ["python3", "-c", code])
        if res.returncode != 0:
            raise OSError(f"GET {url} from {netns} failed: {res.stderr.strip()[-300:]}")
        return res.stdout

    # --- what the network holds on the host ---------------------------------------------------

    def allocations(self, network: str = "") -> list[str]:
        """host-local's allocation files ("<network>/<address>", one per leased address) of
        ``network``, or of every network of the test (they share the data dir)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for net in [network] if network else os.listdir(self.ipam_dir):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for f in os.listdir(self.ipam_dir / net):
                        with contextlib.suppress(ValueError):
                            ipaddress.ip_address(f)
                            out.append(f"{net}/{f}")
        return sorted(out)

    def _mentions_us(self, rule: str) -> bool:
        if (self.name != DEFAULT_NETWORK and self.name in rule) or self.bridge in rule:
            return True
        for m in _IPV4.finditer(rule):
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Address(m.group(1)) in self.subnet:
                    return True
        return False

    def iptables_rules(self) -> list[tuple[str, str, str]]:
        """(tool, table, rule) for every rule that mentions this network, its bridge or its
        subnet, or jumps to a per-attachment chain (CNI-DN-…, CNI-<hash>) holding such rules."""
        out = []
        for tool in ("iptables-save", "ip6tables-save"):
            rules: list[tuple[str, str]] = []
            table = ""
            for line in _run([tool]).stdout.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith("-A "):
                    rules.append((table, line))
            hits = [(t, r) for t, r in rules if self._mentions_us(r)]
            ours = {(t, r.split()[1]) for t, r in hits if _ATTACHMENT_CHAIN.match(r.split()[1])}
            for t, r in rules:
                words = r.split()
                target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
                if (t, r) in hits or (t, target) in ours:
                    out.append((tool.replace("-save", ""), t, r))
        return out

    def use_as_default(self) -> Path:
        """Make this network the test's default network ``podplay`` (same bridge, subnet and
        leak checks), for pods without the podplay.io/network annotation. Its path."""
        doc = default_conflist(DEFAULT_NETWORK, self.bridge, str(self.subnet), str(self.ipam_dir))
        self.name = DEFAULT_NETWORK  # shared by every test: no longer a leak needle of its own
        self.conflist = self.paths.network_dir / f"{DEFAULT_NETWORK}.conflist"
        return self.write_conflist(doc)

    def bridge_ports(self) -> list[str]:
        res = _run(["ip", "-j", "link", "show", "master", self.bridge])
        if res.returncode != 0 or not res.stdout.strip():
            return []
        return [link["ifname"] for link in json.loads(res.stdout)]

    def records(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(os.listdir(self.paths.cni / "results"))
        return []

    def processes_in_our_netns(self) -> list[str]:
        inodes = {ino for _, ino in self._netns}
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                    out.append(f"{pid}: {cmd}")
        return out

    # --- teardown -----------------------------------------------------------------------------

    def _stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def leaks(self) -> list[str]:
        self._stop_processes()
        leaks = [f"attachment record {r}" for r in self.records() if r.endswith(".json")]
        leaks += [f"host-local allocation {a}" for a in self.allocations()]
        leaks += [f"veth {v} on bridge {self.bridge}" for v in self.bridge_ports()]
        leaks += [f"{tool} -t {table}: {rule}" for tool, table, rule in self.iptables_rules()]
        # podplay's forward chain goes with its last rule (of whichever test or root made it).
        leaks += [f"ip{'6' if v == 6 else ''}tables: chain {FORWARD_CHAIN} left empty, jumped to from FORWARD"
                  for v in chain_left_empty()]
        leaks += [f"process in a test netns: {p}" for p in self.processes_in_our_netns()]
        return leaks

    def cleanup(self) -> list[str]:
        """Remove everything the network may still hold; what could not be removed."""
        problems = []
        self._stop_processes()
        for path, _ in self._netns:
            if path.startswith("/run/netns/") and os.path.exists(path):
                self.delete_netns(path)
        chains: set[tuple[str, str, str]] = set()
        for tool, table, rule in self.iptables_rules():
            words = shlex.split(rule)
            if "-j" in words and words[words.index("-j") + 1].startswith("CNI-") \
                    and words[words.index("-j") + 1] not in ("CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
                chains.add((tool, table, words[words.index("-j") + 1]))
            _run([tool, "-w", "-t", table, "-D", *words[1:]])
        for tool, table, chain in chains:
            res = _run([tool, "-w", "-t", table, "-S", chain])
            if res.returncode == 0 and len(res.stdout.splitlines()) <= 1:
                _run([tool, "-w", "-t", table, "-X", chain])
        chain_left_empty(drop=True)  # the rules above were the last of podplay's forward chain
        for a in self.allocations():
            (self.ipam_dir / a).unlink()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            res = _run(["ip", "link", "delete", self.bridge])
            if res.returncode != 0:
                problems.append(f"cannot delete bridge {self.bridge}: {res.stderr.strip()}")
        problems += [f"{tool} -t {table}: {rule}" for tool, table, rule in self.iptables_rules()]
        problems += [f"netns {p}" for p, _ in self._netns if p.startswith("/run/netns/") and os.path.exists(p)]
        return problems


@pytest.fixture
def test_network(host_paths, request) -> TestNetwork:
    """A unique CNI network (conflist written in ``host_paths.network_dir``), leak-checked."""
    slot, fd = _claim_slot()
    try:
        net = TestNetwork(slot, host_paths)
        # A crashed earlier holder of the slot may have left its bridge and rules: start clean.
        stale = net.cleanup()
        assert not stale, f"cannot reuse test network slot {slot}: {stale}"
        net.write_conflist()
        request.node.leak_needles = (*getattr(request.node, "leak_needles", ()), str(net.subnet), net.name,
                                     net.bridge)
        yield net
        leaks = net.leaks()
        problems = net.cleanup()
    finally:
        os.close(fd)
    assert not leaks, "the test left network state behind:\n  " + "\n  ".join(leaks)
    assert not problems, "network clean-up failed:\n  " + "\n  ".join(problems)
