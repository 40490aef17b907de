"""PURE  the probe state machine: Kubernetes' startup, liveness and readiness semantics.

A container's health is a small record per container *run* (its id and the time it started:
a restart begins a fresh record). ``due`` says when each probe runs next, ``record`` folds one
probe result into the record, and ``pod_health`` sums a pod's containers up for the engine:
ready, since when, available (ready for minReadySeconds), and which containers a failed
liveness or startup probe wants restarted.

The rules, as the kubelet applies them:

* ``initialDelaySeconds`` counts from the container's start; then a probe every ``periodSeconds``.
* A startup probe runs alone until it succeeds once; until then liveness and readiness do not
  run and the container is not ready. ``failureThreshold`` consecutive startup failures restart
  the container, like a liveness failure.
* Liveness: ``failureThreshold`` consecutive failures restart the container.
* Readiness: ready after ``successThreshold`` consecutive successes, unready after
  ``failureThreshold`` consecutive failures; a container with a readiness probe starts unready.
  A container without one is ready as soon as it runs (and its startup probe passed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from reconciler.model import codec
from reconciler.model.kube import Container, Probe
from reconciler.observed import ContainerState, ObservedContainer, ObservedPod

KINDS = ("startup", "liveness", "readiness")


def probe_of(spec: Container, kind: str) -> Probe | None:
    return {"startup": spec.startup_probe, "liveness": spec.liveness_probe,
            "readiness": spec.readiness_probe}[kind]


def has_probes(spec: Container) -> bool:
    return any(probe_of(spec, k) is not None for k in KINDS)


@dataclass(frozen=True)
class Track:
    """One probe's counters: consecutive successes and failures, the last result."""

    successes: int = 0
    failures: int = 0
    last: str = ""  # "" (never ran) | success | failure
    message: str = ""
    at: float = 0.0  # wall-clock time of the last result


@dataclass(frozen=True)
class ContainerHealth:
    """What the probes of one container run have found so far."""

    container_id: str
    pod_uid: str
    pod: str  # "<namespace>/<name>"
    name: str
    started_at: float  # the run this record belongs to
    started: bool = False  # the startup probe passed (True at once without one)
    ready: bool = False
    ready_since: float = 0.0
    failed: str = ""  # "liveness" | "startup": the probe whose failures want a restart
    failed_at: float = 0.0
    message: str = ""  # the last failure's message, for `ps`/`status`
    tracks: dict[str, Track] = field(default_factory=dict)

    def to_json(self) -> dict:
        return codec.to_data(self)

    @classmethod
    def from_json(cls, data: dict) -> ContainerHealth:
        return codec.from_data(cls, data)


def fresh(c: ObservedContainer, spec: Container) -> ContainerHealth:
    """The record a container run starts with: not ready while any probe has yet to pass."""
    started = spec.startup_probe is None
    ready = started and spec.readiness_probe is None
    return ContainerHealth(c.id, c.pod_uid, c.pod, c.name, c.started_at, started=started, ready=ready,
                           ready_since=c.started_at if ready else 0.0)


def active(h: ContainerHealth, spec: Container) -> list[str]:
    """The probes that run at this point of the container's life."""
    if not h.started:
        return ["startup"]
    return [k for k in ("liveness", "readiness") if probe_of(spec, k) is not None]


def due(h: ContainerHealth, spec: Container, kind: str) -> float:
    """Wall-clock time at which probe `kind` should run next."""
    probe = probe_of(spec, kind)
    assert probe is not None
    first = h.started_at + probe.initial_delay_seconds
    t = h.tracks.get(kind)
    if t is None or not t.at:
        return first
    return max(first, t.at + max(probe.period_seconds, 1))


def next_due(h: ContainerHealth, spec: Container) -> float | None:
    """When the next of its active probes is due; None when nothing is left to probe (a failed
    container waits for its restart)."""
    if h.failed:
        return None
    times = [due(h, spec, k) for k in active(h, spec)]
    return min(times) if times else None


