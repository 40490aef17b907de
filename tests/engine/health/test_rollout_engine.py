"""Rollouts and probes through the whole engine on the fake host (probe answers from its table).

A fake clock drives `settle`: each pause the loop takes moves it on, so probe periods and
progress deadlines pass without the test waiting for them.
"""

from __future__ import annotations

import json
import time

import pytest

from reconciler.converger import settle
from reconciler.diff import Action, Reason
from reconciler.health import HealthMonitor, health_view, readiness
from reconciler.observe import observe_host
from reconciler.rollout import Instance, Replica, progress

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  progressDeadlineSeconds: 60
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: app
        image: {image}
        command: ["sleep", "1000"]{ports}
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 2
"""


def deployment(image="busybox:1.36", replicas=3, surge="25%", unavailable="25%", ports=""):
    return DEPLOYMENT.format(image=image, replicas=replicas, surge=surge, unavailable=unavailable, ports=ports)


class Clock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += max(seconds, 0.5)


class Sampler:
    """Looks at the host at every pause of `settle`: how many replicas are available (an
    available instance of either revision), how many instances exist."""

    def __init__(self, engine, clock):
        self.engine, self.clock = engine, clock
        self.available: list[int] = []
        self.instances: list[int] = []

    def report(self, event: str, txn, message: str) -> None:
        """Called at every transaction boundary of every pass."""
        if event != "begin":
            self.sample()

    def __call__(self, seconds: float) -> None:
        self.sample()
        self.clock.sleep(seconds)

    def sample(self) -> None:
        e = self.engine
        desired = e.up(dry_run=True).desired
        observed = observe_host(e.drivers)
        view = health_view(e.state, desired, observed, self.clock())
        replicas = []
        for ref in sorted(r for r in desired.pods if r.startswith("default/web-")):
            inst = [Instance(o.uid, view[o.uid].available) for o in observed.pods.values() if o.key == ref]
            replicas.append(Replica(ref, None, tuple(inst)))
        p = progress(replicas)
        self.available.append(p.available)
        self.instances.append(sum(1 for o in observed.pods.values() if o.key.startswith("default/web-")))


def up_and_settle(engine, clock, sampler=None, wait=False):
    report = sampler.report if sampler else None
    first = engine.up(now=clock(), report=report)
    lines: list[str] = []
    done = settle(first, [str(engine.dir)], engine.drivers, engine.state, engine.paths, wait=wait, timeout=600,
                  clock=clock, sleep=sampler or clock.sleep, progress=lines.append, report=report)
    return first, done, lines


def web_images(engine) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in engine.drivers.runtime.list_containers():
        if c.role == "app" and c.pod.startswith("default/web-"):
            out.setdefault(c.pod, set()).add(c.image)
    return out


def new_ids(engine) -> list[str]:
    desired = engine.up(dry_run=True).desired
    return [c.id for p in desired.pods.values() for c in p.containers]


@pytest.fixture
def clock():
    return Clock()


def test_good_update_rolls_pod_by_pod_keeping_every_replica_available(engine, clock):
    engine.write("d.yaml", deployment())
    up_and_settle(engine, clock, wait=True)
    assert web_images(engine) == {f"default/web-{i}": {"busybox:1.36"} for i in range(3)}

    engine.write("d.yaml", deployment(image="busybox:1.37"))
    sampler = Sampler(engine, clock)
    first, done, lines = up_and_settle(engine, clock, sampler)
    assert done.ok, (done.failed, lines)
    # 3 replicas, 25%: surge rounds up to 1, unavailable down to 0 — one new pod beside the old ones.
    moves = {f"{c.key.name}": (c.action, c.reason) for c in first.plan.changes}
    assert moves["web-0"] == (Action.CREATE, Reason.SPEC_CHANGED)
    assert moves["web-1"][1] == Reason.ROLLOUT_WAIT and moves["web-2"][1] == Reason.ROLLOUT_WAIT
    assert web_images(engine) == {f"default/web-{i}": {"busybox:1.37"} for i in range(3)}
    assert sampler.available and min(sampler.available) >= 3, sampler.available
    assert max(sampler.instances) <= 4, sampler.instances
    assert any("complete" in line for line in lines), lines
    revs = engine.state.rollouts.revisions("default/web")
    assert [(r.revision, r.outcome) for r in revs] == [(1, "complete"), (2, "complete")]


def test_update_that_never_gets_ready_is_rolled_back_and_pinned_until_the_manifest_changes(engine, clock):
    engine.write("d.yaml", deployment())
    up_and_settle(engine, clock, wait=True)
    engine.write("d.yaml", deployment(image="busybox:1.37"))
    for cid in new_ids(engine):
        engine.host.set_probe(cid, False, "readiness")
    sampler = Sampler(engine, clock)
    _, done, lines = up_and_settle(engine, clock, sampler)
    assert not done.ok
    [failed] = done.failed
    assert failed.revision == 2 and failed.rolled_back_to == 1
    assert "readiness probe failed" in failed.message
    assert web_images(engine) == {f"default/web-{i}": {"busybox:1.36"} for i in range(3)}
    assert min(sampler.available) >= 3, sampler.available
    assert [(r.revision, r.outcome) for r in engine.state.rollouts.revisions("default/web")] == [(1, "complete"),
                                                                                       (2, "failed")]
    # podplay still owns the instances that stayed (the dropped ones were recorded last).
    running = {o.key: o.uid for o in observe_host(engine.drivers).pods.values()}
    assert {ref: p.uid for ref, p in engine.state.owned.last_applied().pods.items()} == running
    # The manifest still says revision 2; the pin holds the host on revision 1.
    again = engine.up()
    assert not again.plan.effective_changes
    assert any("pinned to revision 1" in n for n in again.notes)
    # A new template releases the pin and rolls out.
    engine.write("d.yaml", deployment(image="busybox:1.38"))
    _, done, _ = up_and_settle(engine, clock)
    assert done.ok
    assert engine.state.rollouts.pin("default/web") is None
    assert web_images(engine) == {f"default/web-{i}": {"busybox:1.38"} for i in range(3)}


def test_update_to_an_image_that_cannot_be_pulled_is_rolled_back(engine, clock):
    engine.host.registry = {"busybox:1.36"}
    engine.write("d.yaml", deployment())
    up_and_settle(engine, clock, wait=True)
    engine.write("d.yaml", deployment(image="busybox:missing"))
    sampler = Sampler(engine, clock)
    _, done, _ = up_and_settle(engine, clock, sampler)
    [failed] = done.failed
    assert failed.rolled_back_to == 1
    assert "manifest unknown" in failed.message
    assert min(sampler.available) >= 3
    assert web_images(engine) == {f"default/web-{i}": {"busybox:1.36"} for i in range(3)}


def test_host_ports_force_replace_one_by_one_within_max_unavailable(engine, clock):
    ports = "\n        ports: [{containerPort: 80, hostPort: 18080}]"
    text = deployment(ports=ports).replace("metadata:\n  name: web", "metadata:\n  name: web\n  annotations: "
                                           "{podplay.io/host-port-per-replica: 'true'}", 1)
    engine.write("d.yaml", text)
    up_and_settle(engine, clock, wait=True)
    engine.write("d.yaml", text.replace("busybox:1.36", "busybox:1.37"))
    sampler = Sampler(engine, clock)
    first, done, _ = up_and_settle(engine, clock, sampler)
    assert done.ok
    moves = {c.key.name: c.action for c in first.plan.changes}
    # surge 0 (two instances cannot bind one port), unavailable 25% of 3 → 0 → raised to 1.
    assert moves == {"web-0": Action.REPLACE, "web-1": Action.NOOP, "web-2": Action.NOOP}
    assert min(sampler.available) >= 2 and max(sampler.instances) <= 3


def test_changed_configmap_rolls_out_through_the_rollout_path(engine, clock):
    engine.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {mode: fast}\n")
    text = deployment().replace('command: ["sleep", "1000"]',
                                'command: ["sleep", "1000"]\n        envFrom: [{configMapRef: {name: cfg}}]')
    engine.write("d.yaml", text)
    up_and_settle(engine, clock, wait=True)
    engine.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {mode: slow}\n")
    first, done, _ = up_and_settle(engine, clock)
    assert done.ok
    actions = sorted(c.action for c in first.plan.changes if c.key.name.startswith("web-"))
    assert actions == [Action.CREATE, Action.NOOP, Action.NOOP], "one replica at a time, not a blind replace-all"
    revs = engine.state.rollouts.revisions("default/web")
    assert len(revs) == 2 and revs[-1].context["objects"][0]["data"]["data"] == {"mode": "slow"}


def test_failing_liveness_probe_restarts_the_container_through_the_engine(engine, clock):
    engine.write("p.yaml", """apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  containers:
  - name: app
    image: busybox:1.36
    livenessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
      failureThreshold: 2
