"""Native sidecars (initContainers[] with restartPolicy: Always): where they are in the desired
pod, the order a plan starts and stops them in, their restarts, and what the loader says."""

from __future__ import annotations

import dataclasses

from reconciler.apply import sidecar_grace
from reconciler.diff import Action, Reason, compute_diff
from reconciler.manifests import load_objects
from reconciler.observed import LABEL_SIDECAR, ContainerState
from reconciler.plan import make_plan
from tests.unit.test_desired import desired_from, pod
from tests.unit.test_diff_plan import SCOPE, host, last, running

SIDECARS = """
restartPolicy: {policy}
initContainers:
- name: setup
  image: busybox:1.36
- name: proxy
  image: busybox:1.36
  restartPolicy: Always
  readinessProbe: {{exec: {{command: ["true"]}}}}
- name: migrate
  image: busybox:1.36
"""


def sidecar_pod(policy: str = "Always"):
    return desired_from(pod(name="a", extra_spec=SIDECARS.format(policy=policy)))


def test_a_sidecar_is_one_of_the_running_containers_not_a_run_to_completion_one():
    p = sidecar_pod().pods["default/a"]
    assert [c.name for c in p.init_containers] == ["setup", "migrate"]
    assert [(c.name, c.sidecar, c.init) for c in p.containers] == [("proxy", True, False), ("app", False, False)]


def test_the_plan_starts_it_in_its_place_among_the_inits_and_before_the_app():
    d = sidecar_pod()
    plan = make_plan(compute_diff(d, host(), last(), SCOPE), d, host())
    (create,) = [t for t in plan.txns if t.kind == "create"]
    by_id = {s.id: s for s in create.steps}

    def step(verb: str, name: str):
        (s,) = [s for s in create.steps if s.step.verb == verb and s.step.container == name]
        return s

    def before(a, b) -> bool:  # b depends (transitively) on a
        todo, seen = list(b.depends_on), set()
        while todo:
            sid = todo.pop()
            if sid == a.id:
                return True
            if sid not in seen and sid in by_id:
                seen.add(sid)
                todo += list(by_id[sid].depends_on)
        return False

    setup, migrate = step("RunInitContainer", "setup"), step("RunInitContainer", "migrate")
    proxy = step("StartContainer", "proxy")
    app = step("CreateContainer", "app")
    assert before(setup, step("CreateContainer", "proxy")) and before(proxy, migrate) and before(migrate, app)
    assert not [s for s in create.steps if s.step.verb == "RunInitContainer" and s.step.container == "proxy"]


def test_teardown_stops_the_app_containers_first_then_the_sidecars():
    d = sidecar_pod()
    ob = running(d, "default/a")
    ob = dataclasses.replace(ob, containers={
        n: dataclasses.replace(c, labels={LABEL_SIDECAR: "true"} if n == "proxy" else {})
        for n, c in ob.containers.items()})
    gone = desired_from(pod(name="b"))
    plan = make_plan(compute_diff(gone, host(ob), last(ob), SCOPE), gone, host(ob))
    (delete,) = [t for t in plan.txns if t.kind == "delete"]
    stop = delete.steps[0].step
    assert stop.verb == "StopContainers"
    assert stop.container_ids == (ob.containers["app"].id,) and stop.then_ids == (ob.containers["proxy"].id,)


def _with(ob, **states):
    """`ob` with some containers' state (and exit code 0) replaced."""
    return dataclasses.replace(ob, containers={
        n: dataclasses.replace(c, state=states[n], exit_code=0 if states[n] == ContainerState.EXITED else None,
                               labels={LABEL_SIDECAR: "true"} if n == "proxy" else {})
        if n in states else c for n, c in ob.containers.items()})


def test_a_sidecar_that_exits_is_restarted_whatever_the_pods_policy():
    d = sidecar_pod("Never")
    ob = _with(running(d, "default/a"), proxy=ContainerState.EXITED)  # the app still runs
    change = next(c for c in compute_diff(d, host(ob), last(ob), SCOPE) if c.key.name == "a")
    assert (change.action, change.reason) == (Action.START, Reason.EXITED)
    assert change.containers == ("proxy",)


def test_when_the_app_containers_of_a_run_to_completion_pod_finish_its_sidecars_are_stopped():
    d = sidecar_pod("Never")
    ob = _with(running(d, "default/a"), app=ContainerState.EXITED, proxy=ContainerState.RUNNING)
    change = next(c for c in compute_diff(d, host(ob), last(ob), SCOPE) if c.key.name == "a")
    assert (change.action, change.reason, change.containers) == (Action.STOP, Reason.FINISHED, ("proxy",))
    plan = make_plan([change], d, host(ob))
    (txn,) = plan.txns
    assert txn.kind == "stop" and txn.steps[0].step.container_ids == (ob.containers["proxy"].id,)
    assert plan.outcome(txn).verb == "stopped"

    stopped = _with(ob, proxy=ContainerState.EXITED)
    after = next(c for c in compute_diff(d, host(stopped), last(stopped), SCOPE) if c.key.name == "a")
    assert after.action == Action.NOOP, "a finished pod's sidecar is not restarted"
    always = sidecar_pod("Always")
    ob = _with(running(always, "default/a"), app=ContainerState.EXITED)
    change = next(c for c in compute_diff(always, host(ob), last(ob), SCOPE) if c.key.name == "a")
    assert (change.action, change.containers) == (Action.START, ("app",)), "an Always pod never finishes"


def test_sidecars_get_what_is_left_of_the_grace_period_and_at_least_two_seconds():
    assert sidecar_grace(30, 10.2) == 20
    assert sidecar_grace(30, 29.5) == 2
    assert sidecar_grace(1, 5) == 1
    assert sidecar_grace(0, 0) == 0


def test_restart_policy_is_an_init_containers_field_and_only_always():
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {
        "initContainers": [{"name": "i", "image": "busybox", "restartPolicy": "Never",
                            "readinessProbe": {"exec": {"command": ["true"]}}}],
        "containers": [{"name": "c", "image": "busybox", "restartPolicy": "Always"}]}}
    result = load_objects([bad])
    assert sorted((d.path, d.message) for d in result.diagnostics) == [
        ("spec.containers[0].restartPolicy", "only an init container takes a restartPolicy (Always makes it a "
         "sidecar); an app container follows the pod's restartPolicy"),
        ("spec.initContainers[0].readinessProbe", "init containers cannot have probes (they run to completion "
         "first); a sidecar (restartPolicy: Always) can"),
        ("spec.initContainers[0].restartPolicy", "'Never': an init container's restartPolicy can only be Always "
         "(a sidecar that keeps running beside the app containers)"),
    ]
    good = load_objects([{**bad, "spec": {**bad["spec"], "containers": [{"name": "c", "image": "busybox"}],
                                          "initContainers": [{**bad["spec"]["initContainers"][0],
                                                              "restartPolicy": "Always"}]}}])
    assert good.ok and not good.warnings
