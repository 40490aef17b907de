"""Host facts the OCI configs depend on, and the few kernel calls the runtime driver makes itself.

Facts are read once per driver instance (they do not change while podplay runs): the CPU
architecture and kernel version (for seccomp rule conditions), rlimit hard limits (configs may
not ask for more), swap accounting, the node's CPUs, memory, name and address (for env values a
pod can ask for), and the host's device nodes (for privileged containers).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import resource
import select
import socket
import stat
import time
from collections.abc import Sequence

from reconciler.errors import ContainerRuntimeError
from reconciler.runtime.oci import ALL_CAPABILITIES, RLIM_MAX, HostDevice
from reconciler.runtime.seccomp import MACHINE_TO_ARCH


def arch() -> str:
    machine = os.uname().machine
    return MACHINE_TO_ARCH.get(machine, machine)


def kernel_version() -> tuple[int, int]:
    release = os.uname().release
    parts = release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


def hard_rlimits() -> dict[str, int]:
    out = {}
    for name in ("RLIMIT_NOFILE", "RLIMIT_NPROC"):
        _, hard = resource.getrlimit(getattr(resource, name))
        out[name] = RLIM_MAX if hard == resource.RLIM_INFINITY else hard
    return out


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def bounding_capabilities() -> tuple[str, ...] | None:
    """The capabilities podplay itself may pass on (its bounding set), or None if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return tuple(c for i, c in enumerate(ALL_CAPABILITIES) if mask >> i & 1)
    except (OSError, ValueError):
        pass
    return None


def swap_accounting() -> bool:
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def node_memory() -> int:
    """Bytes of RAM, read once per process (the same fact the manifest checks use)."""
    from reconciler.manifests.hostfacts import this_host

    return this_host().memory


def node_cpu_millis() -> int:
    return (len(os.sched_getaffinity(0)) or os.cpu_count() or 1) * 1000


def node_ip() -> str:
    """The address the host would use for outside traffic. A UDP connect sends no packet."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route lookup matters
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def host_devices() -> tuple[HostDevice, ...]:
    """Device nodes under /dev, as podman hands them to privileged containers."""
    out = []
    skip = {"/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/.lxc", "/dev/.udev"}
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(HostDevice(path, "c" if stat.S_ISCHR(st.st_mode) else "b", os.major(st.st_rdev),
                                      os.minor(st.st_rdev), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
    return tuple(sorted(out, key=lambda d: d.path))


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.
    A pid with a different start time is a different process that reused the number."""
    if pid <= 0:
        return None
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rfind(b")") + 2:].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return None  # a zombie has exited already
    return int(fields[19])


def wait_pid_gone(pid: int, start: int | None, timeout: float | None) -> bool:
    """Wait until process ``pid`` (with that start time) has exited; False on timeout."""
    if start is None or proc_start_time(pid) != start:
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if proc_start_time(pid) != start:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                return True
            # A zombie whose parent does not reap it stays "alive" for pidfd; check the state.
            if proc_start_time(pid) != start:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        os.close(fd)


def wait_any_gone(procs: Sequence[tuple[int, int | None]], timeout: float) -> bool:
    """Wait until one of the processes (pid, start time) has exited; False when `timeout` passed
    with all of them alive. A process already gone (or reused) answers at once."""
    fds: list[int] = []
    try:
        for pid, start in procs:
            if start is None or proc_start_time(pid) != start:
                return True
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                return True
            if proc_start_time(pid) != start:
                return True
        if not fds:
            time.sleep(max(timeout, 0.0))
            return False
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0.0) * 1000))
    finally:
        for fd in fds:
            os.close(fd)


# --- mounts -------------------------------------------------------------------------------------

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2


@functools.cache
def _libc() -> ctypes.CDLL:
    # The C library this interpreter already links (glibc's soname, then musl's), by name:
    # ctypes.util.find_library would run `ldconfig -p` in a child process to find it.
    for name in ("libc.so.6", "libc.so"):
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    from ctypes.util import find_library

    return ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)


def mount_tmpfs(target: str, options: str) -> None:
    if os.path.ismount(target):
        return
    if _libc().mount(b"shm", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.encode()) != 0:
        err = ctypes.get_errno()
        raise ContainerRuntimeError(f"cannot mount a tmpfs on {target}: {os.strerror(err)}")


def unmount(target: str) -> None:
    while os.path.ismount(target):
        if _libc().umount2(target.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise ContainerRuntimeError(f"cannot unmount {target}: {os.strerror(err)}")
