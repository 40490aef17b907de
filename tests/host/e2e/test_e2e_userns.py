"""hostUsers: false through `podplay up`/`down` on the real stack: the pod runs as an unprivileged
host user from podplay's /etc/subuid range, sees its image, emptyDir, configMap, Secret and PVC
with the owners it expects, cannot read a root-only host file through a hostPath, and `down`
leaves nothing (mounts, processes, the range)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from reconciler import subids
from reconciler.desired import build_desired
from reconciler.manifests import load_manifests
from tests.host.e2e.conftest import exec_in, find_container, host_leftovers

IMAGE = "localhost/busybox:latest"


def status_ids(pid: int, field: str) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split(":", 1)[1].split() for line in f if line.startswith(field + ":"))


def held_ranges(stack) -> list[tuple]:
    db = sqlite3.connect(f"file:{stack.paths.state_db}?mode=ro", uri=True)
    try:
        return db.execute("SELECT pod_uid, uid, gid, size FROM idranges").fetchall()
    finally:
        db.close()


def test_a_user_namespaced_pod_end_to_end(stack):
    base = stack.paths.root.parent
    os.chmod(base, 0o711)  # the pod's root is an unprivileged user: it must get through to the run root
    hostdir = base / "hostdir"
    hostdir.mkdir(mode=0o755)
    (hostdir / "root-only").write_text("host secret\n")
    os.chmod(hostdir / "root-only", 0o600)
    (hostdir / "world").write_text("readable\n")
    stack.env["PODPLAY_ALLOWED_HOST_PATHS"] = str(hostdir)
    m = stack.write("uns.yaml", f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{token: s3cret}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: claim}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: uns}}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {IMAGE}
    command: [sleep, "1000"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
    - {{name: claim, mountPath: /claim}}
    - {{name: host, mountPath: /host}}
    - {{name: img, mountPath: /img}}
  - name: ro
    image: {IMAGE}
    command: [sleep, "1000"]
    securityContext: {{readOnlyRootFilesystem: true}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec}}}}
  - {{name: claim, persistentVolumeClaim: {{claimName: claim}}}}
  - {{name: host, hostPath: {{path: {hostdir}, type: Directory}}}}
  - {{name: img, image: {{reference: {IMAGE}, pullPolicy: IfNotPresent}}}}
""")
    up = stack.run("up", str(m))
    assert "hostUsers" not in up.stderr  # acted on, no longer "accepted but not acted on"
    (pod_uid, uid, gid, size), = held_ranges(stack)
    podplay_uids = subids.ranges_of("podplay", Path(subids.SUBUID).read_text())
    assert any(r.start <= uid and uid + size <= r.end for r in podplay_uids)
    assert size == 65536

    app = find_container(stack, "uns", "app")
    assert status_ids(app.pid, "Uid") == [str(uid)] * 4  # an unprivileged host user…
    assert status_ids(app.pid, "Gid") == [str(gid)] * 4

    def sh(script: str, check: bool = True) -> str:
        return exec_in(stack, "uns", "app", "sh", "-c", script, check=check).stdout

    assert sh("id -u; id -g").split() == ["0", "0"]  # … that is root inside
    assert sh("stat -c %u:%g /bin/busybox /etc/passwd /").split() == ["0:0"] * 3  # the image, owned by root
    assert sh("echo w > /etc/written && cat /etc/written").strip() == "w"  # its rootfs is writable
    assert sh("echo e > /scratch/f && stat -c %u /scratch/f && cat /scratch/f").split() == ["0", "e"]
    assert sh("cat /cfg/greeting").strip() == "hello"
    assert sh("cat /sec/token").strip() == "s3cret"
    assert sh("echo p > /claim/f && cat /claim/f").strip() == "p"
    assert sh("cat /host/world").strip() == "readable"
    assert sh("stat -c %u:%g /img/bin/busybox").strip() == "0:0"  # an image volume: idmapped layers too
    denied = sh("cat /host/root-only 2>&1; echo rc=$?", check=False)
    assert "host secret" not in denied and "rc=1" in denied
    assert sh("stat -c %u /host/root-only").strip() == "65534"  # the host's root is nobody in here
    # Capabilities are the pod's namespace's: CHOWN works on its own files, not on the host's.
    assert "rc=0" in sh("chown 5:5 /scratch/f; echo rc=$?")
    assert "rc=0" not in sh("chown 0:0 /host/world 2>/dev/null; echo rc=$?", check=False)

    ro = exec_in(stack, "uns", "ro", "sh", "-c", "touch /x 2>&1; echo rc=$?; cat /scratch/f", check=False).stdout
    assert "rc=1" in ro and ro.strip().endswith("e")  # a read-only root, the pod's shared emptyDir
    assert status_ids(find_container(stack, "uns", "ro").pid, "Uid") == [str(uid)] * 4

    # What the pod wrote is stored with the IDs it sees (idmapped volumes), the rootfs's upper shifted.
    claim = stack.paths.claims / "default" / "claim" / "f"
    assert os.stat(claim).st_uid == 0

    stack.run("down", str(m), "--volumes")
    assert held_ranges(stack) == []
    assert not os.path.exists(stack.paths.userns_mounts / pod_uid)
    assert host_leftovers(stack) == []


