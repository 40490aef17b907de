"""compute_diff and make_plan, table-driven over small hand-made hosts."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.desired import DesiredState
from reconciler.diff import (
    Action,
    AppliedPod,
    Change,
    LastApplied,
    Reason,
    Scope,
    compute_diff,
    compute_down,
    restart_delay,
)
from reconciler.model.kube import ObjectKey
from reconciler.observed import (
    ContainerState,
    NetworkStatus,
    ObservedAttachment,
    ObservedContainer,
    ObservedHost,
    ObservedPod,
)
from reconciler.plan import WRITABLE_MIN, Plan, make_plan, writable_need
from tests.unit.test_desired import desired_from, pod

SRC = "/m/test.yaml"


def desired(*names: str, restart: str = "Always", **kw) -> DesiredState:
    return desired_from(*[pod(name=n, extra_spec=f"restartPolicy: {restart}", **kw) for n in names])


def running(d: DesiredState, ref: str, *, state=ContainerState.RUNNING, exit_code=None, uid=None,
            finished_at=0.0, started_at=0.0, restarts=0, infra_state=ContainerState.RUNNING,
            source=SRC) -> ObservedPod:
    p = d.pods[ref]
    uid = uid or p.uid
    infra = ObservedContainer(uid, uid, ref, "", "infra", infra_state)
    apps = {c.name: ObservedContainer(f"{uid}.{c.name}", uid, ref, c.name, "app", state, exit_code=exit_code,
                                      finished_at=finished_at, started_at=started_at, restart_count=restarts)
            for c in p.containers}
    return ObservedPod(uid, ref, p.spec_hash, source=source, infra=infra, containers=apps,
                       network=ObservedAttachment(uid, NetworkStatus("podplay", ip="10.0.0.2")),
                       snapshots=tuple(f"{uid}.{c.name}" for c in p.containers))


def host(*pods: ObservedPod) -> ObservedHost:
    return ObservedHost(pods={p.uid: p for p in pods})


def last(*pods: ObservedPod) -> LastApplied:
    return LastApplied(pods={p.key: AppliedPod(p.key, p.uid, p.spec_hash, SRC) for p in pods})


SCOPE = Scope(("/m",))


def only(changes, ref):
    (c,) = [c for c in changes if f"{c.key.namespace}/{c.key.name}" == ref]
    return c.action, c.reason


def test_new_missing_unchanged():
    d = desired("a", "b", "c")
    ob_c = running(d, "default/c")
    changes = compute_diff(d, host(ob_c), last(running(d, "default/b"), ob_c), SCOPE)
    assert only(changes, "default/a") == (Action.CREATE, Reason.NEW)
    assert only(changes, "default/b") == (Action.CREATE, Reason.MISSING)
    assert only(changes, "default/c") == (Action.NOOP, Reason.UNCHANGED)


def test_spec_change_and_force():
    old = desired("a")
    new = desired_from(pod(name="a", extra_spec="restartPolicy: Always").replace("1.36", "1.37"))
    ob = running(old, "default/a")
    assert only(compute_diff(new, host(ob), last(ob), SCOPE), "default/a") == (Action.REPLACE, Reason.SPEC_CHANGED)
    assert only(compute_diff(old, host(ob), last(ob), SCOPE, force=True), "default/a") == (Action.REPLACE,
                                                                                         Reason.FORCED)


@pytest.mark.parametrize(("infra_state", "expected"), [
    (ContainerState.EXITED, (Action.REPLACE, Reason.INCOMPLETE)),
    (ContainerState.UNKNOWN, (Action.REPLACE, Reason.INCOMPLETE)),
    (ContainerState.RUNNING, (Action.NOOP, Reason.UNCHANGED)),
])
def test_a_broken_infra_replaces_the_pod(infra_state, expected):
    d = desired("a")
    ob = running(d, "default/a", infra_state=infra_state)
    assert only(compute_diff(d, host(ob), last(ob), SCOPE), "default/a") == expected


@pytest.mark.parametrize(("policy", "code", "expected"), [
    ("Always", 0, (Action.START, Reason.EXITED)),
    ("Always", 1, (Action.START, Reason.EXITED)),
    ("OnFailure", 1, (Action.START, Reason.EXITED)),
    ("OnFailure", 0, (Action.NOOP, Reason.UNCHANGED)),
    ("Never", 1, (Action.NOOP, Reason.UNCHANGED)),
])
def test_restart_policy(policy, code, expected):
    d = desired("a", restart=policy)
    ob = running(d, "default/a", state=ContainerState.EXITED, exit_code=code)
    assert only(compute_diff(d, host(ob), last(ob), SCOPE), "default/a") == expected


@pytest.mark.parametrize(("restarts", "ran", "since_exit", "expected"), [
    (0, 5, 0, Action.START),  # first crash: restart at once
    (1, 5, 5, Action.NOOP),  # second: wait 10 s
    (1, 5, 11, Action.START),
    (3, 5, 39, Action.NOOP),  # 40 s
    (3, 5, 41, Action.START),
    (9, 5, 299, Action.NOOP),  # capped at 5 min
    (9, 5, 301, Action.START),
    (9, 601, 0, Action.START),  # ran for 10 min: back-off reset
])
def test_crash_loop_back_off(restarts, ran, since_exit, expected):
    d = desired("a")
    now = 10_000.0
    ob = running(d, "default/a", state=ContainerState.EXITED, exit_code=1, restarts=restarts,
                 started_at=now - since_exit - ran, finished_at=now - since_exit)
    assert only(compute_diff(d, host(ob), last(ob), SCOPE, now=now), "default/a")[0] == expected


def test_restart_delay_doubles_to_five_minutes():
    assert [restart_delay(n) for n in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]


def test_prune_needs_scope_and_readable_sources():
    d = desired("keep")
    gone = running(desired("gone"), "default/gone")
    other = running(desired("other"), "default/other", source="/elsewhere/x.yaml")
    keep = running(d, "default/keep")
    h = host(gone, other, keep)
    changes = compute_diff(d, h, last(gone, other, keep), SCOPE)
    assert only(changes, "default/gone") == (Action.DELETE, Reason.ORPHANED)
    assert not [c for c in changes if c.key.name == "other"]
    held = compute_diff(d, h, last(gone, other, keep), Scope(("/m",), prune=False))
    assert not [c for c in held if c.action == Action.DELETE]


def test_scope_covers_files_and_directories_not_prefixes():
    s = Scope(("/m/app", "/other/x.yaml"))
    assert s.covers("/m/app/a.yaml") and s.covers("/m/app/sub/b.yaml") and s.covers("/other/x.yaml")
    assert not s.covers("/m/application/a.yaml") and not s.covers("/other/x.yaml.bak") and not s.covers("")


def test_down_removes_every_instance_of_described_pods():
    d = desired("a")
    ob = running(d, "default/a")
    stale = running(d, "default/a", uid="0" * 12)
    changes = compute_down(d, host(ob, stale), last(ob), SCOPE)
    assert sorted(c.before for c in changes) == sorted([ob.uid, stale.uid])
    assert {c.reason for c in changes} == {Reason.REQUESTED}


def test_a_replace_prepares_the_new_instance_before_it_touches_the_old_one():
    old = desired("a")
    new = desired_from(pod(name="a", extra_spec="restartPolicy: Always").replace("1.36", "1.37"))
    ob = running(old, "default/a")
    plan = make_plan(compute_diff(new, host(ob), last(ob), SCOPE), new, host(ob))
    assert [t.kind for t in plan.txns] == ["shared", "prepare", "delete", "create"]
    pull, prepare, delete, create = plan.txns
    assert pull.steps[0].step.image == "busybox:1.37"
    # Free space and the new snapshots first, after the pull and while the old instance runs.
    assert [s.step.verb for s in prepare.steps] == ["CheckFreeSpace", "PrepareSnapshot"]
    assert prepare.uid == create.uid == new.pods["default/a"].uid
    assert prepare.steps[0].depends_on == (pull.steps[0].id,)
    assert prepare.steps[0].step.need == WRITABLE_MIN
    assert prepare.steps[1].step.key == create.steps[0].step.key
    assert delete.steps[0].depends_on == (prepare.steps[-1].id,)
    verbs = [s.step.verb for s in delete.steps]
    assert verbs == ["StopContainers", "RemoveContainer", "DetachNetwork", "RemoveInfra", "RemoveSnapshot"]
    assert delete.steps[-1].id in create.steps[0].depends_on or any(
        delete.steps[-1].id in s.depends_on for s in create.steps)
    assert [s.step.verb for s in create.steps] == ["PrepareSnapshot", "CreateInfra", "AttachNetwork",
                                                  "CreateContainer", "StartContainer"]
    assert plan.outcome(prepare) is None, "a replace is said once, by its create"
    assert Plan.from_json(plan.to_json()) == plan


def test_a_replace_of_the_same_instance_prepares_no_snapshot_of_the_running_one():
    """--replace (or a broken instance) keeps the uid: the snapshot keys are the running
    instance's, and undoing a PREPARE must never remove them."""
    d = desired("a")
    ob = running(d, "default/a")
    plan = make_plan(compute_diff(d, host(ob), last(ob), SCOPE, force=True), d, host(ob))
    prepare = next(t for t in plan.txns if t.kind == "prepare")
    assert [s.step.verb for s in prepare.steps] == ["CheckFreeSpace"]


