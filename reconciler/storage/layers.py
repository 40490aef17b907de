"""The layer store: every layer unpacked once, shared by every image that has it.

Layers are keyed by chain ID (OCI image-spec: ChainID(L0) = DiffID(L0), ChainID(Ln) =
sha256(ChainID(Ln-1) + " " + DiffID(Ln))), because a layer directory holds the layer *as unpacked
on top of its parents* (see ``unpack``: directories it uses without declaring take their
attributes from below). Layout under ``HostPaths.layers`` (mode 0700)::

    <alg>-<hex>/diff         the unpacked layer (an overlay lowerdir)
    <alg>-<hex>/link         its short name in l/
    <alg>-<hex>/layer.json   chain id, diff id, parent, size
    <alg>-<hex>.incomplete/  an unpack in progress, or left by a crash (removed on start-up)
    l/<short> -> ../<alg>-<hex>/diff
    locks/<alg>-<hex>.lock   flock: one unpacker per layer across processes

Unpacking is budgeted: an image's missing layers may together expand to no more than the free
space of the store's file system (and its free inodes) less a reserve of 5%, measured when its
first missing layer is unpacked, and no single layer past ``UnpackLimits.max_bytes``. The tar
stream is counted as it is read, so a layer that would cross the budget is refused before the
bytes past it are written, and its directory is removed.

The short names keep overlay's mount options within a page for images with many layers (the
mount is made from inside ``HostPaths.layers`` with ``lowerdir=l/<short>:…``). A layer appears
under its final name only by a rename after its content reached the disk (syncfs), so a layer
directory is either complete or absent.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler import forked, sha
from reconciler.drivers.base import ImageStore
from reconciler.errors import StorageError
from reconciler.fsutil import atomic_write, fsync_dir
from reconciler.observed import ImageInfo
from reconciler.paths import HostPaths
from reconciler.storage import mounts
from reconciler.storage.unpack import DEFAULT_LIMITS, LayerTooLarge, UnpackLimits, parse_digest, unpack_layer

INCOMPLETE = ".incomplete"
# The share of the layer store's file system (bytes and inodes) an unpack never takes.
RESERVE_FRACTION = 0.05
LINKS_DIR = "l"
LOCKS_DIR = "locks"


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Chain IDs of a layer stack given bottom-first diff IDs (OCI image-spec, "ChainID")."""
    out: list[str] = []
    for diff_id in diff_ids:
        parse_digest(diff_id)
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + sha.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def layer_name(chain_id: str) -> str:
    alg, hexpart = parse_digest(chain_id)
    return f"{alg}-{hexpart}"


@dataclass
class Budget:
    """How much one image may unpack: the free space of the layer store's file system when the
    image's first missing layer is unpacked, less a reserve, less what its layers took since."""

    free: int  # bytes free for us (f_bavail) when measured
    reserve: int  # bytes left to the rest of the host
    bytes: int  # bytes the image may still write
    inodes: int | None = None  # entries it may still make; None: the file system does not say
    spent: int = 0

    def limits(self, base: UnpackLimits) -> UnpackLimits:
        """``base`` narrowed to what is left (the tar stream's size bounds what a layer writes)."""
        entries = base.max_entries if self.inodes is None else min(base.max_entries, self.inodes)
        return dataclasses.replace(base, max_bytes=min(base.max_bytes, self.bytes), max_entries=entries)

    def spend(self, size: int, entries: int) -> None:
        self.spent += size
        self.bytes = max(0, self.bytes - size)
        if self.inodes is not None:
            self.inodes = max(0, self.inodes - entries)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclass(frozen=True)
class Layer:
    chain_id: str
    diff_id: str
    path: Path  # the unpacked content (…/diff)
    link: str  # short name under l/


@contextlib.contextmanager
def flocked(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Exclusive flock on a lock file that others may delete while holding it: after locking,
    check that the path still names the inode we hold, else start over. Yields False when
    ``blocking`` is off and someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                st = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue
            held = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino):
                continue  # deleted (and maybe re-created) while we waited
            yield True
            return
        finally:
            os.close(fd)


