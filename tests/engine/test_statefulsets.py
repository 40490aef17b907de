"""StatefulSets on the fake host: ordinal pods started in order (each once the one before runs
and is ready), scaled down from the highest ordinal one at a time, a claim per ordinal that
survives scale-down, and a rolling update from the highest ordinal down."""

from __future__ import annotations

STS = """apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: {n}{policy}
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      containers:
      - name: app
        image: {image}
        command: [sleep, "1000"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"""


def sts(n: int, image: str = "busybox:1.36", policy: str = "") -> str:
    return STS.format(n=n, image=image, policy=f"\n  podManagementPolicy: {policy}" if policy else "")


def created(r) -> list[str]:
    return sorted(c.key.name for c in r.plan.changes if str(c.action) in ("create", "replace") and c.key.kind == "Pod")


def deleted(r) -> list[str]:
    return sorted(c.key.name for c in r.plan.changes if str(c.action) == "delete")


def test_started_in_order_one_pod_per_pass_with_a_claim_each(engine):
    engine.write("db.yaml", sts(3))
    passes = [created(engine.up()) for _ in range(4)]
    assert passes == [["db-0"], ["db-1"], ["db-2"], []]
    assert set(engine.running()) == {"default/db-0", "default/db-1", "default/db-2"}
    assert engine.host.claims >= {"default/data-db-0", "default/data-db-1", "default/data-db-2"}
    assert engine.up().plan.empty


def test_scaled_3_to_1_to_3_removes_the_highest_first_and_keeps_the_claims(engine):
    engine.write("db.yaml", sts(3))
    for _ in range(3):
        engine.up()
    engine.write("db.yaml", sts(1))
    assert deleted(engine.up()) == ["db-2"]
    assert deleted(engine.up()) == ["db-1"]
    assert set(engine.running()) == {"default/db-0"}
    assert engine.host.claims >= {"default/data-db-1", "default/data-db-2"}, "claims survive scale-down"
    engine.write("db.yaml", sts(3))
    assert created(engine.up()) == ["db-1"]
    assert created(engine.up()) == ["db-2"]


def test_parallel_policy_starts_and_stops_at_once(engine):
    engine.write("db.yaml", sts(3, policy="Parallel"))
    assert created(engine.up()) == ["db-0", "db-1", "db-2"]
    engine.write("db.yaml", sts(1, policy="Parallel"))
    assert deleted(engine.up()) == ["db-1", "db-2"]


def test_rolling_update_goes_from_the_highest_ordinal_down_one_at_a_time(engine):
    engine.write("db.yaml", sts(3))
    for _ in range(3):
        engine.up()
    engine.write("db.yaml", sts(3, image="busybox:1.37"))
    order = [created(engine.up()) for _ in range(4)]
    assert order == [["db-2"], ["db-1"], ["db-0"], []]
    images = {c.pod: c.image for c in engine.drivers.runtime.list_containers() if c.role == "app"}
    assert set(images.values()) == {"busybox:1.37"}


def test_up_follows_the_ordered_start_to_its_end(engine):
    from reconciler.converger import Converger
    from reconciler.reconcile import load_or_fail, make_goal

    engine.write("db.yaml", sts(3))
    paths = [str(engine.dir)]
    goal = make_goal(paths, load_or_fail(paths), engine.paths)
    conv = Converger(engine.drivers, engine.state, engine.paths)
    first = conv.once(goal)
    done = conv.run(goal, first, timeout=60, sleep=lambda s: None)
    assert done.ok, done.problems
    assert set(engine.running()) == {"default/db-0", "default/db-1", "default/db-2"}