def test_the_free_space_a_new_instance_needs_counts_its_ephemeral_storage_requests():
    d = desired_from(pod(name="a", container="resources: {requests: {ephemeral-storage: 5Mi}}")).pods["default/a"]
    assert writable_need(d) == 5 << 20
    assert writable_need(desired("a").pods["default/a"]) == WRITABLE_MIN


def test_plan_render_and_json_round_trip():
    d = desired("a", "b")
    ob = running(d, "default/b")
    plan = make_plan(compute_diff(d, host(ob), last(ob), SCOPE), d, host(ob))
    text = plan.render()
    assert "+ create pod default/a (new)" in text
    assert "Plan: 1 to create, 0 to replace, 0 to restart, 0 to delete, 1 unchanged." in text
    assert Plan.from_json(plan.to_json()) == plan
    empty = make_plan(compute_diff(d, host(ob, running(d, "default/a")), last(ob), SCOPE), d,
                      host(ob, running(d, "default/a")))
    assert empty.empty and "No changes" in empty.render()


def test_a_deployments_new_pods_wait_for_its_removed_ones_and_other_pods_do_not():
    # A rollout pass: web-0's old instance goes, web-1's new one comes. Transactions run in
    # parallel, so the create must depend on the delete, or the Deployment exceeds its surge.
    d = desired_from("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: app, image: "busybox:1.36"}]
        """, pod(name="solo"))
    old = dataclasses.replace(running(d, "default/web-0", uid="old-web-0"), owner="Deployment/default/web")
    other = dataclasses.replace(running(d, "default/solo", uid="gone-uid"), key="default/gone",
                                owner="Pod/default/gone")
    changes = [Change(ObjectKey("Pod", "default", "web-0"), Action.DELETE, Reason.ORPHANED, before=old.uid),
               Change(ObjectKey("Pod", "default", "gone"), Action.DELETE, Reason.ORPHANED, before=other.uid),
               Change(ObjectKey("Pod", "default", "web-1"), Action.CREATE, Reason.NEW),
               Change(ObjectKey("Pod", "default", "solo"), Action.CREATE, Reason.NEW)]
    plan = make_plan(changes, d, host(old, other))
    by_key = {(t.kind, t.key): t for t in plan.txns}
    web_delete, gone_delete = by_key["delete", "default/web-0"], by_key["delete", "default/gone"]
    web_create, solo_create = by_key["create", "default/web-1"], by_key["create", "default/solo"]
    assert web_delete.steps[-1].id in web_create.external_deps()
    assert gone_delete.steps[-1].id not in web_create.external_deps()
    assert not {web_delete.steps[-1].id, gone_delete.steps[-1].id} & solo_create.external_deps()


def test_a_pod_whose_root_filesystem_is_gone_is_replaced_as_incomplete():
    from dataclasses import replace

    d = desired("a")
    ob = replace(running(d, "default/a"), lost_snapshots=(f"{d.pods['default/a'].uid}.app",))
    (c,) = compute_diff(d, host(ob), last(ob), SCOPE)
    assert (c.action, c.reason) == (Action.REPLACE, Reason.INCOMPLETE)
    assert c.before == c.after and "root filesystem gone" in c.detail and "app" in c.detail


def test_app_containers_are_created_while_the_network_is_attached_and_start_after_it():
    """runc joins the sandbox by path, so creating a container need not wait for CNI; starting
    it does. A container whose env asks for the pod's IP is created once the IP is known."""
    text = pod(name="two", extra_spec="""
        - name: ip
          image: busybox:1.36
          env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
        """)  # extra_spec lands right after the first container: a second item of the same list
    d = desired_from(text)
    (p,) = d.pods.values()
    assert [c.name for c in p.containers] == ["app", "ip"] and p.network
    plan = make_plan(compute_diff(d, host(), LastApplied(), SCOPE), d, host())
    (create,) = [t for t in plan.txns if t.kind == "create"]
    by = {(s.step.verb, getattr(s.step, "container", "")): s for s in create.steps}
    infra, attach = by[("CreateInfra", "")], by[("AttachNetwork", "")]
    assert infra.id in by[("CreateContainer", "app")].depends_on
    assert attach.id not in by[("CreateContainer", "app")].depends_on
    assert attach.id in by[("StartContainer", "app")].depends_on
    assert attach.id in by[("CreateContainer", "ip")].depends_on
