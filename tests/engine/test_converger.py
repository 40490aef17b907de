"""The one converger: `up`, `up --wait` and the keeper tick through it, look at the host once a
tick, and retry a failed pod on one schedule."""

from __future__ import annotations

import io
import time

import pytest

from reconciler.converger import Converger, RetryPolicy
from reconciler.diff import restart_delay
from reconciler.reconcile import load_or_fail, make_goal
from reconciler.watch.dirs import DirSource
from reconciler.watch.keeper import Keeper, KeeperOptions
from reconciler.watch.log import EventLog

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: ["sleep", "1000"]{probe}
"""

READY = """
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1"""


class Clock:
    """Real time plus an offset the test (or the converger's sleep) moves on."""

    def __init__(self):
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def mono(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += max(seconds, 0.05)


class Looks:
    """Counts the host's relists: every observation lists the runtime's containers once."""

    def __init__(self, engine, monkeypatch):
        self.count = 0
        runtime = engine.drivers.runtime
        real = runtime.list_containers

        def counted():
            self.count += 1
            return real()
        monkeypatch.setattr(runtime, "list_containers", counted)


@pytest.fixture
def make_engine(tmp_path):
    from tests.engine.conftest import Engine

    made = []

    def make():
        made.append(Engine(tmp_path / f"e{len(made)}"))
        return made[-1]
    yield make
    for e in made:
        e.state.close()


def goal_of(engine):
    return make_goal([str(engine.dir)], load_or_fail([str(engine.dir)]), engine.paths)


def converger(engine, clock: Clock) -> Converger:
    return Converger(engine.drivers, engine.state, engine.paths, clock=clock.time, mono=clock.mono)


def attempts(engine, key: str) -> int:
    return sum(1 for t in engine.state.journal.recent_txns(100) if t["key"] == key and t["kind"] == "create")


def test_every_tick_of_up_looks_at_the_host_once(engine, monkeypatch):
    engine.write("a.yaml", POD.format(name="a", probe=""))
    looks = Looks(engine, monkeypatch)
    conv = converger(engine, Clock())
    first = conv.once(goal_of(engine))
    # The tick that created the pod, then the look-only tick that confirmed the host settled.
    assert conv.observations == 2 and looks.count == 2
    assert first.ok and engine.running() == {"default/a": {"app"}}
    looks.count = 0
    again = conv.once(goal_of(engine))
    assert again.applied is None, "a settled host is not touched"
    assert conv.observations == 3 and looks.count == 1


def test_up_wait_ticks_until_ready_with_one_look_each(engine, monkeypatch):
    engine.write("a.yaml", POD.format(name="a", probe=READY))
    engine.host.set_probe("app", False)
    clock = Clock()
    conv = converger(engine, clock)
    goal = goal_of(engine)
    first = conv.once(goal)
    looks = Looks(engine, monkeypatch)
    before = conv.observations
    flips = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if conv.observations - before == 3 and not flips:
            flips.append(clock.time())
            engine.host.set_probe("app", True)
    done = conv.run(goal, first, wait=True, timeout=60, sleep=sleep)
    assert done.ok and flips, "the pod was waited for until its readiness probe passed"
    ticks = conv.observations - before
    assert ticks > 3 and looks.count == ticks


def test_a_keeper_tick_looks_once_and_applies_from_that_look(engine, monkeypatch):
    engine.write("a.yaml", POD.format(name="a", probe=""))
    clock = Clock()
    keeper = Keeper(DirSource([str(engine.dir)], engine.state), engine.paths, engine.state, lambda: engine.drivers,
                    EventLog(io.StringIO(), "json", clock=clock.time), KeeperOptions(relist=3600, resync=3600),
                    clock=clock.time, monotonic=clock.mono)
    try:
        keeper.converge("start", refresh=True, full=True)
        assert engine.running() == {"default/a": {"app"}}
        looks = Looks(engine, monkeypatch)
        keeper.tick()  # nothing to do
        assert looks.count == 1
        [cid] = [c for c, v in engine.host.containers.items() if v["role"] == "app"]
        engine.host.exit_container(cid, 1, at=clock.time() - 700)  # ran long enough: no back-off
        keeper.tick()  # sees the exit and restarts it, from the same look
        assert looks.count == 2
        assert engine.host.restarts.get(cid) == 1 and engine.running() == {"default/a": {"app"}}
    finally:
        keeper.waker.close()


def retry_times_under_up_wait(engine, clock: Clock) -> list[float]:
    conv = converger(engine, clock)
    goal = goal_of(engine)
    first = conv.once(goal)
    assert not first.ok
    started, seen = clock.mono(), [1]
    times: list[float] = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        n = attempts(engine, "default/a")
        if n != seen[-1]:
            seen.append(n)
            times.append(clock.mono() - started)
        if n == 3:
            engine.host.failures.clear()
    done = conv.run(goal, first, wait=True, timeout=120, sleep=sleep)
    assert done.ok and engine.running() == {"default/a": {"app"}}
    return times


def retry_times_under_watch(engine, clock: Clock) -> list[float]:
    keeper = Keeper(DirSource([str(engine.dir)], engine.state), engine.paths, engine.state, lambda: engine.drivers,
                    EventLog(io.StringIO(), "json", clock=clock.time), KeeperOptions(relist=3600, resync=3600),
                    clock=clock.time, monotonic=clock.mono)
    try:
        keeper.converge("start", refresh=True, full=True)
        started, seen = clock.mono(), [attempts(engine, "default/a")]
        times: list[float] = []
        while len(times) < 2 and clock.mono() - started < 120:
            clock.offset += 0.05
            keeper.tick()
            n = attempts(engine, "default/a")
            if n != seen[-1]:
                seen.append(n)
                times.append(clock.mono() - started)
        return times
    finally:
        keeper.waker.close()


def test_up_wait_and_the_keeper_retry_a_failed_pod_on_the_same_schedule(make_engine):
    """A pod that cannot be created is tried again after 10 s, then 20 s more (the crash-loop
    schedule), whichever converger drives it."""
    schedules = []
    for run in (retry_times_under_up_wait, retry_times_under_watch):
        engine = make_engine()
        engine.write("a.yaml", POD.format(name="a", probe=""))
        engine.host.fail_on("create_infra", "a")
        schedules.append(run(engine, Clock())[:2])
    expected = [restart_delay(1), restart_delay(1) + restart_delay(2)]
    for times in schedules:
        assert times == pytest.approx(expected, abs=0.6)


def test_the_retry_policy_waits_the_crash_loop_delay_per_pod_instance():
    clock = Clock()
    policy = RetryPolicy(clock.mono, clock.time)

    class R:
        def __init__(self, key, uid, ok):
            from reconciler.apply import TxnStatus
            from reconciler.plan import Txn, TxnKind
            self.txn = Txn("t1", TxnKind.CREATE, key, uid)
            self.status = TxnStatus.OK if ok else TxnStatus.FAILED
            self.error = "" if ok else "boom"

    from reconciler.diff import Action, Change, Reason
    from reconciler.model.kube import ObjectKey
    change = Change(ObjectKey("Pod", "default", "a"), Action.CREATE, Reason.NEW, after="u1")
    other_revision = Change(ObjectKey("Pod", "default", "a"), Action.CREATE, Reason.NEW, after="u2")
    policy.note([R("default/a", "u1", False)])
    assert policy.holds(change) and not policy.holds(other_revision)
    clock.offset += restart_delay(1) + 0.01
    assert not policy.holds(change)
    policy.note([R("default/a", "u1", False)])
    clock.offset += restart_delay(1) + 0.01
    assert policy.holds(change), "the second failure waits twice as long"
    clock.offset += restart_delay(2)
    assert not policy.holds(change)
    policy.note([R("default/a", "u1", True)])
    assert policy.next_at() is None and policy.describe() == {}


def test_up_replace_wait_recreates_each_pod_once_then_waits(engine):
    engine.write("a.yaml", POD.format(name="a", probe=READY))
    assert engine.up().ok
    clock = Clock()
    conv = converger(engine, clock)
    goal = make_goal([str(engine.dir)], load_or_fail([str(engine.dir)]), engine.paths, force=True)
    first = conv.once(goal)
    assert first.ok and attempts(engine, "default/a") == 2
    done = conv.run(goal, first, wait=True, timeout=30, sleep=clock.sleep)
    assert done.ok and not done.timed_out
    assert attempts(engine, "default/a") == 2, "--replace recreates once; waiting does not replace again"


def test_images_are_pulled_before_the_apply_lock_is_taken_and_a_failed_pull_is_asked_once(engine, monkeypatch):
    from reconciler.errors import LockedError
    from reconciler.state import ApplyLock

    engine.host.registry.clear()
    engine.host.registry.add("busybox:1.36")
    engine.write("a.yaml", POD.format(name="a", probe=""))
    engine.write("b.yaml", POD.format(name="b", probe="").replace("busybox:1.36", "example.com/missing:1"))
    images = engine.drivers.images
    real = images.ensure_image
    calls: list[tuple[str, bool]] = []

    def pull(ref, policy, credentials=()):
        try:
            with ApplyLock(engine.paths.lock_file, 0):
                free = True
        except LockedError:
            free = False
        calls.append((ref, free))
        return real(ref, policy, credentials)
    monkeypatch.setattr(images, "ensure_image", pull)
    result = converger(engine, Clock()).once(goal_of(engine))
    assert engine.running() == {"default/a": {"app"}} and not result.ok
    assert [r.txn.key for r in result.applied.failed] == ["example.com/missing:1", "default/b"]
    missing = [free for ref, free in calls if ref == "example.com/missing:1"]
    assert missing == [True], "the registry is asked once, and not under the apply lock"
    assert ("busybox:1.36", True) in calls


def test_a_deployment_started_for_the_first_time_is_not_a_rollout_to_follow(engine):
    from reconciler.converger import updating_deployments

    engine.write("d.yaml", """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: "busybox:1.36", command: [sleep, "1000"]}]
""")
    first = engine.up()
    assert first.ok and updating_deployments(first) == set(), "`up` returns at once after a first start"
    engine.write("d.yaml", (engine.dir / "d.yaml").read_text().replace('"1000"', '"2000"'))
    second = engine.up()
    assert updating_deployments(second) == {"default/web"}, "a changed template is a rollout `up` follows"


def test_an_always_image_in_the_store_is_asked_of_its_registry_outside_the_apply_lock(engine, monkeypatch):
    from reconciler.drivers.fake import FakeImages
    from reconciler.errors import LockedError
    from reconciler.state import ApplyLock

    engine.drivers.images.ensure_image("busybox:1.36", "IfNotPresent")  # present before the pass
    engine.host.log.clear()
    engine.write("a.yaml", POD.format(name="a", probe="").replace(
        "    image: busybox:1.36\n", "    image: busybox:1.36\n    imagePullPolicy: Always\n"))
    asked: list[tuple[str, bool]] = []  # (policy, whether the apply lock was free at the time)
    real = FakeImages.ensure_image

    def ensure(self, ref, policy, credentials=()):
        try:
            with ApplyLock(engine.paths.lock_file, 0):
                free = True
        except LockedError:
            free = False
        asked.append((policy, free))
        return real(self, ref, policy, credentials)

    monkeypatch.setattr(FakeImages, "ensure_image", ensure)
    first = converger(engine, Clock()).once(goal_of(engine))
    assert first.ok and engine.running() == {"default/a": {"app"}}
    pulls = [op for op in engine.host.log if op.startswith("pull_image")]
    assert len(pulls) == 1, f"the registry is asked once, not again under the lock: {pulls}"
    assert ("Always", True) in asked, asked
    assert ("Always", False) not in asked, f"no registry call with the lock held: {asked}"
