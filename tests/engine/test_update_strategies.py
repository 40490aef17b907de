"""updateStrategy OnDelete (DaemonSet, StatefulSet) and a StatefulSet's rollingUpdate partition and
maxUnavailable on the fake host: which pods a template change replaces, and which stay on their
old revision until they are deleted."""

from __future__ import annotations

from reconciler.podcmds import plan_rm
from reconciler.reconcile import apply_request
from tests.engine.test_statefulsets import created

DAEMON_SET = """apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  updateStrategy: {{type: OnDelete}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      containers:
      - {{name: app, image: "{image}", command: [sleep, "1000"]}}
"""

STS = """apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: {n}
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: db}}}}
  updateStrategy: {strategy}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - {{name: app, image: "{image}", command: [sleep, "1000"]}}
"""


def images(engine) -> dict[str, str]:
    return {c.pod.split("/")[1]: c.image for c in engine.drivers.runtime.list_containers()
            if c.role == "app" and c.state == "running"}


def rm(engine, name: str) -> None:
    def decide(observed):
        return plan_rm(observed, [p.uid for p in observed.pods.values() if p.name == name], force=True).plan
    assert apply_request(engine.drivers, engine.state, engine.paths, decide).ok


def test_daemon_set_on_delete_keeps_the_old_pod_until_it_is_deleted(engine):
    from reconciler.watch.status import collect_workloads

    engine.write("ds.yaml", DAEMON_SET.format(image="busybox:1.36"))
    engine.up()
    engine.write("ds.yaml", DAEMON_SET.format(image="busybox:1.37"))
    r = engine.up()
    assert r.plan.empty and images(engine) == {"agent-0": "busybox:1.36"}
    assert any("1 pod on an old revision (agent-0)" in n and "OnDelete" in n for n in r.notes), r.notes
    plan = engine.up(dry_run=True)
    assert any("old revision" in n for n in plan.notes)
    [ds] = collect_workloads(engine.state, engine.drivers, "DaemonSet")
    assert (ds["current"], ds["up_to_date"], ds["outdated"]) == (1, 0, ["agent-0"])

    rm(engine, "agent-0")
    assert created(engine.up()) == ["agent-0"]
    assert images(engine) == {"agent-0": "busybox:1.37"}, "a deleted pod comes back from the new template"
    assert engine.up().plan.empty
    [ds] = collect_workloads(engine.state, engine.drivers, "DaemonSet")
    assert (ds["up_to_date"], ds["outdated"]) == (1, [])


def test_stateful_set_on_delete_updates_only_the_pods_that_are_deleted(engine):
    engine.write("db.yaml", STS.format(n=3, strategy="{type: OnDelete}", image="busybox:1.36"))
    engine.up()
    engine.write("db.yaml", STS.format(n=3, strategy="{type: OnDelete}", image="busybox:1.37"))
    r = engine.up()
    assert r.plan.empty and set(images(engine).values()) == {"busybox:1.36"}
    assert any("3 pods on an old revision (db-0, db-1, db-2)" in n for n in r.notes), r.notes
    rm(engine, "db-1")
    assert created(engine.up()) == ["db-1"]
    assert images(engine) == {"db-0": "busybox:1.36", "db-1": "busybox:1.37", "db-2": "busybox:1.36"}


def test_partition_updates_only_the_ordinals_at_or_above_it_from_the_highest_down(engine):
    strategy = "{{rollingUpdate: {{partition: 2}}}}"
    engine.write("db.yaml", STS.format(n=4, strategy=strategy.format(), image="busybox:1.36"))
    engine.up()
    engine.write("db.yaml", STS.format(n=4, strategy=strategy.format(), image="busybox:1.37"))
    assert [created(engine.up()) for _ in range(3)] == [["db-3"], ["db-2"], []]
    assert images(engine) == {"db-0": "busybox:1.36", "db-1": "busybox:1.36", "db-2": "busybox:1.37",
                              "db-3": "busybox:1.37"}
    r = engine.up()
    assert r.plan.empty and r.settled
    assert any("2 pods on an old revision (db-0, db-1), below the partition 2" in n for n in r.notes), r.notes
    # Lowering the partition to 0 updates the rest, still from the highest ordinal down.
    engine.write("db.yaml", STS.format(n=4, strategy="{rollingUpdate: {partition: 0}}", image="busybox:1.37"))
    assert [created(engine.up()) for _ in range(3)] == [["db-1"], ["db-0"], []]


