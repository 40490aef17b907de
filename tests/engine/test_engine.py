"""The reconcile engine end to end on the fake host: converge, replace, prune, compensate."""

from __future__ import annotations

import pytest

from reconciler.diff import Action, Reason
from reconciler.errors import LockedError, ManifestError
from reconciler.state import ApplyLock
from tests.engine.conftest import pod_yaml

CONFIG = """apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"""

CONSUMER = """apiVersion: v1
kind: Pod
metadata:
  name: consumer
spec:
  containers:
  - name: app
    image: busybox:1.36
    envFrom:
    - configMapRef:
        name: settings
"""


def actions(result) -> dict[str, tuple[str, str]]:
    return {f"{c.key.namespace}/{c.key.name}": (str(c.action), str(c.reason)) for c in result.plan.changes}


def test_first_up_creates_every_pod_and_second_up_touches_nothing(engine):
    engine.write("a.yaml", pod_yaml("web", containers=("app", "sidecar")))
    engine.write("b.yaml", pod_yaml("db"))
    first = engine.up()
    assert first.ok
    assert engine.running() == {"default/web": {"app", "sidecar"}, "default/db": {"app"}}

    ops_before = list(engine.host.log)
    second = engine.up()
    assert second.ok
    assert second.plan.empty
    assert {a for a, _ in actions(second).values()} == {"noop"}
    assert engine.host.log == ops_before, "an unchanged pass must not call a single mutating driver operation"


