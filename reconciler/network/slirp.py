"""``SlirpNetwork``: the NetworkDriver of rootless podplay, one slirp4netns per pod.

An unprivileged user cannot make bridges, veths or iptables rules on the host; slirp4netns gives
a pod's network namespace a tap device whose traffic it carries through ordinary sockets of the
user's: outbound connections (NAT behind the host's address, DNS at 10.0.2.3), and each hostPort
forwarded from every host address (``0.0.0.0``, or the hostIP asked for) to the pod. Every pod
has the same address, 10.0.2.100, in a namespace of its own; pods reach each other through
hostPorts only (no Services).

Files: ``<run root>/slirp/<uid>.json`` (pid, start time, ports, netns), ``<uid>.sock`` (its API
socket), ``<uid>.log``. slirp4netns runs detached (its own session), so it outlives the command
that started it, as conmon does; ``--exit-fd`` is not used for the same reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from reconciler.errors import EnvironmentProblem, NetworkError
from reconciler.fsutil import atomic_write
from reconciler.network.ports import declared_ports, describe, host_conflicts, host_sockets, overlaps
from reconciler.observed import NetworkStatus, ObservedAttachment, PortMapping
from reconciler.paths import HostPaths

POD_IP, GATEWAY, PREFIX = "10.0.2.100", "10.0.2.2", 24
NETWORK = "slirp4netns"
READY_TIMEOUT = 10.0


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


class SlirpNetwork:
    def __init__(self, paths: HostPaths, *, slirp4netns: str = "slirp4netns"):
        self.paths = paths
        self.dir = paths.runroot / "slirp"
        self._tool = slirp4netns

    def _entry_path(self, uid: str) -> Path:
        return self.dir / f"{uid}.json"

    def _read(self, uid: str) -> dict | None:
        try:
            return json.loads(self._entry_path(uid).read_text())
        except (OSError, ValueError):
            return None

    def _entries(self) -> list[dict]:
        try:
            names = sorted(p for p in os.listdir(self.dir) if p.endswith(".json"))
        except FileNotFoundError:
            return []
        return [e for n in names if (e := self._read(n[:-5])) is not None]

    @staticmethod
    def _status(entry: dict) -> NetworkStatus:
        ports = tuple(PortMapping(p["host_port"], p["container_port"], p["protocol"], p.get("host_ip", ""))
                      for p in entry.get("ports", ()))
        return NetworkStatus(NETWORK, "tap0", POD_IP, PREFIX, GATEWAY, "", ports)

    @staticmethod
    def _alive(entry: dict) -> bool:
        return entry.get("start") is not None and _start_time(int(entry.get("pid", 0))) == entry["start"]

    # --- NetworkDriver ---------------------------------------------------------------------------

    def attach(self, pod, netns: str) -> NetworkStatus:
        existing = self._read(pod.uid)
        if existing is not None and self._alive(existing):
            return self._status(existing)
        self.detach(pod.uid)
        tool = shutil.which(self._tool)
        if not tool:
            raise EnvironmentProblem("slirp4netns is not installed (apt-get install slirp4netns)")
        wanted = [d.mapping for d in declared_ports(pod)]
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock = self.dir / f"{pod.uid}.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        ready_r, ready_w = os.pipe()
        argv = [tool, "--configure", "--mtu=65520", "--disable-host-loopback", "--api-socket", str(sock),
                "--ready-fd", str(ready_w), "--netns-type=path", netns, "tap0"]
        try:
            with open(self.dir / f"{pod.uid}.log", "wb") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(ready_w,),
                                        start_new_session=True)
        finally:
            os.close(ready_w)
        entry = {"uid": pod.uid, "pod": pod.ref, "netns": netns, "pid": proc.pid, "start": _start_time(proc.pid),
                 "ports": []}
        atomic_write(self._entry_path(pod.uid), json.dumps(entry), 0o600)
        try:
            self._await_ready(ready_r, proc, pod)
            for m in wanted:
                self._forward(sock, m, pod)
                entry["ports"].append({"host_port": m.host_port, "container_port": m.container_port,
                                       "protocol": m.protocol, "host_ip": m.host_ip})
            atomic_write(self._entry_path(pod.uid), json.dumps(entry), 0o600)
        except BaseException:
            self.detach(pod.uid)
            raise
        finally:
            os.close(ready_r)
        return self._status(entry)

    def _await_ready(self, fd: int, proc: subprocess.Popen, pod) -> None:
        import select

        ready, _, _ = select.select([fd], [], [], READY_TIMEOUT)
        if not ready or os.read(fd, 1) != b"1":
            log = (self.dir / f"{pod.uid}.log").read_text(errors="replace").strip().splitlines()
            why = log[-1] if log else ("it exited" if proc.poll() is not None else "no answer")
            raise NetworkError(f"pod {pod.ref}: slirp4netns did not set up the pod's network: {why}")

    def _forward(self, sock: Path, m: PortMapping, pod) -> None:
        if m.protocol not in ("tcp", "udp"):
            raise NetworkError(f"pod {pod.ref}: {describe(m)}: slirp4netns forwards TCP and UDP only")
        request = {"execute": "add_hostfwd", "arguments": {
            "proto": m.protocol, "host_addr": m.host_ip or "0.0.0.0", "host_port": m.host_port,  # noqa: S104
            "guest_addr": POD_IP, "guest_port": m.container_port}}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(json.dumps(request).encode())
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(65536).decode(errors="replace")
        if '"error"' in answer:
            raise NetworkError(f"pod {pod.ref}: cannot forward {describe(m)}: {answer.strip()}")

    def detach(self, uid: str) -> None:
        entry = self._read(uid)
        if entry is not None and self._alive(entry):
            pid = int(entry["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while self._alive(entry) and time.monotonic() < deadline:
                time.sleep(0.01)
            if self._alive(entry):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for suffix in (".json", ".sock", ".log"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / f"{uid}{suffix}")

    def check(self, uid: str) -> None:
        entry = self._read(uid)
        if entry is None:
            raise NetworkError(f"pod uid {uid} has no network attachment")
        if not self._alive(entry):
            raise NetworkError(f"pod {entry.get('pod', uid)}: its slirp4netns is gone")

    def list_attachments(self) -> list[ObservedAttachment]:
        return [ObservedAttachment(e["uid"], self._status(e), e.get("netns", "")) for e in self._entries()]

    def port_conflicts(self, pod) -> list[str]:
        wanted = [d.mapping for d in declared_ports(pod)]
        out = []
        for e in self._entries():
            if e["uid"] == pod.uid:
                continue
            theirs = self._status(e).ports
            out += [f"{describe(m)} is taken by pod {e.get('pod', e['uid'])}" for m in wanted
                    if any(overlaps(m, t) for t in theirs)]
        return out + host_conflicts(wanted, host_sockets())
