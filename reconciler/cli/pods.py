"""ps and pods: the containers and pods podplay runs, with what the state store adds (probe
verdicts, keepers' restart schedules, which pods `podplay stop` stopped)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.cli.hostpods import CREATED, EXITED, RUNNING, UNKNOWN, read_host, select_pods, started
from reconciler.cli.table import render_table
from reconciler.errors import StateError

if TYPE_CHECKING:
    from reconciler.observed import ObservedContainer, ObservedPod, PortMapping


# --- pure formatting helpers ----------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """kubectl's AGE style: 45s, 3m20s, 12m, 5h3m, 30h, 3d4h, 40d, 2y30d, 9y."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if d < 365 * 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def age(since: float, now: float) -> str:
    return human_duration(now - since) if since else "-"


def format_port(p: PortMapping) -> str:
    """podman's notation: hostIP:hostPort->containerPort/protocol (0.0.0.0 when no hostIP)."""
    host = p.host_ip or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{p.host_port}->{p.container_port}/{p.protocol.lower()}"


def state_text(c: ObservedContainer, restart_at: float | None = None, now: float = 0.0) -> str:
    """``running``, ``exited (1)``; ``exited (1), back-off 40s`` while a keeper waits to restart it
    (``restart_at``: when, from ``pending_restarts``)."""
    if c.state == EXITED:
        code = "?" if c.exit_code is None else str(c.exit_code)
        text = f"exited ({code}{', OOM killed' if c.oom_killed else ''})"
        if restart_at is not None and restart_at > now:
            # Rounded up: "back-off 0s" would read as "no back-off" while the wait still runs.
            text += f", back-off {human_duration(math.ceil(restart_at - now))}"
        return text
    return str(c.state)


