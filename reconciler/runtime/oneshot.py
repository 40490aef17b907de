"""One-shot containers for a build's RUN: an OCI config in, the exit code out.

A RUN step is not a pod: no infra container, no conmon, no CNI; the process runs in the
foreground under ``runc run`` with its output streamed to the caller, and everything it leaves
in the run root (bundle, runc state, cgroup) is removed before ``run`` returns, whatever
happened. ``build_config`` is pure: the same defaults as pods where they apply (the
containers-common seccomp profile, masked and read-only /proc paths, rlimits clamped to the
host) and buildah's capability set for RUN; the network is a namespace of its own (loopback
only) unless the build asks for the host's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ContainerRuntimeError, EnvironmentProblem
from reconciler.paths import HostPaths
from reconciler.runtime import hostinfo
from reconciler.runtime.oci import DEFAULT_RLIMITS, MASKED_PATHS, OCI_VERSION, READONLY_PATHS
from reconciler.runtime.seccomp import convert_profile

# buildah's (containers.conf) default set, plus MKNOD and AUDIT_WRITE as Docker's builder has.
BUILD_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                      "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
                      "CAP_SETUID", "CAP_SYS_CHROOT")
# Mount points a RUN container gets from the runtime (made in the rootfs when missing).
MOUNT_POINTS = ("/proc", "/dev", "/sys")


@dataclass(frozen=True)
class OneshotSpec:
    args: Sequence[str]
    env: Sequence[str]
    cwd: str
    rootfs: str
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = "podplay-build"
    network_host: bool = False
    cgroup_path: str = ""
    host_rlimits: dict[str, int] = field(default_factory=dict)
    seccomp: dict | None = None  # the default profile, parsed
    arch: str = "amd64"
    kernel: tuple[int, int] = (0, 0)


def build_config(spec: OneshotSpec) -> dict:
    caps = list(BUILD_CAPABILITIES)
    rlimits = []
    for name, want in DEFAULT_RLIMITS.items():
        hard = spec.host_rlimits.get(name)
        value = min(want, hard) if hard is not None and hard >= 0 else want
        rlimits.append({"type": name, "hard": value, "soft": value})
    namespaces = [{"type": t} for t in ("mount", "pid", "ipc", "uts")]
    if not spec.network_host:
        namespaces.append({"type": "network"})
    linux: dict = {"namespaces": namespaces, "maskedPaths": list(MASKED_PATHS),
                   "readonlyPaths": list(READONLY_PATHS), "rootfsPropagation": "private"}
    if spec.cgroup_path:
        linux["cgroupsPath"] = spec.cgroup_path
    if spec.seccomp is not None:
        profile = convert_profile(spec.seccomp, capabilities=caps, arch=spec.arch, kernel=spec.kernel)
        if profile is not None:
            linux["seccomp"] = profile
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    user: dict = {"uid": spec.uid, "gid": spec.gid}
    if spec.additional_gids:
        user["additionalGids"] = list(spec.additional_gids)
    return {
        "ociVersion": OCI_VERSION,
        "process": {"terminal": False, "user": user, "args": list(spec.args), "env": list(spec.env),
                    "cwd": spec.cwd or "/",
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "rlimits": rlimits, "noNewPrivileges": False},
        "root": {"path": spec.rootfs, "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": linux,
    }


class OneshotRunner:
    def __init__(self, paths: HostPaths, *, runc: str = "runc",
                 seccomp_profile: str = "/usr/share/containers/seccomp.json"):
        self.paths = paths
        found = shutil.which(runc)
        if not found:
            raise EnvironmentProblem(f"runc ({runc}) is not installed; run ./scripts/setup.sh")
        self.runc = found
        self.seccomp_profile = seccomp_profile
        self.cgroup_parent = f"/podplay/{paths.tag}/build"

    def host_spec(self, **kw) -> OneshotSpec:
        seccomp = None
        with contextlib.suppress(FileNotFoundError), open(self.seccomp_profile) as f:
            seccomp = json.load(f)
        return OneshotSpec(host_rlimits=hostinfo.hard_rlimits(), seccomp=seccomp, arch=hostinfo.arch(),
                           kernel=hostinfo.kernel_version(), **kw)

    def run(self, cid: str, spec: OneshotSpec, output: Callable[[bytes], None]) -> int:
        """Run to completion; ``output`` gets stdout and stderr as they come. The exit code
        (128+N for a signal). Nothing of the container is left afterwards."""
        spec = OneshotSpec(**{**spec.__dict__, "cgroup_path": f"{self.cgroup_parent}/{cid}"})
        bundle = Path(self.paths.runroot) / "build" / cid
        runc_root = str(self.paths.runc_root)
        bundle.mkdir(parents=True, exist_ok=True)
        os.chmod(bundle.parent, 0o700)
        try:
            (bundle / "config.json").write_text(json.dumps(build_config(spec)))
            try:
                proc = subprocess.Popen([self.runc, "--root", runc_root, "run", "--bundle", str(bundle), cid],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
            except OSError as exc:
                raise ContainerRuntimeError(f"cannot run runc: {exc}") from None
            try:
                assert proc.stdout is not None
                while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
                    output(chunk)
                code = proc.wait()
            except BaseException:
                subprocess.run([self.runc, "--root", runc_root, "kill", "--all", cid, "9"], capture_output=True)
                proc.kill()
                proc.wait()
                raise
            return 128 - code if code < 0 else code
        finally:
            subprocess.run([self.runc, "--root", runc_root, "delete", "--force", cid], capture_output=True)
            shutil.rmtree(bundle, ignore_errors=True)
            _remove_cgroups(f"{self.cgroup_parent}/{cid}")


def _remove_cgroups(path: str) -> None:
    """runc removes the container's own cgroups on delete (not always on cgroup v1); the parents
    runc made for it (…/build, the storage root's podplay/<tag>) go too when nothing else uses
    them: rmdir refuses a cgroup that has children or tasks."""
    base = Path("/sys/fs/cgroup")
    rel = path.strip("/")
    roots = [base] if (base / "cgroup.controllers").exists() else \
        [d for d in base.iterdir() if d.is_dir() and not d.is_symlink()]
    for root in roots:
        parts = rel.split("/")
        while len(parts) > 1:  # never the top "podplay" itself
            with contextlib.suppress(OSError):
                (root / "/".join(parts)).rmdir()
            parts.pop()
