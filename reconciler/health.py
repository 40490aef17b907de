"""Runs containers' probes and keeps what they found in the state store.

``HealthMonitor`` is the keeper's ``HealthHook`` (and what ``up --wait`` and rollouts run in
process): on each call it runs the probes that are due (``reconciler.probes`` says which and
folds the results), saves the records, and returns the seconds until the next probe is due.
A failed liveness (or startup) probe does not restart anything here: it marks the container,
and the next diff restarts it through the engine (a journaled RestartContainer with reason
"unhealthy", counted in restarts, under the crash-loop back-off).

How probes run:

* exec: ``runc exec`` through the RuntimeDriver with the probe's timeout; exit 0 is success.
* httpGet and tcpSocket: podplay itself connects from inside the pod's network namespace, so
  the image needs no curl or nc. Python has no ``os.setns``; libc's ``setns(fd, CLONE_NEWNET)``
  on a thread of its own switches only that thread (as Go's netns.Do does with a locked OS
  thread). Each such probe gets a fresh thread that ends with it, so no thread ever returns to
  the host's namespace by mistake. hostNetwork pods are probed from the host namespace.
* The host probed is the probe's ``host`` if set, else the pod's IP (the kubelet's default,
  so a server bound to 127.0.0.1 only fails as it would on Kubernetes), else 127.0.0.1.
* gRPC: the standard health-checking protocol (grpc.health.v1.Health/Check) over cleartext
  HTTP/2, framed by ``h2`` (imported only here: ps, plan and an idle watcher never load it);
  success is a SERVING answer, as the kubelet's. The request is made like the HTTP ones, from the
  pod's network namespace, so the image needs no grpc_health_probe.
* HTTP: status 200–399 is success; redirects are followed (10 at most) only to the same host
  and port, a redirect elsewhere counts as its own 3xx (success), as the kubelet does; HTTPS is
  not verified; at most 10 KiB of a body is read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.desired import DesiredPod, DesiredState
from reconciler.drivers.base import Drivers
from reconciler.errors import PodplayError
from reconciler.model.kube import Container, LifecycleHandler, Probe
from reconciler.model.workloads import ROLLED_OUT_KINDS
from reconciler.observed import ContainerState, ObservedContainer, ObservedHost, ObservedPod
from reconciler.probes import (
    ContainerHealth,
    PodHealth,
    active,
    current,
    due,
    has_probes,
    next_due,
    pod_health,
    probe_of,
    record,
)
from reconciler.state import StateStore

CLONE_NEWNET = 0x40000000
BODY_CAP = 10 * 1024
OUTPUT_CAP = 10 * 1024
MAX_REDIRECTS = 10
USER_AGENT = "kube-probe/podplay"


# --- one probe ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where a container's probes go."""

    container_id: str
    name: str
    spec: Container
    netns: str = ""  # "" = the host's network namespace
    pod_ip: str = ""


_libc = None


def _setns(path: str) -> None:
    global _libc  # noqa: PLW0603 - loaded once, on the first network probe
    import ctypes  # here: `plan` and a watcher's idle ticks read pods' health without loading it

    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(netns: str, fn: Callable[[], tuple[bool, str]], timeout: float) -> tuple[bool, str]:
    """Run `fn` on a new thread inside network namespace `netns` (or the host's, for "")."""
    out: list[tuple[bool, str]] = []

    def body() -> None:
        try:
            if netns:
                _setns(netns)
            out.append(fn())
        except OSError as exc:
            out.append((False, str(exc)))

    t = threading.Thread(target=body, name="podplay-probe", daemon=True)
    t.start()
    # The socket timeouts bound fn; the margin covers the thread's start and a slow setns.
    t.join(timeout + 5)
    if not out:
        return False, f"timed out after {timeout:g}s"
    return out[0]


def resolve_port(port, spec: Container) -> int:
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in spec.ports:
        if p.name == text:
            return p.container_port
    raise ValueError(f"port {text!r} is not a named port of container {spec.name}")


