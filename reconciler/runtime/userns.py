"""Where the containers of a ``hostUsers: false`` pod find their root filesystems and volumes.

runc sets up a container's mounts from inside the pod's user namespace, as the pod's root, which
is an unprivileged host user: it can reach no path under podplay's owner-only roots. Everything
such a container mounts is therefore put first under a directory it can traverse (never list),
``HostPaths.userns_mounts`` (the run root's sibling ``<runroot>-userns``, 0711)::

    <pod uid>/infra                 the infra's root (catatonit), idmapped, read-only
    <pod uid>/files                 the pod's run directory (hosts, resolv.conf, hostname, shm/
                                    and the tmpfs volumes), idmapped, with its submounts
    <pod uid>/ctr/<name>/rootfs     the container's root: a bind of the snapshot when it is an
                                    overlay on idmapped layers (the snapshotter's work), else idmapped
    <pod uid>/ctr/<name>/vol/<vol>  each volume, idmapped; hostPath volumes are not staged: they
                                    are bind-mounted as they are, host owners and all

Every directory on the way to it must be searchable by others (``/run`` and ``/tmp`` are).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from reconciler import idmap
from reconciler.errors import ContainerRuntimeError

OVERLAYFS_MAGIC = 0x794C7630
_UNSTAGED = ("hostPath",)  # seen with the host's owners: the pod is an unprivileged user there
_SHIFTED = ("image",)  # snapshots: the snapshotter mounted them on idmapped layers already


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _fstype_is_overlay(path: str) -> bool:
    buf = ctypes.create_string_buffer(128)  # struct statfs; f_type is its first word
    if _libc().statfs(os.fsencode(path), buf) != 0:
        return False
    return int.from_bytes(buf.raw[:8], "little") == OVERLAYFS_MAGIC


def _mkdir(path: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o711)
    os.chmod(path, 0o711)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4].replace("\\040", " ") for line in f]


def _is_mounted(path: str) -> bool:
    return path in _mount_points()


def _unmount_tree(path: Path) -> None:
    """Unmount everything at or below ``path``, deepest first (bind mounts of the same file
    system are invisible to os.path.ismount: mountinfo decides)."""
    prefix = str(path).rstrip("/") + "/"
    found = sorted({p for p in _mount_points() if p == str(path) or p.startswith(prefix)}, key=len, reverse=True)
    for m in found:
        if _libc().umount2(os.fsencode(m), 0) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise ContainerRuntimeError(f"cannot unmount {m}: {os.strerror(err)}")


class Staging:
    def __init__(self, base: Path):
        self.base = base

    def pod_dir(self, uid: str) -> Path:
        return self.base / uid

    def infra_root(self, uid: str) -> str:
        return str(self.base / uid / "infra")

    def files(self, uid: str) -> Path:
        return self.base / uid / "files"

    def container_dir(self, uid: str, name: str) -> Path:
        return self.base / uid / "ctr" / name

    # --- making ---------------------------------------------------------------------------------

    def _check_reachable(self) -> None:
        """Each directory above the staging one must let others through (x for other)."""
        p = self.base.parent
        while True:
            st = os.stat(p)
            if not st.st_mode & stat.S_IXOTH:
                raise ContainerRuntimeError(
                    f"hostUsers: false: {p} is not searchable by other users (mode "
                    f"{stat.S_IMODE(st.st_mode):o}), so a pod's unprivileged root cannot reach {self.base}; "
                    f"run 'chmod o+x {p}' or use a run root whose parent directories are searchable")
            if p == p.parent:
                return
            p = p.parent

    def _bind(self, source: str, target: Path, ns: int | None, *, recursive: bool = False,
              read_only: bool = False) -> None:
        if os.path.isdir(source):
            _mkdir(target)
        else:
            with contextlib.suppress(FileExistsError):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            idmap.bind(source, str(target), userns=ns, recursive=recursive, read_only=read_only)
        except OSError as e:
            what = "idmapped mount" if ns is not None else "bind mount"
            raise ContainerRuntimeError(f"hostUsers: false: cannot make the {what} of {source} on {target}: "
                                        f"{e.strerror or e}") from None

    def stage_pod(self, uid: str, ids: idmap.IdMap, infra_rootfs: str, run_dir: str) -> None:
        """The infra's root and the pod's run directory, idmapped."""
        _mkdir(self.base)
        self._check_reachable()
        pod = self.pod_dir(uid)
        _mkdir(pod)
        _mkdir(pod / "ctr")
        with idmap.userns_fd(ids) as ns:
            if not _is_mounted(self.infra_root(uid)):
                self._bind(infra_rootfs, Path(self.infra_root(uid)), ns, read_only=True)
            if not _is_mounted(str(self.files(uid))):
                self._bind(run_dir, self.files(uid), ns, recursive=True)

    def stage_container(self, uid: str, name: str, ids: idmap.IdMap, rootfs: str,
                        volumes: Mapping[str, str], kinds: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """(root, volumes) as the container's config names them."""
        d = self.container_dir(uid, name)
        _unmount_tree(d)  # a crashed create's leftovers
        _mkdir(d)
        _mkdir(d / "vol")
        root = d / "rootfs"
        out: dict[str, str] = {}
        with idmap.userns_fd(ids) as ns:
            if _fstype_is_overlay(rootfs):
                owner = os.stat(rootfs).st_uid
                if not ids.owns_uid(owner):
                    raise ContainerRuntimeError(
                        f"the root filesystem {rootfs} is an overlay that was not prepared for the pod's ID range "
                        f"({ids.uid}-{ids.uid + ids.size - 1}); its root belongs to host uid {owner}")
                self._bind(rootfs, root, None, recursive=True)
            else:
                self._bind(rootfs, root, ns, recursive=True)
            for vname, source in volumes.items():
                kind = kinds.get(vname, "")
                if kind in _UNSTAGED:
                    out[vname] = source
                    continue
                target = d / "vol" / vname
                self._bind(source, target, None if kind in _SHIFTED else ns, recursive=True)
                out[vname] = str(target)
        return str(root), out


    # --- removing -------------------------------------------------------------------------------

    def remove_container(self, cid: str) -> None:
        uid, _, name = cid.partition(".")
        if name:
            d = self.container_dir(uid, name)
            _unmount_tree(d)
            _remove(d)
        else:
            _unmount_tree(Path(self.infra_root(uid)))

    def remove_pod(self, uid: str) -> None:
        d = self.pod_dir(uid)
        _unmount_tree(d)
        _remove(d)


def _remove(path: Path) -> None:
    import shutil

    if os.path.lexists(path):
        shutil.rmtree(path)


def staged_subpaths(subpaths: Mapping[tuple[str, str], str], volumes: Mapping[str, str],
                    staged: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Resolved subPath sources (host paths inside a volume) as paths inside its staged mount."""
    out = {}
    for (vname, sub), real in subpaths.items():
        rel = os.path.relpath(real, volumes[vname])
        out[(vname, sub)] = os.path.normpath(os.path.join(staged[vname], rel))
    return out


def locked_options(path: str) -> tuple[str, ...]:
    """The nosuid/nodev/noexec flags of the mount at ``path``, as OCI mount options."""
    flags = os.statvfs(path).f_flag
    return tuple(name for bit, name in ((os.ST_NOSUID, "nosuid"), (os.ST_NODEV, "nodev"), (os.ST_NOEXEC, "noexec"))
                 if flags & bit)
