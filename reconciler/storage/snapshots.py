"""Container root filesystems: an overlay of the image's layers, or a copy where overlay fails.

For key K (a container id)::

    HostPaths.snapshots/K/snapshot.json   image id, chain IDs (bottom first), mode
    HostPaths.snapshots/K/upper, work     overlay mode: the container's writable layer
    HostPaths.snapshots/K/fs              copy mode: the whole root filesystem
    HostPaths.mounts/K/rootfs             the mount (volatile: a reboot wipes it, prepare remounts)

Overlay is mounted from inside ``HostPaths.layers`` with ``lowerdir=l/<short>:…`` (relative
paths to short symlinks) so that images with a hundred and more layers fit the one-page limit
of mount options; the ``mount`` binary runs with that working directory, which keeps ``chdir``
out of this (possibly multithreaded) process. Both modes mount ``nodev``: device nodes from an
image never open through a container's root filesystem (the runtime provides /dev).

For a pod in its own user namespace (``prepare(..., id_map=…)``) the overlay is mounted on
idmapped lower layers (overlayfs cannot itself be idmapped; its layers can): the image's files,
stored with owner 0, are seen as owned by the pod's root, with no copy. The upper directory then
holds host IDs of the pod's range (its root is chowned once, what a container writes lands there
shifted), which ties the snapshot to that range; ``snapshot.json`` records it. Copy-mode
snapshots need nothing: the runtime idmaps their plain directory itself.

The copy mode applies the unpacked layer directories bottom-up into ``fs`` with the same
whiteout and opaque-directory rules overlayfs uses, then bind-mounts it; it is chosen when
overlay cannot be mounted at all (probed once), with ``force_copy``, or for a layer stack
too deep for overlay.

A snapshot whose directory was deleted behind podplay's back while its root filesystem stays
mounted is still listed (``present`` False, see ``listing``), so that observe reports it and a
teardown unmounts it; preparing the key again unmounts that stale mount before it mounts the new one.
Creating a snapshot on a full file system is the one no-space error (NoSpaceError).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from reconciler.drivers.base import ImageStore
from reconciler.errors import StorageError, no_space
from reconciler.fsutil import atomic_write
from reconciler.idmap import IdMap
from reconciler.observed import ImageInfo, ObservedSnapshot
from reconciler.paths import HostPaths
from reconciler.storage import listing, mounts
from reconciler.storage.layers import Layer, LayerStore, flocked
from reconciler.storage.unpack import DEFAULT_LIMITS, OPAQUE_XATTR, UnpackLimits, is_whiteout

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FICLONE = 0x40049409
# Overlay refuses more lower layers than this (OVL_MAX_STACK), and its options must fit a page.
OVERLAY_MAX_LAYERS = 500
MOUNT_OPTIONS_MAX = 4095
META = "snapshot.json"
LOCKS = ".locks"


def check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise StorageError(f"invalid snapshot key {key!r}: use letters, digits, '.', '_' and '-' "
                           "(at most 128, starting with a letter or digit)")


class OverlaySnapshotter:
    """``SnapshotDriver`` on overlayfs, with a copying fallback (see the module docstring)."""

    def __init__(self, paths: HostPaths, images: ImageStore, *, force_copy: bool = False,
                 limits: UnpackLimits = DEFAULT_LIMITS, durable: bool = True, isolate: bool = False):
        self.paths = paths
        self.layers = LayerStore(paths, images, limits=limits, durable=durable, isolate=isolate)
        self.force_copy = force_copy
        self._overlay_ok: bool | None = None
        self._recovered = False

    # -- SnapshotDriver -------------------------------------------------------------------------

    def prepare(self, key: str, image: ImageInfo, id_map: IdMap | None = None) -> str:
        check_key(key)
        if not self._recovered:
            self._recover()
            self._recovered = True
        layers = self.layers.ensure_layers(image)
        sdir = self.paths.snapshots / key
        target = self.paths.mounts / key / "rootfs"
        with self._locked(key):
            meta = self._read_meta(sdir)
            chains = [layer.chain_id for layer in layers]
            if meta is None:
                if mounts.is_mountpoint(target):
                    # The mount of a snapshot whose directory was deleted: it shows nothing of
                    # the snapshot made now.
                    mounts.remove_tree(self.paths.mounts / key)
                self._create(key, sdir, image, layers)
                meta = self._read_meta(sdir)
            elif meta.get("chain_ids") != chains:
                raise StorageError(f"snapshot {key} exists for image {meta.get('image') or '?'} with other "
                                   f"layers than image {image.id}; remove it first")
            shifted = meta["mode"] == "overlay" and id_map is not None
            if shifted:
                meta = self._shift(sdir, meta, id_map)
            marker = self.paths.mounts / key / "idmap"
            want_marker = json.dumps(id_map.to_list()) if shifted else ""
            if mounts.is_mountpoint(target) and meta["mode"] == "overlay" and _read(marker) != want_marker:
                mounts.umount(target)  # mounted for another view (plain, or for another range)
            if not mounts.is_mountpoint(target):
                try:
                    self.paths.mounts.mkdir(parents=True, exist_ok=True)
                    os.chmod(self.paths.mounts, 0o700)
                    target.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise StorageError(f"cannot create mount point {target}: {e}") from e
                if shifted:
                    self._mount_overlay_idmapped(sdir, layers, target, id_map)
                elif meta["mode"] == "overlay":
                    self._mount_overlay(sdir, layers, target)
                else:
                    self._mount_copy(sdir / "fs", target)
                if meta["mode"] == "overlay":
                    atomic_write(marker, want_marker, 0o600)
        return str(target)

    def _shift(self, sdir: Path, meta: dict, id_map: IdMap) -> dict:
        """Give the upper directory to the pod's range, once: its root, and whatever a container
        wrote there before (host IDs, never a copy of the image's files)."""
        held = IdMap.from_list(meta.get("id_map"))
        if held == id_map:
            return meta
        if held is not None:
            raise StorageError(f"snapshot {sdir.name} belongs to the ID range {held.uid}-{held.uid + held.size - 1}, "
                               f"not {id_map.uid}-{id_map.uid + id_map.size - 1}; remove it first")
        upper = sdir / "upper"
        try:
            for _, dirnames, filenames, dfd in os.fwalk(upper, follow_symlinks=False):
                for name in dirnames + filenames:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if st.st_uid < id_map.size and st.st_gid < id_map.size:
                        os.chown(name, id_map.uid + st.st_uid, id_map.gid + st.st_gid, dir_fd=dfd,
                                 follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o6000:
                            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)  # chown cleared set-id bits
            st = os.stat(upper)
            if st.st_uid < id_map.size and st.st_gid < id_map.size:
                os.chown(upper, id_map.uid + st.st_uid, id_map.gid + st.st_gid)
            meta = {**meta, "id_map": id_map.to_list()}
            atomic_write(sdir / META, json.dumps(meta, indent=1) + "\n", 0o600)
        except OSError as e:
            raise StorageError(f"cannot give snapshot {sdir.name} to the pod's ID range: {e}") from e
        return meta

    def remove(self, key: str) -> None:
        check_key(key)
        with self._locked(key):
            # Unmount first; remove_tree refuses while anything stays mounted below.
            mounts.remove_tree(self.paths.mounts / key)
            sdir = self.paths.snapshots / key
            if os.path.lexists(sdir):
                doomed = self.paths.snapshots / f".removing-{key}-{os.urandom(4).hex()}"
                try:
                    os.rename(sdir, doomed)
                except OSError as e:
                    raise StorageError(f"cannot remove snapshot {key}: {e}") from e
                mounts.remove_tree(doomed)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.snapshots / LOCKS / f"{key}.lock")  # flocked copes with this

    def list_snapshots(self) -> list[ObservedSnapshot]:
        return listing.list_snapshots(self.paths)

    # -- more -----------------------------------------------------------------------------------

    def snapshot_layers(self, key: str) -> list[str]:
        """Chain IDs (bottom first) of a snapshot's image, [] when it does not exist."""
        meta = self._read_meta(self.paths.snapshots / key)
        return list(meta["chain_ids"]) if meta else []

    def snapshot_image(self, key: str) -> str:
        """The id of the image a snapshot was made from, "" when it does not exist."""
        meta = self._read_meta(self.paths.snapshots / key)
        return str(meta.get("image") or "") if meta else ""

    def mode(self, key: str) -> str:
        """"overlay" or "copy" for an existing snapshot, "" when it does not exist."""
        meta = self._read_meta(self.paths.snapshots / key)
        return meta["mode"] if meta else ""

    def gc(self, live_images: Iterable[ImageInfo]) -> list[str]:
        """Remove layers that neither a live image nor an existing snapshot uses; also what
        crashed prepares and removes left. Returns the chain IDs of the removed layers."""
        self._recover()
        keep = set()
        for key in self._keys():
            keep.update(self.snapshot_layers(key))
        return self.layers.gc(live_images, keep)

    # -- internals ------------------------------------------------------------------------------

    def _keys(self) -> list[str]:
        return listing.stored_keys(self.paths)

    def _locked(self, key: str):
        return flocked(self.paths.snapshots / LOCKS / f"{key}.lock")

    def _recover(self) -> None:
        try:
            names = os.listdir(self.paths.snapshots)
        except FileNotFoundError:
            return
        for name in names:
            probe = re.match(r"^\.probe-([0-9a-f]{8})$", name)
            if probe:  # an overlay probe whose process was killed (a live one holds its lock)
                lock = self.paths.snapshots / LOCKS / f"probe-{probe.group(1)}.lock"
                with flocked(lock, blocking=False) as mine:
                    if mine:
                        mounts.remove_tree(self.paths.snapshots / name)
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(lock)
                continue
            m = re.match(r"^\.(tmp|removing)-(.+)-[0-9a-f]{8}$", name)
            if not m:
                continue
            with flocked(self.paths.snapshots / LOCKS / f"{m.group(2)}.lock", blocking=False) as mine:
                if mine:
                    mounts.remove_tree(self.paths.snapshots / name)

    @staticmethod
    def _read_meta(sdir: Path) -> dict | None:
        try:
            meta = json.loads((sdir / META).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StorageError(f"snapshot {sdir.name} is damaged ({e}); remove it") from e
        if not isinstance(meta, dict) or meta.get("mode") not in ("overlay", "copy"):
            raise StorageError(f"snapshot {sdir.name} has damaged metadata; remove it")
        return meta

    def _choose_mode(self, layers: Sequence[Layer], sdir: Path) -> str:
        if self.force_copy:
            return "copy"
        if len(layers) > OVERLAY_MAX_LAYERS or len(self._overlay_options(sdir, layers)) > MOUNT_OPTIONS_MAX:
            return "copy"
        return "overlay" if self._overlay_supported() else "copy"

    def _create(self, key: str, sdir: Path, image: ImageInfo, layers: Sequence[Layer]) -> None:
        mode = self._choose_mode(layers, sdir)
        tmp = self.paths.snapshots / f".tmp-{key}-{os.urandom(4).hex()}"
        try:
            self.paths.snapshots.mkdir(parents=True, exist_ok=True)
            os.chmod(self.paths.snapshots, 0o700)
            os.mkdir(tmp, 0o700)
            if mode == "overlay":
                os.mkdir(tmp / "upper", 0o755)
                os.mkdir(tmp / "work", 0o700)
                if not layers:
                    os.mkdir(tmp / "empty", 0o755)
                else:
                    # The merged root takes its attributes from the upper dir.
                    st = os.stat(layers[-1].path)
                    os.chown(tmp / "upper", st.st_uid, st.st_gid)
                    os.chmod(tmp / "upper", stat.S_IMODE(st.st_mode))
                    os.utime(tmp / "upper", ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                os.mkdir(tmp / "fs", 0o755)
                for layer in layers:
                    apply_layer_copy(layer.path, tmp / "fs")
            meta = {"key": key, "image": image.id, "chain_ids": [layer.chain_id for layer in layers],
                    "mode": mode}
            atomic_write(tmp / META, json.dumps(meta, indent=1) + "\n", 0o600)
            os.rename(tmp, sdir)
        except BaseException as e:
            with contextlib.suppress(OSError, StorageError):
                mounts.remove_tree(tmp)
            if isinstance(e, OSError):
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise no_space(self.paths.root) from None
                raise StorageError(f"cannot create snapshot {key}: {e}") from e
            raise

    def _overlay_options(self, sdir: Path, layers: Sequence[Layer]) -> str:
        lower = ":".join(f"l/{layer.link}" for layer in reversed(layers)) if layers else str(sdir / "empty")
        return f"lowerdir={lower},upperdir={sdir / 'upper'},workdir={sdir / 'work'}"

    def _mount_overlay(self, sdir: Path, layers: Sequence[Layer], target: Path) -> None:
        opts = self._overlay_options(sdir, layers)
        if len(opts) > MOUNT_OPTIONS_MAX:
            raise StorageError(f"snapshot {sdir.name}: overlay options too long ({len(opts)} bytes)")
        res = subprocess.run(["mount", "-t", "overlay", "-o", f"nodev,{opts}", "overlay", str(target)],
                             cwd=self.layers.root, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise StorageError(f"cannot mount the overlay for snapshot {sdir.name}: "
                               f"{(res.stderr or res.stdout).strip()}")

    def _mount_overlay_idmapped(self, sdir: Path, layers: Sequence[Layer], target: Path, id_map: IdMap) -> None:
        """The overlay on an idmapped view of the layer store: mounted for the time of the overlay
        mount only (overlayfs keeps private clones of its layers' mounts)."""
        from reconciler import idmap

        view = target.parent / "layers"
        view.mkdir(mode=0o700, exist_ok=True)
        try:
            with idmap.userns_fd(id_map) as ns:
                idmap.bind(str(self.layers.root), str(view), userns=ns)
            opts = self._overlay_options(sdir, layers)
            res = subprocess.run(["mount", "-t", "overlay", "-o", f"nodev,{opts}", "overlay", str(target)],
                                 cwd=view, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise StorageError(f"cannot mount the overlay for snapshot {sdir.name} on idmapped layers: "
                                   f"{(res.stderr or res.stdout).strip()}")
        except OSError as e:
            raise StorageError(f"cannot make the idmapped view of the layers for snapshot {sdir.name}: {e}") from e
        finally:
            mounts.umount(view)
            with contextlib.suppress(OSError):
                os.rmdir(view)

    @staticmethod
    def _mount_copy(fs: Path, target: Path) -> None:
        mounts.mount(str(fs), target, None, mounts.MS_BIND)
        try:
            mounts.mount("none", target, None, mounts.MS_BIND | mounts.MS_REMOUNT | mounts.MS_NODEV)
        except StorageError:
            mounts.umount(target)
            raise

    def _overlay_supported(self) -> bool:
        """Whether overlay mounts work here at all, probed once with a tiny mount."""
        if self._overlay_ok is None:
            self._overlay_ok = _probe_overlay(self.paths.snapshots)
        return self._overlay_ok


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _probe_overlay(parent: Path) -> bool:
    try:
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read().split():
                return False
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    tag = os.urandom(4).hex()
    probe, lock = parent / f".probe-{tag}", parent / LOCKS / f"probe-{tag}.lock"
    try:
        # Held while the probe exists: a process killed meanwhile leaves it for _recover.
        with flocked(lock):
            try:
                os.mkdir(probe, 0o700)
                for d in ("lower", "upper", "work", "merged"):
                    os.mkdir(probe / d)
                mounts.mount("overlay", probe / "merged", "overlay", mounts.MS_NODEV,
                             f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}")
                mounts.umount(probe / "merged")
                return True
            except (OSError, StorageError):
                return False
            finally:
                with contextlib.suppress(OSError, StorageError):
                    mounts.remove_tree(probe)
                with contextlib.suppress(OSError):
                    os.unlink(lock)
    except OSError:
        return False


# --- the copy fallback -----------------------------------------------------------------------

def _remove_entry(dfd: int, name: str) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _copy_xattrs(sfd: int, dfd: int) -> None:
    try:
        names = os.listxattr(sfd)
    except OSError:
        return
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dfd, name, os.getxattr(sfd, name))


def _copy_data(src: int, dst: int, size: int) -> None:
    try:
        fcntl.ioctl(dst, _FICLONE, src)  # reflink where the file system can
        return
    except OSError:
        pass
    left = size
    while left > 0:
        try:
            n = os.copy_file_range(src, dst, left)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = 0
        if n == 0:
            break
        left -= n
    while left > 0:  # copy_file_range unavailable, or the file shrank underneath
        chunk = os.read(src, min(left, 1 << 20))
        if not chunk:
            break
        os.write(dst, chunk)
        left -= len(chunk)


def apply_layer_copy(layer_dir: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Apply one unpacked layer (overlay form) onto a plain directory tree, as overlayfs would
    show it: whiteouts delete, opaque directories replace, everything else is copied over.
    Hard links within the layer stay links. Symlinks are never followed."""
    sroot = os.open(layer_dir, _O_DIR)
    try:
        droot = os.open(dest, _O_DIR)
    except OSError:
        os.close(sroot)
        raise
    copy = _LayerCopy(droot)
    # Stack of (src dir fd, dst dir fd, relative path, src dir stat, children done). A directory
    # is pushed again after its children so that its times are set last; its fds are closed then.
    stack: list[tuple[int, int, str, os.stat_result, bool]] = [(sroot, droot, "", os.fstat(sroot), False)]
    try:
        while stack:
            sfd, dfd, rel, dir_st, done = stack.pop()
            if done:
                _finish_dir(sfd, dfd, rel, dir_st)
                continue
            stack.append((sfd, dfd, rel, dir_st, True))
            with os.scandir(sfd) as entries:
                children = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
            for name, st in children:
                sub = copy.entry(sfd, dfd, name, f"{rel}/{name}" if rel else name, st)
                if sub is not None:
                    stack.append(sub)
    except OSError as e:
        raise StorageError(f"cannot copy layer {layer_dir} into {dest}: {e}") from e
    finally:
        # On error, the stack still holds every directory fd that is open, each once.
        for sfd, dfd, rel, *_ in stack:
            if rel:
                os.close(sfd)
                os.close(dfd)
        os.close(sroot)
        os.close(droot)


def _finish_dir(sfd: int, dfd: int, rel: str, st: os.stat_result) -> None:
    """After a directory's children: the root's owner and mode, every directory's times."""
    if not rel:
        os.fchown(dfd, st.st_uid, st.st_gid)
        os.fchmod(dfd, stat.S_IMODE(st.st_mode))
    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
    if rel:
        os.close(sfd)
        os.close(dfd)


class _LayerCopy:
    """One layer entry at a time onto the destination tree (see apply_layer_copy)."""

    def __init__(self, droot: int):
        self.droot = droot
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) of a hard-linked file → its first path

    def entry(self, sfd: int, dfd: int, name: str, path: str, st: os.stat_result):
        """Apply one entry; a directory returns its stack frame (its children come next)."""
        try:
            have = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            have = None
        if is_whiteout(st):
            if have is not None:
                _remove_entry(dfd, name)
            return None
        if stat.S_ISDIR(st.st_mode):
            return self.directory(sfd, dfd, name, path, st, have)
        if have is not None:
            _remove_entry(dfd, name)
        if stat.S_ISREG(st.st_mode):
            self.file(sfd, dfd, name, path, st)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
        else:
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dfd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
        return None

    def directory(self, sfd: int, dfd: int, name: str, path: str, st: os.stat_result, have):
        sub_s = os.open(name, _O_DIR, dir_fd=sfd)
        try:
            opaque = os.getxattr(sub_s, OPAQUE_XATTR) == b"y"
        except OSError:
            opaque = False
        if have is not None and (opaque or not stat.S_ISDIR(have.st_mode)):
            _remove_entry(dfd, name)
            have = None
        try:
            if have is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            sub_d = os.open(name, _O_DIR, dir_fd=dfd)
        except OSError:
            os.close(sub_s)
            raise
        frame = (sub_s, sub_d, path, st, False)
        try:
            os.fchown(sub_d, st.st_uid, st.st_gid)
            os.fchmod(sub_d, stat.S_IMODE(st.st_mode))
            _copy_xattrs(sub_s, sub_d)
        except OSError:
            os.close(sub_s)
            os.close(sub_d)
            raise
        return frame

    def file(self, sfd: int, dfd: int, name: str, path: str, st: os.stat_result) -> None:
        ident = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and ident in self.links:
            os.link(self.links[ident], name, src_dir_fd=self.droot, dst_dir_fd=dfd, follow_symlinks=False)
            return
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            dst = os.open(name, _O_NEWFILE, 0o600, dir_fd=dfd)
            try:
                _copy_data(src, dst, st.st_size)
                os.fchown(dst, st.st_uid, st.st_gid)
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                _copy_xattrs(src, dst)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        if st.st_nlink > 1:
            self.links[ident] = path
