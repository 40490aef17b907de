"""``SlirpNetwork``: the NetworkDriver of rootless podplay, one slirp4netns (or pasta) per pod.

An unprivileged user cannot make bridges, veths or iptables rules on the host; slirp4netns gives
a pod's network namespace a tap device whose traffic it carries through ordinary sockets of the
user's: outbound connections (NAT behind the host's address, DNS at 10.0.2.3), and each hostPort
forwarded from every host address (``0.0.0.0``, or the hostIP asked for) to the pod. Every pod
has the same address, 10.0.2.100, in a namespace of its own; pods reach each other through
hostPorts only (no Services).

Files: ``<run root>/slirp/<uid>.json`` (tool, pid, start time, ports, netns), ``<uid>.sock`` (its
API socket), ``<uid>.log``. slirp4netns runs detached (its own session), so it outlives the command
that started it, as conmon does; ``--exit-fd`` is not used for the same reason.

pasta (Debian's passt) does the same job with the same addresses (10.0.2.100/24, gateway 10.0.2.2,
DNS forwarded from 10.0.2.3, the host's loopback out of reach: ``--no-map-gw``), chosen by
``reconciler.rootless.choose_network``. It takes its port forwards on the command line (one
``-t``/``-u`` per hostPort), forwards nothing else either way (``-T none -U none``), daemonizes
once the namespace is configured and the ports are bound (its exit is the ready signal) and
writes its pid to ``<uid>.pid``. It runs as root of the user's namespace (``--runas 0:0``: its
default, dropping to nobody, could not enter the pod's network namespace).
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
from reconciler.rootless import NETWORK_TOOLS, network_tool

POD_IP, GATEWAY, PREFIX, DNS = "10.0.2.100", "10.0.2.2", 24, "10.0.2.3"
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
    def __init__(self, paths: HostPaths, *, tool: str = ""):
        self.paths = paths
        self.dir = paths.runroot / "slirp"
        self._tool = tool  # "" = chosen at the first attach (reconciler.rootless.choose_network)

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
        return NetworkStatus(entry.get("tool", NETWORK), "tap0", POD_IP, PREFIX, GATEWAY, "", ports)

    @staticmethod
    def _alive(entry: dict) -> bool:
        return entry.get("start") is not None and _start_time(int(entry.get("pid", 0))) == entry["start"]

    # --- NetworkDriver ---------------------------------------------------------------------------

    def attach(self, pod, netns: str) -> NetworkStatus:
        existing = self._read(pod.uid)
        if existing is not None and self._alive(existing):
            return self._status(existing)
        self.detach(pod.uid)
        name = self._tool or network_tool()
        tool = shutil.which(name)
        if not tool:
            raise EnvironmentProblem(f"{name} is not installed (apt-get install {NETWORK_TOOLS.get(name, name)})")
        wanted = [d.mapping for d in declared_ports(pod)]
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if name == "pasta":
            return self._attach_pasta(tool, pod, netns, wanted)
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
        entry = {"uid": pod.uid, "pod": pod.ref, "tool": NETWORK, "netns": netns, "pid": proc.pid,
                 "start": _start_time(proc.pid), "ports": []}
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

    def _attach_pasta(self, tool: str, pod, netns: str, wanted: list[PortMapping]) -> NetworkStatus:
        forwards: list[str] = []
        for m in wanted:
            if m.protocol not in ("tcp", "udp"):
                raise NetworkError(f"pod {pod.ref}: {describe(m)}: pasta forwards TCP and UDP only")
            spec = f"{m.host_ip}/{m.host_port}:{m.container_port}" if m.host_ip else f"{m.host_port}:{m.container_port}"
            forwards += ["-t" if m.protocol == "tcp" else "-u", spec]
        if not any(m.protocol == "tcp" for m in wanted):
            forwards += ["-t", "none"]
        if not any(m.protocol == "udp" for m in wanted):
            forwards += ["-u", "none"]
        pidfile, log = self.dir / f"{pod.uid}.pid", self.dir / f"{pod.uid}.log"
        for f in (pidfile, log):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        argv = [tool, "--quiet", "--runas", "0:0", "--config-net", "--address", POD_IP, "--netmask", str(PREFIX),
                "--gateway", GATEWAY, "--ns-ifname", "tap0", "--mtu", "65520", "--no-map-gw",
                "--dns-forward", DNS, "-T", "none", "-U", "none", *forwards, "--pid", str(pidfile),
                "--log-file", str(log), "--netns", netns]
        entry = {"uid": pod.uid, "pod": pod.ref, "tool": "pasta", "netns": netns, "pid": 0, "start": None,
                 "ports": []}
        # Recorded before it starts: a kill between its start and the pid's record leaves the
        # entry whose pid file detach() still reads.
        atomic_write(self._entry_path(pod.uid), json.dumps(entry), 0o600)
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=READY_TIMEOUT, start_new_session=True)
            pid = self._pasta_pid(pod.uid)
            if proc.returncode != 0 or not pid:
                said = [ln for ln in (proc.stderr + "\n" + self._log_text(pod.uid)).splitlines()
                        if ln.strip() and "syslog" not in ln and "unknown version" not in ln]
                why = said[-1].strip() if said else f"it exited with {proc.returncode}"
                raise NetworkError(f"pod {pod.ref}: pasta did not set up the pod's network: {why}")
            entry.update(pid=pid, start=_start_time(pid),
                         ports=[{"host_port": m.host_port, "container_port": m.container_port,
                                 "protocol": m.protocol, "host_ip": m.host_ip} for m in wanted])
            atomic_write(self._entry_path(pod.uid), json.dumps(entry), 0o600)
        except subprocess.TimeoutExpired:
            self.detach(pod.uid)
            raise NetworkError(f"pod {pod.ref}: pasta did not set up the pod's network within "
                               f"{READY_TIMEOUT:g} s") from None
        except BaseException:
            self.detach(pod.uid)
            raise
        return self._status(entry)

    def _pasta_pid(self, uid: str) -> int:
        try:
            return int((self.dir / f"{uid}.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _log_text(self, uid: str) -> str:
        try:
            return (self.dir / f"{uid}.log").read_text(errors="replace")
        except OSError:
            return ""

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
        if entry is not None and entry.get("tool") == "pasta" and not entry.get("pid"):
            # Killed while pasta started: its pid file says which process it became.
            pid = self._pasta_pid(uid)
            entry.update(pid=pid, start=_start_time(pid) if pid else None)
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
        else:
            for pid in self._unrecorded(uid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for suffix in (".json", ".sock", ".log", ".pid"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / f"{uid}{suffix}")

    def _unrecorded(self, uid: str) -> list[int]:
        """slirp4netns processes started for ``uid`` whose pid was never recorded (a kill between
        the start and the record), known by the API socket their command line names."""
        sock = os.fsencode(self.dir / f"{uid}.sock")
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if sock in argv and os.path.basename(argv[0]) == b"slirp4netns":
                found.append(int(name))
        return found

    def check(self, uid: str) -> None:
        entry = self._read(uid)
        if entry is None:
            raise NetworkError(f"pod uid {uid} has no network attachment")
        if not self._alive(entry):
            raise NetworkError(f"pod {entry.get('pod', uid)}: its {entry.get('tool', NETWORK)} is gone")

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
