"""The workload kinds beyond Deployment on the fake host: ReplicaSet and ReplicationController."""

from __future__ import annotations

from tests.engine.test_engine import actions

REPLICA_SET = """apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: front
spec:
  replicas: {n}
  selector:
    matchLabels: {{app: front}}
  template:
    metadata:
      labels: {{app: front}}
    spec:
      containers:
      - name: app
        image: {image}
        command: [sleep, "1000"]
"""

REPLICATION_CONTROLLER = """apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: {n}
  template:
    metadata:
      labels: {{app: legacy}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
"""


def replica_set(n: int, image: str = "busybox:1.36") -> str:
    return REPLICA_SET.format(n=n, image=image)


def test_replica_set_scales_up_and_down_by_ordinal(engine):
    engine.write("rs.yaml", replica_set(3))
    assert engine.up().ok
    assert set(engine.running()) == {"default/front-0", "default/front-1", "default/front-2"}

    engine.write("rs.yaml", replica_set(1))
    got = actions(engine.up())
    assert got["default/front-1"] == ("delete", "orphaned") and got["default/front-2"] == ("delete", "orphaned")
    assert got["default/front-0"] == ("noop", "unchanged")
    assert set(engine.running()) == {"default/front-0"}

    engine.write("rs.yaml", replica_set(2))
    got = actions(engine.up())
    assert got["default/front-1"] == ("create", "new") and got["default/front-0"] == ("noop", "unchanged")
    assert engine.up().plan.empty


def test_replica_set_template_change_replaces_every_replica_in_one_pass(engine):
    """No rollout: a ReplicaSet has no revisions, so a changed template replaces its replicas
    at once, as a changed Pod is replaced (a Deployment would roll them wave by wave)."""
    engine.write("rs.yaml", replica_set(3))
    engine.up()
    engine.write("rs.yaml", replica_set(3, image="busybox:1.37"))
    got = actions(engine.up())
    assert {got[f"default/front-{i}"] for i in range(3)} == {("replace", "spec changed")}
    images = {c.image for c in engine.drivers.runtime.list_containers() if c.role == "app"}
    assert images == {"busybox:1.37"}
    assert engine.state.rollouts.revisions("default/front") == []


def test_replication_controller_selects_its_template_labels_and_goes_down(engine):
    engine.write("rc.yaml", REPLICATION_CONTROLLER.format(n=2))
    assert engine.up().ok
    assert set(engine.running()) == {"default/legacy-0", "default/legacy-1"}
    engine.down()
    assert engine.empty()


def test_replica_pods_carry_their_owner_and_ordinal(engine):
    from reconciler.desired import build_desired
    from reconciler.manifests import load_manifests

    engine.write("rs.yaml", replica_set(2))
    engine.write("rc.yaml", REPLICATION_CONTROLLER.format(n=1))
    loaded = load_manifests([str(engine.dir)])
    desired = build_desired(loaded.objects)
    got = {ref: (str(p.owner.kind), p.owner.name, p.ordinal) for ref, p in desired.pods.items()}
    assert got == {"default/front-0": ("ReplicaSet", "front", 0), "default/front-1": ("ReplicaSet", "front", 1),
                   "default/legacy-0": ("ReplicationController", "legacy", 0)}
    assert desired.deployments == {}, "only a Deployment has revisions and a rollout"


def test_get_lists_desired_current_and_ready_pods_per_kind(engine):
    from reconciler.watch.status import collect_workloads

    engine.write("rs.yaml", replica_set(3))
    engine.write("rc.yaml", REPLICATION_CONTROLLER.format(n=2))
    engine.up()
    [rs] = collect_workloads(engine.state, engine.drivers, "ReplicaSet")
    assert (rs["name"], rs["desired"], rs["current"], rs["ready"]) == ("default/front", 3, 3, 3)
    [rc] = collect_workloads(engine.state, engine.drivers, "ReplicationController")
    assert (rc["desired"], rc["ready"]) == (2, 2)
    engine.write("rs.yaml", replica_set(1))
    engine.up()
    [rs] = collect_workloads(engine.state, engine.drivers, "ReplicaSet")
    assert (rs["desired"], rs["current"]) == (1, 1)
    engine.down()
    assert collect_workloads(engine.state, engine.drivers, "ReplicaSet") == []
