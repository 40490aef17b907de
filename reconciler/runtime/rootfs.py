"""Paths inside a container's rootfs or a volume, resolved as the container would see them.

An image's /etc/passwd may be a symlink to /../../../etc/shadow, and a volume's subPath may be
a symlink a previous container planted. Every symlink met on the way is therefore resolved
relative to the given root (an absolute target restarts at the root, ``..`` stops at it), the
way runc's securejoin does, and the final open never follows a link. (A private helper: the
shared ``fsutil.resolve_in_root`` did not exist yet when this was written.)
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

from reconciler.errors import ContainerRuntimeError

MAX_SYMLINKS = 40  # Linux's own limit for one lookup


def resolve_in_root(root: str, path: str) -> str:
    """The host path of ``path`` interpreted inside ``root``; it need not exist."""
    root = os.path.realpath(root)
    parts = deque(path.split("/"))
    current: list[str] = []
    links = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = os.path.join(root, *current, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            current.append(part)
            continue
        except NotADirectoryError:
            current.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise ContainerRuntimeError(f"too many symbolic links resolving {path!r} inside {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            parts.extendleft(reversed(target.split("/")))
            continue
        current.append(part)
    return os.path.join(root, *current)


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")


def read_file_in_root(root: str, path: str, limit: int = 4 * 1024 * 1024) -> bytes | None:
    """The content of a regular file inside ``root``, or None when there is none there.
    Never follows a symlink out of ``root`` and never blocks on a FIFO."""
    host_path = resolve_in_root(root, path)
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise ContainerRuntimeError(f"cannot read {path} in {root}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        if not _inside(root, f"/proc/self/fd/{fd}"):
            return None  # raced with a rename; refuse rather than guess
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        if len(data) > limit:
            raise ContainerRuntimeError(f"{path} in {root} is larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def ensure_subpath(volume_root: str, sub_path: str) -> str:
    """The host path of a volume's subPath, created as a directory when missing (as the kubelet
    does), and guaranteed to lie inside the volume."""
    host_path = resolve_in_root(volume_root, sub_path)
    if not os.path.lexists(host_path):
        try:
            os.makedirs(host_path, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ContainerRuntimeError(f"cannot create subPath {sub_path!r} in {volume_root}: "
                                        f"{e.strerror}") from None
        # Someone may have planted a symlink while the directories were made: resolve again.
        if resolve_in_root(volume_root, sub_path) != host_path:
            raise ContainerRuntimeError(f"subPath {sub_path!r} in {volume_root} changed while it was created")
    if not _inside(volume_root, host_path):
        raise ContainerRuntimeError(f"subPath {sub_path!r} resolves outside its volume")
    return host_path
