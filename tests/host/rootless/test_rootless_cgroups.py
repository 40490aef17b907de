"""Cgroup limits of a rootless pod where root delegates cgroup v1 directories to the user
(/sys/fs/cgroup/<controller>/podplay-<uid>, as the README's "Without root" says): the container's
memory and pids limits are on the host, no warning says otherwise, and `down` leaves no cgroup of
the pod behind. A partial delegation applies what it can and names the rest."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.host.rootless.test_rootless_pods import assert_nothing_left, busybox  # noqa: F401 - a fixture

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: lim}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: [sleep, "3600"]
    resources: {limits: {memory: 64Mi}}
"""


def delegate(uid: int, controllers) -> list[Path]:
    """What an admin does: a directory per controller, given to the user with its files."""
    made = []
    for c in controllers:
        d = Path(f"/sys/fs/cgroup/{c}/podplay-{uid}")
        d.mkdir()
        made.append(d)
        subprocess.run(["chown", "-R", str(uid), str(d)], check=True)
    return made


def undelegate(dirs: list[Path]) -> None:
    for d in dirs:
        # deepest first: rmdir is the only way to remove a cgroup
        for sub, _, _ in sorted(os.walk(d), key=lambda w: -len(w[0])):
            os.rmdir(sub)


def children(d: Path) -> list[str]:
    return [e.name for e in os.scandir(d) if e.is_dir()]


def sleeper(uid: int) -> int:
    """The pid of the container's `sleep 3600` (the user's own process on the host)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-o", "pid=,args=", "-u", str(uid)], capture_output=True, text=True).stdout
        pids = [int(line.split()[0]) for line in out.splitlines() if line.split()[1:] == ["sleep", "3600"]]
        if pids:
            return pids[0]
        time.sleep(0.1)
    raise AssertionError(f"no container process among {out}")


def cgroup_of(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    raise AssertionError(f"no {controller} line in /proc/{pid}/cgroup")


@pytest.fixture
def delegation(rootless_user):
    dirs: list[Path] = []
    yield lambda controllers: dirs.extend(delegate(rootless_user.uid, controllers))
    with_pods = {str(d): children(d) for d in dirs if children(d)}
    undelegate(dirs)
    assert not with_pods, f"cgroups left behind: {with_pods}"


@pytest.mark.slow
def test_limits_are_applied_in_the_delegated_cgroups_and_down_removes_them(rootless_user, busybox,  # noqa: F811
                                                                            delegation):
    user = rootless_user
    delegation(["memory", "pids", "cpu"])
    manifest = user.home / "lim.yaml"
    manifest.write_text(POD)
    res = user.podplay("up", str(manifest))
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert "not applied" not in res.stderr
        pid = sleeper(user.uid)
        memory, pids = cgroup_of(pid, "memory"), cgroup_of(pid, "pids")
        assert memory.startswith(f"/podplay-{user.uid}/") and pids.startswith(f"/podplay-{user.uid}/")
        assert Path(f"/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert Path(f"/sys/fs/cgroup/pids{pids}/pids.max").read_text().strip() == "4096"
        assert cgroup_of(pid, "cpu").startswith(f"/podplay-{user.uid}/")
        # exec'd processes are held by the same limits
        out = user.podplay("exec", "lim/app", "--", "cat", "/proc/self/cgroup")
        assert f"memory:{memory}" in out.stdout, out.stdout + out.stderr
    finally:
        res = user.podplay("down", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_nothing_left(user)
    for c in ("memory", "pids", "cpu"):
        assert children(Path(f"/sys/fs/cgroup/{c}/podplay-{user.uid}")) == []


@pytest.mark.slow
def test_a_partial_delegation_applies_what_it_can_and_names_the_rest(rootless_user, busybox,  # noqa: F811
                                                                      delegation):
    user = rootless_user
    delegation(["memory"])
    manifest = user.home / "lim.yaml"
    manifest.write_text(POD)
    res = user.podplay("up", str(manifest))
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Warning: the pids limits of default/lim are not applied: pids: no cgroup is delegated" in res.stderr
        assert "memory" not in res.stderr
        pid = sleeper(user.uid)
        memory = cgroup_of(pid, "memory")
        assert Path(f"/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert not cgroup_of(pid, "pids").startswith(f"/podplay-{user.uid}")
    finally:
        res = user.podplay("down", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_nothing_left(user)
    assert children(Path(f"/sys/fs/cgroup/memory/podplay-{user.uid}")) == []


@pytest.mark.slow
def test_without_delegation_the_limits_are_reported_as_not_applied(rootless_user, busybox):  # noqa: F811
    user = rootless_user
    manifest = user.home / "lim.yaml"
    manifest.write_text(POD)
    res = user.podplay("up", str(manifest))
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Warning: resource limits and requests of default/lim are not applied: no cgroup is delegated to " \
               f"uid {user.uid}" in res.stderr
        assert not cgroup_of(sleeper(user.uid), "memory").startswith(f"/podplay-{user.uid}")
    finally:
        res = user.podplay("down", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_nothing_left(user)