def test_max_unavailable_updates_that_many_pods_at_once(engine):
    strategy = "{rollingUpdate: {maxUnavailable: 2}}"
    engine.write("db.yaml", STS.format(n=5, strategy=strategy, image="busybox:1.36"))
    engine.up()
    engine.write("db.yaml", STS.format(n=5, strategy=strategy, image="busybox:1.37"))
    assert [created(engine.up()) for _ in range(4)] == [["db-3", "db-4"], ["db-1", "db-2"], ["db-0"], []]


def test_bad_partition_and_max_unavailable_name_their_field(engine):
    import pytest

    from reconciler.errors import ManifestError

    engine.write("db.yaml", STS.format(n=1, strategy="{rollingUpdate: {partition: -1, maxUnavailable: 0}}",
                                       image="busybox:1.36"))
    with pytest.raises(ManifestError) as err:
        engine.up()
    text = str(err.value)
    assert "spec.updateStrategy.rollingUpdate.partition" in text and "must not be negative" in text
    assert "spec.updateStrategy.rollingUpdate.maxUnavailable" in text


def test_on_delete_pod_that_lost_its_infra_comes_back_from_the_new_template(engine):
    engine.write("ds.yaml", DAEMON_SET.format(image="busybox:1.36"))
    engine.up()
    engine.write("ds.yaml", DAEMON_SET.format(image="busybox:1.37"))
    assert engine.up().plan.empty
    [old] = [c for c in engine.drivers.runtime.list_containers() if c.role == "infra"]
    engine.host.containers[old.id]["state"] = "exited"  # its pod is gone (the infra died, a reboot…)
    engine.host.save()
    assert created(engine.up()) == ["agent-0"]
    assert images(engine) == {"agent-0": "busybox:1.37"}


def test_on_delete_old_pod_runs_on_as_its_revision_and_restarts_its_containers(engine):
    engine.write("ds.yaml", DAEMON_SET.format(image="busybox:1.36"))
    engine.up()
    engine.write("ds.yaml", DAEMON_SET.format(image="busybox:1.37"))
    engine.up()
    [app] = [c for c in engine.drivers.runtime.list_containers() if c.role == "app"]
    engine.host.exit_container(app.id, 1)
    r = engine.up()
    assert [(str(c.action), c.key.name) for c in r.plan.changes if str(c.action) != "noop"] == [("start", "agent-0")]
    assert images(engine) == {"agent-0": "busybox:1.36"}, "restarted as the revision it runs"
    assert any("old revision (agent-0)" in n for n in r.notes)


def test_a_deleted_pod_below_the_partition_comes_back_on_the_old_revision(engine):
    strategy = "{rollingUpdate: {partition: 2}}"
    engine.write("db.yaml", STS.format(n=3, strategy=strategy, image="busybox:1.36"))
    engine.up()
    engine.write("db.yaml", STS.format(n=3, strategy=strategy, image="busybox:1.37"))
    engine.up()
    assert images(engine) == {"db-0": "busybox:1.36", "db-1": "busybox:1.36", "db-2": "busybox:1.37"}
    rm(engine, "db-0")
    assert created(engine.up()) == ["db-0"]
    assert images(engine)["db-0"] == "busybox:1.36", "restored to the set's current revision, as Kubernetes does"
    assert engine.up().plan.empty
    # Once every pod runs the new template, that is the current revision.
    engine.write("db.yaml", STS.format(n=3, strategy="{rollingUpdate: {partition: 0}}", image="busybox:1.37"))
    for _ in range(3):
        engine.up()
    assert set(images(engine).values()) == {"busybox:1.37"}
    engine.write("db.yaml", STS.format(n=3, strategy=strategy, image="busybox:1.38"))
    engine.up()
    rm(engine, "db-1")
    engine.up()
    assert images(engine) == {"db-0": "busybox:1.37", "db-1": "busybox:1.37", "db-2": "busybox:1.38"}


def test_stateful_set_pods_kept_on_an_old_revision_restart_their_containers(engine):
    for strategy in ("{type: OnDelete}", "{rollingUpdate: {partition: 1}}"):
        engine.write("db.yaml", STS.format(n=1, strategy=strategy, image="busybox:1.36"))
        engine.up()
        engine.write("db.yaml", STS.format(n=1, strategy=strategy, image="busybox:1.37"))
        assert engine.up().plan.empty
        [app] = [c for c in engine.drivers.runtime.list_containers() if c.role == "app" and c.state == "running"]
        engine.host.exit_container(app.id, 1)
        r = engine.up()
        assert [(str(c.action), c.key.name) for c in r.plan.changes if str(c.action) != "noop"] == [("start", "db-0")]
        assert images(engine) == {"db-0": "busybox:1.36"}, strategy
        engine.down()