def test_changed_pod_is_replaced_and_no_other(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.write("b.yaml", pod_yaml("db"))
    engine.up()
    db_containers = {c.id for c in engine.drivers.runtime.list_containers() if c.pod == "default/db"}

    engine.write("a.yaml", pod_yaml("web", image="busybox:1.37"))
    mark = len(engine.host.log)
    result = engine.up()
    assert actions(result)["default/web"] == ("replace", "spec changed")
    assert actions(result)["default/db"] == ("noop", "unchanged")
    touched = engine.host.log[mark:]
    assert not any(cid in op for op in touched for cid in db_containers)
    assert {c.id for c in engine.drivers.runtime.list_containers() if c.pod == "default/db"} == db_containers
    web = [c for c in engine.drivers.runtime.list_containers() if c.pod == "default/web" and c.role == "app"]
    assert [c.image for c in web] == ["busybox:1.37"]


def test_formatting_key_order_and_comments_do_not_replace(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.up()
    engine.write("a.yaml", """# reformatted, same meaning
kind: Pod
apiVersion: v1
spec:
  containers:
  - command: [sleep, "1000"]   # same argv
    image: "busybox:1.36"
    name: app
metadata: {name: web}
""")
    assert engine.up().plan.empty


def test_removed_manifest_is_pruned_and_other_sources_are_left_alone(engine, tmp_path):
    engine.write("a.yaml", pod_yaml("web"))
    engine.write("b.yaml", pod_yaml("db"))
    other = tmp_path / "elsewhere.yaml"
    other.write_text(pod_yaml("cache"))
    engine.up()
    engine.up(other)
    assert set(engine.running()) == {"default/web", "default/db", "default/cache"}

    engine.remove("b.yaml")
    result = engine.up()
    assert actions(result)["default/db"] == ("delete", "orphaned")
    assert set(engine.running()) == {"default/web", "default/cache"}, "cache came from another path: not in scope"
    live = {c.pod_uid for c in engine.drivers.runtime.list_containers()}
    assert {k.split(".")[0] for k in engine.host.snapshots} == live, "the pruned pod's snapshots are gone too"


def test_an_object_removed_from_a_file_is_pruned(engine):
    engine.write("a.yaml", pod_yaml("web") + "---\n" + pod_yaml("api"))
    engine.up()
    engine.write("a.yaml", pod_yaml("web"))
    engine.up()
    assert set(engine.running()) == {"default/web"}
    assert "default/api" not in engine.state.owned.last_applied().pods


def test_unreadable_file_blocks_every_prune_and_changes_nothing(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.write("b.yaml", pod_yaml("db"))
    engine.up()
    engine.write("b.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: db\n")  # broken YAML
    engine.remove("a.yaml")
    mark = len(engine.host.log)
    with pytest.raises(ManifestError) as exc:
        engine.up()
    assert "b.yaml:4" in str(exc.value)
    assert engine.host.log[mark:] == []
    assert set(engine.running()) == {"default/web", "default/db"}


def test_failed_pull_leaves_the_running_pod_alone(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.up()
    engine.host.registry = {"busybox:1.36"}  # the new tag does not exist
    engine.write("a.yaml", pod_yaml("web", image="busybox:9.99"))
    result = engine.up()
    assert not result.ok
    assert [r.status for r in result.applied.results] == ["failed", "skipped", "skipped", "skipped"]
    assert engine.running() == {"default/web": {"app"}}
    web = [c for c in engine.drivers.runtime.list_containers() if c.pod == "default/web" and c.role == "app"]
    assert web[0].image == "busybox:1.36"


STEP_OPS = ["pull_image", "prepare_snapshot", "prepare_volumes", "create_infra", "attach_network",
            "create_container", "start_container"]


@pytest.mark.parametrize("op", STEP_OPS)
def test_failure_at_each_step_compensates_that_pod_only(engine, op):
    engine.write("other.yaml", pod_yaml("other", image="busybox:other"))
    engine.up()
    engine.write("a.yaml", CONFIG + "---\n" + pod_yaml("web", containers=("app", "sidecar"), extra="""
  volumes:
  - name: scratch
    emptyDir: {}"""))
    target = {"pull_image": "busybox:1.36", "prepare_snapshot": "*", "prepare_volumes": "*",
              "create_infra": "web", "attach_network": "web", "create_container": "sidecar",
              "start_container": "sidecar"}[op]
    engine.host.fail_on(op, target)
    result = engine.up()
    assert not result.ok
    failed = result.applied.failed
    assert failed and all(r.txn.key in ("default/web", "busybox:1.36") for r in failed)
    # Nothing of web is left on the host; the other pod runs untouched.
    uid_web = next(p.uid for p in result.desired.pods.values() if p.name == "web")
    h = engine.host
    assert not [k for k in h.snapshots if k.startswith(uid_web)]
    assert not [c for c in h.containers.values() if c["pod_uid"] == uid_web]
    assert uid_web not in h.attachments and uid_web not in h.pod_volumes
    assert engine.running() == {"default/other": {"app"}}
    assert "default/web" not in engine.state.owned.last_applied().pods

    engine.host.failures.clear()
    assert engine.up().ok
    assert engine.running() == {"default/other": {"app"}, "default/web": {"app", "sidecar"}}


def test_exited_containers_restart_according_to_policy(engine):
    for name, policy in (("always", "Always"), ("onfailure", "OnFailure"), ("never", "Never")):
        engine.write(f"{name}.yaml", pod_yaml(name, extra=f"\n  restartPolicy: {policy}"))
    engine.write("fail.yaml", pod_yaml("fail", extra="\n  restartPolicy: OnFailure"))
    engine.up()
    ids = {c.pod: c.id for c in engine.drivers.runtime.list_containers() if c.role == "app"}
    for pod in ("default/always", "default/onfailure", "default/never"):
        engine.host.exit_container(ids[pod], 0)
    engine.host.exit_container(ids["default/fail"], 1)
    result = engine.up()
    got = actions(result)
    assert got["default/always"] == ("start", "exited")
    assert got["default/fail"] == ("start", "exited")
    assert got["default/onfailure"] == ("noop", "unchanged")
    assert got["default/never"] == ("noop", "unchanged")
    restarted = {c.pod: c.restart_count for c in engine.drivers.runtime.list_containers() if c.role == "app"}
    assert restarted == {"default/always": 1, "default/fail": 1, "default/onfailure": 0, "default/never": 0}


def test_replace_flag_recreates_unchanged_pods(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.up()
    result = engine.up(force=True)
    assert actions(result)["default/web"] == ("replace", "forced")
    assert engine.running() == {"default/web": {"app"}}


def test_host_port_conflict_fails_before_anything_starts(engine):
    ports = """
    ports:
    - containerPort: 80
      hostPort: 8080"""
    engine.write("a.yaml", pod_yaml("first", ports=ports))
    engine.up()
    engine.write("b.yaml", pod_yaml("second", ports=ports))
    mark = len(engine.host.log)
    result = engine.up()
    assert not result.ok
    (failure,) = result.applied.failed
    assert failure.txn.key == "default/second" and "8080/tcp" in failure.error
    assert not any("second" in op for op in engine.host.log[mark:])


def test_replacing_a_pod_with_a_host_port_frees_the_port_first(engine):
    ports = """
    ports:
    - containerPort: 80
      hostPort: 8080"""
    engine.write("a.yaml", pod_yaml("web", ports=ports))
    engine.up()
    engine.write("a.yaml", pod_yaml("web", image="busybox:1.37", ports=ports))
    assert engine.up().ok
    assert engine.running() == {"default/web": {"app"}}


def test_configmap_change_replaces_exactly_its_consumers(engine):
    engine.write("cm.yaml", CONFIG)
    engine.write("consumer.yaml", CONSUMER)
    engine.write("bystander.yaml", pod_yaml("bystander"))
    engine.up()
    engine.write("cm.yaml", CONFIG.replace("fast", "slow"))
    got = actions(engine.up())
    assert got["default/consumer"] == ("replace", "spec changed")
    assert got["default/bystander"] == ("noop", "unchanged")


def test_deployment_replicas_scale_up_and_down(engine):
    deployment = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {n}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
"""
    engine.write("d.yaml", deployment.format(n=3))
    engine.up()
    assert set(engine.running()) == {"default/web-0", "default/web-1", "default/web-2"}
    engine.write("d.yaml", deployment.format(n=1))
    got = actions(engine.up())
    assert got["default/web-1"] == ("delete", "orphaned") and got["default/web-2"] == ("delete", "orphaned")
    assert got["default/web-0"] == ("noop", "unchanged")
    assert set(engine.running()) == {"default/web-0"}


def test_down_removes_only_what_the_manifests_own_and_is_idempotent(engine, tmp_path):
    engine.write("a.yaml", pod_yaml("web"))
    other = tmp_path / "other.yaml"
    other.write_text(pod_yaml("keep"))
    engine.up()
    engine.up(other)
    engine.down()
    assert set(engine.running()) == {"default/keep"}
    assert engine.down().plan.empty
    engine.down(other)
    assert engine.empty()


def test_down_of_a_deleted_file_removes_what_it_created(engine):
    path = engine.write("a.yaml", pod_yaml("web"))
    engine.up(path)
    path.unlink()
    engine.down(path)
    assert engine.empty()


def test_claims_survive_down_unless_volumes_is_given(engine):
    engine.write("a.yaml", """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
""" + pod_yaml("web", extra="""
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}"""))
    engine.up()
    assert engine.host.claims == {"default/data"}
    engine.down()
    assert engine.host.claims == {"default/data"} and engine.empty()
    engine.up()
    engine.down(remove_volumes=True)
    assert engine.host.claims == set() and engine.empty()


def test_second_applier_waits_or_says_who_holds_the_lock(engine):
    engine.write("a.yaml", pod_yaml("web"))
    with ApplyLock(engine.paths.lock_file), pytest.raises(LockedError) as exc:
        engine.up(lock_timeout=0)
    assert f"pid {__import__('os').getpid()}" in str(exc.value)
    assert engine.up(lock_timeout=0).ok


def test_stale_instances_of_a_desired_pod_are_removed(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.up()
    uid = engine.state.owned.last_applied().pods["default/web"].uid
    # A leftover instance of another revision (as after a crash mid-rollout) next to the desired one.
    h = engine.host
    stale = "0123456789ab"
    h.containers[stale] = {**h.containers[uid], "pod_uid": stale}
    h.snapshots[f"{stale}.app"] = "/fake/rootfs/stale"
    result = engine.up()
    assert actions(result)["default/web"] == ("delete", "orphaned")
    assert {c.pod_uid for c in engine.drivers.runtime.list_containers()} == {uid}
    assert list(h.snapshots) == [f"{uid}.app"]


def test_plan_is_json_round_trippable_and_redacts_secrets(engine):
    engine.write("a.yaml", """apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
""" + pod_yaml("web", extra="""
  volumes:
  - name: creds
    secret: {secretName: creds}"""))
    result = engine.up(dry_run=True)
    from reconciler.plan import Plan

    again = Plan.from_json(result.plan.to_json())
    assert again == result.plan
    assert "hunter2" not in result.plan.dumps(redact=True)
    assert [c.action for c in again.changes] == [Action.CREATE]
    assert again.changes[0].reason == Reason.NEW


def test_down_of_a_broken_file_removes_what_it_created(engine):
    path = engine.write("a.yaml", pod_yaml("web"))
    engine.write("b.yaml", pod_yaml("db"))
    engine.up()
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web\n")
    result = engine.down(path)
    assert result.manifests.warnings, "the broken file is reported"
    assert set(engine.running()) == {"default/db"}


def test_only_limits_creation_and_pruning_to_the_named_pods(engine):
    engine.write("a.yaml", pod_yaml("web") + "---\n" + pod_yaml("api"))
    engine.up(only=["web"])
    assert set(engine.running()) == {"default/web"}
    engine.up()
    engine.write("a.yaml", pod_yaml("web", image="busybox:1.37"))
    result = engine.up(only=["default/api"])
    assert actions(result) == {"default/api": ("delete", "orphaned")}
    assert set(engine.running()) == {"default/web"}
    assert engine.down(only=["web"]).ok and engine.empty()


def test_a_host_wide_default_network_is_part_of_the_pods_spec(engine):
    from dataclasses import replace as dc_replace

    engine.write("a.yaml", pod_yaml("plain") + "---\n" + """apiVersion: v1
kind: Pod
metadata:
  name: chosen
  annotations: {podplay.io/network: mine}
spec:
  containers: [{name: app, image: busybox:1.36}]
""")
    engine.up()
    networks = {a.status.network for a in engine.drivers.network.list_attachments()}
    assert networks == {"podplay", "mine"}
    engine.paths = dc_replace(engine.paths, default_network="lab")
    result = engine.up()
    assert actions(result)["default/plain"] == ("replace", "spec changed")
    assert actions(result)["default/chosen"] == ("noop", "unchanged"), "an annotation wins over the default"
    assert {a.status.network for a in engine.drivers.network.list_attachments()} == {"lab", "mine"}