def test_kill_at_every_step_boundary_of_the_ordered_start_converges_in_order(tmp_path):
    """Die at every step boundary of each pass of a 3-pod ordered start; the passes after the
    crash finish it, never starting a pod before the one below it is up."""
    import pytest

    from reconciler.apply import Failpoints
    from reconciler.state import StateStore
    from tests.engine.conftest import Engine
    from tests.engine.test_crash import Crash, count_steps, crash

    for before in range(3):
        probe = Engine(tmp_path / f"probe-{before}")
        probe.write("db.yaml", sts(3))
        for _ in range(before):
            probe.up()
        steps = count_steps(probe)  # the first pass also makes the claims
        probe.state.close()
        for when in ("before", "after"):
            for n in range(1, steps + 1):
                engine = Engine(tmp_path / f"{before}-{when}-{n}")
                engine.write("db.yaml", sts(3))
                for _ in range(before):
                    engine.up()
                try:
                    engine.up(failpoints=Failpoints(f"{when}:#{n}", action=crash))
                except Crash:
                    pass
                else:
                    pytest.fail(f"{before}/{when}:#{n}: the failpoint was not reached")
                engine.state.close()
                engine.state = StateStore(engine.paths.state_db)
                for _ in range(6):
                    r = engine.up()
                    assert r.ok
                    made = created(r)
                    assert len(made) <= 1, f"{made}: ordered start creates one pod per pass"
                    for name in made:
                        i = int(name.rsplit("-", 1)[1])
                        assert all(f"default/db-{j}" in engine.running() for j in range(i)), (before, when, n)
                assert set(engine.running()) == {"default/db-0", "default/db-1", "default/db-2"}
                assert not engine.state.journal.open_txns()
                engine.down()
                assert engine.empty()
                engine.state.close()


def test_pods_are_named_in_the_service_subdomain_in_etc_hosts(engine):
    from reconciler.desired import build_desired
    from reconciler.manifests import load_manifests
    from reconciler.runtime.pod_files import render_hosts

    engine.write("db.yaml", sts(2))
    desired = build_desired(load_manifests([str(engine.dir)]).objects)
    hosts = render_hosts(desired.pods["default/db-1"], "10.1.2.3")
    assert "10.1.2.3\tdb-1.db.default.svc.cluster.local db-1" in hosts
    assert desired.pods["default/db-1"].hostname == "db-1"


def retained(n: int, when_deleted: str = "Retain", when_scaled: str = "Retain") -> str:
    return sts(n).replace("  volumeClaimTemplates:", f"  persistentVolumeClaimRetentionPolicy: "
                          f"{{whenDeleted: {when_deleted}, whenScaled: {when_scaled}}}\n  volumeClaimTemplates:")


def claims(engine) -> set[str]:
    return {c for c in engine.host.claims if c.startswith("default/data-db-")}


def test_when_scaled_delete_removes_the_claims_of_the_ordinals_scaled_away_after_their_pods(engine):
    engine.write("db.yaml", retained(3, when_scaled="Delete"))
    for _ in range(3):
        engine.up()
    engine.write("db.yaml", retained(1, when_scaled="Delete"))
    r = engine.up()
    assert deleted(r) == ["data-db-2", "db-2"], "db-2 goes first, its claim with it; db-1 waits its turn"
    steps = [t.key for t in r.plan.txns]
    assert steps.index("default/data-db-2") > steps.index("default/db-2"), "the claim goes after its pod"
    assert claims(engine) == {"default/data-db-0", "default/data-db-1"}
    assert deleted(engine.up()) == ["data-db-1", "db-1"]
    assert claims(engine) == {"default/data-db-0"}
    engine.write("db.yaml", retained(2, when_scaled="Delete"))
    assert created(engine.up()) == ["db-1"]
    assert claims(engine) == {"default/data-db-0", "default/data-db-1"}, "a scale-up makes a fresh claim"


def test_when_deleted_delete_removes_every_claim_on_down_and_when_pruned(engine):
    engine.write("db.yaml", retained(2, when_deleted="Delete"))
    engine.up(), engine.up()
    engine.down()
    assert claims(engine) == set() and not engine.running()

    engine.write("db.yaml", retained(2, when_deleted="Delete"))
    engine.up(), engine.up()
    engine.write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {a: b}\n")
    engine.remove("db.yaml")
    r = engine.up()
    assert deleted(r) == ["data-db-0", "data-db-1", "db-0", "db-1"]
    assert claims(engine) == set()
    assert engine.state.workloads.all("Set/StatefulSet/") == {}, "nothing of the deleted set is left to act on"


def test_retain_keeps_the_claims_on_down_and_when_pruned(engine):
    engine.write("db.yaml", retained(2))
    engine.up(), engine.up()
    engine.down()
    assert claims(engine) == {"default/data-db-0", "default/data-db-1"}
    engine.up(), engine.up()
    engine.remove("db.yaml")
    engine.write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\ndata: {a: b}\n")
    engine.up()
    assert claims(engine) == {"default/data-db-0", "default/data-db-1"} and not engine.running()