def _http(scheme: str, host: str, port: int, path: str, headers: dict[str, str], timeout: float) -> tuple[bool, str]:
    import http.client
    import ssl
    from urllib.parse import urljoin, urlsplit

    for _ in range(MAX_REDIRECTS + 1):
        if scheme == "HTTPS":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read(BODY_CAP)
            status, location = resp.status, resp.getheader("Location")
        finally:
            conn.close()
        if 300 <= status < 400 and location:
            base = f"{scheme.lower()}://{host}:{port}{path}"
            target = urlsplit(urljoin(base, location))
            same = target.hostname == host and (target.port or (443 if target.scheme == "https" else 80)) == port
            if same and target.scheme in ("http", "https"):
                scheme = target.scheme.upper()
                path = target.path or "/"
                if target.query:
                    path += "?" + target.query
                continue
            return True, f"redirect to {location} not followed (another host)"
        if 200 <= status < 400:
            return True, f"HTTP {status}"
        return False, f"HTTP probe failed with status {status}"
    return False, f"more than {MAX_REDIRECTS} redirects"


def run_probe(drivers: Drivers, target: Target, kind: str, probe: Probe) -> tuple[bool, str]:
    """One probe, for real (or through the fake host's table): (success, message)."""
    if drivers.probe is not None:
        return drivers.probe(target.container_id, target.name, kind, probe)
    timeout = float(max(probe.timeout_seconds, 1))
    if probe.exec is not None:
        return _exec(drivers, target, probe, timeout)
    if probe.grpc is not None:
        grpc = probe.grpc
        host = target.pod_ip or "127.0.0.1"
        return in_netns(target.netns, lambda: grpc_check(host, grpc.port, grpc.service, timeout), timeout)
    action = probe.http_get or probe.tcp_socket
    if action is None:
        return False, "probe has no handler"
    try:
        port = resolve_port(action.port, target.spec)
    except ValueError as exc:
        return False, str(exc)
    host = action.host or target.pod_ip or "127.0.0.1"
    if probe.http_get is not None:
        get = probe.http_get
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        for h in get.http_headers:
            headers[h.name] = h.value
        path = get.path if get.path.startswith("/") else "/" + get.path

        def fn() -> tuple[bool, str]:
            try:
                return _http(get.scheme.upper(), host, port, path, headers, timeout)
            except (OSError, ValueError) as exc:
                return False, f"GET {get.scheme.lower()}://{host}:{port}{path}: {_oserror(exc)}"
    else:
        def fn() -> tuple[bool, str]:
            import socket

            try:
                with socket.create_connection((host, port), timeout=timeout):
                    return True, ""
            except OSError as exc:
                return False, f"dial tcp {host}:{port}: {_oserror(exc)}"
    return in_netns(target.netns, fn, timeout)


# --- lifecycle hooks (postStart, preStop): the same handlers, run once ----------------------------

def run_hook(drivers: Drivers, container_id: str, handler: LifecycleHandler, *, netns: str, pod_ip: str,
             spec: Container | None, timeout: float) -> tuple[bool, str]:
    """Run one lifecycle handler for a container, within `timeout` seconds: (success, message).
    exec runs in the container; httpGet is sent from the pod's network namespace (the pod's IP
    by default, as the kubelet's); sleep sleeps in podplay (nothing needed in the image)."""
    if handler.sleep is not None:
        time.sleep(max(0.0, min(float(handler.sleep.seconds), timeout)))
        return (True, "") if handler.sleep.seconds <= timeout else (False, f"cut short after {timeout:g}s")
    if handler.exec is not None:
        argv = list(handler.exec.command)
        with tempfile.TemporaryFile() as out:
            try:
                code = drivers.runtime.exec_in(container_id, argv, timeout=timeout, output=out)
            except PodplayError as exc:
                return False, str(exc)
            out.seek(0)
            text = out.read(OUTPUT_CAP).decode(errors="replace").strip()
        return (True, text) if code == 0 else (False, f"command {argv} exited with {code}" + (f": {text}" if text
                                                                                             else ""))
    get = handler.http_get
    if get is None:
        return False, "hook has no handler"
    try:
        port = resolve_port(get.port, spec) if spec is not None else int(get.port)
    except ValueError as exc:
        return False, str(exc)
    host = get.host or pod_ip or "127.0.0.1"
    headers = {"User-Agent": USER_AGENT, **{h.name: h.value for h in get.http_headers}}
    path = get.path if get.path.startswith("/") else "/" + get.path

    def fn() -> tuple[bool, str]:
        try:
            return _http(get.scheme.upper(), host, port, path, headers, timeout)
        except (OSError, ValueError) as exc:
            return False, f"GET {get.scheme.lower()}://{host}:{port}{path}: {_oserror(exc)}"

    return in_netns(netns, fn, timeout)


