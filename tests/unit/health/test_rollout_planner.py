"""The rolling-update planner, table-driven: given replicas and availability, the next wave."""

from __future__ import annotations

import pytest

from reconciler.model.kube import Deployment, DeploymentSpec, DeploymentStrategy, ObjectMeta, RollingUpdate
from reconciler.rollout import Instance, Replica, Strategy, plan_wave, progress, scaled, strategy_of


@pytest.mark.parametrize(("value", "total", "up", "want"), [
    ("25%", 3, True, 1), ("25%", 3, False, 0), ("25%", 4, True, 1), ("25%", 4, False, 1),
    ("50%", 5, True, 3), ("50%", 5, False, 2), ("100%", 3, False, 3), ("0%", 3, True, 0),
    (2, 10, True, 2), ("1", 3, False, 1), ("33%", 3, True, 1), ("34%", 3, False, 1),
])
def test_percentages_round_as_kubernetes_does(value, total, up, want):
    assert scaled(value, total, round_up=up) == want


def dep(replicas=3, surge="25%", unavailable="25%", kind="RollingUpdate") -> Deployment:
    return Deployment(ObjectMeta("web"), DeploymentSpec(replicas=replicas, strategy=DeploymentStrategy(
        kind, RollingUpdate(surge, unavailable))))


@pytest.mark.parametrize(("d", "ports", "want"), [
    (dep(), False, (1, 0)),
    (dep(surge=0, unavailable=0), False, (0, 1)),  # both zero: unavailable becomes 1
    (dep(), True, (0, 1)),  # hostPorts: no surge
    (dep(replicas=10, surge="30%", unavailable="20%"), False, (3, 2)),
    (dep(replicas=3, surge=2, unavailable=1), True, (0, 1)),
])
def test_strategy_resolution(d, ports, want):
    s = strategy_of(d, ports)
    assert (s.max_surge, s.max_unavailable) == want


def test_recreate_takes_everything_down_first():
    s = strategy_of(dep(kind="Recreate"), False)
    assert s.recreate and s.max_surge == 0
    wave = plan_wave([old(0), old(1), old(2)], s)
    assert wave.replace == ("r0", "r1", "r2")


def old(i, available=True) -> Replica:
    return Replica(f"r{i}", None, (Instance(f"old{i}", available),))


def both(i, new_available) -> Replica:
    return Replica(f"r{i}", Instance(f"new{i}", new_available), (Instance(f"old{i}", True),))


def new(i, available=True) -> Replica:
    return Replica(f"r{i}", Instance(f"new{i}", available), ())


def wave_of(replicas, surge, unavailable, n=None):
    w = plan_wave(replicas, Strategy(n or len(replicas), surge, unavailable))
    return {"create": w.create, "replace": w.replace, "drop": w.drop_old, "waiting": w.waiting, "held": w.held}


CASES = [
    # (replicas, surge, unavailable, expected wave)
    ("surge 1: one new beside the old", [old(0), old(1), old(2)], 1, 0,
     {"create": ("r0",), "replace": (), "drop": (), "waiting": (), "held": ("r1", "r2")}),
    ("surge 1: wait while the new one is unready", [both(0, False), old(1), old(2)], 1, 0,
     {"create": (), "replace": (), "drop": (), "waiting": ("r0",), "held": ("r1", "r2")}),
    ("surge 1: ready → drop old, next one starts", [both(0, True), old(1), old(2)], 1, 0,
     {"create": ("r1",), "replace": (), "drop": ("r0",), "waiting": (), "held": ("r2",)}),
    ("unavailable 1: replace one in place", [old(0), old(1), old(2)], 0, 1,
     {"create": (), "replace": ("r0",), "drop": (), "waiting": (), "held": ("r1", "r2")}),
    ("unavailable 1: the replaced one is not ready yet", [new(0, False), old(1), old(2)], 0, 1,
     {"create": (), "replace": (), "drop": (), "waiting": ("r0",), "held": ("r1", "r2")}),
    ("unavailable 1: ready → next", [new(0), old(1), old(2)], 0, 1,
     {"create": (), "replace": ("r1",), "drop": (), "waiting": (), "held": ("r2",)}),
    ("surge 1 + unavailable 1: two at once", [old(0), old(1), old(2)], 1, 1,
     {"create": ("r0",), "replace": ("r1",), "drop": (), "waiting": (), "held": ("r2",)}),
    ("an unavailable old replica is replaced at once, within the budget", [old(0, False), old(1), old(2)], 0, 1,
     {"create": (), "replace": ("r0",), "drop": (), "waiting": (), "held": ("r1", "r2")}),
    ("a replica with nothing gets its new instance; surge still allows one", [new(0), old(1), Replica("r2")], 1, 0,
     {"create": ("r2", "r1"), "replace": (), "drop": (), "waiting": (), "held": ()}),
    ("a missing replica takes its place in the surge budget", [new(0), old(1), old(2), Replica("r3")], 1, 0,
     {"create": ("r3", "r1"), "replace": (), "drop": (), "waiting": (), "held": ("r2",)}),
    ("done", [new(0), new(1), new(2)], 1, 0,
     {"create": (), "replace": (), "drop": (), "waiting": (), "held": ()}),
    ("rollback: the bad new instances are the old ones now",
     [Replica("r0", Instance("good0", True), (Instance("bad0", False),)), old(1), old(2)], 1, 0,
     {"create": ("r1",), "replace": (), "drop": ("r0",), "waiting": (), "held": ("r2",)}),
]


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "want"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_next_wave(replicas, surge, unavailable, want):
    assert wave_of(replicas, surge, unavailable) == want


def test_simulated_rollouts_keep_the_bounds():
    """Drive whole rollouts (new instances become available one wave after creation) and check
    the invariants at every step, for many shapes."""
    for n in range(1, 7):
        for surge in range(0, 3):
            for unavailable in range(0, 3):
                s = Strategy(n, surge, unavailable or (0 if surge else 1))
                reps = [old(i) for i in range(n)]
                for _ in range(4 * n + 4):
                    w = plan_wave(reps, s)
                    nxt = []
                    for r in reps:
                        if r.ref in w.drop_old:
                            r = Replica(r.ref, r.new, ())
                        if r.ref in w.create:
                            r = Replica(r.ref, Instance("n" + r.ref, False), r.old)
                        if r.ref in w.replace:
                            r = Replica(r.ref, Instance("n" + r.ref, False), ())
                        nxt.append(r)
                    p = progress(nxt)
                    assert p.available >= n - s.max_unavailable, (n, surge, unavailable, nxt)
                    assert p.updated + p.old <= n + s.max_surge, (n, surge, unavailable, nxt)
                    # What was created becomes available before the next wave.
                    reps = [Replica(r.ref, Instance(r.new.uid, True) if r.new else None, r.old) for r in nxt]
                    if progress(reps).complete:
                        break
                assert progress(reps).complete, (n, surge, unavailable)
