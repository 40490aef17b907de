"""End-to-end tests: the `podplay` command on the real stack (registry, overlay, runc, conmon, CNI).

Every test gets its own storage root, run root, CNI network (bridge, /24) and a store holding
busybox as ``localhost/busybox:latest``, the name the examples and the podman corpus use.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.paths import HostPaths
from tests.support.host import remove_everything
from tests.support.images import store_with_busybox
from tests.support.network import TestNetwork, free_port, test_network  # noqa: F401
from tests.support.registry import registry  # noqa: F401

PODPLAY = [sys.executable, "-m", "reconciler"]


def http_get(url: str, timeout: float = 5.0) -> str:
    """GET from the host side; raises on any failure (the test then shows why)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.read().decode()


@dataclass
class Stack:
    paths: HostPaths
    network: TestNetwork
    env: dict
    tmp: Path

    def run(self, *args: str, check: bool = True, timeout: float = 180, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([*PODPLAY, *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                             timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"podplay {' '.join(args)} exited {res.returncode}\nstdout:\n{res.stdout}\n"
                                 f"stderr:\n{res.stderr}")
        return res

    def write(self, name: str, text: str) -> Path:
        p = self.tmp / "manifests" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def drivers(self):
        from reconciler.reconcile import open_drivers

        return open_drivers(self.paths, "host")

    def containers(self):
        return self.drivers().runtime.list_containers()

    def infra_ns(self, pod_uid: str, kind: str) -> str:
        """The pod's sandbox namespace of ``kind`` (net, ipc, uts, pid) as readlink shows it
        inside a container: held by the catatonit infra or pinned by a bind mount."""
        oci_type = {"net": "network"}.get(kind, kind)
        info = self.drivers().runtime.infra_info(pod_uid)
        return f"{kind}:[{os.stat(info.namespaces[oci_type]).st_ino}]"


@pytest.fixture
def stack(host_paths, test_network, registry, tmp_path) -> Stack:  # noqa: F811
    test_network.use_as_default()
    store, _ = store_with_busybox(host_paths, registry)
    store.close()
    env = {**os.environ, "PODPLAY_ROOT": str(host_paths.root), "PODPLAY_RUNROOT": str(host_paths.runroot),
           "PODPLAY_NETWORK_DIR": str(host_paths.network_dir)}
    env.pop("PODPLAY_DRIVER", None)
    # A Service range of the test's own, beside its pod subnet: parallel tests never share a ClusterIP.
    cidr = f"10.223.{test_network.slot}.0/24"
    env["PODPLAY_SERVICE_CIDR"] = cidr
    host_paths = dataclasses.replace(host_paths, service_cidr=cidr)
    s = Stack(host_paths, test_network, env, tmp_path)
    yield s
    # Whatever a failed test left running: remove it through podplay itself, as a user would.
    subprocess.run([*PODPLAY, "down", str(tmp_path / "manifests")], env=env, capture_output=True, timeout=120)
    remove_everything(s.drivers())


# --- helpers for the e2e suites (examples, crash, pods, podman corpus) ------------------------------
#
# What a user would look at after `podplay up`: the pod's containers as podplay lists them, a
# command run inside one (runc exec, the same runc podplay uses), its log, a port on 127.0.0.1.
# Waiting helpers poll with a generous deadline: they wait for a state, they never assert a speed.

def wait_for(probe, what: str, timeout: float = 60.0, interval: float = 0.1):
    """Poll ``probe()`` until it returns something truthy; that value. Fails naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the last error is reported below
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}" + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


def wait_http(url: str, timeout: float = 60.0) -> str:
    """The body at ``url`` once a server answers there (a container binds its port a moment
    after it starts)."""
    return wait_for(lambda: http_get(url), f"GET {url}", timeout)


def pod_containers(stack: Stack, pod: str, namespace: str = "default") -> list:
    """Every container podplay lists for the pod (every instance, infra included)."""
    return [c for c in stack.containers() if c.pod == f"{namespace}/{pod}"]


def find_container(stack: Stack, pod: str, name: str, namespace: str = "default"):
    found = [c for c in pod_containers(stack, pod, namespace) if c.name == name and c.role != "infra"]
    assert len(found) == 1, f"expected one container {name!r} in pod {pod}, found {found}"
    return found[0]


def exec_in(stack: Stack, pod: str, name: str, *argv: str, check: bool = True,
            namespace: str = "default") -> subprocess.CompletedProcess:
    """``podplay exec POD/NAME -- ARGV``: stdout/stderr captured; the command's exit code."""
    res = stack.run("exec", "-n", namespace, f"{pod}/{name}", "--", *argv, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {pod}/{name} exited {res.returncode}: {res.stderr}")
    return res


def container_logs(stack: Stack, pod: str, name: str, namespace: str = "default") -> str:
    """``podplay logs POD/NAME``: the container's stdout, then its stderr."""
    res = stack.run("logs", "-n", namespace, f"{pod}/{name}")
    return res.stdout + res.stderr


def wait_exited(stack: Stack, pod: str, name: str, namespace: str = "default", timeout: float = 60.0):
    """The container once it has exited (for containers that run to completion)."""
    from reconciler.observed import ContainerState

    def exited():
        c = find_container(stack, pod, name, namespace)
        return c if c.state == ContainerState.EXITED and c.exit_code is not None else None

    return wait_for(exited, f"{pod}/{name} to exit", timeout)


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free TCP and UDP ports (for per-replica hostPorts)."""
    import socket

    for _ in range(200):
        first = free_port()
        ok = True
        for port in range(first, first + count):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("0.0.0.0", port))
                    except OSError:
                        ok = False
            if not ok:
                break
        if ok:
            return first
    raise RuntimeError(f"no block of {count} free ports found")


def rewrite_host_ports(text: str, span: int = 1) -> tuple[str, dict[int, int]]:
    """``text`` with every ``hostPort: N`` given a free port instead (tests run in parallel, the
    examples and the podman corpus use fixed ports); the old → new mapping. ``span`` keeps room
    for per-replica ports (N + ordinal)."""
    import re

    mapping: dict[int, int] = {}

    def new(m: re.Match) -> str:
        old = int(m.group(2))
        if old not in mapping:
            mapping[old] = free_port_block(span)
        return f"{m.group(1)}{mapping[old]}"

    return re.sub(r"(hostPort:\s*)(\d+)", new, text), mapping


def host_leftovers(stack: Stack) -> list[str]:
    """Everything of this test still on the host: podplay's own records (containers, snapshots,
    pod volumes, network attachments, claims), mounts, processes and runc containers under the test's
    roots, and the network's veths, IP allocations and iptables rules."""
    from tests.support.leaks import find_leaks

    d = stack.drivers()
    try:
        out = [f"container {c.id} ({c.state})" for c in d.runtime.list_containers()]
        out += [f"snapshot {s.key}" for s in d.snapshots.list_snapshots()]
        out += [f"pod volumes {u}" for u in d.volumes.list_pod_volumes()]
        out += [f"attachment {a.pod_uid}" for a in d.network.list_attachments()]
        out += [f"claim {c}" for c in d.volumes.list_claims()]  # tests end with `down --volumes`
    finally:
        d.close()
    out += find_leaks(stack.paths.root, stack.paths.runroot)
    out += pod_cgroups(pod_uids(stack), stack.paths.tag)
    net = stack.network
    out += [f"host-local allocation {a}" for a in net.allocations()]
    out += [f"veth {v}" for v in net.bridge_ports()]
    out += [f"{tool} -t {table}: {rule}" for tool, table, rule in net.iptables_rules()]
    return out


def pod_uids(stack: Stack) -> set[str]:
    """Every pod instance uid this test's podplay ever journaled (created, tried or removed)."""
    import sqlite3

    if not stack.paths.state_db.exists():
        return set()
    db = sqlite3.connect(f"file:{stack.paths.state_db}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT DISTINCT uid FROM txns WHERE uid != ''")}
    finally:
        db.close()


def pod_cgroup(controller: str, tag: str, uid: str, cid: str = ""):
    """/sys/fs/cgroup/<controller>/podplay/<root tag>/<pod uid>[/<container id>]."""
    from pathlib import Path

    return Path("/sys/fs/cgroup", controller, "podplay", tag, uid, cid)


def pod_cgroups(uids: set[str], tag: str) -> list[str]:
    """The cgroups podplay made for these pods (/sys/fs/cgroup/<controller>/podplay/<tag>/<uid>), with
    any process still in them: a container process outside every runc state shows up here."""
    from pathlib import Path

    out = []
    for hierarchy in sorted(Path("/sys/fs/cgroup").iterdir()):
        for uid in sorted(uids):
            pod = hierarchy / "podplay" / tag / uid
            if pod.exists():
                procs = sorted({p for f in pod.rglob("cgroup.procs") for p in f.read_text().split()})
                out.append(f"cgroup {pod}" + (f" with processes {', '.join(procs)}" if procs else ""))
    return out