# grpc.health.v1.HealthCheckResponse.ServingStatus
GRPC_SERVING = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _health_status(message: bytes) -> int | None:
    """The `status` (field 1, varint) of a HealthCheckResponse; None when the message has none.
    The response has that one field: a protobuf library would be a dependency for a byte."""
    i = 0
    while i < len(message):
        key = message[i]
        i += 1
        value = shift = 0
        if key & 7 != 0:  # not a varint: an unknown field we cannot skip safely
            return None
        while i < len(message):
            b = message[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if key >> 3 == 1:
            return value
    return 0  # proto3: a field left at its default (UNKNOWN) is not sent


def grpc_check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    """One grpc.health.v1.Health/Check call over cleartext HTTP/2: (SERVING, message)."""
    import socket

    import h2.exceptions

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return False, f"failed to connect service \"{host}:{port}\" within {timeout:g}s: {_oserror(exc)}"
    try:
        answer = _grpc_exchange(sock, host, port, service, timeout)
    except TimeoutError:
        return False, f"timeout: health rpc did not complete within {timeout:g}s"
    except OSError as exc:
        return False, f"health rpc to {host}:{port} failed: {_oserror(exc)}"
    except h2.exceptions.H2Error as exc:
        return False, f"health rpc to {host}:{port} failed: not an HTTP/2 (gRPC) server ({exc})"
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    if isinstance(answer, str):
        return False, answer
    headers, body = answer
    if headers.get(":status", "200") != "200":
        return False, f"health rpc failed with HTTP status {headers.get(':status')}"
    code = headers.get("grpc-status", "")
    if code != "0":
        detail = headers.get("grpc-message", "")
        return False, f"health rpc failed with status {code or 'missing'}" + (f": {detail}" if detail else "")
    status = _health_status(bytes(body[5:])) if len(body) >= 5 else None
    name = GRPC_SERVING.get(status, str(status)) if status is not None else "no answer"
    if status == 1:
        return True, ""
    return False, f"service unhealthy (responded with \"{name}\")"


def _grpc_exchange(sock, host: str, port: int, service: str, timeout: float) -> tuple[dict, bytearray] | str:
    """Send the Check request on one HTTP/2 stream and read its answer: (headers and trailers,
    body), or why the server gave none."""
    import struct

    import h2.config
    import h2.connection
    import h2.events

    deadline = time.monotonic() + timeout
    request = (b"\x0a" + _varint(len(service.encode())) + service.encode()) if service else b""
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", GRPC_HEALTH_PATH),
                            (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
                            ("te", "trailers"), ("user-agent", USER_AGENT),
                            ("grpc-timeout", f"{max(int(timeout * 1000), 1)}m")])
    conn.send_data(sid, b"\x00" + struct.pack(">I", len(request)) + request, end_stream=True)
    sock.sendall(conn.data_to_send())
    body, headers = bytearray(), {}
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            return "the server closed the connection before answering"
        for ev in conn.receive_data(data):
            if getattr(ev, "stream_id", sid) != sid:
                continue
            if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers.update(dict(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                return headers, body
            elif isinstance(ev, h2.events.StreamReset):
                return f"the server reset the stream (error code {ev.error_code})"
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return f"the server ended the connection (error code {ev.error_code})"
        sock.sendall(conn.data_to_send())


def _oserror(exc: Exception) -> str:
    import socket

    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc)


def _exec(drivers: Drivers, target: Target, probe: Probe, timeout: float) -> tuple[bool, str]:
    argv = list(probe.exec.command) if probe.exec else []
    with tempfile.TemporaryFile() as out:
        try:
            code = drivers.runtime.exec_in(target.container_id, argv, timeout=timeout, output=out)
        except PodplayError as exc:
            return False, str(exc)
        out.seek(0)
        text = out.read(OUTPUT_CAP).decode(errors="replace").strip()
    if code == 0:
        return True, text
    return False, f"command {argv} exited with {code}" + (f": {text}" if text else "")


# --- the monitor ----------------------------------------------------------------------------------

@dataclass
class CheckResult:
    next_in: float | None = None  # seconds until a probe is due; None: nothing to probe
    changed: bool = False  # some container's readiness or liveness verdict changed
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (pod, container, message) to restart
    probed: int = 0


def _specs(desired: DesiredState | Iterable[DesiredPod]) -> dict[str, DesiredPod]:
    pods = desired.pods.values() if isinstance(desired, DesiredState) else desired
    return {p.uid: p for p in pods}


class HealthMonitor:
    """Runs due probes for the desired pods that run on the host; callable as a HealthHook."""

    def __init__(self, drivers: Drivers, state: StateStore, *, workers: int = 8,
                 clock: Callable[[], float] = time.time):
        self.drivers = drivers
        self.state = state
        self.workers = workers
        self.clock = clock

    def __call__(self, desired: DesiredState, observed: ObservedHost, now: float) -> float | None:
        return self.check(desired, observed, now).next_in

    def check(self, desired: DesiredState | Iterable[DesiredPod], observed: ObservedHost,
              now: float | None = None) -> CheckResult:
        now = self.clock() if now is None else now
        pods = _specs(desired)
        uids = [u for u in observed.pods if u in pods]
        stored = {cid: ContainerHealth.from_json(r) for cid, r in self.state.keepers.probe_records(uids).items()}
        records: dict[str, ContainerHealth] = {}
        targets: dict[str, Target] = {}
        jobs: list[tuple[str, str]] = []
        dirty: set[str] = set()
        for uid in uids:
            d, o = pods[uid], observed.pods[uid]
            if o.infra is None or o.infra.state != ContainerState.RUNNING:
                continue
            netns = ""
            if d.network:
                info = self.drivers.runtime.infra_info(uid)
                netns = info.namespaces.get("network", "") if info else ""
                if not netns and self.drivers.probe is None:
                    continue  # the infra vanished since the relist: the diff heals the pod first
            pod_ip = o.network.status.ip if o.network is not None else ""
            for dc in d.containers:
                c = o.containers.get(dc.name)
                if c is None or c.state != ContainerState.RUNNING or not has_probes(dc.spec):
                    continue
                before = stored.get(c.id)
                h = current(before, c, dc.spec)
                if h is not before:
                    dirty.add(c.id)
                records[c.id] = h
                targets[c.id] = Target(c.id, dc.name, dc.spec, netns, pod_ip)
                if h.failed:
                    continue
                jobs += [(c.id, k) for k in active(h, dc.spec) if due(h, dc.spec, k) <= now]
        result = CheckResult(probed=len(jobs))
        if jobs:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)), thread_name_prefix="podplay-probes") \
                    as pool:
                futures = [(cid, kind, pool.submit(self._one, targets[cid], kind)) for cid, kind in jobs]
                answers = [(cid, kind, f.result()) for cid, kind, f in futures]
            done = self.clock()
            for cid, kind, (ok, message) in answers:
                h = records[cid]
                spec = targets[cid].spec
                new = record(h, spec, kind, ok, message, done)
                if (new.ready, new.failed, new.started) != (h.ready, h.failed, h.started):
                    result.changed = True
                    self._note(h, new)
                    if new.failed and not h.failed:
                        result.failed.append((new.pod, new.name, new.message))
                records[cid] = new
                dirty.add(cid)
        if dirty:
            self.state.keepers.save_probes([(cid, h.pod_uid, h.pod, h.name, h.to_json())
                                            for cid, h in records.items() if cid in dirty])
        self.state.keepers.forget_probes(set(observed.pods))
        times = [t for cid, h in records.items() if (t := next_due(h, targets[cid].spec)) is not None]
        result.next_in = max(0.0, min(times) - self.clock()) if times else None
        return result

    def _one(self, target: Target, kind: str) -> tuple[bool, str]:
        probe = probe_of(target.spec, kind)
        assert probe is not None
        try:
            return run_probe(self.drivers, target, kind, probe)
        except PodplayError as exc:
            return False, str(exc)

    def _note(self, old: ContainerHealth, new: ContainerHealth) -> None:
        """An event per verdict change, for `podplay status` and the watch log."""
        who = f"container {new.name}"
        if new.failed and not old.failed:
            self.state.keepers.add_event("warning", new.pod, f"{who}: {new.message}; restarting it")
        elif new.started and not old.started:
            self.state.keepers.add_event("info", new.pod, f"{who}: startup probe succeeded")
        elif new.ready != old.ready:
            if new.ready:
                self.state.keepers.add_event("info", new.pod, f"{who} is ready")
            else:
                self.state.keepers.add_event("warning", new.pod, f"{who} is not ready: {new.message}")


