"""Storage faults on the real stack: a replace on a nearly full storage root (make-before-break),
and a snapshot deleted or unmounted under a running pod.

Each test asserts what a user sees (exit code, one clear message, no traceback), that the
running pod keeps answering, and that `down` afterwards leaves nothing."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.host.e2e.conftest import free_port, host_leftovers, http_get, pod_containers, wait_http
from tests.host.e2e.test_e2e_faults import fill
from tests.support.host import remove_everything

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: httpd
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, hostPort: {port}}}]
"""


@pytest.fixture
def tmpfs_root(stack):
    """The test's storage root moved onto a 24 MB tmpfs of its own (the busybox image with it),
    so that a test can fill it. Whatever a failed test left is removed before it goes."""
    root = stack.paths.root
    saved = stack.tmp / "root-before-tmpfs"
    shutil.copytree(root, saved, symlinks=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(root)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{saved}/.", str(root)], check=True)
        yield root
    finally:
        (root / "ballast").unlink(missing_ok=True)
        stack.run("down", str(stack.tmp / "manifests"), check=False)
        remove_everything(stack.drivers())
        subprocess.run(["umount", str(root)], check=False)
        shutil.rmtree(saved, ignore_errors=True)


def leftovers(stack, tmpfs_root) -> list[str]:
    """host_leftovers, but for the test's own tmpfs under the storage root."""
    return [x for x in host_leftovers(stack) if x != f"mount {tmpfs_root}"]


def serving(stack) -> str:
    (uid,) = {c.pod_uid for c in pod_containers(stack, "web")}
    return uid


def test_a_replace_on_a_nearly_full_root_leaves_the_old_pod_running_until_there_is_room(stack, tmpfs_root):
    port = free_port()
    m = stack.write("web.yaml", POD.format(page="one", port=port))
    stack.run("up", "--wait", str(m))
    assert wait_http(f"http://127.0.0.1:{port}/") == "one\n"
    old = serving(stack)
    m.write_text(POD.format(page="two", port=port))

    fill(tmpfs_root, 150 * 1024)
    res = stack.run("up", str(m), check=False)
    assert res.returncode == 8, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    found = re.search(r"no space left on the file system of (\S+): ([\d.]+) MB free, need ([\d.]+) MB", res.stderr)
    assert found, res.stderr
    assert found.group(1) == str(tmpfs_root)
    assert res.stderr.count("no space left") == 1, f"one clear error:\n{res.stderr}"
    # The old pod was never touched: the same instance answers, the plan still wants the replace.
    assert http_get(f"http://127.0.0.1:{port}/") == "one\n"
    assert serving(stack) == old
    assert "~ replace pod default/web" in stack.run("plan", str(m)).stdout

    # Just enough room (what the error said it needs, and a little): the replace goes through.
    need = float(found.group(3)) * 1e6
    (tmpfs_root / "ballast").unlink()
    fill(tmpfs_root, int(need) + 256 * 1024)  # (the message rounds; this pass journals a little first)
    stack.run("up", "--wait", str(m))
    assert wait_http(f"http://127.0.0.1:{port}/") == "two\n"
    assert serving(stack) != old
    assert stack.run("plan", str(m)).stdout.startswith("No changes")

    (tmpfs_root / "ballast").unlink()
    stack.run("down", str(m))
    assert leftovers(stack, tmpfs_root) == []


def test_a_replace_on_a_full_root_is_one_clear_error_and_changes_nothing(stack, tmpfs_root):
    port = free_port()
    m = stack.write("web.yaml", POD.format(page="one", port=port))
    stack.run("up", "--wait", str(m))
    old = serving(stack)
    m.write_text(POD.format(page="two", port=port))

    fill(tmpfs_root, 0)
    res = stack.run("up", str(m), check=False)
    assert res.returncode == 8, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "no space left" in res.stderr and "MB free" in res.stderr
    assert http_get(f"http://127.0.0.1:{port}/") == "one\n"
    assert serving(stack) == old

    # `down` on the full disk works too: the journal's reserve pays for its bookkeeping.
    stack.run("down", str(m))
    assert leftovers(stack, tmpfs_root) == []


@pytest.mark.parametrize("lost", ["snapshot dir", "overlay mount"])
def test_a_lost_root_filesystem_is_drift_that_up_repairs(stack, lost):
    port = free_port()
    m = stack.write("web.yaml", POD.format(page="one", port=port))
    stack.run("up", "--wait", str(m))
    (app,) = [c for c in pod_containers(stack, "web") if c.role == "app"]
    if lost == "snapshot dir":
        shutil.rmtree(stack.paths.snapshots / app.id)
    else:
        subprocess.run(["umount", "-l", str(stack.paths.mounts / app.id / "rootfs")], check=True)

    plan = stack.run("plan", str(m)).stdout
    assert "~ replace pod default/web (incomplete: root filesystem gone" in plan, plan
    up = stack.run("up", "--wait", str(m))
    assert "replaced pod default/web" in up.stdout, up.stdout
    assert wait_http(f"http://127.0.0.1:{port}/") == "one\n"
    assert (stack.paths.snapshots / app.id / "snapshot.json").is_file()
    assert stack.run("plan", str(m)).stdout.startswith("No changes")
    assert "No changes" in stack.run("up", str(m)).stdout

    stack.run("down", str(m))
    assert host_leftovers(stack) == []


def test_down_unmounts_a_root_filesystem_whose_snapshot_dir_is_gone(stack):
    port = free_port()
    m = stack.write("web.yaml", POD.format(page="one", port=port))
    stack.run("up", "--wait", str(m))
    (app,) = [c for c in pod_containers(stack, "web") if c.role == "app"]
    shutil.rmtree(stack.paths.snapshots / app.id)
    stack.run("down", str(m))
    assert host_leftovers(stack) == []


@pytest.mark.parametrize("free_kb", [16, 96])
def test_a_new_pod_on_a_nearly_full_root_is_made_whole_or_refused_with_one_clear_error(stack, tmpfs_root, free_kb):
    """Not a replace (no space check up front): whatever step meets the full disk first — the
    journal, the snapshot, the bundle, conmon's files — the pass either makes the pod whole or
    ends with the one no-space error, exit 8, the half-made pod undone."""
    port = free_port()
    m = stack.write("web.yaml", POD.format(page="one", port=port))
    stack.run("up", str(m))  # the state store and the image's layers are there, as on a used host
    stack.run("down", str(m))
    fill(tmpfs_root, free_kb * 1024)
    res = stack.run("up", str(m), check=False)
    assert "Traceback" not in res.stderr
    if res.returncode == 0:
        assert wait_http(f"http://127.0.0.1:{port}/") == "one\n"
    else:
        assert res.returncode == 8, res.stdout + res.stderr
        assert res.stderr.count("no space left on the file system of") == 1, res.stderr
        assert pod_containers(stack, "web") == []
        assert leftovers(stack, tmpfs_root) == []
    (tmpfs_root / "ballast").unlink()
    stack.run("up", "--wait", str(m))
    assert wait_http(f"http://127.0.0.1:{port}/") == "one\n"
    stack.run("down", str(m))
    assert leftovers(stack, tmpfs_root) == []
