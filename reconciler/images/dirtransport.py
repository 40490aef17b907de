"""The ``dir:`` transport: one image as plain files, the layout skopeo writes.

    DIR/version          "Directory Transport Version: 1.1\\n"
    DIR/manifest.json    the image manifest, byte for byte (its digest is the image's)
    DIR/<hex>            each blob (config and layers), named by its sha256 digest's hex

One image per directory and no index (skopeo writes an index there only with --all, and then
only as a list of instance manifests; podplay copies the platform's image instead). Reading goes
through ``DirFiles`` (no symbolic link followed, every blob verified by the copy); writing into
a directory that exists needs it to be empty or a ``dir:`` directory already, as skopeo asks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from reconciler import sha
from reconciler.errors import ImageError
from reconciler.fsutil import atomic_write, fsync_dir
from reconciler.images.blobio import BlobWriter, CopiedImage, FileWriter, copy_file_blob
from reconciler.images.layout import DirFiles
from reconciler.images.manifest import MAX_MANIFEST_SIZE
from reconciler.images.reference import split_digest, validate_digest
from reconciler.images.registry import FetchedManifest

VERSION_FILE = "version"
VERSION = b"Directory Transport Version: 1.1\n"
MANIFEST = "manifest.json"


def blob_file(digest: str) -> str:
    algorithm, hexpart = split_digest(digest)  # validated: never a path trick
    return hexpart if algorithm == "sha256" else f"{algorithm}-{hexpart}"


class DirSource:
    def __init__(self, path: str | os.PathLike, description: str):
        self.files = DirFiles(path, description)
        self.description = description
        version = self.files.read(VERSION_FILE, 4096, "version file")
        if not version.startswith(b"Directory Transport Version: 1."):
            raise ImageError(f"{description}: not a dir: image (its version file says {version[:60]!r})")
        self.data = self.files.read(MANIFEST, MAX_MANIFEST_SIZE, MANIFEST)
        self.digest = "sha256:" + sha.sha256(self.data).hexdigest()

    def get_manifest(self, reference: str) -> FetchedManifest:
        if reference and reference != self.digest:
            validate_digest(reference)
            raise ImageError(f"{self.description}: holds manifest {self.digest}, not {reference}")
        return FetchedManifest(self.data, self.digest, "")

    def copy_blob(self, desc, writer, progress: Callable[[int], None] | None = None) -> None:
        name = blob_file(desc.digest)
        copy_file_blob(lambda: self.files.open(name, f"blob {desc.digest}"), writer, progress)

    def mount_candidates(self) -> list[tuple[str, str]]:
        return []

    def close(self) -> None:
        pass


class DirDestination:
    accepts_index = False  # one image per directory
    oci_only = False  # the manifest is kept as it is, as skopeo does
    needs_diff_ids = False
    parallel = True

    def __init__(self, path: str | os.PathLike, description: str):
        self.path = Path(path)
        self.description = description
        root = self.path
        if root.is_symlink():
            raise ImageError(f"{description}: {root} is a symbolic link; refusing to write through it")
        if root.exists() and not root.is_dir():
            raise ImageError(f"{description}: {root} exists and is not a directory")
        if root.is_dir() and any(root.iterdir()) and not (root / VERSION_FILE).is_file():
            raise ImageError(f"{description}: {root} is not empty and not a dir: image; refusing to write into it")
        self._created = not root.exists()
        self._written: set[str] = set()
        try:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write(root / VERSION_FILE, VERSION)
        except OSError as exc:
            raise ImageError(f"{description}: cannot write {root}: {exc.strerror}") from None

    def has_blob(self, desc, diff_id: str | None = None) -> bool:
        if desc.digest in self._written:
            return True
        try:
            st = os.lstat(self.path / blob_file(desc.digest))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == desc.size

    @contextlib.contextmanager
    def writer(self, desc, diff_id: str | None = None, mount_from=()) -> Iterator[BlobWriter | None]:
        if self.has_blob(desc):
            yield None
            return
        what = f"blob {desc.digest}"
        w = FileWriter(desc.digest, desc.size, self.path, self.path / blob_file(desc.digest), what)
        try:
            yield w
            if not w.done:
                raise ImageError(f"internal error: {what} was not committed")
            self._written.add(desc.digest)
        except BaseException:
            w.discard()
            raise
        finally:
            w.close()

    def put_manifest(self, data: bytes, digest: str, media_type: str) -> None:
        raise ImageError(f"{self.description}: a dir: image holds one manifest, not an index")

    def commit(self, image: CopiedImage, ref: str = "") -> None:
        try:
            atomic_write(self.path / MANIFEST, image.data)
        except OSError as exc:
            raise ImageError(f"{self.description}: cannot write {MANIFEST}: {exc.strerror}") from None

    def finish(self, stream=None) -> None:
        fsync_dir(self.path)

    def abort(self) -> None:
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