# --- what others read ------------------------------------------------------------------------------

def readiness(state: StateStore, pod_uid: str, containers: Iterable[ObservedContainer] = ()) -> dict[str, bool]:
    """container name → ready, for the containers of one pod instance that have probes.

    A container missing from the answer has no probe (podplay counts it ready while it runs).
    Give the pod's observed `containers` to drop records of an earlier run of a container
    (restarted since it was last probed): such a container is not ready yet."""
    runs = {c.name: c.started_at for c in containers}
    out = {}
    for rec in state.keepers.probe_records([pod_uid]).values():
        h = ContainerHealth.from_json(rec)
        if runs and h.name in runs and runs[h.name] != h.started_at:
            out[h.name] = False
            continue
        out[h.name] = h.ready
    return out


def probe_details(state: StateStore, pod_uid: str) -> dict[str, ContainerHealth]:
    """container name → its full probe record (counters, last results and messages)."""
    return {h.name: h for h in (ContainerHealth.from_json(r) for r in state.keepers.probe_records([pod_uid]).values())}


def health_view(state: StateStore, desired: DesiredState, observed: ObservedHost, now: float | None = None
                ) -> dict[str, PodHealth]:
    """pod uid → PodHealth for every observed pod: what the diff and the rollout planner read."""
    now = time.time() if now is None else now
    pods = _specs(desired)
    stored = {cid: ContainerHealth.from_json(r) for cid, r in state.keepers.probe_records().items()}
    min_ready: dict[str, int] = {}
    for ref, loaded in desired.deployments.items():
        with contextlib.suppress(AttributeError):
            min_ready[ref] = loaded.obj.spec.min_ready_seconds
    out = {}
    for uid, o in observed.pods.items():
        d = pods.get(uid)
        specs: Mapping[str, Container] | None = {c.name: c.spec for c in d.containers} if d is not None else None
        owner = o.owner.split("/", 1)[1] if o.owner.split("/", 1)[0] in ROLLED_OUT_KINDS else ""
        out[uid] = pod_health(o, specs, stored, now, min_ready.get(owner, 0))
    return out


def unready_pods(desired: DesiredState, observed: ObservedHost, view: Mapping[str, PodHealth]) -> list[str]:
    """'<pod>: why' for each desired pod with a readiness (or startup) probe that is not ready."""
    out = []
    for d in sorted(desired.pods.values(), key=lambda p: p.ref):
        if not any(c.spec.readiness_probe or c.spec.startup_probe for c in d.containers):
            continue
        o: ObservedPod | None = observed.pods.get(d.uid)
        h = view.get(d.uid) if o is not None else None
        if h is None or not h.ready:
            out.append(f"{d.ref}: {h.detail if h else 'not running'}")
    return out