def rfc3339(ts: float) -> str | None:
    """UTC with microseconds, truncated (never rounded up: a printed time fed back to --since
    must not skip the line it was printed for)."""
    if not ts:
        return None
    whole = int(ts)
    micros = int((ts - whole) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def pod_status(pod: ObservedPod, stopped: bool = False, restarts: Mapping[str, float] | None = None,
               now: float = 0.0) -> str:
    """kubectl-like phase of one pod instance, from what the runtime shows.

    Unknown: the infra container is gone or lost its runtime state (a reboot), so the pod's
    namespaces are gone. CrashLoopBackOff (kubectl's word): an exited container that has
    been restarted before waits for its next restart (``restarts``: container id → when a
    keeper restarts it, from ``pending_restarts``). Pending: a container is created but not
    started (or not created yet). Running: every app container runs. When they all exited:
    Stopped (``stopped``: the last thing done to the pod was a ``podplay stop``), Succeeded
    (all exited 0), else Failed. Restarting: some exited container has been restarted before
    or, with others still running, exited with an error.
    """
    if pod.infra is None or pod.infra.state != RUNNING:
        return "Unknown"
    apps = list(pod.containers.values())
    if not apps:
        return "Pending"
    # The first restart after a crash is immediate (no back-off), so a pending one means the
    # container failed again after being restarted: a crash loop.
    if restarts and any(c.state == EXITED and c.restart_count >= 1 and restarts.get(c.id, 0.0) > now
                        for c in apps):
        return "CrashLoopBackOff"
    states = [c.state for c in apps]
    if any(s in (CREATED, UNKNOWN) for s in states):
        return "Pending"
    if all(s == RUNNING for s in states):
        return "Running"
    exited = [c for c in apps if c.state == EXITED]
    if len(exited) == len(apps):
        if stopped:
            return "Stopped"
        if all(c.exit_code == 0 for c in exited):
            return "Succeeded"
        if any(c.restart_count > 0 for c in exited):
            return "Restarting"
        return "Failed"
    if any(c.restart_count > 0 or c.exit_code != 0 for c in exited):
        return "Restarting"
    return "Running"


# --- ps and pods ----------------------------------------------------------------------------------

ROLE_ORDER = {"infra": 0, "init": 1, "app": 2}


def container_rows(pods: Sequence[ObservedPod], *, all_states: bool,
                   infra: bool) -> list[tuple[ObservedPod, ObservedContainer]]:
    rows = []
    for pod in pods:
        listed = list(pod.containers.values()) + list(pod.init_containers.values())
        if infra and pod.infra is not None:
            listed.append(pod.infra)
        for c in sorted(listed, key=lambda c: (ROLE_ORDER.get(c.role, 3), c.name)):
            if all_states or c.role == "infra" or c.state == RUNNING:
                rows.append((pod, c))
    return rows


def _ports(pod: ObservedPod) -> tuple[PortMapping, ...]:
    return pod.network.status.ports if pod.network is not None else ()


def _ip(pod: ObservedPod) -> str:
    return pod.network.status.ip if pod.network is not None else ""


def _ports_json(ports: Iterable[PortMapping]) -> list[dict]:
    return [{"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port,
             "protocol": p.protocol.lower()} for p in ports]


def container_json(pod: ObservedPod, c: ObservedContainer, keeping: Keeping | None = None) -> dict:
    """Stable field names of ``ps --output json`` (documented in the README)."""
    keeping = keeping or Keeping()
    return {
        "id": c.id, "namespace": pod.namespace, "pod": pod.name, "pod_uid": pod.uid,
        "name": c.name, "role": c.role, "image": c.image, "image_id": c.image_id,
        "state": str(c.state), "exit_code": c.exit_code, "oom_killed": c.oom_killed,
        "ready": keeping.ready(c) if c.role == "app" else None,
        "restarts": c.restart_count, "restart_at": rfc3339(keeping.restart_at(c) or 0.0), "pid": c.pid or None,
        "started_at": rfc3339(c.started_at), "finished_at": rfc3339(c.finished_at),
        "ip": _ip(pod) or None, "ports": _ports_json(_ports(pod)), "source": pod.source,
    }


def _show_namespace(pods: Iterable[ObservedPod]) -> bool:
    """A NAMESPACE column only when it tells something: a listed pod is outside 'default' (and
    the user did not choose the namespace with -n)."""
    return any(p.namespace != "default" for p in pods)


def ps_table(rows: Sequence[tuple[ObservedPod, ObservedContainer]], now: float, namespace: str | None = None,
             keeping: Keeping | None = None) -> str:
    keeping = keeping or Keeping()
    with_ns = namespace is None and _show_namespace(p for p, _ in rows)
    headers = (["NAMESPACE"] if with_ns else []) + ["POD", "CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS",
                                                    "PORTS", "IP", "AGE"]
    lines = []
    for pod, c in rows:
        name = "(infra)" if c.role == "infra" else f"{c.name} (init)" if c.role == "init" else c.name
        # Readiness is a property of app containers (Kubernetes counts only those); the infra
        # and init containers show "-".
        ready = "-" if c.role != "app" else "true" if keeping.ready(c) else "false"
        cells = [pod.name, name, c.image or "-", state_text(c, keeping.restart_at(c), now), ready,
                 str(c.restart_count), ",".join(format_port(p) for p in _ports(pod)) or "-", _ip(pod) or "-",
                 age(c.started_at, now)]
        lines.append(([pod.namespace] if with_ns else []) + cells)
    return render_table(headers, lines)


def pod_json(pod: ObservedPod, status: str, keeping: Keeping | None = None) -> dict:
    """Stable field names of ``pods --output json`` (documented in the README)."""
    keeping = keeping or Keeping()
    apps = sorted(pod.containers.values(), key=lambda c: c.name)
    return {
        "namespace": pod.namespace, "name": pod.name, "uid": pod.uid, "status": status,
        "ready": sum(1 for c in apps if keeping.ready(c)), "restarts": sum(c.restart_count for c in apps),
        "ip": _ip(pod) or None, "ports": _ports_json(_ports(pod)),
        "started_at": rfc3339(started(pod)), "source": pod.source, "owner": pod.owner,
        "owner_kind": owner_parts(pod.owner)[0], "owner_name": owner_parts(pod.owner)[2],
        "containers": [{"name": c.name, "state": str(c.state), "exit_code": c.exit_code,
                        "restarts": c.restart_count, "ready": keeping.ready(c),
                        "restart_at": rfc3339(keeping.restart_at(c) or 0.0)} for c in apps],
        "init_containers": [{"name": c.name, "state": str(c.state), "exit_code": c.exit_code}
                            for c in sorted(pod.init_containers.values(), key=lambda c: c.name)],
    }


def _display_source(source: str) -> str:
    if not source or source == "-":
        return source or "-"
    try:
        rel = os.path.relpath(source)
    except ValueError:
        return source
    return rel if not rel.startswith("..") else source


def owner_parts(owner: str) -> tuple[str, str, str]:
    """(kind, namespace, name) of an owner label ("Deployment/default/web"); empty parts if unset."""
    kind, _, rest = owner.partition("/")
    namespace, _, name = rest.partition("/")
    return (kind, namespace, name) if name else ("", "", "")


def owner_text(pod: ObservedPod) -> str:
    """The pod's owner as kubectl names an object, kind/name ("Job/backup"); the namespace is
    the pod's own (its column when several show)."""
    kind, namespace, name = owner_parts(pod.owner)
    if not name:
        return "-"
    return f"{kind}/{name}" if namespace == pod.namespace else f"{kind}/{namespace}/{name}"


def pods_table(pods: Sequence[ObservedPod], statuses: dict[str, str], now: float, namespace: str | None = None,
               keeping: Keeping | None = None) -> str:
    keeping = keeping or Keeping()
    with_ns = namespace is None and _show_namespace(pods)
    headers = (["NAMESPACE"] if with_ns else []) + ["NAME", "READY", "STATUS", "RESTARTS", "IP", "AGE", "OWNER",
                                                           "SOURCE"]
    lines = []
    for pod in pods:
        apps = pod.containers.values()
        cells = [pod.name, f"{sum(1 for c in apps if keeping.ready(c))}/{len(apps)}", statuses[pod.uid],
                 str(sum(c.restart_count for c in apps)), _ip(pod) or "-", age(started(pod), now),
                 owner_text(pod), _display_source(pod.source)]
        lines.append(([pod.namespace] if with_ns else []) + cells)
    return render_table(headers, lines)


# --- what the state store adds: readiness, pending restarts, stopped pods --------------------------
#
# The runtime knows whether a container runs, not whether its readiness probe passed nor when a
# keeper will restart it. Both live in the state store, written by the processes that decide
# them: the HealthMonitor saves each container's probe record (probes table), and a running
# `podplay watch`/`sync` publishes its crash-loop schedule (sources table, "backoff": container
# id → {until, restarts, …}, computed by reconciler.watch.backoff.restart_at from the same
# observed containers). `ps` reads them through the store's read-only view
# (reconciler.store.view): no StateStore, no probe state machine, no desired state, so nothing
# heavy is imported on its path.

@dataclass
class Keeping:
    """Readiness and pending restarts of the listed containers, and which pods were stopped.
    Empty (every running container ready, nothing pending) when there is no state store."""

    probes: dict[str, dict[str, bool]] = field(default_factory=dict)  # pod uid → container → ready
    restarts: dict[str, float] = field(default_factory=dict)  # container id → when a keeper restarts it
    stopped: set[str] = field(default_factory=set)  # pod uids whose last transaction was `podplay stop`

    def ready(self, c: ObservedContainer) -> bool:
        """Running, and its readiness (and startup) probes passed; without probes running is ready
        (Kubernetes' rule). A container with probes and no verdict yet (none has run, or no
        keeper runs them) is not ready."""
        from reconciler.observed import LABEL_PROBE_GATED

        gated = c.labels.get(LABEL_PROBE_GATED) == "true"
        return c.state == RUNNING and self.probes.get(c.pod_uid, {}).get(c.name, not gated)

    def restart_at(self, c: ObservedContainer) -> float | None:
        return self.restarts.get(c.id) if c.state == EXITED else None


def probe_readiness(rows: Iterable[tuple[str, dict]], pods: Iterable[ObservedPod]) -> dict[str, dict[str, bool]]:
    """pod uid → container name → ready, from (pod uid, probe record) rows of the probes table.

    The rule of ``reconciler.health.readiness``: a record belongs to one run of its container (its
    ``started_at``); a container restarted since has probes but no verdict yet, so it is not ready.
    (A unit test holds the two to the same answers.)"""
    runs = {p.uid: {c.name: c.started_at for c in p.containers.values()} for p in pods}
    out: dict[str, dict[str, bool]] = {}
    for uid, rec in rows:
        name = rec.get("name", "")
        started = runs.get(uid, {})
        fresh = name not in started or started[name] == rec.get("started_at")
        out.setdefault(uid, {})[name] = bool(rec.get("ready", False)) and fresh
    return out


def pending_restarts(keepers: Iterable[dict], pods: Iterable[ObservedPod], now: float,
                     alive: Callable[[int], bool] | None = None) -> dict[str, float]:
    """container id → when it will be restarted, for exited containers that a live keeper holds in
    crash-loop back-off. Without a live keeper nothing restarts an exited container (``up`` runs
    once), so nothing is pending. A schedule entry counts only for the container run it was made
    for (same restart count): a container restarted and exited again since waits for the keeper's
    next relist to be scheduled anew."""
    if alive is None:
        from reconciler.store.keepers import keeper_alive as alive  # not for `podplay --help`
    schedule: dict[str, dict] = {}
    for rec in keepers:
        if rec.get("running") and alive(int(rec.get("pid") or 0)):
            schedule.update(rec.get("backoff") or {})
    out = {}
    for pod in pods:
        for c in pod.containers.values():
            b = schedule.get(c.id)
            if b is None or c.state != EXITED or b.get("restarts") != c.restart_count:
                continue
            until = float(b.get("until") or 0.0)
            if until > now:
                out[c.id] = until
    return out


def read_keeping(ctx, pods: Sequence[ObservedPod], now: float, *, stopped: bool = False) -> Keeping:
    """The state store's rows about ``pods``, read-only (`ps` never creates a store; one it
    cannot read adds nothing). ``stopped``: also which of them were last stopped with
    `podplay stop` (``pods`` needs it, ``ps`` not)."""
    uids = sorted({p.uid for p in pods})
    if not uids:
        return Keeping()
    from reconciler.store.view import open_view

    try:
        view = open_view(ctx.paths.state_db)
        if view is None:
            return Keeping()
        with view:
            probe_rows = view.keepers.probes_by_pod(uids)
            keepers = list(view.keepers.sources().values())
            # Asked only about pods whose containers all exited: the others are not Stopped.
            last = view.journal.stopped_pods(sorted(
                p.uid for p in pods if p.containers and all(c.state == EXITED for c in p.containers.values())
            )) if stopped else set()
    except (StateError, ValueError):
        return Keeping()
    return Keeping(probe_readiness(probe_rows, pods), pending_restarts(keepers, pods, now), last)


def cmd_ps(args, ctx) -> int:
    view = read_host(ctx)
    try:
        pods = select_pods(view.pods, args.pods, args.namespace)
    finally:
        view.close()
    rows = container_rows(pods, all_states=args.all, infra=args.infra)
    if args.quiet:
        for _, c in rows:
            print(c.id, file=ctx.out)
        return 0
    now = time.time()
    keeping = read_keeping(ctx, pods, now)
    if args.output == "json":
        import json

        json.dump([container_json(p, c, keeping) for p, c in rows], ctx.out, indent=2)
        print(file=ctx.out)
    else:
        print(ps_table(rows, now, args.namespace, keeping), file=ctx.out)
    return 0


def cmd_pods(args, ctx) -> int:
    view = read_host(ctx)
    try:
        pods = select_pods(view.pods, args.pods, args.namespace)
    finally:
        view.close()
    if args.quiet:
        for p in pods:
            print(p.key, file=ctx.out)
        return 0
    now = time.time()
    keeping = read_keeping(ctx, pods, now, stopped=True)
    statuses = {p.uid: pod_status(p, p.uid in keeping.stopped, keeping.restarts, now) for p in pods}
    if args.output == "json":
        import json

        json.dump([pod_json(p, statuses[p.uid], keeping) for p in pods], ctx.out, indent=2)
        print(file=ctx.out)
    else:
        print(pods_table(pods, statuses, now, args.namespace, keeping), file=ctx.out)
    return 0