def record(h: ContainerHealth, spec: Container, kind: str, ok: bool, message: str, now: float) -> ContainerHealth:
    """Fold one result of probe `kind` into the record."""
    probe = probe_of(spec, kind)
    assert probe is not None
    t = h.tracks.get(kind, Track())
    t = Track(t.successes + 1, 0, "success", message, now) if ok else Track(0, t.failures + 1, "failure", message, now)
    tracks = {**h.tracks, kind: t}
    h = replace(h, tracks=tracks)
    threshold = max(probe.failure_threshold, 1)
    if kind == "startup":
        if ok:
            h = replace(h, started=True)
            if spec.readiness_probe is None:
                h = replace(h, ready=True, ready_since=now)
        elif t.failures >= threshold:
            h = replace(h, failed="startup", failed_at=now, message=_why("startup", t, message))
    elif kind == "liveness":
        if not ok and t.failures >= threshold:
            h = replace(h, failed="liveness", failed_at=now, message=_why("liveness", t, message))
    elif kind == "readiness":
        if ok and not h.ready and t.successes >= max(probe.success_threshold, 1):
            h = replace(h, ready=True, ready_since=now, message="")
        elif not ok and h.ready and t.failures >= threshold:
            h = replace(h, ready=False, ready_since=0.0, message=_why("readiness", t, message))
        elif not ok and not h.ready:
            h = replace(h, message=_why("readiness", t, message))
    return h


def _why(kind: str, t: Track, message: str) -> str:
    times = f"{t.failures} time{'s' if t.failures != 1 else ''}"
    return f"{kind} probe failed {times}" + (f": {message}" if message else "")


def current(stored: ContainerHealth | None, c: ObservedContainer, spec: Container) -> ContainerHealth:
    """The stored record when it belongs to this run of the container, else a fresh one."""
    if stored is not None and stored.started_at == c.started_at and stored.pod_uid == c.pod_uid:
        return stored
    return fresh(c, spec)


# --- a pod as the engine sees it ----------------------------------------------------------------

@dataclass(frozen=True)
class PodHealth:
    """One observed pod instance, summed up for the diff and the rollout planner."""

    ready: bool = False
    ready_since: float = 0.0
    available: bool = False  # ready for at least minReadySeconds
    restart: dict[str, str] = field(default_factory=dict)  # container → why a probe wants it restarted
    failed_at: dict[str, float] = field(default_factory=dict)  # container → when that was decided
    unready: tuple[str, ...] = ()  # containers that keep the pod from being ready
    detail: str = ""


def _running(c: ObservedContainer | None) -> bool:
    return c is not None and c.state == ContainerState.RUNNING


def pod_health(o: ObservedPod, specs: Mapping[str, Container] | None, stored: Mapping[str, ContainerHealth],
               now: float, min_ready_seconds: float = 0.0) -> PodHealth:
    """Sum one observed pod up. `specs` are its containers' specs by name (None when podplay no
    longer knows them, e.g. an older revision: then stored records count, else running = ready);
    `stored` the probe records by container id."""
    if o.infra is None or o.infra.state != ContainerState.RUNNING or not o.containers:
        return PodHealth(detail="pod is not running")
    names = sorted(specs) if specs is not None else sorted(o.containers)
    since, unready, restart, failed_at, detail = 0.0, [], {}, {}, ""
    for name in names:
        c = o.containers.get(name)
        if not _running(c):
            # A container that ran to completion under a restart policy that keeps it stopped
            # does not make its pod unready in Kubernetes only when it succeeded; keep it simple:
            # an app container that is not running keeps the pod unready.
            unready.append(name)
            detail = detail or f"{name} is {c.state if c else 'missing'}"
            continue
        spec = specs.get(name) if specs is not None else None
        s = stored.get(c.id)
        if spec is not None:
            h = current(s, c, spec)
        elif s is not None and s.started_at == c.started_at:
            h = s
        else:
            h = None
        if h is None:
            since = max(since, c.started_at)
            continue
        if h.failed:
            restart[name] = h.message or f"{h.failed} probe failed"
            failed_at[name] = h.failed_at
        if not h.ready:
            unready.append(name)
            detail = detail or f"{name}: {h.message or 'not ready yet'}"
            continue
        since = max(since, h.ready_since or c.started_at)
    ready = not unready
    available = ready and (min_ready_seconds <= 0 or now - since >= min_ready_seconds)
    return PodHealth(ready=ready, ready_since=since if ready else 0.0, available=available, restart=restart,
                     failed_at=failed_at, unready=tuple(unready), detail=detail)


def observed_health(o: ObservedPod) -> PodHealth:
    """Without probe records: a pod is ready (and available) when all its app containers run."""
    return pod_health(o, None, {}, now=float("inf"))


def summarize(records: Iterable[ContainerHealth]) -> dict[str, bool]:
    """container name → ready, for one pod's records."""
    return {h.name: h.ready for h in records}
