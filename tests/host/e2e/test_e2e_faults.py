"""Faults an edge device meets, on the real stack: a damaged state store, a full disk.

Each test asserts what a user sees (exit code, one clear message, no traceback), that running
pods survive, and that `down` afterwards leaves nothing."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.host.e2e.conftest import free_port, host_leftovers, http_get, wait_http

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 3  # httpd as PID 1 ignores SIGTERM: the grace period is all a stop takes
  containers:
  - name: httpd
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, hostPort: {port}}}]
"""


def damage(path, how: str) -> None:
    """Damage the store the way a power cut or a bad sector would."""
    with open(path, "r+b") as f:
        if how == "header":
            f.write(b"this is not a database at all" * 4)
        else:
            size = os.fstat(f.fileno()).st_size
            assert size > 3 * 4096, "the store should span several pages"
            f.seek(2 * 4096)
            f.write(os.urandom(4096))


@pytest.mark.parametrize("how", ["header", "page"])
def test_a_damaged_state_store_is_moved_aside_and_its_pods_are_adopted(stack, how):
    port = free_port()
    m = stack.write("web.yaml", POD.format(name="web", port=port))
    stack.run("up", "--wait", str(m))
    wait_http(f"http://127.0.0.1:{port}/")
    db = stack.paths.state_db
    damage(db, how)

    again = stack.run("up", str(m))
    assert "Traceback" not in again.stderr
    assert "state store was damaged" in again.stderr and "moved aside" in again.stderr
    assert "No changes" in again.stdout, "the running pod is adopted from its labels, not recreated"
    aside = [p for p in db.parent.iterdir() if p.name.startswith("state.db.damaged-")]
    assert aside, "the damaged file is kept for inspection"
    assert http_get(f"http://127.0.0.1:{port}/") == "ok\n"

    quiet = stack.run("up", str(m))
    assert "damaged" not in quiet.stderr, "reported once"
    stack.run("down", str(m))
    assert host_leftovers(stack) == []


@pytest.fixture
def small_root(stack):
    """The storage root on a 2 MB tmpfs of its own (removed after the test)."""
    mnt = stack.tmp / f"small-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory, leave: int) -> None:
    """Fill the file system of `directory` until about `leave` bytes are free."""
    fd = os.open(os.path.join(directory, "ballast"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            st = os.statvfs(directory)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                os.write(fd, b"\0" * min(free - leave, 64 * 1024))
            except OSError:
                break
    finally:
        os.close(fd)


@pytest.mark.parametrize("leave", [0, 8 * 1024])
def test_a_full_storage_root_is_one_clear_error_and_changes_nothing(stack, small_root, leave):
    m = stack.write("web.yaml", POD.format(name="web", port=free_port()))
    fill(small_root, leave)
    env = {"PODPLAY_ROOT": str(small_root / "root")}
    res = stack.run("up", str(m), check=False, env=env)
    assert res.returncode == 8, res.stderr
    assert "Traceback" not in res.stderr
    assert "no space left" in res.stderr and "MB free" in res.stderr
    assert not stack.containers()


def _app_and_infra(stack, pod: str):
    found = {c.role: c for c in stack.containers() if c.pod == f"default/{pod}"}
    return found["app"], found["infra"]


@pytest.mark.parametrize("lost", ["app runc state", "infra runc state", "app conmon", "infra pinned namespaces"])
def test_a_container_whose_runc_state_or_conmon_is_gone_is_repaired_and_removed_cleanly(stack, lost):
    import shutil
    import signal
    import time

    port = free_port()
    text = POD.format(name="web", port=port)
    if lost == "infra runc state":  # a pod whose sandbox is a catatonit container (a shared pid namespace)
        text = text.replace("spec:\n", "spec:\n  shareProcessNamespace: true\n")
    m = stack.write("web.yaml", text)
    stack.run("up", "--wait", str(m))
    wait_http(f"http://127.0.0.1:{port}/")
    app, infra = _app_and_infra(stack, "web")
    target = app if lost.startswith("app") else infra
    if lost == "infra pinned namespaces":  # what `umount` of the pod's namespace files does
        for ns in (stack.paths.runroot / "pods" / infra.pod_uid / "ns").iterdir():
            subprocess.run(["umount", str(ns)], check=True)
    elif lost.endswith("runc state"):
        shutil.rmtree(stack.paths.runc_root / target.id)
    else:
        state = (stack.paths.conmon / target.id / "state.json").read_text()
        import json

        os.kill(json.loads(state)["conmon_pid"], signal.SIGKILL)
        time.sleep(0.5)

    plan = stack.run("plan", str(m))
    assert "No changes" not in plan.stdout, "the drift is seen"
    again = stack.run("up", "--wait", str(m))
    assert "Traceback" not in again.stderr
    assert http_get(f"http://127.0.0.1:{port}/") == "ok\n"
    after, _ = _app_and_infra(stack, "web")
    assert after.state == "running"
    assert stack.run("plan", str(m)).stdout.startswith("No changes")

    started = time.monotonic()
    stack.run("down", str(m))
    assert time.monotonic() - started < 20, "down does not wait on a container runc cannot see"
    assert host_leftovers(stack) == []
