"""A pod's ID mapping, and idmapped mounts made with the new mount API (Linux >= 5.12).

``IdMap(uid, gid, size)`` says that IDs 0…size-1 inside a pod's user namespace are host IDs
uid…uid+size-1 (users) and gid…gid+size-1 (groups). runc 1.1 cannot make idmapped mounts
itself (``uidMappings`` on mounts arrived in runc 1.2), so podplay makes them before runc runs:
``open_tree`` clones the source, ``mount_setattr(MOUNT_ATTR_IDMAP)`` attaches a user namespace
holding the pod's mapping, ``move_mount`` puts the clone where the container's config points.
Through such a mount a file stored with owner 0 is seen as owned by the pod's root, and what the
pod's root writes is stored with owner 0: the data on disk keeps the IDs the container sees.

The user namespace that carries the mapping is made by a short-lived forked child (a process
cannot unshare a user namespace while it has threads); its descriptor outlives the child.

Used by the runtime (rootfs, volumes, the pod's own files) and by the snapshotter (overlay on
idmapped lower layers: overlayfs itself cannot be idmapped).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reconciler.errors import EnvironmentProblem

RANGE_SIZE = 65536  # IDs per pod, as the kubelet gives each user-namespaced pod

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442  # x86_64 and aarch64 alike
_OPEN_TREE_CLONE = 1
_O_CLOEXEC = 0o2000000
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_IDMAP = 0x100000
_CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True)
class IdMap:
    uid: int
    gid: int
    size: int = RANGE_SIZE

    def oci(self) -> tuple[list[dict], list[dict]]:
        """(uidMappings, gidMappings) of an OCI config."""
        return ([{"containerID": 0, "hostID": self.uid, "size": self.size}],
                [{"containerID": 0, "hostID": self.gid, "size": self.size}])

    def owns_uid(self, uid: int) -> bool:
        return self.uid <= uid < self.uid + self.size

    def to_list(self) -> list[int]:
        return [self.uid, self.gid, self.size]

    @classmethod
    def from_list(cls, data) -> IdMap | None:
        if isinstance(data, list) and len(data) == 3 and all(isinstance(v, int) and v >= 0 for v in data):
            return cls(*data)
        return None


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@functools.cache
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


@contextlib.contextmanager
def unshared_child(go_on: Callable[[], object] = lambda: None, *, setsid: bool = False) -> Iterator[int]:
    """Fork a child that unshares a user namespace and waits: yields its pid once the namespace
    exists, for the caller to write its ID maps (``/proc/PID/uid_map``, or ``newuidmap``). When
    the block ends, the child is told to go on: it calls ``go_on`` (which may exec) and exits;
    when the block raises, it is killed and reaped. Otherwise reaping it is the caller's."""
    unshare = _libc().unshare  # looked up before fork: the child only calls, never loads
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(ready_r)
            os.close(go_w)
            if setsid:
                os.setsid()
            ok = unshare(_CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
            if ok and os.read(go_r, 1) == b"1":
                go_on()
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise EnvironmentProblem("cannot create a user namespace: unprivileged user namespaces are disabled "
                                     "(sysctl user.max_user_namespaces)")
        yield pid
        os.write(go_w, b"1")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(go_w)
        os.close(ready_r)


@contextlib.contextmanager
def userns_fd(idmap: IdMap) -> Iterator[int]:
    """A descriptor of a fresh user namespace with ``idmap``; closed on exit (the namespace dies
    with its last reference)."""
    with unshared_child() as pid:
        for name, start in (("uid_map", idmap.uid), ("gid_map", idmap.gid)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {start} {idmap.size}\n")
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    os.waitpid(pid, 0)
    try:
        yield fd
    finally:
        os.close(fd)


def _attach(tree: int, target: str) -> None:
    _check(_libc().syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount to {target}")


def bind(source: str, target: str, *, userns: int | None = None, recursive: bool = False,
         read_only: bool = False) -> None:
    """Bind ``source`` on ``target`` (an existing directory or file), idmapped through the user
    namespace ``userns`` when given. Raises OSError (EINVAL: the file system of ``source`` does
    not support idmapped mounts)."""
    libc = _libc()
    rec = _AT_RECURSIVE if recursive else 0
    tree = _check(libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _O_CLOEXEC | rec),
                  f"open_tree {source}")
    try:
        attr = _MountAttr((_MOUNT_ATTR_IDMAP if userns is not None else 0) | (_MOUNT_ATTR_RDONLY if read_only else 0),
                          0, 0, userns if userns is not None else 0)
        if attr.attr_set:
            _check(libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | rec, ctypes.byref(attr),
                                ctypes.sizeof(attr)), f"idmapping {source}")
        _attach(tree, target)
    finally:
        os.close(tree)


def idmap_supported(path: str) -> bool:
    """Whether the file system of ``path`` can be idmapped (overlayfs, for one, cannot)."""
    libc = _libc()
    tree = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path), _OPEN_TREE_CLONE | _O_CLOEXEC)
    if tree < 0:
        return False
    try:
        with userns_fd(IdMap(0, 0, 1)) as ns:
            attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, ns)
            rc = libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
            return rc == 0 or ctypes.get_errno() not in (errno.EINVAL, errno.EOPNOTSUPP)
    finally:
        os.close(tree)