CRASH_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: unscrash}
spec:
  hostUsers: false
  terminationGracePeriodSeconds: 1
  initContainers:
  - {name: init, image: localhost/busybox:latest, command: [sh, -c, "echo ok > /work/init"],
     volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: app, image: localhost/busybox:latest, command: [sleep, "100000"],
     volumeMounts: [{name: work, mountPath: /work}]}
  volumes:
  - {name: work, emptyDir: {}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["up", "down"])
def test_killed_at_every_step_boundary_frees_or_keeps_the_range(stack, command):
    """kill -9 at every step boundary of a user-namespaced pod's create and teardown: the next
    `up` converges with exactly one range held (the pod's), and `down` frees it and leaves nothing."""
    os.chmod(stack.paths.root.parent, 0o711)
    m = stack.write("unscrash.yaml", CRASH_POD)
    desired = build_desired(load_manifests([str(m)]).objects).pods["default/unscrash"]
    if command == "down":
        stack.run("up", "--wait", str(m))
    doc = json.loads(stack.run("plan", "-o", "json", *(["--down"] if command == "down" else []), str(m)).stdout)
    steps = [s["step"]["verb"] for t in doc["transactions"] for s in t["steps"]]
    assert "CreateInfra" in steps or "RemoveInfra" in steps
    for n in range(1, len(steps) + 1):
        for when in ("before", "after"):
            context = f"{command} killed {when} step #{n} ({steps[n - 1]})"
            if command == "down" and (n, when) != (1, "before"):
                stack.run("up", "--wait", str(m))
            res = stack.run(command, str(m), check=False, env={"PODPLAY_FAILPOINT": f"{when}:#{n}"})
            assert res.returncode == -signal.SIGKILL, f"{context}: not killed: {res.stderr}"
            stack.run("up", "--wait", str(m))
            assert [r[0] for r in held_ranges(stack)] == [desired.uid], context
            assert exec_in(stack, "unscrash", "app", "cat", "/work/init").stdout.strip() == "ok", context
            stack.run("down", str(m))
            assert held_ranges(stack) == [], context
            assert host_leftovers(stack) == [], context


def test_a_range_whose_pod_vanished_behind_podplays_back_is_swept(stack):
    """A range row whose pod left no trace on the host (its containers and run directories wiped
    by hand, or a store restored from a backup) is freed by the next pass, with its host-wide
    claim; the range of a pod that is there stays held."""
    from reconciler.store.idranges import HostClaims, PodIdAllocator

    os.chmod(stack.paths.root.parent, 0o711)
    m = stack.write("unscrash.yaml", CRASH_POD)
    stack.run("up", str(m))
    (live, *_), = held_ranges(stack)
    allocator = PodIdAllocator(stack.paths.state_db)  # the real /etc/subuid entry and host-wide registry
    try:
        ghost = allocator.allocate("0000-ghost-pod-vanished")
        claims: HostClaims = allocator.claims
        ghost_claim = claims.dir / claims.name(allocator.root, "0000-ghost-pod-vanished")
        assert ghost_claim.exists()
    finally:
        allocator.close()
    assert {row[0] for row in held_ranges(stack)} == {live, "0000-ghost-pod-vanished"}

    # `ps` relists without the apply lock: it never frees anything.
    stack.run("ps")
    assert {row[0] for row in held_ranges(stack)} == {live, "0000-ghost-pod-vanished"}

    # A full pass (a new file: `up` of unchanged files may answer from its no-change check
    # without one): the pod stays as it is, the ghost's range is freed.
    other = stack.write("plain.yaml", """apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: app, image: localhost/busybox:latest, command: [sleep, "100000"]}]
""")
    stack.run("up", str(m), str(other))
    assert [row[0] for row in held_ranges(stack)] == [live]
    assert not ghost_claim.exists()
    again = PodIdAllocator(stack.paths.state_db)
    try:
        assert not any(ghost.uid < r.uid + r.size and r.uid < ghost.uid + ghost.size
                       for r in again.claims_held())  # no root holds it any more
    finally:
        again.close()

    stack.run("down", str(m), str(other))
    assert held_ranges(stack) == []
    assert host_leftovers(stack) == []
