"""Pod features from the Kubernetes docs on the real stack: native sidecars (and, as they land,
downwardAPI/projected volumes, lifecycle hooks, image volumes).

Order is recorded by the containers themselves in a hostPath file (the test's own directory),
so what is asserted is what happened inside the pod, not what podplay says it did."""

from __future__ import annotations

import json
import os
import time

from reconciler.observed import ContainerState
from tests.host.e2e.conftest import exec_in, find_container, host_leftovers, wait_for

IMAGE = "localhost/busybox:latest"

# A process that says when it starts and when it is told to stop (busybox sh as PID 1 ignores a
# SIGTERM it has no trap for); `slow` seconds pass between the signal and its exit.
def looper(name: str, slow: int = 0) -> str:
    pause = f"sleep {slow}; " if slow else ""
    return (f'echo {name}-start >> /rec/order; trap "{pause}echo {name}-stop >> /rec/order; exit 0" TERM; '
            "while true; do sleep 0.1; done")


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_sidecar_starts_before_the_next_init_and_the_app_and_stops_after_the_app(stack, tmp_path):
    rec = tmp_path / "rec"
    stack.env["PODPLAY_ALLOWED_HOST_PATHS"] = str(tmp_path)  # the record: beyond baseline, allowed here
    m = stack.write("side.yaml", f"""apiVersion: v1
kind: Pod
metadata: {{name: side}}
spec:
  terminationGracePeriodSeconds: 20
  initContainers:
  - name: log
    image: {IMAGE}
    restartPolicy: Always
    command: ["sh", "-c", {json.dumps(looper("sidecar"))}]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  - name: check
    image: {IMAGE}
    command: ["sh", "-c", "grep -q sidecar-start /rec/order && echo init-ran >> /rec/order"]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c", {json.dumps(looper("app", slow=2))}]
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  volumes:
  - name: rec
    hostPath: {{path: {rec}, type: DirectoryOrCreate}}
""")
    stack.run("up", "--wait", "--timeout", "60", str(m))
    wait_for(lambda: "app-start" in lines(rec / "order"), "the app container's start")
    assert lines(rec / "order") == ["sidecar-start", "init-ran", "app-start"]
    # It keeps running beside the app (a run-to-completion init would have been waited for).
    assert find_container(stack, "side", "log").state == ContainerState.RUNNING

    # A sidecar that exits is started again (restartPolicy Always of its own).
    os.kill(find_container(stack, "side", "log").pid, 9)
    wait_for(lambda: find_container(stack, "side", "log").state == ContainerState.EXITED, "the killed sidecar")
    res = stack.run("up", str(m))
    assert "> restarted default/side [log]" in res.stdout, res.stdout
    wait_for(lambda: lines(rec / "order").count("sidecar-start") == 2, "the sidecar's second start")

    # Stop order: the app first (it takes 2 s to go), the sidecar only after it.
    started = time.monotonic()
    stack.run("stop", "side")
    assert lines(rec / "order")[-2:] == ["app-stop", "sidecar-stop"]
    assert time.monotonic() - started < 20, "within the pod's grace period"
    stack.run("down", str(m))
    assert host_leftovers(stack) == []


