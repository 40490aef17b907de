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


STATEFUL_SET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: {n}
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, 'cut -d" " -f1 /proc/uptime >> /data/started; [ -f /data/seed ] || hostname > /data/seed;
                  trap "exit 0" TERM; sleep 3600 & wait']
        volumeMounts: [{{name: data, mountPath: /data}}]
        readinessProbe:
          exec: {{command: [cat, /data/seed]}}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"""


def in_pod(stack, pod: str, *argv: str) -> str:
    return stack.run("exec", pod, "--", *argv).stdout


def test_stateful_set_scaled_3_1_3_starts_in_order_and_keeps_each_ordinals_data(stack):
    m = stack.write("db.yaml", STATEFUL_SET.format(n=3))
    stack.run("up", "--wait", "--timeout", "120", str(m))
    assert running_pods(stack) == {"db-0", "db-1", "db-2"}
    started = [float(in_pod(stack, f"db-{i}", "cat", "/data/started").split()[0]) for i in range(3)]
    assert started == sorted(started), f"not started in ordinal order: {started}"
    assert in_pod(stack, "db-1", "hostname").strip() == "db-1"
    assert "db-1.db.default.svc.cluster.local db-1" in in_pod(stack, "db-1", "cat", "/etc/hosts").replace("\t", " ")

    stack.write("db.yaml", STATEFUL_SET.format(n=1))
    stack.run("up", "--wait", "--timeout", "120", str(m))
    assert running_pods(stack) == {"db-0"}

    stack.write("db.yaml", STATEFUL_SET.format(n=3))
    stack.run("up", "--wait", "--timeout", "120", str(m))
    assert running_pods(stack) == {"db-0", "db-1", "db-2"}
    for i in (1, 2):  # their claims survived the scale-down: the same data, a second start
        assert in_pod(stack, f"db-{i}", "cat", "/data/seed").strip() == f"db-{i}"
        assert len(in_pod(stack, f"db-{i}", "cat", "/data/started").split()) == 2
    stack.run("down", "--volumes", str(m))
    assert not stack.containers()


ON_DELETE = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: probe}}
spec:
  selector: {{matchLabels: {{app: probe}}}}
  updateStrategy: {{type: OnDelete}}
  template:
    metadata: {{labels: {{app: probe}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        env: [{{name: VERSION, value: "{version}"}}]
        command: [sh, -c, 'trap "exit 0" TERM; sleep 3600 & wait']
"""


def test_daemon_set_on_delete_keeps_its_pod_until_podplay_rm_then_runs_the_new_template(stack):
    m = stack.write("ds.yaml", ON_DELETE.format(version="1"))
    stack.run("up", "--wait", str(m))
    stack.write("ds.yaml", ON_DELETE.format(version="2"))
    plan = stack.run("plan", str(m)).stdout
    assert "1 pod on an old revision (probe-0)" in plan and "OnDelete" in plan, plan
    res = stack.run("up", "--wait", str(m))
    assert "1 pod on an old revision (probe-0)" in res.stdout, res.stdout
    assert in_pod(stack, "probe-0", "sh", "-c", "echo $VERSION").strip() == "1", "a template change replaces nothing"
    get = stack.run("get", "ds").stdout
    assert get.splitlines()[0].split()[:5] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE"]
    assert get.splitlines()[1].split()[1:5] == ["1", "1", "1", "0"] and "old revision (probe-0)" in get, get

    stack.run("rm", "-f", "probe-0")
    stack.run("up", "--wait", str(m))
    assert in_pod(stack, "probe-0", "sh", "-c", "echo $VERSION").strip() == "2", "deleted, back on the new template"
    assert stack.run("get", "ds").stdout.splitlines()[1].split()[4] == "1"
    stack.run("down", str(m))
    assert not stack.containers()


PARTITIONED = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  updateStrategy:
    rollingUpdate: {{partition: {partition}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        env: [{{name: VERSION, value: "{version}"}}]
        command: [sh, -c, 'cut -d" " -f1 /proc/uptime > /tmp/started; trap "exit 0" TERM; sleep 3600 & wait']
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 1
"""


def test_stateful_set_partition_updates_only_the_ordinals_above_it_highest_first(stack):
    m = stack.write("web.yaml", PARTITIONED.format(partition=1, version="1"))
    stack.run("up", "--wait", "--timeout", "120", str(m))
    stack.write("web.yaml", PARTITIONED.format(partition=1, version="2"))
    res = stack.run("up", "--wait", "--timeout", "120", str(m))
    versions = [in_pod(stack, f"web-{i}", "sh", "-c", "echo $VERSION").strip() for i in range(3)]
    assert versions == ["1", "2", "2"], versions
    started = {i: float(in_pod(stack, f"web-{i}", "cat", "/tmp/started")) for i in (1, 2)}
    assert started[2] < started[1], f"web-2 is updated before web-1: {started}"
    assert "1 pod on an old revision (web-0), below the partition 1" in res.stdout, res.stdout
    assert "No changes" in stack.run("up", str(m)).stdout, "a partitioned update is settled"
    stack.run("rm", "-f", "web-0")
    stack.run("up", "--wait", "--timeout", "120", str(m))
    assert in_pod(stack, "web-0", "sh", "-c", "echo $VERSION").strip() == "1", "restored on the old revision"

    stack.write("web.yaml", PARTITIONED.format(partition=0, version="2"))
    stack.run("up", "--wait", "--timeout", "120", str(m))
    assert [in_pod(stack, f"web-{i}", "sh", "-c", "echo $VERSION").strip() for i in range(3)] == ["2", "2", "2"]
    stack.run("down", str(m))
    assert not stack.containers()


RETAINED = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: kv}}
spec:
  serviceName: kv
  replicas: {n}
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {{whenDeleted: {deleted}, whenScaled: Delete}}
  selector: {{matchLabels: {{app: kv}}}}
  template:
    metadata: {{labels: {{app: kv}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, 'echo start >> /data/starts; trap "exit 0" TERM; sleep 3600 & wait']
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"""


def test_claim_retention_policy_deletes_scaled_away_data_and_retains_or_deletes_on_down(stack):
    claims = stack.paths.claims / "default"

    def starts(pod: str) -> int:
        return len(in_pod(stack, pod, "cat", "/data/starts").split())

    m = stack.write("kv.yaml", RETAINED.format(n=2, deleted="Retain"))
    stack.run("up", "--wait", str(m))
    assert (starts("kv-0"), starts("kv-1")) == (1, 1)
    stack.write("kv.yaml", RETAINED.format(n=1, deleted="Retain"))
    plan = stack.run("plan", str(m)).stdout
    assert "data-kv-1" in plan and "whenScaled: Delete" in plan, plan
    stack.run("up", "--wait", str(m))
    assert not (claims / "data-kv-1").exists() and (claims / "data-kv-0").is_dir()
    stack.write("kv.yaml", RETAINED.format(n=2, deleted="Retain"))
    stack.run("up", "--wait", str(m))
    assert starts("kv-1") == 1, "kv-1's data went with its claim: a fresh one"

    stack.run("down", str(m))  # whenDeleted Retain: the claims stay, with their data
    assert (claims / "data-kv-0").is_dir() and (claims / "data-kv-1").is_dir()
    stack.write("kv.yaml", RETAINED.format(n=2, deleted="Delete"))
    stack.run("up", "--wait", str(m))
    assert (starts("kv-0"), starts("kv-1")) == (2, 2), "the retained data came back"
    stack.run("down", str(m))  # whenDeleted Delete: gone with the set
    assert not (claims / "data-kv-0").exists() and not (claims / "data-kv-1").exists()
    assert not stack.containers()
