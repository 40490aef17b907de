"""PURE  the rolling-update planner: given each replica's instances and which are available,
what to do next — the Deployment controller's arithmetic, approximated pod by pod on one host.

A Deployment of N replicas runs pods ``<name>-0 … <name>-(N-1)``. During a rollout a replica
can have an instance of the old revision and one of the new (their uids differ). The planner
is level-triggered: every pass asks it again with what the host runs now, and it answers
with the next wave:

* a replica whose new instance is available drops its old instances;
* a replica with nothing at all gets its new instance (that never lowers availability);
* a replica whose old instances are all unavailable is replaced at once (nothing to protect);
* then, in ordinal order, new instances are created beside old ones while the total stays
  within N + maxSurge, and old instances are replaced in place while at least
  N − maxUnavailable replicas stay available.

maxSurge and maxUnavailable resolve as Kubernetes does: a percentage of N, surge rounded up,
unavailable rounded down; if both come out 0, unavailable becomes 1. hostPorts force surge 0
(two instances cannot bind one port), and so does the Recreate strategy (which also allows
every replica to be down at once).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from reconciler.model.kube import Deployment, IntOrStr


class Move(enum.StrEnum):
    """What a wave lets one replica do now."""

    CREATE = "create"  # its new instance starts beside the old one (surge)
    REPLACE = "replace"  # its old instance goes, the new one comes
    DROP = "drop"  # its new instance is available: the old ones go
    WAIT = "wait"  # its new instance runs but is not available yet: the old ones stay
    HOLD = "hold"  # maxSurge/maxUnavailable keep it on the old revision for now


def scaled(value: IntOrStr, total: int, *, round_up: bool) -> int:
    """An int-or-percent field resolved against `total` (Kubernetes' GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int):
        return max(value, 0)
    text = str(value).strip()
    if text.endswith("%"):
        pct = float(text[:-1] or 0)
        raw = pct * total / 100
        return max(math.ceil(raw - 1e-9) if round_up else math.floor(raw + 1e-9), 0)
    return max(int(text), 0)


@dataclass(frozen=True)
class Strategy:
    replicas: int
    max_surge: int
    max_unavailable: int
    min_ready_seconds: int = 0
    progress_deadline_seconds: int = 600
    recreate: bool = False

    def describe(self) -> str:
        if self.recreate:
            return "Recreate"
        return f"maxSurge {self.max_surge}, maxUnavailable {self.max_unavailable}"


def strategy_of(dep: Deployment, host_ports: bool) -> Strategy:
    spec = dep.spec
    n = spec.replicas
    common = {"min_ready_seconds": spec.min_ready_seconds,
              "progress_deadline_seconds": spec.progress_deadline_seconds}
    if spec.strategy.type == "Recreate":
        return Strategy(n, 0, max(n, 1), recreate=True, **common)
    ru = spec.strategy.rolling_update
    surge = scaled(ru.max_surge, n, round_up=True)
    unavailable = scaled(ru.max_unavailable, n, round_up=False)
    if host_ports:
        surge = 0
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return Strategy(n, surge, unavailable, **common)


@dataclass(frozen=True)
class Instance:
    uid: str
    available: bool


@dataclass(frozen=True)
class Replica:
    """One replica name: its instance of the wanted revision (if any) and any others."""

    ref: str
    new: Instance | None = None
    old: tuple[Instance, ...] = ()

    @property
    def available(self) -> bool:
        return (self.new is not None and self.new.available) or any(o.available for o in self.old)


@dataclass(frozen=True)
class Wave:
    """What to do now. Refs in each list; ``waiting`` are replicas whose new instance is not
    available yet, ``held`` replicas that keep their old instance for now."""

    create: tuple[str, ...] = ()  # new instance beside the old ones (surge) or where none exists
    replace: tuple[str, ...] = ()  # old instances out, new in (one transaction per replica)
    drop_old: tuple[str, ...] = ()  # the new instance is available: remove the old ones
    waiting: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)  # ref → why it is held

    @property
    def idle(self) -> bool:
        return not (self.create or self.replace or self.drop_old)


@dataclass(frozen=True)
class Progress:
    replicas: int
    updated: int  # replicas with an instance of the wanted revision
    available: int  # replicas with some available instance
    updated_available: int  # replicas whose wanted instance is available
    old: int  # instances of other revisions still on the host

    @property
    def complete(self) -> bool:
        return self.updated_available == self.replicas and self.old == 0

    def describe(self) -> str:
        return (f"{self.updated_available}/{self.replicas} updated and available, {self.available} available, "
                f"{self.old} old instance{'s' if self.old != 1 else ''} left")


def progress(replicas: list[Replica]) -> Progress:
    return Progress(
        replicas=len(replicas),
        updated=sum(1 for r in replicas if r.new is not None),
        available=sum(1 for r in replicas if r.available),
        updated_available=sum(1 for r in replicas if r.new is not None and r.new.available),
        old=sum(len(r.old) for r in replicas),
    )


def plan_wave(replicas: list[Replica], s: Strategy) -> Wave:
    """The next wave of a rolling update over `replicas` (in ordinal order)."""
    create, replace_, drop, waiting, held = [], [], [], [], []
    reasons: dict[str, str] = {}
    total = sum((1 if r.new else 0) + len(r.old) for r in replicas)
    available = sum(1 for r in replicas if r.available)
    pending: list[Replica] = []
    for r in replicas:
        if r.new is not None:
            if r.new.available:
                if r.old:
                    drop.append(r.ref)
                    total -= len(r.old)
            else:
                waiting.append(r.ref)
        elif not r.old:
            create.append(r.ref)
            total += 1
        elif not any(o.available for o in r.old):
            # Nothing available to protect: replace now (its old instances go in the same step).
            replace_.append(r.ref)
            total += 1 - len(r.old)
        else:
            pending.append(r)
    if s.recreate:
        # Every old instance goes before any new one starts.
        for r in pending:
            replace_.append(r.ref)
        return Wave(tuple(create), tuple(replace_), tuple(drop), tuple(waiting), (), reasons)
    floor = max(s.replicas - s.max_unavailable, 0)
    ceiling = s.replicas + s.max_surge
    for r in pending:
        if total < ceiling:
            create.append(r.ref)
            total += 1
        elif available - 1 >= floor:
            replace_.append(r.ref)
            available -= 1
            total += 1 - len(r.old)
        else:
            held.append(r.ref)
            reasons[r.ref] = (f"waiting: {available} available, at least {floor} must stay "
                              f"({s.describe()})")
    return Wave(tuple(create), tuple(replace_), tuple(drop), tuple(waiting), tuple(held), reasons)
