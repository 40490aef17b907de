"""Small filesystem helpers shared by the drivers and the state store (never by pure modules)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def private_dir(path: str | os.PathLike) -> Path:
    """`path` as a directory that only its owner may enter (0700), made with its missing parents
    if need be. For podplay's roots: under them are private images, secret volume files, the
    state store; containers reach what they need through mounts, never through these paths."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    return path


def private_file(path: str | os.PathLike, *siblings: str) -> None:
    """Make a file (and `path + suffix` for each of `siblings` that exists, e.g. sqlite's -wal
    and -shm, which it creates with the database's mode) readable by its owner only."""
    for p in (os.fspath(path), *(os.fspath(path) + s for s in siblings)):
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(p)
            if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
                os.chmod(p, stat.S_IMODE(st.st_mode) & 0o600)


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> None:
    """Write a whole file so that readers see the old or the new content, never a mix:
    temp file in the same directory, fsync, rename, fsync of the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- resolving paths inside a directory without leaving it ------------------------------------
#
# Both helpers walk one component at a time from a directory fd, opening each with O_NOFOLLOW and
# expanding symlinks themselves, so the kernel never follows a link to somewhere we did not check.
# ``resolve_subpath`` has openat2(RESOLVE_BENEATH) semantics (any escape is an error);
# ``resolve_in_root`` has RESOLVE_IN_ROOT / chroot semantics (absolute links and ".." stay inside).

_MAX_SYMLINKS = 40


class UnsafePathError(ValueError):
    """A path would leave the directory it has to stay in (or loops through symlinks)."""


def _components(path: str) -> list[str]:
    if "\x00" in path:
        raise UnsafePathError(f"path {path!r} contains a NUL byte")
    return [c for c in path.split("/") if c and c != "."]


def _walk(root: str | os.PathLike, path: str, *, in_root: bool, create: bool) -> tuple[list[int], list[str]]:
    """Open fds (O_PATH) from ``root`` down to the deepest existing component of ``path``, and
    the components below it that do not exist (already normalized). The caller closes the fds."""
    stack = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    todo = _components(path)[::-1]
    tail: list[str] = []
    links = 0
    create_mode = stat.S_IMODE(os.fstat(stack[0]).st_mode) if create else 0
    try:
        while todo:
            comp = todo.pop()
            if comp == "..":
                if tail:
                    tail.pop()
                elif len(stack) > 1:
                    os.close(stack.pop())
                elif not in_root:
                    raise UnsafePathError(f"path {path!r} leaves {os.fspath(root)!r} through '..'")
                continue
            if tail:
                tail.append(comp)
                continue
            try:
                fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except FileNotFoundError:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(comp, 0o700, dir_fd=stack[-1])
                        made = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                       dir_fd=stack[-1])
                        try:
                            os.fchmod(made, create_mode)
                        finally:
                            os.close(made)
                    todo.append(comp)
                else:
                    tail.append(comp)
                continue
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > _MAX_SYMLINKS:
                    raise UnsafePathError(f"path {path!r}: too many levels of symbolic links")
                target = os.readlink(comp, dir_fd=stack[-1])
                if target.startswith("/"):
                    if not in_root:
                        raise UnsafePathError(f"path {path!r}: symlink {comp!r} points outside "
                                              f"{os.fspath(root)!r} ({target!r})")
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extend(_components(target)[::-1])
                continue
            stack.append(fd)
            if todo and not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(f"path {path!r}: {comp!r} is not a directory")
        return stack, tail
    except BaseException:
        for fd in stack:
            os.close(fd)
        raise


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def open_subpath(volume_root: str | os.PathLike, sub_path: str, *, create: bool = False) -> int:
    """An O_PATH fd of ``sub_path`` inside ``volume_root`` (Kubernetes ``subPath`` rules): relative,
    no '..', symlinks followed only while they stay inside. With ``create`` missing components
    are made as directories with the volume root's mode, as the kubelet does."""
    if sub_path.startswith("/"):
        raise UnsafePathError(f"subPath {sub_path!r} must be relative")
    if ".." in _components(sub_path):
        raise UnsafePathError(f"subPath {sub_path!r} must not contain '..'")
    stack, tail = _walk(volume_root, sub_path, in_root=False, create=create)
    for fd in stack[:-1]:
        os.close(fd)
    if tail:
        os.close(stack[-1])
        raise FileNotFoundError(f"subPath {sub_path!r} does not exist in {os.fspath(volume_root)!r}")
    return stack[-1]


def resolve_subpath(volume_root: str | os.PathLike, sub_path: str, *, create: bool = False) -> str:
    """The host path of ``sub_path`` inside ``volume_root``; raises UnsafePathError when it
    would escape (see open_subpath). The path can change after it is returned if something
    else writes to the volume; bind-mount ``/proc/self/fd/N`` of open_subpath where that matters."""
    fd = open_subpath(volume_root, sub_path, create=create)
    try:
        return _fd_path(fd)
    finally:
        os.close(fd)


def resolve_in_root(rootfs: str | os.PathLike, path: str) -> str:
    """The host path of ``path`` as a process chrooted to ``rootfs`` would see it: absolute
    symlinks and '..' stay inside ``rootfs``. Components that do not exist are kept as written
    (the result may not exist); the result is always inside ``rootfs``."""
    stack, tail = _walk(rootfs, path, in_root=True, create=False)
    try:
        base = _fd_path(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)
    return os.path.join(base, *tail) if tail else base


def open_in_root(rootfs: str | os.PathLike, path: str, flags: int = os.O_RDONLY) -> int:
    """Open ``path`` inside ``rootfs`` with chroot semantics (see resolve_in_root), e.g. to read
    a container's /etc/passwd without following its symlinks out of the rootfs."""
    stack, tail = _walk(rootfs, path, in_root=True, create=False)
    try:
        if tail:
            raise FileNotFoundError(f"{path!r} does not exist in {os.fspath(rootfs)!r}")
        # Re-opening an O_PATH fd through /proc gives the same inode, not a new lookup by name.
        return os.open(f"/proc/self/fd/{stack[-1]}", flags | os.O_CLOEXEC)
    finally:
        for fd in stack:
            os.close(fd)