""")
    engine.up()
    monitor = HealthMonitor(engine.drivers, engine.state, clock=clock)
    cid = engine.up(dry_run=True).desired.pods["default/live"].containers[0].id
    engine.host.set_probe(cid, False, "liveness")
    for _ in range(3):
        clock.sleep(1)
        monitor.check(engine.up(dry_run=True).desired, observe_host(engine.drivers), clock())
    result = engine.up(now=clock())
    [change] = result.plan.effective_changes
    assert (change.action, change.reason, change.containers) == (Action.START, Reason.UNHEALTHY, ("app",))
    assert "liveness probe failed 2 times" in change.detail
    [c] = [c for c in engine.drivers.runtime.list_containers() if c.id == cid]
    assert c.restart_count == 1 and c.state == "running"
    assert any("liveness probe failed" in e[3] for e in engine.state.keepers.events())
    journaled = [json.loads(step) for (step,) in engine.state.db.execute("SELECT step FROM journal")]
    assert any(s["verb"] == "RestartContainer" and s["reason"].startswith("unhealthy: app: liveness probe failed")
               for s in journaled), journaled
    # The restarted run starts with a fresh record; a second failure waits for the back-off.
    monitor.check(engine.up(dry_run=True).desired, observe_host(engine.drivers), clock())
    for _ in range(3):
        clock.sleep(1)
        monitor.check(engine.up(dry_run=True).desired, observe_host(engine.drivers), clock())
    held = engine.up(now=clock())
    assert [(c.action, c.reason) for c in held.plan.changes] == [(Action.NOOP, Reason.BACKING_OFF)]


def test_readiness_is_stored_for_other_processes(engine, clock):
    engine.write("d.yaml", deployment(replicas=1))
    engine.up()
    pod = next(iter(engine.up(dry_run=True).desired.pods.values()))
    assert readiness(engine.state, pod.uid) == {}
    monitor = HealthMonitor(engine.drivers, engine.state, clock=clock)
    monitor.check(engine.up(dry_run=True).desired, observe_host(engine.drivers), clock())
    assert readiness(engine.state, pod.uid) == {"app": True}
    engine.host.set_probe("app", False, "readiness")
    for _ in range(3):
        clock.sleep(2)
        monitor.check(engine.up(dry_run=True).desired, observe_host(engine.drivers), clock())
    assert readiness(engine.state, pod.uid) == {"app": False}


def test_up_wait_waits_for_readiness_and_names_unready_pods(engine, clock):
    engine.write("d.yaml", deployment(replicas=2))
    engine.host.set_probe("app", False, "readiness")
    first = engine.up(now=clock())
    done = settle(first, [str(engine.dir)], engine.drivers, engine.state, engine.paths, wait=True, timeout=30,
                  clock=clock, sleep=clock.sleep)
    assert done.timed_out
    assert sorted(p.split(":")[0] for p in done.problems) == ["default/web-0", "default/web-1"]
    engine.host.set_probe("app", True, "readiness")
    done = settle(engine.up(now=clock()), [str(engine.dir)], engine.drivers, engine.state, engine.paths, wait=True,
                  timeout=30, clock=clock, sleep=clock.sleep)
    assert done.ok
