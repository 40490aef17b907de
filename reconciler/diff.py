"""PURE  (desired, observed, last applied) → the changes that make the host match.

A pod is identified by "<namespace>/<name>"; a pod *instance* by its uid (name + spec hash).
The observed host may hold several instances of one pod (an old and a new revision during a
rollout, or a leftover of a crash); exactly one of them can match the desired uid.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from reconciler.desired import DesiredPod, DesiredState
from reconciler.model.kube import ObjectKey
from reconciler.observed import ContainerState, ObservedHost, ObservedPod


class Action(enum.StrEnum):
    CREATE = "create"
    REPLACE = "replace"
    DELETE = "delete"
    START = "start"
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
    BACKING_OFF = "backing off"


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
    containers: tuple[str, ...] = ()  # START: which containers
    detail: str = ""

    def to_json(self) -> dict:
        return {"kind": self.key.kind, "namespace": self.key.namespace, "name": self.key.name,
                "action": str(self.action), "reason": str(self.reason), "before": self.before,
                "after": self.after, "containers": list(self.containers), "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict) -> Change:
        return cls(ObjectKey(d["kind"], d["namespace"], d["name"]), Action(d["action"]), Reason(d["reason"]),
                   d.get("before", ""), d.get("after", ""), tuple(d.get("containers", ())), d.get("detail", ""))


# Kubernetes' crash-loop back-off: 10 s doubling up to 5 min; reset after 10 min of running.
BACKOFF_BASE = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0


def restart_delay(restart_count: int) -> float:
    if restart_count <= 0:
        return 0.0
    return min(BACKOFF_BASE * 2 ** (restart_count - 1), BACKOFF_MAX)


def _pod_key(ref: str) -> ObjectKey:
    ns, name = ref.split("/", 1)
    return ObjectKey("Pod", ns, name)


def _broken(o: ObservedPod) -> str:
    """Why an observed instance cannot be kept as it is, or ''."""
    if o.infra is None:
        return "infra container is gone"
    if o.infra.state == ContainerState.UNKNOWN:
        return "runtime state is gone (host rebooted?)"
    if o.infra.state != ContainerState.RUNNING:
        return f"infra container is {o.infra.state}"
    return ""


def _needs_restart(d: DesiredPod, o: ObservedPod, now: float | None) -> tuple[list[str], list[str], float]:
    """(containers to restart now, containers waiting in back-off, seconds until the next is due)."""
    policy = d.spec.restart_policy
    due, waiting, next_in = [], [], 0.0
    for c in d.containers:
        oc = o.containers.get(c.name)
        if oc is None:
            due.append(c.name)  # never created or removed behind our back
            continue
        if oc.state == ContainerState.UNKNOWN:
            due.append(c.name)
            continue
        if oc.state != ContainerState.EXITED:
            continue
        if policy == "Never" or (policy == "OnFailure" and oc.exit_code == 0):
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
                 force: bool = False, now: float | None = None) -> list[Change]:
    """Every change (including NOOPs) needed to make the host match `desired`.

    `now` enables crash-loop back-off for exited containers (``watch`` passes the clock);
    ``up`` passes None and restarts exited containers that their restart policy restarts.
    """
    changes: list[Change] = claim_changes(desired, observed)
    by_ref: dict[str, list[ObservedPod]] = {}
    for o in observed.pods.values():
        by_ref.setdefault(o.key, []).append(o)

    for ref in sorted(desired.pods):
        d = desired.pods[ref]
        key = d.key
        instances = sorted(by_ref.pop(ref, []), key=lambda o: o.uid)
        current = next((o for o in instances if o.uid == d.uid), None)
        stale = [o for o in instances if o is not current]
        if current is None:
            if stale:
                changes.append(Change(key, Action.REPLACE, Reason.FORCED if force else Reason.SPEC_CHANGED,
                                      before=stale[0].uid, after=d.uid))
                stale = stale[1:]
            else:
                reason = Reason.MISSING if ref in last.pods else Reason.NEW
                changes.append(Change(key, Action.CREATE, reason, after=d.uid))
        elif force:
            changes.append(Change(key, Action.REPLACE, Reason.FORCED, before=current.uid, after=d.uid))
        elif why := _broken(current):
            changes.append(Change(key, Action.REPLACE, Reason.INCOMPLETE, before=current.uid, after=d.uid,
                                  detail=why))
        else:
            due, waiting, next_in = _needs_restart(d, current, now)
            if due:
                missing = [n for n in due if n not in current.containers]
                reason = Reason.MISSING if missing else Reason.EXITED
                changes.append(Change(key, Action.START, reason, before=current.uid, after=d.uid,
                                      containers=tuple(due)))
            elif waiting:
                changes.append(Change(key, Action.NOOP, Reason.BACKING_OFF, before=current.uid, after=d.uid,
                                      containers=tuple(waiting), detail=f"next restart in {next_in:.0f}s"))
            else:
                changes.append(Change(key, Action.NOOP, Reason.UNCHANGED, before=current.uid, after=d.uid))
        for o in stale:
            changes.append(Change(key, Action.DELETE, Reason.ORPHANED, before=o.uid,
                                  detail="older instance of a desired pod"))

    # Observed pods that nothing desires any more.
    for ref in sorted(by_ref):
        for o in sorted(by_ref[ref], key=lambda o: o.uid):
            key = _pod_key(ref) if "/" in ref else ObjectKey("Pod", "", o.uid)
            applied = last.pods.get(ref)
            source = o.source or (applied.source if applied else "")
            if not ref:  # leftovers with no pod identity (a crash before the infra existed)
                changes.append(Change(key, Action.DELETE, Reason.ORPHANED, before=o.uid, detail="leftover resources"))
            elif scope.prune and scope.covers(source):
                changes.append(Change(key, Action.DELETE, Reason.ORPHANED, before=o.uid,
                                      detail=f"no longer in {source}"))
    return changes


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
