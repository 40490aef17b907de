"""OCI image layouts (``oci:DIR[:REF]``, and inside ``oci-archive:FILE[:REF]``), read and written.

A layout is ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an OCI index
whose entries carry the image name in the ``org.opencontainers.image.ref.name`` annotation) and
``blobs/<algorithm>/<hex>``. Reading goes through a small ``Files`` interface so that a
directory and an archive read the same way; in a directory no path component may be a
symbolic link (a layout is data, not a place to point elsewhere). Every manifest read by
digest is verified; blobs are verified by whatever writer they are copied into.

Writing: blobs go to a temporary file and are renamed into place once verified; ``index.json``
is replaced atomically at the end. An existing layout keeps its other images; an entry with
the same name is replaced (as skopeo does). A directory that is neither empty nor a layout is
refused rather than written into.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from reconciler import sha
from reconciler.errors import ImageError
from reconciler.fsutil import atomic_write, fsync_dir
from reconciler.images.archive import TarWriter
from reconciler.images.blobio import BlobWriter, CopiedImage, FileWriter, copy_file_blob
from reconciler.images.manifest import (
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    Descriptor,
    ImageIndex,
    parse_manifest,
)
from reconciler.images.reference import split_digest, validate_digest
from reconciler.images.registry import FetchedManifest

REF_ANNOTATION = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
LAYOUT_DOC = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}, separators=(",", ":")).encode()


class Files(Protocol):
    description: str

    def has(self, name: str) -> bool: ...

    def open(self, name: str, what: str = "") -> BinaryIO: ...

    def read(self, name: str, limit: int, what: str = "") -> bytes: ...

    def close(self) -> None: ...


def blob_name(digest: str) -> str:
    algorithm, hexpart = split_digest(digest)  # validated: never a path trick
    return f"blobs/{algorithm}/{hexpart}"


class DirFiles:
    """Files of a directory, opened component by component without following symbolic links."""

    def __init__(self, root: str | os.PathLike, description: str = ""):
        self.root = Path(root)
        self.description = description or str(root)

    def _open_fd(self, name: str, what: str) -> int:
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        parts = name.split("/")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ImageError(f"{self.description}: directory {self.root} does not exist") from None
        except NotADirectoryError:
            raise ImageError(f"{self.description}: {self.root} is not a directory") from None
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                try:
                    nxt = os.open(part, flags | (0 if last else os.O_DIRECTORY), dir_fd=fd)
                except FileNotFoundError:
                    raise ImageError(f"{self.description}: {what or name} is missing") from None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a symbolic link, or a file in the way
                        raise ImageError(f"{self.description}: {name} is a symbolic link or not where a layout "
                                         "keeps it; refusing it") from None
                    raise ImageError(f"{self.description}: cannot open {name}: {exc.strerror}") from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def has(self, name: str) -> bool:
        try:
            os.close(self._open_fd(name, name))
            return True
        except ImageError:
            return False

    def open(self, name: str, what: str = "") -> BinaryIO:
        fd = self._open_fd(name, what)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageError(f"{self.description}: {what or name} is not a regular file")
        return os.fdopen(fd, "rb")

    def read(self, name: str, limit: int, what: str = "") -> bytes:
        with self.open(name, what) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"{self.description}: {what or name} is more than {limit} bytes; refusing it")
        return data

    def close(self) -> None:
        pass


class LayoutSource:
    """A ``BlobSource`` over a layout; ``get_manifest`` takes a ref name or a digest."""

    def __init__(self, files: Files, description: str):
        self.files, self.description = files, description
        raw = files.read(LAYOUT_FILE, 64 << 10, f"{LAYOUT_FILE} file")
        try:
            version = json.loads(raw).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ImageError(f"{description}: {LAYOUT_FILE} does not declare an image layout version 1.x")
        data = files.read(INDEX_FILE, MAX_MANIFEST_SIZE, INDEX_FILE)
        index = parse_manifest(data, where=f"{description}: {INDEX_FILE}")
        if not isinstance(index, ImageIndex):
            raise ImageError(f"{description}: {INDEX_FILE} is not an image index")
        self.index = index
        self._types = {d.digest: d.media_type for d in index.manifests}

    def entries(self) -> tuple[Descriptor, ...]:
        return self.index.manifests

    def names(self) -> list[str]:
        return [d.annotations[REF_ANNOTATION] for d in self.index.manifests if d.annotations.get(REF_ANNOTATION)]

    def find(self, ref: str) -> Descriptor:
        """The entry named ``ref`` (or the only entry when ``ref`` is empty)."""
        entries = self.index.manifests
        if not ref:
            if len(entries) == 1:
                return entries[0]
            if not entries:
                raise ImageError(f"{self.description}: the layout holds no image")
            raise ImageError(f"{self.description}: the layout holds {len(entries)} images; name one "
                             f"({_listing(self.names())})")
        hits = [d for d in entries if d.annotations.get(REF_ANNOTATION) == ref]
        if not hits:
            raise ImageError(f"{self.description}: no image named {ref!r} in the layout ({_listing(self.names())})")
        if len(hits) > 1 and len({d.digest for d in hits}) > 1:
            raise ImageError(f"{self.description}: several different images are named {ref!r}; refusing to guess")
        return hits[0]

    def get_manifest(self, reference: str) -> FetchedManifest:
        if ":" in reference and reference.split(":", 1)[0] in ("sha256", "sha512"):
            digest, content_type = validate_digest(reference), self._types.get(reference, "")
        else:
            desc = self.find(reference)
            digest, content_type = desc.digest, desc.media_type
        data = self.files.read(blob_name(digest), MAX_MANIFEST_SIZE, f"manifest {digest}")
        actual = _digest_of(data, digest)
        if actual != digest:
            raise ImageError(f"{self.description}: manifest {digest} failed verification: its content has "
                             f"digest {actual}; refusing it")
        return FetchedManifest(data, digest, content_type)

    def copy_blob(self, desc, writer, progress: Callable[[int], None] | None = None) -> None:
        name = blob_name(desc.digest)
        what = f"blob {desc.digest}"
        copy_file_blob(lambda: self.files.open(name, what), writer, progress)

    def mount_candidates(self) -> list[tuple[str, str]]:
        return []

    def close(self) -> None:
        self.files.close()


def _digest_of(data: bytes, digest: str) -> str:
    algorithm = digest.split(":", 1)[0]
    return f"{algorithm}:{sha.new(algorithm, data).hexdigest()}"


def _listing(names: list[str]) -> str:
    return "it has: " + ", ".join(repr(n) for n in names) if names else "no entry has a name"


# --- writing ----------------------------------------------------------------------------------

class TarMemberWriter(BlobWriter):
    """A blob written as one member of an archive being written (oci-archive:, docker-archive:)."""

    def __init__(self, member, digest: str, size: int, what: str):
        super().__init__(digest, size, what)
        self.member = member

    def _put(self, chunk: bytes) -> None:
        self.member.write(chunk)

    def _truncate(self) -> None:
        self.member.reset()

    def _drop(self) -> None:
        self.member.drop()

    def _finish(self) -> None:
        self.member.close()


class LayoutDestination:
    """Writes images into a layout: a directory (``archive=None``) or an ``oci-archive``."""

    accepts_index = True
    oci_only = True  # the layout spec's index.json names OCI manifests and indexes (skopeo reads no others)
    needs_diff_ids = False

    def __init__(self, path: str | os.PathLike | None, *, archive: bool = False,
                 tmpdir: str | os.PathLike | None = None, description: str = ""):
        self.path = Path(path) if path is not None else None
        self.archive = archive
        self.description = description or str(path)
        self.parallel = not archive
        self._entries: list[dict] = []
        self._written: set[str] = set()
        self._tar: TarWriter | None = None
        self._lock_fd: int | None = None
        self._created = False
        if archive:
            self._tar = TarWriter(self.path, tmpdir=tmpdir)
            self._tar.add_bytes(LAYOUT_FILE, LAYOUT_DOC)
        else:
            self._open_dir()

    # --- directory -----------------------------------------------------------------------

    def _open_dir(self) -> None:
        assert self.path is not None
        root = self.path
        if root.is_symlink() and not root.is_dir():
            raise ImageError(f"{self.description}: {root} is a dangling symbolic link")
        if root.exists() and not root.is_dir():
            raise ImageError(f"{self.description}: {root} exists and is not a directory")
        if root.is_dir() and any(root.iterdir()) and not (root / LAYOUT_FILE).is_file():
            raise ImageError(f"{self.description}: {root} is not empty and not an OCI layout; refusing to write "
                             "into it")
        # A layout this copy creates goes again if the copy fails; an existing one keeps what it had
        # (and the verified blobs it got: they are harmless and save the next attempt a download).
        self._created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # One writer per layout at a time: index.json is read, merged and replaced.
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            if not (root / LAYOUT_FILE).is_file():
                atomic_write(root / LAYOUT_FILE, LAYOUT_DOC)
        except OSError as exc:
            self._unlock()
            raise ImageError(f"{self.description}: cannot write {root}: {exc.strerror}") from None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the destination interface --------------------------------------------------------------

    def has_blob(self, desc, diff_id: str | None = None) -> bool:
        if desc.digest in self._written:
            return True
        if self.archive:
            return False
        assert self.path is not None
        p = self.path / blob_name(desc.digest)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == desc.size

    @contextlib.contextmanager
    def writer(self, desc, diff_id: str | None = None, mount_from=()) -> Iterator[BlobWriter | None]:
        if self.has_blob(desc):
            yield None
            return
        what = f"blob {desc.digest}"
        if self._tar is not None:
            w: BlobWriter = TarMemberWriter(self._tar.member(blob_name(desc.digest)), desc.digest, desc.size, what)
        else:
            assert self.path is not None
            target = self.path / blob_name(desc.digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            w = FileWriter(desc.digest, desc.size, self.path, target, what)
        try:
            yield w
            if not w.done:
                raise ImageError(f"internal error: {what} was not committed")
            self._written.add(desc.digest)
        except BaseException:
            w.discard()
            raise
        finally:
            if isinstance(w, FileWriter):
                w.close()

    def put_blob_bytes(self, data: bytes, digest: str) -> None:
        desc = Descriptor("application/octet-stream", digest, len(data))
        with self.writer(desc) as w:
            if w is not None:
                w.write(data)
                w.commit()

    def put_manifest(self, data: bytes, digest: str, media_type: str) -> None:
        self.put_blob_bytes(data, digest)

    def commit(self, image: CopiedImage, ref: str = "") -> None:
        """Name the image: put its manifest (or index) and an index.json entry for it."""
        self.put_manifest(image.data, image.digest, image.media_type)
        entry: dict = {"mediaType": image.media_type, "digest": image.digest, "size": len(image.data)}
        if ref:
            entry["annotations"] = {REF_ANNOTATION: ref}
        self._entries.append(entry)

    def finish(self, stream: BinaryIO | None = None) -> None:
        """Write index.json and put the layout (or archive; to ``stream`` if it has no file) in place."""
        try:
            if self._tar is not None:
                doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._entries}
                self._tar.add_bytes(INDEX_FILE, _dump(doc))
                self._tar.finish(stream)
                return
            assert self.path is not None
            index_path = self.path / INDEX_FILE
            existing: list[dict] = []
            if index_path.exists():
                raw = DirFiles(self.path, self.description).read(INDEX_FILE, MAX_MANIFEST_SIZE)
                parse_manifest(raw, where=f"{self.description}: existing {INDEX_FILE}")  # refuse a damaged one
                existing = json.loads(raw).get("manifests") or []
            for entry in self._entries:
                # A name that is there already moves to the new image, in its place.
                ref = (entry.get("annotations") or {}).get(REF_ANNOTATION, "")
                slots = [i for i, e in enumerate(existing) if _same_slot(e, entry, ref)]
                if slots:
                    existing[slots[0]] = entry
                    existing = [e for i, e in enumerate(existing) if i not in slots[1:]]
                else:
                    existing.append(entry)
            doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": existing}
            atomic_write(index_path, _dump(doc))
            fsync_dir(self.path)
        finally:
            self._unlock()

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.abort()
        elif self._created and self.path is not None:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()


def _same_slot(old: dict, new: dict, ref: str) -> bool:
    if not isinstance(old, dict):
        return False
    old_ref = (old.get("annotations") or {}).get(REF_ANNOTATION, "")
    if ref:
        return old_ref == ref
    return not old_ref and old.get("digest") == new["digest"]


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
