"""PURE  (desired, observed, last applied) → the changes that make the host match.

A pod is identified by "<namespace>/<name>"; a pod *instance* by its uid (name + spec hash).
The observed host may hold several instances of one pod (an old and a new revision during a
rollout, or a leftover of a crash); exactly one of them can match the desired uid.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from reconciler.desired import DesiredPod, DesiredState
from reconciler.model.kube import ObjectKey
from reconciler.model.workloads import ROLLED_OUT_KINDS
from reconciler.observed import ContainerState, ObservedHost, ObservedPod
from reconciler.probes import PodHealth, observed_health
from reconciler.rollout import Instance, Move, Replica, Wave, plan_wave, strategy_of


class Action(enum.StrEnum):
    CREATE = "create"
    REPLACE = "replace"
    DELETE = "delete"
    START = "start"
    STOP = "stop"  # stop some containers and leave them (a finished pod's native sidecars)
    NOOP = "noop"


class Reason(enum.StrEnum):
    NEW = "new"
    SPEC_CHANGED = "spec changed"
    MISSING = "missing"
    EXITED = "exited"
    ORPHANED = "orphaned"
    FORCED = "forced"
    REQUESTED = "requested"  # podplay down
    INCOMPLETE = "incomplete"  # parts of the pod vanished (infra gone, runc state wiped)
    UNCHANGED = "unchanged"
    FINISHED = "finished"  # the app containers of a run-to-completion pod are done: its sidecars stop
    BACKING_OFF = "backing off"
    UNHEALTHY = "unhealthy"  # a liveness or startup probe failed
    ROLLOUT = "rolling update"  # an old revision's instance leaves: the new one is available
    ROLLOUT_WAIT = "rollout waiting"  # kept for now by maxSurge/maxUnavailable or readiness


@dataclass(frozen=True)
class AppliedPod:
    """What the state store remembers of a pod podplay created."""

    ref: str
    uid: str
    spec_hash: str
    source: str
    owner: str = ""


@dataclass(frozen=True)
class LastApplied:
    pods: dict[str, AppliedPod] = field(default_factory=dict)  # by ref
    claims: dict[str, str] = field(default_factory=dict)  # ref → source


@dataclass(frozen=True)
class Scope:
    """Which owned objects this pass may delete.

    ``paths`` are the manifest paths the user named: a pod is in scope when its source file is
    one of them or lies under one of them. ``prune`` is False when any source could not be read
    (or had errors): then nothing is pruned in this pass.
    """

    paths: tuple[str, ...] = ()
    prune: bool = True
    hold: frozenset[str] = frozenset()  # pod refs not to prune yet (a file may be half written)

    def covers(self, source: str) -> bool:
        if not source:
            return False
        for p in self.paths:
            p = p.rstrip("/") or "/"
            if source == p or source.startswith(p + "/"):
                return True
        return False


@dataclass(frozen=True)
class Change:
    key: ObjectKey
    action: Action
    reason: Reason
    before: str = ""  # uid of the observed instance this change removes or restarts
    after: str = ""  # uid of the desired instance this change creates
    containers: tuple[str, ...] = ()  # START: which containers; a back-off NOOP: which wait
    detail: str = ""
    move: Move | None = None  # what a rollout lets this replica do now (None: no rollout moves it)

    @property
    def settled(self) -> bool:
        """Nothing to do and nothing waiting (no back-off, no rollout step pending). Decisions
        read this, the action and the move; the reason and the detail are for people."""
        return self.action == Action.NOOP and not self.containers and self.move is None

    def to_json(self) -> dict:
        out = {"kind": self.key.kind, "namespace": self.key.namespace, "name": self.key.name,
               "action": str(self.action), "reason": str(self.reason), "before": self.before,
               "after": self.after, "containers": list(self.containers), "detail": self.detail}
        if self.move is not None:
            out["move"] = str(self.move)
        return out

    @classmethod
    def from_json(cls, d: dict) -> Change:
        return cls(ObjectKey(d["kind"], d["namespace"], d["name"]), Action(d["action"]), Reason(d["reason"]),
                   d.get("before", ""), d.get("after", ""), tuple(d.get("containers", ())), d.get("detail", ""),
                   Move(d["move"]) if d.get("move") else None)


# Kubernetes' crash-loop back-off: 10 s doubling up to 5 min; reset after 10 min of running.
BACKOFF_BASE = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0


def restart_delay(restart_count: int) -> float:
    if restart_count <= 0:
        return 0.0
    # The exponent is capped: past a few doublings the delay is BACKOFF_MAX anyway, and 2.0**1024
    # overflows a float (a container crash-looping for days under `watch`).
    return min(BACKOFF_BASE * 2 ** min(restart_count - 1, 32), BACKOFF_MAX)


def _pod_key(ref: str) -> ObjectKey:
    ns, name = ref.split("/", 1)
    return ObjectKey("Pod", ns, name)


def _broken(o: ObservedPod) -> str:
    """Why an observed instance cannot be kept as it is, or ''."""
    if o.infra is None:
        return "infra container is gone"
    if o.infra.state == ContainerState.UNKNOWN:
        return "runtime state is gone (host rebooted, run root wiped, or its conmon killed)"
    if o.infra.state != ContainerState.RUNNING:
        return f"infra container is {o.infra.state}"
    if o.lost_snapshots:
        names = ", ".join(k.split(".", 1)[-1] for k in o.lost_snapshots)
        return f"root filesystem gone (snapshot deleted or unmounted): {names}"
    return ""


def _needs_restart(d: DesiredPod, o: ObservedPod, now: float | None,
                   health: PodHealth | None = None) -> tuple[list[str], list[str], float]:
    """(containers to restart now, containers waiting in back-off, seconds until the next is due)."""
    policy = d.spec.restart_policy
    due, waiting, next_in = [], [], 0.0
    done = finished(d, o)
    for c in d.containers:
        if c.sidecar and done:
            continue  # a finished pod's sidecars are stopped, not restarted
        oc = o.containers.get(c.name)
        if oc is None:
            due.append(c.name)  # never created or removed behind our back
            continue
        if oc.state == ContainerState.UNKNOWN:
            due.append(c.name)
            continue
        if oc.state == ContainerState.RUNNING and health is not None and c.name in health.restart:
            # A failed liveness/startup probe: restarted like a crash, with the same back-off
            # counted from when the probe gave up (the container keeps running meanwhile).
            wait = 0.0 if now is None else \
                health.failed_at.get(c.name, 0.0) + restart_delay(oc.restart_count) - now
            if wait <= 0:
                due.append(c.name)
            else:
                waiting.append(c.name)
                next_in = wait if not next_in else min(next_in, wait)
            continue
        if oc.state != ContainerState.EXITED:
            continue
        # A sidecar is restarted whatever the pod's policy (its own restartPolicy is Always).
        if not c.sidecar and (policy == "Never" or (policy == "OnFailure" and oc.exit_code == 0)):
            continue
        if now is None:
            due.append(c.name)
            continue
        ran = (oc.finished_at - oc.started_at) if oc.started_at and oc.finished_at else 0.0
        delay = 0.0 if ran >= BACKOFF_RESET else restart_delay(oc.restart_count)
        wait = oc.finished_at + delay - now
        if wait <= 0:
            due.append(c.name)
        else:
            waiting.append(c.name)
            next_in = wait if not next_in else min(next_in, wait)
    return due, waiting, next_in


def compute_diff(desired: DesiredState, observed: ObservedHost, last: LastApplied, scope: Scope, *,
                 force: bool = False, now: float | None = None,
                 health: Mapping[str, PodHealth] | None = None) -> list[Change]:
    """Every change (including NOOPs) needed to make the host match `desired`.

    `now` enables crash-loop back-off for exited containers (``watch`` passes the clock);
    ``up`` passes None and restarts exited containers that their restart policy restarts.
    `health` (by pod uid, from the probes) says which instances are ready and which containers
    a failed liveness probe wants restarted; without it a pod whose containers run is ready.
    A Deployment's replicas whose revision changed roll out wave by wave (``rollout``): each
    pass does what maxSurge/maxUnavailable allow with the readiness it sees.
    """
    changes: list[Change] = claim_changes(desired, observed)
    by_ref = instances_by_ref(observed)
    moves = {} if force else rollout_moves(desired, by_ref, health_lookup(health))
    for ref in sorted(desired.pods):
        d = desired.pods[ref]
        instances = sorted(by_ref.pop(ref, []), key=lambda o: o.uid)
        current = next((o for o in instances if o.uid == d.uid), None)
        stale = [o for o in instances if o is not current]
        move, why = moves.get(ref, (None, ""))
        h = health.get(current.uid) if health is not None and current is not None else None
        mine = _desired_pod(d, current, stale, move, why, ref in last.pods, force=force, now=now, health=h)
        # A move marks a replica between revisions; a replica created for the first time is not
        # part of a rollout (`up` follows rollouts, not first starts).
        changes += [replace(c, move=move) for c in mine] if move is not None and stale else mine
    changes += _undesired(by_ref, last, scope)
    return changes


def instances_by_ref(observed: ObservedHost) -> dict[str, list[ObservedPod]]:
    """pod ref → its observed instances (several during a rollout or after a crash)."""
    by_ref: dict[str, list[ObservedPod]] = {}
    for o in observed.pods.values():
        by_ref.setdefault(o.key, []).append(o)
    return by_ref


def health_lookup(health: Mapping[str, PodHealth] | None) -> Callable[[ObservedPod], PodHealth]:
    """An instance's health from the probes' view, else from what the runtime shows."""
    def health_of(o: ObservedPod) -> PodHealth:
        h = health.get(o.uid) if health is not None else None
        return h if h is not None else observed_health(o)
    return health_of


def _desired_pod(d: DesiredPod, current: ObservedPod | None, stale: list[ObservedPod], move: Move | None, why: str,
                 known: bool, *, force: bool, now: float | None, health: PodHealth | None) -> list[Change]:
    """The changes for one desired pod: its instance that matches (`current`, if any) and
    older ones (`stale`); `move` is what a rollout lets this replica do now."""
    key = d.key
    if current is None:
        if move == Move.HOLD:
            return [Change(key, Action.NOOP, Reason.ROLLOUT_WAIT, before=stale[0].uid, after=d.uid, detail=why)]
        if move == Move.CREATE and stale:
            # Surge: the new instance starts beside the old one, which stays until it is available.
            return [Change(key, Action.CREATE, Reason.SPEC_CHANGED, after=d.uid,
                           detail="new revision beside the old instance")]
        if stale:
            out = [Change(key, Action.REPLACE, Reason.FORCED if force else Reason.SPEC_CHANGED,
                          before=stale[0].uid, after=d.uid)]
            stale = stale[1:]
        else:
            out = [Change(key, Action.CREATE, Reason.MISSING if known else Reason.NEW, after=d.uid)]
    elif d.hold:  # kept exactly as it is, even by --replace or a broken infra (see DesiredPod.hold)
        out = [Change(key, Action.NOOP, Reason.UNCHANGED, before=current.uid, after=d.uid, detail="held")]
    elif force:
        out = [Change(key, Action.REPLACE, Reason.FORCED, before=current.uid, after=d.uid)]
    elif why_broken := _broken(current):
        out = [Change(key, Action.REPLACE, Reason.INCOMPLETE, before=current.uid, after=d.uid, detail=why_broken)]
    else:
        out = [_running_pod(d, current, stale, move, now, health)]
    if current is not None and move == Move.WAIT:
        return out  # the old instances stay until the new one is available
    for o in stale:
        if move == Move.DROP:
            out.append(Change(key, Action.DELETE, Reason.ROLLOUT, before=o.uid, after=d.uid,
                              detail="superseded by the new revision, which is available"))
        else:
            out.append(Change(key, Action.DELETE, Reason.ORPHANED, before=o.uid,
                              detail="older instance of a desired pod"))
    return out


def finished(d: DesiredPod, o: ObservedPod) -> bool:
    """A run-to-completion pod (restartPolicy Never or OnFailure) whose app containers are done
    for good: each exited, and none will be restarted. Its native sidecars then stop, as the
    kubelet stops them, so that the pod (a Job's, say) completes."""
    if d.spec.restart_policy == "Always":
        return False
    apps = [c for c in d.containers if not c.sidecar]
    if not apps or len(apps) == len(d.containers):
        return False
    for c in apps:
        oc = o.containers.get(c.name)
        if oc is None or oc.state != ContainerState.EXITED:
            return False
        if d.spec.restart_policy == "OnFailure" and oc.exit_code != 0:
            return False
    return True


def _running_pod(d: DesiredPod, current: ObservedPod, stale: list[ObservedPod], move: Move | None,
                 now: float | None, h: PodHealth | None) -> Change:
    """A pod whose matching instance is whole: restart what is due, stop a finished pod's
    sidecars, or nothing."""
    key = d.key
    if finished(d, current):
        running = tuple(c.name for c in d.containers if c.sidecar and (oc := current.containers.get(c.name))
                        is not None and oc.state == ContainerState.RUNNING)
        if running:
            return Change(key, Action.STOP, Reason.FINISHED, before=current.uid, after=d.uid, containers=running,
                          detail="the app containers finished")
    due, waiting, next_in = _needs_restart(d, current, now, h)
    if due:
        missing = [n for n in due if n not in current.containers]
        unhealthy = [n for n in due if h is not None and n in h.restart and n in current.containers
                     and current.containers[n].state == ContainerState.RUNNING]
        reason = Reason.MISSING if missing else Reason.UNHEALTHY if unhealthy else Reason.EXITED
        detail = "; ".join(f"{n}: {h.restart[n]}" for n in unhealthy) if unhealthy and h else ""
        return Change(key, Action.START, reason, before=current.uid, after=d.uid, containers=tuple(due), detail=detail)
    if waiting:
        return Change(key, Action.NOOP, Reason.BACKING_OFF, before=current.uid, after=d.uid,
                      containers=tuple(waiting), detail=f"next restart in {next_in:.0f}s")
    if move == Move.WAIT and stale:
        return Change(key, Action.NOOP, Reason.ROLLOUT_WAIT, before=current.uid, after=d.uid,
                      detail="the new instance is not available yet; the old one stays")
    return Change(key, Action.NOOP, Reason.UNCHANGED, before=current.uid, after=d.uid)


def _undesired(by_ref: Mapping[str, list[ObservedPod]], last: LastApplied, scope: Scope) -> list[Change]:
    """Observed pods that nothing desires any more: pruned when this pass may prune their source."""
    out = []
    for ref in sorted(by_ref):
        for o in sorted(by_ref[ref], key=lambda o: o.uid):
            key = _pod_key(ref) if "/" in ref else ObjectKey("Pod", "", o.uid)
            applied = last.pods.get(ref)
            source = o.source or (applied.source if applied else "")
            if not ref:  # leftovers with no pod identity (a crash before the infra existed)
                out.append(Change(key, Action.DELETE, Reason.ORPHANED, before=o.uid, detail="leftover resources"))
            elif scope.prune and scope.covers(source) and ref not in scope.hold:
                out.append(Change(key, Action.DELETE, Reason.ORPHANED, before=o.uid, detail=f"no longer in {source}"))
    return out


def deployment_pods(desired: DesiredState) -> dict[str, list[DesiredPod]]:
    """Deployment ref → its replicas' desired pods, in ordinal order."""
    out: dict[str, list[DesiredPod]] = {}
    for d in desired.pods.values():
        if d.owner.kind in ROLLED_OUT_KINDS and d.ordinal is not None:
            out.setdefault(f"{d.owner.namespace}/{d.owner.name}", []).append(d)
    for pods in out.values():
        pods.sort(key=lambda d: d.ordinal or 0)
    return out


def replicas_of(pods: list[DesiredPod], by_ref: Mapping[str, list[ObservedPod]], health_of) -> list[Replica]:
    """What the rollout planner sees of a Deployment's replicas on the host."""
    out = []
    for d in pods:
        instances = sorted(by_ref.get(d.ref, []), key=lambda o: o.uid)
        new, old = None, []
        for o in instances:
            inst = Instance(o.uid, not _broken(o) and health_of(o).available)
            if o.uid == d.uid:
                new = inst
            else:
                old.append(inst)
        out.append(Replica(d.ref, new, tuple(old)))
    return out


def rollout_moves(desired: DesiredState, by_ref: Mapping[str, list[ObservedPod]], health_of
                  ) -> dict[str, tuple[Move, str]]:
    """pod ref → (what the rollout lets the replica do now, why) for every Deployment replica."""
    moves: dict[str, tuple[Move, str]] = {}
    for dep_ref, pods in deployment_pods(desired).items():
        loaded = desired.deployments.get(dep_ref)
        if loaded is None:
            continue
        host_ports = any(p.host_port for d in pods for c in d.spec.containers for p in c.ports)
        wave: Wave = plan_wave(replicas_of(pods, by_ref, health_of), strategy_of(loaded.obj, host_ports))
        for move, refs in ((Move.CREATE, wave.create), (Move.REPLACE, wave.replace), (Move.DROP, wave.drop_old),
                           (Move.WAIT, wave.waiting), (Move.HOLD, wave.held)):
            for ref in refs:
                moves[ref] = (move, wave.reasons.get(ref, ""))
    return moves


def compute_down(desired: DesiredState, observed: ObservedHost, last: LastApplied, scope: Scope,
                 *, remove_volumes: bool = False) -> list[Change]:
    """`podplay down`: every instance of every pod the manifests describe (or that came from
    them), and with `remove_volumes` the claims they use."""
    changes = []
    for o in sorted(observed.pods.values(), key=lambda o: (o.key, o.uid)):
        applied = last.pods.get(o.key)
        source = o.source or (applied.source if applied else "")
        if o.key in desired.pods or scope.covers(source):
            changes.append(Change(_pod_key(o.key), Action.DELETE, Reason.REQUESTED, before=o.uid))
    if remove_volumes:
        claims = set(desired.claims) | {ref for ref, src in last.claims.items() if scope.covers(src)}
        for ref in sorted(claims & set(observed.claims)):
            ns, name = ref.split("/", 1)
            changes.append(Change(ObjectKey("PersistentVolumeClaim", ns, name), Action.DELETE, Reason.REQUESTED))
    return changes


def claim_changes(desired: DesiredState, observed: ObservedHost) -> list[Change]:
    """Claims that must exist before the pods that use them start."""
    out = []
    for ref in sorted(desired.claims):
        if ref not in observed.claims:
            ns, name = ref.split("/", 1)
            out.append(Change(ObjectKey("PersistentVolumeClaim", ns, name), Action.CREATE, Reason.NEW))
    return out


def summarize(changes: Iterable[Change]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in changes:
        counts[str(c.action)] = counts.get(str(c.action), 0) + 1
    return counts
