"""Pod features from the Kubernetes docs on the real stack: native sidecars (and, as they land,
downwardAPI/projected volumes, lifecycle hooks, image volumes).

Order is recorded by the containers themselves in a hostPath file (the test's own directory),
so what is asserted is what happened inside the pod, not what podplay says it did."""

from __future__ import annotations

import json
import os
import time

from reconciler.observed import ContainerState
from tests.host.e2e.conftest import find_container, host_leftovers, wait_for

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
