"""Mount helpers for the storage driver: mount(2)/umount2(2) through libc, and mountinfo reads.

Decisions about what is mounted are always made from ``/proc/self/mountinfo`` (never from our
own files), so that a reboot that wiped the mounts, or a crash in the middle, is seen as it is.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from pathlib import Path

from reconciler.errors import StorageError

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2

@functools.cache
def _c():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    libc.syncfs.argtypes = (ctypes.c_int,)
    return libc


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        octal = raw[i + 1:i + 4]
        if raw[i] == 0x5C and len(octal) == 3 and octal.isdigit():
            out.append(int(octal, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mount_points() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount in this mount namespace."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            out.append((_unescape(fields[4]), rfields[0] if rfields else "", rfields[2] if len(rfields) > 2 else ""))
    return out


def mounts_at_or_under(path: str | os.PathLike) -> list[str]:
    """Mount points at ``path`` or below it, deepest first."""
    p = os.path.realpath(path)  # mountinfo shows resolved paths (/var/run → /run)
    prefix = p.rstrip("/") + "/"
    found = {m for m, _, _ in mount_points() if m == p or m.startswith(prefix)}
    return sorted(found, key=lambda m: (m.count("/"), m), reverse=True)


def is_mountpoint(path: str | os.PathLike) -> bool:
    p = os.path.realpath(path)
    return any(m == p for m, _, _ in mount_points())


def mount(source: str, target: str | os.PathLike, fstype: str | None, flags: int = 0, data: str = "") -> None:
    rc = _c().mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise StorageError(f"cannot mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}")


def umount(target: str | os.PathLike) -> None:
    """Unmount; a busy mount is an error (never a lazy detach that would let a later delete
    reach files still in use)."""
    rc = _c().umount2(os.fsencode(target), 0)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT) and not is_mountpoint(target):
            return
        raise StorageError(f"cannot unmount {target}: {os.strerror(err)}")


def unmount_all_under(path: str | os.PathLike) -> None:
    """Unmount everything at or below ``path``; raise if anything is still mounted there."""
    for m in mounts_at_or_under(path):
        umount(m)
    left = mounts_at_or_under(path)
    if left:
        raise StorageError(f"still mounted under {path}: {', '.join(left)}")


def remove_tree(path: str | os.PathLike) -> None:
    """``rm -rf`` that never goes through a mount: everything below is unmounted first, and it
    refuses when something stays mounted."""
    import shutil

    p = Path(path)
    if not os.path.lexists(p):
        return
    unmount_all_under(p)
    try:
        if p.is_symlink() or not p.is_dir():
            p.unlink()
        else:
            shutil.rmtree(p)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StorageError(f"cannot remove {p}: {e}") from e


def syncfs(fd: int) -> None:
    """Flush the file system holding ``fd`` (one call instead of an fsync per unpacked file)."""
    if _c().syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise StorageError(f"syncfs failed: {os.strerror(err)}")