class LayerStore:
    """Unpacked layers under ``HostPaths.layers``, fed from an ImageStore."""

    def __init__(self, paths: HostPaths, images: ImageStore, *, limits: UnpackLimits = DEFAULT_LIMITS,
                 durable: bool = True, isolate: bool = False):
        self.root = paths.layers
        self.images = images
        self.limits = limits
        self.durable = durable
        self.isolate = isolate  # unpack in a forked child (see reconciler.forked)
        self._recovered = False

    # -- paths ----------------------------------------------------------------------------------

    def _dir(self, chain_id: str) -> Path:
        return self.root / layer_name(chain_id)

    def _lock(self, name: str) -> Path:
        return self.root / LOCKS_DIR / f"{name}.lock"

    def _setup(self) -> None:
        if self._recovered:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            (self.root / LINKS_DIR).mkdir(exist_ok=True)
            (self.root / LOCKS_DIR).mkdir(exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the layer store at {self.root}: {e}") from e
        self.recover()
        self._recovered = True

    def recover(self) -> None:
        """Remove what a crash left: unpacks that never finished and links to layers that are
        not there. Work another process is doing (its lock is held) is left alone."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(INCOMPLETE):
                continue
            base = name[: -len(INCOMPLETE)]
            with flocked(self._lock(base), blocking=False) as mine:
                if mine:
                    mounts.remove_tree(self.root / name)
        links = self.root / LINKS_DIR
        for short in os.listdir(links) if links.is_dir() else ():
            try:
                target = os.readlink(links / short)
            except OSError:
                continue
            base = target.split("/")[1] if target.startswith("../") else ""
            if base and (self.root / base / "layer.json").exists():
                continue
            if base:
                with flocked(self._lock(base), blocking=False) as mine:
                    if mine and not (self.root / base / "layer.json").exists():
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(links / short)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(links / short)

    # -- queries --------------------------------------------------------------------------------

    def has_layer(self, chain_id: str) -> bool:
        return (self._dir(chain_id) / "layer.json").is_file()

    def list_layers(self) -> list[str]:
        """Chain IDs of the complete layers on disk."""
        out = []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        for name in names:
            meta = self.root / name / "layer.json"
            if name.endswith(INCOMPLETE) or name in (LINKS_DIR, LOCKS_DIR) or not meta.is_file():
                continue
            try:
                out.append(json.loads(meta.read_text())["chain_id"])
            except (OSError, ValueError, KeyError):
                continue
        return sorted(out)

    def get(self, chain_id: str) -> Layer | None:
        d = self._dir(chain_id)
        try:
            meta = json.loads((d / "layer.json").read_text())
            link = (d / "link").read_text().strip()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StorageError(f"layer {chain_id} is damaged ({e}); remove {d}") from e
        self._ensure_link(d.name, link)
        return Layer(chain_id, meta["diff_id"], d / "diff", link)

    def _ensure_link(self, name: str, link: str) -> None:
        path = self.root / LINKS_DIR / link
        want = f"../{name}/diff"
        try:
            if os.readlink(path) == want:
                return
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot check layer link {path}: {e}") from e
        os.symlink(want, path)

    # -- unpacking ------------------------------------------------------------------------------

    def ensure_layers(self, image: ImageInfo) -> list[Layer]:
        """The image's layers, bottom first, unpacking the ones not yet on disk."""
        self._setup()
        diff_ids = [layer.diff_id for layer in image.layers]
        try:
            chains = chain_ids(diff_ids)
        except StorageError as e:
            raise StorageError(f"image {image.id}: {e}") from None
        if self.isolate:
            found = [self.get(chain) for chain in chains]
            if all(found):
                return found
            return forked.call(self._ensure, image, chains)
        return self._ensure(image, chains)

    def _ensure(self, image: ImageInfo, chains: list[str]) -> list[Layer]:
        out: list[Layer] = []
        budget: Budget | None = None
        for info, chain in zip(image.layers, chains):
            layer = self.get(chain)
            if layer is None:
                name = layer_name(chain)
                with flocked(self._lock(name)):
                    layer = self.get(chain)
                    if layer is None:
                        if budget is None:  # measured once, before the image's first unpack
                            budget = self.budget()
                        layer = self._unpack(info, chain, name, out, budget.limits(self.limits), image, budget)
            out.append(layer)
        return out

    def budget(self) -> Budget:
        """What one image may still unpack, from the free space (and inodes) of the layer store's
        file system, keeping a reserve so that the host does not fill up."""
        try:
            st = os.statvfs(self.root)
        except OSError as e:
            raise StorageError(f"cannot read the free space of {self.root}: {e.strerror}") from e
        free = st.f_bavail * st.f_frsize
        reserve = int(st.f_blocks * st.f_frsize * RESERVE_FRACTION)
        # Some file systems (btrfs) report no inode counts: no inode budget there.
        inodes = max(0, st.f_favail - int(st.f_files * RESERVE_FRACTION)) if st.f_files else None
        return Budget(free=free, reserve=reserve, bytes=max(0, free - reserve), inodes=inodes)

    def _unpack(self, info, chain: str, name: str, below: list[Layer], limits: UnpackLimits | None = None,
                image: ImageInfo | None = None, budget: Budget | None = None) -> Layer:
        tmp = self.root / (name + INCOMPLETE)
        mounts.remove_tree(tmp)  # a crash leftover; we hold the lock
        link_path = None
        try:
            os.mkdir(tmp, 0o700)
            with self.images.open_blob(info.digest) as blob:
                try:
                    result = unpack_layer(blob, tmp / "diff", diff_id=info.diff_id, media_type=info.media_type,
                                          lowers=[layer.path for layer in reversed(below)],
                                          limits=limits or self.limits)
                except LayerTooLarge as e:
                    raise StorageError(self._too_large(e, info, image, budget)) from None
            if budget is not None:
                budget.spend(result.size, result.entries)
            while True:
                link = base64.b32encode(os.urandom(10)).decode().rstrip("=")[:12]
                link_path = self.root / LINKS_DIR / link
                try:
                    os.symlink(f"../{name}/diff", link_path)
                    break
                except FileExistsError:
                    continue
            (tmp / "link").write_text(link)
            meta = {"chain_id": chain, "diff_id": info.diff_id, "digest": info.digest,
                    "parent": below[-1].chain_id if below else "", "size": result.size,
                    "entries": result.entries}
            atomic_write(tmp / "layer.json", json.dumps(meta, indent=1) + "\n", 0o600)
            if self.durable:
                fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    mounts.syncfs(fd)
                finally:
                    os.close(fd)
            os.rename(tmp, self.root / name)
            fsync_dir(self.root)
        except BaseException as e:
            with contextlib.suppress(OSError, StorageError):
                mounts.remove_tree(tmp)
            if link_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(link_path)
            if isinstance(e, OSError):
                raise StorageError(f"cannot unpack layer {info.digest}: {e}") from e
            raise
        return Layer(chain, info.diff_id, self.root / name / "diff", link)

    def _too_large(self, e: LayerTooLarge, info, image: ImageInfo | None, budget: Budget | None) -> str:
        who = f"image {image.names[0]}" if image and image.names else f"image {image.id}" if image else "an image"
        head = f"{who}: layer {info.digest} ({_size(info.size)} compressed)"
        if e.what == "entries":
            if budget is not None and budget.inodes is not None and e.limit < self.limits.max_entries:
                return (f"{head} has more than {e.limit} entries, more than the free inodes of {self.root} allow "
                        f"(keeping {int(RESERVE_FRACTION * 100)}% in reserve); refused, nothing of it was kept")
            return f"{head} has more than {e.limit} entries, the limit for one layer; refused, nothing of it was kept"
        if budget is None or e.limit >= self.limits.max_bytes:
            return (f"{head} expands to more than {_size(e.limit)}, the limit for one layer (a decompression bomb?); "
                    "refused, nothing of it was kept")
        return (f"{head} expands to more than {_size(e.limit)}, all the space the image may still use: {self.root} "
                f"has {_size(budget.free)} free, {_size(budget.reserve)} of which stay in reserve, and the image's "
                f"other layers took {_size(budget.spent)}; refused, nothing of it was kept (free space, or remove "
                "unused images with `podplay image prune`)")

    # -- garbage collection ---------------------------------------------------------------------

    def gc(self, live_images: Iterable[ImageInfo], keep: Iterable[str] = ()) -> list[str]:
        """Remove layers that no live image and no chain ID in ``keep`` (the snapshots' layers)
        references. Returns the chain IDs removed. Run it under the engine's apply lock: it
        does not wait for other processes' snapshots of the same layers."""
        self._setup()
        referenced = set(keep)
        for image in live_images:
            with contextlib.suppress(StorageError):
                referenced.update(chain_ids([layer.diff_id for layer in image.layers]))
        removed = []
        for chain in self.list_layers():
            if chain in referenced:
                continue
            name = layer_name(chain)
            with flocked(self._lock(name)):
                d = self.root / name
                if not (d / "layer.json").is_file():
                    continue
                with contextlib.suppress(OSError):
                    link = (d / "link").read_text().strip()
                    if link and "/" not in link:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self.root / LINKS_DIR / link)
                # Rename first: a crash in the middle leaves an .incomplete that recover removes.
                tmp = self.root / (name + INCOMPLETE)
                mounts.remove_tree(tmp)
                os.rename(d, tmp)
                mounts.remove_tree(tmp)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._lock(name))
            removed.append(chain)
        return removed