def test_downward_api_and_projected_volume_files(stack):
    m = stack.write("info.yaml", f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Pod
metadata:
  name: info
  labels: {{tier: front}}
  annotations: {{build: "42"}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    command: ["sleep", "100000"]
    resources: {{limits: {{memory: 64Mi, cpu: 250m}}}}
    volumeMounts:
    - {{name: info, mountPath: /etc/podinfo}}
    - {{name: all, mountPath: /etc/all}}
  - name: side
    image: {IMAGE}
    command: ["sleep", "100000"]
  volumes:
  - name: info
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: uid, fieldRef: {{fieldPath: metadata.uid}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: build, fieldRef: {{fieldPath: "metadata.annotations['build']"}}}}
      - {{path: cpu, resourceFieldRef: {{containerName: app, resource: limits.cpu, divisor: 1m}}}}
      - {{path: mem, resourceFieldRef: {{containerName: side, resource: limits.memory, divisor: 1Mi}}}}
  - name: all
    projected:
      sources:
      - configMap: {{name: cfg}}
      - downwardAPI: {{items: [{{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}]}}
""")
    stack.run("up", "--wait", "--timeout", "60", str(m))
    cat = lambda path: exec_in(stack, "info", "app", "cat", path).stdout  # noqa: E731
    assert cat("/etc/podinfo/name") == "info"
    [uid] = {c.pod_uid for c in stack.containers() if c.pod == "default/info"}
    assert cat("/etc/podinfo/uid") == uid
    assert cat("/etc/podinfo/labels") == 'tier="front"'
    assert cat("/etc/podinfo/build") == "42"
    assert cat("/etc/podinfo/cpu") == "250"
    # `side` sets no memory limit: the node's memory, as the kubelet writes its allocatable.
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert cat("/etc/podinfo/mem") == str(-(-total // 2**20))
    assert cat("/etc/all/greeting") == "hello" and cat("/etc/all/ns") == "default"
    # Read-only, as the kubelet mounts them.
    assert exec_in(stack, "info", "app", "sh", "-c", "echo x > /etc/podinfo/name", check=False).returncode != 0
    stack.run("stop", "-t", "0", "info")
    stack.run("down", str(m))
    assert host_leftovers(stack) == []


def test_post_start_runs_before_the_next_container_and_pre_stop_delays_the_stop(stack, tmp_path):
    rec = tmp_path / "rec"
    stack.env["PODPLAY_ALLOWED_HOST_PATHS"] = str(tmp_path)  # the record: beyond baseline, allowed here
    pre_stop = "echo a-prestop >> /rec/order; sleep 2; echo a-prestop-done >> /rec/order"
    m = stack.write("hooks.yaml", f"""apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: a
    image: {IMAGE}
    command: ["sh", "-c", {json.dumps(looper("a"))}]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "sleep 1; echo a-poststart >> /rec/order"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", {json.dumps(pre_stop)}]}}}}
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  - name: b
    image: {IMAGE}
    command: ["sh", "-c", {json.dumps(looper("b"))}]
    lifecycle:
      preStop: {{sleep: {{seconds: 1}}}}
    volumeMounts: [{{name: rec, mountPath: /rec}}]
  volumes:
  - name: rec
    hostPath: {{path: {rec}, type: DirectoryOrCreate}}
""")
    stack.run("up", "--wait", "--timeout", "60", str(m))
    wait_for(lambda: "b-start" in lines(rec / "order"), "b's start")
    # postStart finished before the pod's next container was started (the kubelet's order).
    assert lines(rec / "order") == ["a-start", "a-poststart", "b-start"]
    started = time.monotonic()
    stack.run("stop", "hooks")
    took = time.monotonic() - started
    order = lines(rec / "order")[3:]
    # a's hook ran to its end before a was signalled; b's sleep hook delayed b's signal.
    assert order.index("a-prestop") < order.index("a-prestop-done") < order.index("a-stop"), order
    assert "b-stop" in order
    assert 2 <= took < 10, f"the hook's 2 s, within the 10 s grace period ({took:.1f} s)"
    stack.run("down", str(m))
    assert host_leftovers(stack) == []


def test_an_image_volume_is_pulled_and_mounted_read_only(stack, registry):
    from tests.support.images import make_busybox_image

    data = make_busybox_image(registry, "e2e/volume-data", config={"labels": {"purpose": "image-volume"}})
    m = stack.write("imgvol.yaml", f"""apiVersion: v1
kind: Pod
metadata: {{name: imgvol}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    command: ["sleep", "100000"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    image: {{reference: {data.ref}, pullPolicy: IfNotPresent}}
""")
    stack.run("up", "--wait", "--timeout", "60", str(m))
    # Pulled like a container's image (it was not in the store), its files under the mount.
    assert [i for i in stack.drivers().images.list_images() if data.ref in i.names]
    assert exec_in(stack, "imgvol", "app", "ls", "/data/bin/busybox").stdout.strip() == "/data/bin/busybox"
    res = exec_in(stack, "imgvol", "app", "sh", "-c", "touch /data/x", check=False)
    assert res.returncode != 0 and "Read-only" in res.stderr + res.stdout
    # The volume's image is in use while its pod lives: rmi refuses, prune keeps it and its snapshot.
    res = stack.run("rmi", data.ref, check=False)
    assert res.returncode != 0 and "image in use" in res.stderr and "default/imgvol" in res.stderr, res.stderr
    stack.run("image", "prune")
    assert exec_in(stack, "imgvol", "app", "test", "-x", "/data/bin/busybox", check=False).returncode == 0
    assert [i for i in stack.drivers().images.list_images() if data.ref in i.names]
    stack.run("stop", "-t", "0", "imgvol")
    stack.run("down", str(m))
    assert host_leftovers(stack) == []


def test_a_run_to_completion_pods_sidecar_is_stopped_once_its_app_finishes(stack):
    m = stack.write("task.yaml", f"""apiVersion: v1
kind: Pod
metadata: {{name: task}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: proxy
    image: {IMAGE}
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
  containers:
  - name: work
    image: {IMAGE}
    command: ["sh", "-c", "sleep 1; echo done"]
""")
    stack.run("up", str(m))
    wait_for(lambda: find_container(stack, "task", "work").state == ContainerState.EXITED, "the task to finish")
    assert find_container(stack, "task", "proxy").state == ContainerState.RUNNING
    res = stack.run("up", str(m))
    assert ". stopped default/task [proxy] (finished" in res.stdout, res.stdout
    proxy = find_container(stack, "task", "proxy")
    assert proxy.state == ContainerState.EXITED and proxy.exit_code == 0, "stopped, not killed"
    assert "No changes" in stack.run("up", str(m)).stdout, "a finished pod's sidecar is not restarted"
    stack.run("down", str(m))
