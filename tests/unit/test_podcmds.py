"""The planners of `podplay stop`, `start` and `rm`, table-driven: observed pods in, transactions
(kind, key, steps) or a refusal out."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.errors import EXIT_INVALID, NotFoundError
from reconciler.observed import ContainerState, ObservedContainer, ObservedHost
from reconciler.plan import Plan, TxnKind
from reconciler.podcmds import RefusedError, needs_start, plan_rm, plan_start, plan_stop
from reconciler.steps import PullImage, RestartContainer, StopContainers
from tests.unit.test_diff_plan import desired, running

RUN, EXITED, CREATED, PAUSED = (ContainerState.RUNNING, ContainerState.EXITED, ContainerState.CREATED,
                                ContainerState.PAUSED)
D = desired("web", "db", container="imagePullPolicy: Always")


def pod(ref: str, state=RUN, *, infra=RUN, init: ContainerState | None = None, grace: int = 30):
    p = running(D, ref, state=state, infra_state=infra, exit_code=None if state != EXITED else 0)
    if init is not None:
        p = dataclasses.replace(p, init_containers={"setup": ObservedContainer(
            f"{p.uid}.setup", p.uid, ref, "setup", "init", init)})
    return dataclasses.replace(p, grace_period=grace)


def host(*pods) -> ObservedHost:
    return ObservedHost(pods={p.uid: p for p in pods})


def shape(plan: Plan) -> list[tuple[str, str, list[str]]]:
    return [(str(t.kind), t.key, [type(s.step).__name__ for s in t.steps]) for t in plan.txns]


def stops(plan: Plan) -> list[tuple[tuple[str, ...], int]]:
    return [(s.step.container_ids, s.step.timeout) for t in plan.txns for s in t.steps
            if isinstance(s.step, StopContainers)]


# --- stop -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("app,init,timeout,expect_stop,note", [
    (RUN, None, None, (("app",), 30), None),
    (RUN, None, 3, (("app",), 3), None),
    (PAUSED, None, None, (("app",), 30), None),
    (CREATED, None, None, (("app",), 30), None),  # runc would start it later: stopped too
    (RUN, RUN, None, (("app", "setup"), 30), None),  # a running init container is stopped with the apps
    (EXITED, None, None, None, "default/web is not running"),
    (EXITED, EXITED, 5, None, "default/web is not running"),
])
def test_stop(app, init, timeout, expect_stop, note):
    p = pod("default/web", app, init=init)
    req = plan_stop(host(p), [p.uid], timeout=timeout)
    if expect_stop is None:
        assert req.plan.empty and req.notes == (note,)
        return
    names, secs = expect_stop
    assert shape(req.plan) == [("stop", "default/web", ["StopContainers"])]
    assert req.plan.txns[0].kind is TxnKind.STOP and req.plan.txns[0].uid == p.uid
    assert stops(req.plan) == [(tuple(f"{p.uid}.{n}" for n in names), secs)] and req.notes == ()


def test_stop_uses_each_pods_grace_period_and_orders_by_name():
    web, db = pod("default/web", grace=7), pod("default/db", EXITED)
    req = plan_stop(host(web, db), [web.uid, db.uid, web.uid])
    assert [(t.id, t.key) for t in req.plan.txns] == [("t1", "default/web")]
    assert stops(req.plan) == [((f"{web.uid}.app",), 7)]
    assert req.notes == ("default/db is not running",)
    assert Plan.from_json(req.plan.to_json()).txns == req.plan.txns  # a stop plan is data like any other


# --- rm ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("app,init,force,timeout,refused,expect_stop", [
    (EXITED, None, False, None, False, None),
    (CREATED, None, False, None, False, None),  # created, never started: nothing to stop
    (RUN, None, False, None, True, None),
    (PAUSED, None, False, None, True, None),
    (EXITED, RUN, False, None, True, None),  # a running init container counts
    (RUN, None, True, None, False, 30),
    (RUN, None, True, 2, False, 2),
])
def test_rm(app, init, force, timeout, refused, expect_stop):
    p = pod("default/web", app, init=init)
    if refused:
        with pytest.raises(RefusedError) as err:
            plan_rm(host(p), [p.uid], force=force, timeout=timeout)
        assert err.value.exit_code == EXIT_INVALID
        assert "default/web is running" in str(err.value) and "-f" in str(err.value)
        return
    req = plan_rm(host(p), [p.uid], force=force, timeout=timeout)
    [(kind, key, steps)] = shape(req.plan)
    assert (kind, key) == ("delete", "default/web") and steps[-1] == "RemoveSnapshot"
    assert ("StopContainers" in steps) == (expect_stop is not None)
    if expect_stop is not None:
        assert [secs for _, secs in stops(req.plan)] == [expect_stop]
    assert [c.action for c in req.plan.changes] == ["delete"]


def test_rm_names_every_running_pod_in_its_refusal():
    web, db = pod("default/web"), pod("default/db")
    with pytest.raises(RefusedError, match=r"default/db, default/web are running: `podplay stop` them"):
        plan_rm(host(web, db), [web.uid, db.uid])


# --- start ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("app,infra,expect,note", [
    (EXITED, RUN, [("start", ["RestartContainer"])], None),
    # infra gone: the same instance again (its free space checked first; no snapshot of its own prepared)
    (RUN, ContainerState.EXITED, [("prepare", ["CheckFreeSpace"]), ("delete", None), ("create", None)], None),
    (RUN, RUN, [], "default/web is already running"),
])
def test_start(app, infra, expect, note):
    p = pod("default/web", app, infra=infra)
    d = D.pods["default/web"]
    req = plan_start(host(p), [p], {p.uid: d})
    got = [(kind, steps) for kind, key, steps in shape(req.plan) if kind != "shared"]
    assert [k for k, _ in got] == [k for k, _ in expect]
    for (_, steps), (_, want) in zip(got, expect, strict=True):
        assert want is None or steps == want
    assert req.notes == ((note,) if note else ())
    if expect:
        assert all(t.uid == p.uid for t in req.plan.txns if t.kind != TxnKind.SHARED)
        # The image the pod was made from, as stored here: `start` never asks a registry.
        pulls = [s.step for t in req.plan.txns for s in t.steps if isinstance(s.step, PullImage)]
        assert pulls and all(s.policy == "IfNotPresent" for s in pulls)


def test_start_restarts_only_the_containers_that_are_not_running():
    d = desired("web", container="imagePullPolicy: Never")
    p = running(d, "default/web", state=EXITED, exit_code=1)
    req = plan_start(host(p), [p], {p.uid: d.pods["default/web"]})
    restarts = [s.step for t in req.plan.txns for s in t.steps if isinstance(s.step, RestartContainer)]
    assert [r.container for r in restarts] == ["app"]
    assert [s.step.policy for t in req.plan.txns for s in t.steps if isinstance(s.step, PullImage)] == ["Never"]


def test_start_of_a_pod_removed_meanwhile_is_not_found():
    p = pod("default/web", EXITED)
    with pytest.raises(NotFoundError, match="default/web was removed meanwhile"):
        plan_start(host(), [p], {p.uid: D.pods["default/web"]})


def test_start_without_a_desired_pod_needs_nothing():
    p = pod("default/web", RUN)
    assert plan_start(host(p), [p], {}).notes == ("default/web is already running",)


@pytest.mark.parametrize("app,infra,needed", [
    (RUN, RUN, False), (EXITED, RUN, True), (CREATED, RUN, True), (RUN, EXITED, True),
])
def test_needs_start(app, infra, needed):
    assert needs_start(pod("default/web", app, infra=infra)) is needed
