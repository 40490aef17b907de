"""The workload kinds beyond Deployment on the real stack: ReplicaSet and ReplicationController."""

from __future__ import annotations

import json

REPLICA_SET = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: front}}
spec:
  replicas: {n}
  selector: {{matchLabels: {{app: front}}}}
  template:
    metadata: {{labels: {{app: front}}}}
    spec:
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sleep, "1000"]
"""


def running_pods(stack) -> set[str]:
    out = json.loads(stack.run("pods", "-o", "json").stdout)
    return {p["name"] for p in out if p.get("status", "").lower().startswith("running")}


def test_replica_set_scaled_up_and_down_and_removed(stack):
    m = stack.write("rs.yaml", REPLICA_SET.format(n=3))
    stack.run("up", "--wait", str(m))
    assert running_pods(stack) == {"front-0", "front-1", "front-2"}

    stack.write("rs.yaml", REPLICA_SET.format(n=1))
    res = stack.run("up", "--wait", str(m))
    assert "front-1" in res.stdout and "front-2" in res.stdout
    assert running_pods(stack) == {"front-0"}

    stack.write("rs.yaml", REPLICA_SET.format(n=2))
    stack.run("up", "--wait", str(m))
    assert running_pods(stack) == {"front-0", "front-1"}
    assert "No changes" in stack.run("up", str(m)).stdout
    stack.run("down", str(m))
    assert not stack.containers()


def test_replication_controller_runs_its_replicas(stack):
    m = stack.write("rc.yaml", """
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sleep, "1000"]
""")
    stack.run("up", "--wait", str(m))
    assert running_pods(stack) == {"legacy-0", "legacy-1"}
    stack.run("down", str(m))
    assert not stack.containers()


DAEMON_SET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        command: [sleep, "1000"]
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 1
"""


def test_daemon_set_runs_one_pod_and_rolls_it_to_a_new_image(stack):
    m = stack.write("ds.yaml", DAEMON_SET.format(image="localhost/busybox:latest"))
    stack.run("up", "--wait", str(m))
    assert running_pods(stack) == {"agent-0"}
    stack.run("tag", "localhost/busybox:latest", "localhost/busybox:v2")

    stack.write("ds.yaml", DAEMON_SET.format(image="localhost/busybox:v2"))
    res = stack.run("up", "--wait", "--timeout", "120", str(m))
    assert "agent-0" in res.stdout
    assert running_pods(stack) == {"agent-0"}
    images = {c.image for c in stack.containers() if c.role == "app" and c.state == "running"}
    assert images == {"localhost/busybox:v2"}
    history = stack.run("rollout", "history", "agent").stdout
    assert "complete" in history and "busybox:v2" in history
    stack.run("down", str(m))
    assert not stack.containers()
