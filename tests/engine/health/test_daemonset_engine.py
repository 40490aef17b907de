"""A DaemonSet on the fake host: one pod, `<name>-0`, rolled to a new template by the same
revisions and rolling-update planner as a Deployment (defaults maxSurge 0, maxUnavailable 1)."""

from __future__ import annotations

from reconciler.diff import Action, Reason
from tests.engine.health.test_rollout_engine import Clock, up_and_settle

DAEMON_SET = """apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {{app: agent}}{strategy}
  template:
    metadata:
      labels: {{app: agent}}
    spec:
      containers:
      - name: app
        image: {image}
        command: ["sleep", "1000"]
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 2
"""


def daemon_set(image: str = "busybox:1.36", strategy: str = "") -> str:
    return DAEMON_SET.format(image=image, strategy=strategy)


def agent_images(engine) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in engine.drivers.runtime.list_containers():
        if c.role == "app":
            out.setdefault(c.pod, set()).add(c.image)
    return out


def test_daemon_set_default_update_replaces_its_one_pod_and_records_revisions(engine):
    clock = Clock()
    engine.write("ds.yaml", daemon_set())
    up_and_settle(engine, clock, wait=True)
    assert agent_images(engine) == {"default/agent-0": {"busybox:1.36"}}
    assert engine.up().plan.empty

    engine.write("ds.yaml", daemon_set(image="busybox:1.37"))
    first, done, lines = up_and_settle(engine, clock)
    assert done.ok, (done.failed, lines)
    # maxSurge 0, maxUnavailable 1: the one pod is replaced in place.
    assert [(c.key.name, c.action) for c in first.plan.changes] == [("agent-0", Action.REPLACE)]
    assert agent_images(engine) == {"default/agent-0": {"busybox:1.37"}}
    revs = engine.state.rollouts.revisions("default/agent")
    assert [(r.revision, r.outcome) for r in revs] == [(1, "complete"), (2, "complete")]


def test_daemon_set_with_max_surge_starts_the_new_pod_beside_the_old_one(engine):
    clock = Clock()
    surge = "\n  updateStrategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}"
    engine.write("ds.yaml", daemon_set(strategy=surge))
    up_and_settle(engine, clock, wait=True)
    engine.write("ds.yaml", daemon_set(image="busybox:1.37", strategy=surge))
    first, done, _ = up_and_settle(engine, clock)
    assert done.ok
    assert [(c.key.name, c.action, c.reason) for c in first.plan.changes] == [
        ("agent-0", Action.CREATE, Reason.SPEC_CHANGED)]
    assert agent_images(engine) == {"default/agent-0": {"busybox:1.37"}}


def test_daemon_set_update_that_never_gets_ready_is_rolled_back(engine):
    clock = Clock()
    surge = "\n  updateStrategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}"
    engine.write("ds.yaml", daemon_set(strategy=surge))
    up_and_settle(engine, clock, wait=True)
    engine.write("ds.yaml", daemon_set(image="busybox:1.37", strategy=surge))
    desired = engine.up(dry_run=True).desired
    for c in desired.pods["default/agent-0"].containers:
        engine.host.set_probe(c.id, False, "readiness")
    _, done, _ = up_and_settle(engine, clock)
    [failed] = done.failed
    assert failed.revision == 2 and failed.rolled_back_to == 1
    assert agent_images(engine) == {"default/agent-0": {"busybox:1.36"}}
