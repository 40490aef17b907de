"""Host fixtures for the runtime driver: a RuncRuntime on the test's own paths, busybox root
filesystems, and a teardown that removes whatever the test left through a fresh driver — then
fails the test if that left anything (a process, a runc container, a mount, a cgroup)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.desired import DesiredPod
from reconciler.drivers.base import InfraInfo
from reconciler.observed import ImageInfo, NetworkStatus
from reconciler.paths import HostPaths
from reconciler.runtime.driver import RuncRuntime
from tests.support.leaks import find_leaks, processes_mentioning, runc_containers
from tests.unit.runtime.pods import image

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:App:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:2345:\nextra:x:3456:app\n"
_APPLETS: list[str] = []


def cgroup_parent(paths: HostPaths) -> str:
    return f"/podplay-test-{paths.root.parent.name}"


def cgroups_left(parent: str) -> list[str]:
    out = []
    for h in Path("/sys/fs/cgroup").iterdir():
        p = h / parent.lstrip("/")
        if not h.is_symlink() and p.exists():
            out += [str(d) for d in sorted(p.rglob("*")) if d.is_dir()] or [str(p)]
    return out


class Pods:
    """Bring pods up the way the engine does: infra, then init containers one by one, then apps."""

    def __init__(self, rt: RuncRuntime, base: Path):
        self.rt = rt
        self.base = base
        self.count = 0

    def rootfs(self, passwd: str = PASSWD, group: str = GROUP) -> str:
        if not _APPLETS:
            res = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True)
            _APPLETS.extend(a for a in res.stdout.split() if a != "busybox")
        self.count += 1
        root = self.base / f"rootfs-{self.count}"
        for d in ("bin", "etc", "tmp", "root", "home/app"):
            (root / d).mkdir(parents=True)
        os.chmod(root / "tmp", 0o1777)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")  # a copy: the container may write to it
        for a in _APPLETS:
            os.symlink("busybox", root / "bin" / a)
        (root / "etc" / "passwd").write_text(passwd)
        (root / "etc" / "group").write_text(group)
        return str(root)

    def volume(self, name: str) -> str:
        path = self.base / f"vol-{name}-{self.count}"
        self.count += 1
        path.mkdir()
        return str(path)

    def up(self, pod: DesiredPod, *, img: ImageInfo | None = None, volumes: dict[str, str] | None = None,
           network: NetworkStatus | None = None, start: bool = True) -> InfraInfo:
        info = self.rt.create_infra(pod)
        for c in pod.init_containers:
            self.rt.create_container(pod, c, rootfs=self.rootfs(), image=img or image(), volumes=volumes or {},
                                     network=network)
            self.rt.start_container(c.id)
            code = self.rt.wait_container(c.id, 60)
            if code != 0:
                return info
        for c in pod.containers:
            self.rt.create_container(pod, c, rootfs=self.rootfs(), image=img or image(), volumes=volumes or {},
                                     network=network)
            if start:
                self.rt.start_container(c.id)
        return info

    def output(self, cid: str) -> str:
        return "\n".join(text.decode() for _, _, text in self.rt.read_logs(cid))

    def run(self, cid: str) -> tuple[int, str]:
        """Exit code and output of a container that runs to its end."""
        code = self.rt.wait_container(cid, 60)
        return code, self.output(cid)


@pytest.fixture
def runtime(host_paths: HostPaths):
    rt = RuncRuntime(host_paths, cgroup_parent=cgroup_parent(host_paths))
    yield rt
    fresh = RuncRuntime(host_paths, cgroup_parent=cgroup_parent(host_paths))
    errors = []
    for uid in sorted({c.pod_uid for c in fresh.list_containers()}):
        try:
            fresh.remove_infra(uid)
        except Exception as e:  # report below, after the emergency clean-up
            errors.append(f"remove_infra({uid}): {e}")
    left = find_leaks(host_paths.root, host_paths.runroot) + cgroups_left(cgroup_parent(host_paths))
    if left:  # kill what the driver failed to remove, so that one failure does not cascade
        for cid in runc_containers(host_paths.runc_root):
            subprocess.run(["runc", "--root", str(host_paths.runc_root), "delete", "--force", cid],
                           capture_output=True)
        for line in processes_mentioning(str(host_paths.root), str(host_paths.runroot)):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line.split(":", 1)[0]), 9)
        for path in sorted(cgroups_left(cgroup_parent(host_paths)), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(path)
    assert not errors, errors
    assert not left, "the runtime driver left host state behind:\n  " + "\n  ".join(left)


@pytest.fixture
def pods(runtime: RuncRuntime, host_paths: HostPaths) -> Pods:
    return Pods(runtime, host_paths.root.parent)
