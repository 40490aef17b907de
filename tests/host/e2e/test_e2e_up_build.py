"""`podplay up --build`: images named after a directory beside the manifests are built first;
a changed context rolls the pods through the normal diff, an unchanged one touches nothing."""

from __future__ import annotations

import signal
import subprocess

from tests.host.e2e.conftest import PODPLAY, container_logs, find_container, wait_for

POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/webapp:latest
    command: ["sh", "-c", "cat /msg; trap 'exit 0' TERM; sleep 3600 & wait"]
"""


def test_up_build_builds_then_rolls_on_a_changed_context(stack):
    m = stack.write("pod.yaml", POD)
    ctx = m.parent / "webapp"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM localhost/busybox:latest\nCOPY msg /msg\n")
    (ctx / "msg").write_text("v1\n")
    stack.run("up", "--build", "--wait", str(m.parent))
    first = find_container(stack, "web", "app")
    wait_for(lambda: "v1" in container_logs(stack, "web", "app"), "v1 in the log")

    again = stack.run("up", "--build", str(m.parent))
    assert find_container(stack, "web", "app").id == first.id, again.stdout + again.stderr

    (ctx / "msg").write_text("v2\n")
    stack.run("up", "--build", "--wait", str(m.parent))
    second = find_container(stack, "web", "app")
    assert second.id != first.id
    wait_for(lambda: "v2" in container_logs(stack, "web", "app"), "v2 in the log")
    stack.run("down", str(m.parent))


def test_up_build_reports_a_bad_containerfile_plainly(stack):
    m = stack.write("pod.yaml", POD)
    ctx = m.parent / "webapp"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM localhost/busybox:latest\nCOPY missing /msg\n")
    res = stack.run("up", "--build", str(m.parent), check=False)
    assert res.returncode == 1
    assert "Containerfile:2: COPY: missing: no such file" in res.stderr and "Traceback" not in res.stderr


def test_watch_build_rebuilds_at_resync_and_rolls_the_pod(stack):
    m = stack.write("pod.yaml", POD)
    ctx = m.parent / "webapp"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM localhost/busybox:latest\nCOPY msg /msg\n")
    (ctx / "msg").write_text("v1\n")
    keeper = subprocess.Popen([*PODPLAY, "watch", "--build", "--relist", "0.5", "--resync", "2", str(m.parent)],
                              env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "v1" in container_logs(stack, "web", "app"), "the built image's pod")
        first = find_container(stack, "web", "app")
        (ctx / "msg").write_text("v2\n")
        wait_for(lambda: find_container(stack, "web", "app").id != first.id and
                 "v2" in container_logs(stack, "web", "app"), "the rebuilt image's pod at the next resync")
    finally:
        keeper.send_signal(signal.SIGTERM)
        _, err = keeper.communicate(timeout=60)
    assert "Traceback" not in err.decode()
    stack.run("down", str(m.parent))


def test_watch_build_rebuilds_when_a_file_of_a_context_changes(stack):
    m = stack.write("pod.yaml", POD)
    ctx = m.parent / "webapp"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM localhost/busybox:latest\nCOPY msg /msg\n")
    (ctx / "msg").write_text("v1\n")
    # The resync is an hour away: only the context's own file event can bring the rebuild.
    keeper = subprocess.Popen([*PODPLAY, "watch", "--build", "--relist", "0.5", "--resync", "3600", str(m.parent)],
                              env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "v1" in container_logs(stack, "web", "app"), "the built image's pod")
        first = find_container(stack, "web", "app")
        (ctx / "msg").write_text("v2\n")
        wait_for(lambda: find_container(stack, "web", "app").id != first.id and
                 "v2" in container_logs(stack, "web", "app"), "the rebuilt image's pod after the context changed")
    finally:
        keeper.send_signal(signal.SIGTERM)
        _, err = keeper.communicate(timeout=60)
    assert "Traceback" not in err.decode()
    stack.run("down", str(m.parent))
