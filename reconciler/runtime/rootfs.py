"""Files inside a container's rootfs and subPaths inside a volume, found as the container sees them.

An image's /etc/passwd may be a symlink to /../../../etc/shadow, and a volume's subPath may be a
symlink a previous container planted. The walks themselves are ``fsutil``'s (one component at a
time, O_NOFOLLOW): ``resolve_in_root`` keeps absolute links and '..' inside the rootfs, as a
chroot would; ``resolve_subpath`` refuses any escape, as the kubelet does for subPath. This
module adds what the runtime needs on top: reading a small regular file without following a
final link or blocking on a FIFO, and errors in the runtime's terms.
"""

from __future__ import annotations

import errno
import os
import stat

from reconciler.errors import ContainerRuntimeError
from reconciler.fsutil import UnsafePathError, resolve_subpath
from reconciler.fsutil import resolve_in_root as _resolve_in_root


def resolve_in_root(root: str, path: str) -> str:
    """The host path of ``path`` interpreted inside ``root``; it need not exist."""
    try:
        return _resolve_in_root(root, path)
    except (UnsafePathError, NotADirectoryError) as e:
        raise ContainerRuntimeError(f"cannot resolve {path} inside {root}: {e}") from None


def read_file_in_root(root: str, path: str, limit: int = 4 * 1024 * 1024) -> bytes | None:
    """The content of a regular file inside ``root``, or None when there is none there."""
    try:
        host_path = _resolve_in_root(root, path)
    except NotADirectoryError:
        return None
    except UnsafePathError as e:
        raise ContainerRuntimeError(f"cannot read {path} in the image: {e}") from None
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise ContainerRuntimeError(f"cannot read {path} in the image: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        if len(data) > limit:
            raise ContainerRuntimeError(f"{path} in the image is larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def ensure_subpath(volume_root: str, sub_path: str) -> str:
    """The host path of a volume's subPath, created as a directory when missing (as the kubelet
    does); a subPath that leads out of its volume is refused."""
    try:
        return resolve_subpath(volume_root, sub_path, create=True)
    except UnsafePathError as e:
        raise ContainerRuntimeError(f"subPath {sub_path!r} is not within its volume: {e}") from None
    except OSError as e:
        raise ContainerRuntimeError(f"cannot prepare subPath {sub_path!r}: {e.strerror or e}") from None
