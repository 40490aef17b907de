"""The content store: verified blobs by digest, and the image records that name them.

Layout under ``HostPaths.images``::

    blobs/sha256/<hex>          content, only ever written by verify → fsync → rename
    ingest/sha256-<hex>.partial a download in progress (kept for a later resume)
    ingest/sha256-<hex>.lock    flock: one writer per blob across processes
    images.json                 image records, replaced atomically
    images.lock                 flock around read-modify-write of images.json
    gc.lock                     shared by every ingest, exclusive for garbage collection

An image record is keyed by image id (the config digest) and holds the manifest digest, the
names that point at it with the digest each name resolved to in its registry (an index digest
for a multi-platform tag: what a HEAD returns), and its repository digests. Readers never lock:
a reader sees the previous or the next images.json, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from reconciler import sha
from reconciler.errors import ImageError, StateError
from reconciler.fsutil import atomic_write, fsync_dir, private_dir
from reconciler.images.reference import split_digest, validate_digest

INDEX_VERSION = 1


@dataclass
class ImageRecord:
    id: str  # config digest
    manifest: str  # digest of the platform manifest
    media_type: str  # of that manifest
    names: dict[str, str] = field(default_factory=dict)  # name → digest it resolved to remotely ("" if local)
    repo_digests: list[str] = field(default_factory=list)  # "repo@sha256:…"
    index: str = ""  # digest of the index the manifest was chosen from, if any
    added: float = 0.0

    def to_json(self) -> dict:
        return {"manifest": self.manifest, "media_type": self.media_type, "names": dict(self.names),
                "repo_digests": list(self.repo_digests), "index": self.index, "added": self.added}

    @classmethod
    def from_json(cls, image_id: str, d: dict) -> ImageRecord:
        return cls(image_id, d["manifest"], d.get("media_type", ""), dict(d.get("names") or {}),
                   list(d.get("repo_digests") or []), d.get("index", ""), float(d.get("added", 0)))

    def blobs(self) -> set[str]:
        out = {self.id, self.manifest}
        if self.index:
            out.add(self.index)
        return out


def _hasher(digest: str):
    algorithm, _ = split_digest(digest)
    return sha.streaming(algorithm)


@contextlib.contextmanager
def _flock(path: Path, kind: int) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, kind)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Ingest:
    """One blob being written: resumable, verified on commit. Made by ``ContentStore.ingest``."""

    def __init__(self, store: ContentStore, digest: str, size: int, partial: Path):
        self.store, self.digest, self.size, self.partial = store, digest, size, partial
        self._hash = _hasher(digest)
        self.offset = 0
        self._file = open(partial, "a+b")  # noqa: SIM115 - closed in close()
        existing = os.fstat(self._file.fileno()).st_size
        if existing > size:
            self.reset()
        elif existing:
            # Resume: the bytes already on disk count only once re-hashed.
            self._file.seek(0)
            while chunk := self._file.read(1 << 20):
                self._hash.update(chunk)
                self.offset += len(chunk)

    def write(self, chunk: bytes) -> None:
        if self.offset + len(chunk) > self.size:
            self.discard()
            raise ImageError(f"blob {self.digest} is larger than the {self.size} bytes its descriptor declares")
        self._file.write(chunk)
        self._hash.update(chunk)
        self.offset += len(chunk)

    def reset(self) -> None:
        self._file.seek(0)
        self._file.truncate(0)
        self._hash = _hasher(self.digest)
        self.offset = 0

    def discard(self) -> None:
        self.reset()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)

    def commit(self) -> None:
        if self.offset != self.size:
            raise ImageError(f"blob {self.digest}: got {self.offset} bytes, its descriptor declares {self.size}")
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self.digest:
            self.discard()
            raise ImageError(f"blob {self.digest} failed verification: its content has digest {actual}")
        self._file.flush()
        os.fsync(self._file.fileno())
        target = self.store.blob_path(self.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.partial, 0o600)  # private images: layers and configs are root's alone
        os.rename(self.partial, target)
        fsync_dir(target.parent)

    def close(self) -> None:
        self._file.close()


class ContentStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.ingest_dir = self.root / "ingest"
        self.index_path = self.root / "images.json"
        self._index_lock = self.root / "images.lock"
        self._gc_lock = self.root / "gc.lock"

    # --- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, hexpart = split_digest(digest)  # validated: never a path trick
        return self.blobs_dir / algorithm / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is not in the image store") from None

    def read_blob(self, digest: str, limit: int) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"blob {digest} is larger than {limit} bytes")
        return data

    def put_blob(self, data: bytes, digest: str) -> None:
        """Store small content (a manifest, a config) after checking it hashes to ``digest``."""
        validate_digest(digest)
        h = _hasher(digest)
        h.update(data)
        actual = f"{h.name}:{h.hexdigest()}"
        if actual != digest:
            raise ImageError(f"content expected to be {digest} has digest {actual}")
        if self.has_blob(digest):
            return
        target = self.blob_path(digest)
        private_dir(self.root)
        atomic_write(target, data, mode=0o600)

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int) -> Iterator[Ingest | None]:
        """A writer for one blob, or None when the blob is already stored. Holds a per-blob
        lock, so a second process pulling the same blob waits and then finds it done."""
        algorithm, hexpart = split_digest(digest)
        if self.has_blob(digest):
            yield None
            return
        private_dir(self.root)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)
        with _flock(self.ingest_dir / f"{algorithm}-{hexpart}.lock", fcntl.LOCK_EX):
            if self.has_blob(digest):
                yield None
                return
            w = Ingest(self, digest, size, self.ingest_dir / f"{algorithm}-{hexpart}.partial")
            try:
                yield w
            except BaseException as exc:
                # Keep a partial download only when a later pull can resume it (an interrupted
                # transfer); content that was refused goes.
                if w.offset == 0 or (isinstance(exc, ImageError) and not exc.temporary):
                    w.discard()
                raise
            finally:
                w.close()
                if w.offset == 0:  # nothing worth resuming (or committed: then it is gone already)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(w.partial)

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Held while adding content: garbage collection waits for every lease to end."""
        with _flock(self._gc_lock, fcntl.LOCK_SH):
            yield

    # --- image records ---------------------------------------------------------------------

    def load_records(self) -> dict[str, ImageRecord]:
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            if doc.get("version") != INDEX_VERSION:
                raise StateError(f"{self.index_path}: unsupported version {doc.get('version')!r}")
            return {k: ImageRecord.from_json(k, v) for k, v in doc["images"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{self.index_path} is corrupt ({exc}); move it away and pull again") from None

    def update_records(self, change: Callable[[dict[str, ImageRecord]], object]) -> object:
        """Run ``change`` on the records under the index lock and save what it leaves."""
        private_dir(self.root)
        with _flock(self._index_lock, fcntl.LOCK_EX):
            records = self.load_records()
            result = change(records)
            doc = {"version": INDEX_VERSION, "images": {k: v.to_json() for k, v in sorted(records.items())}}
            atomic_write(self.index_path, json.dumps(doc, indent=1, sort_keys=True), mode=0o600)
            return result

    # --- garbage collection -----------------------------------------------------------------

    def collect(self, keep: set[str] | None = None) -> tuple[int, int]:
        """Remove blobs no record references (plus ``keep``), partial downloads and stale
        locks; waits for running ingests to end. Returns (blobs removed, bytes freed)."""
        removed = freed = 0
        with _flock(self._gc_lock, fcntl.LOCK_EX):
            records = self.load_records()
            live = set(keep or ())
            for rec in records.values():
                live |= rec.blobs()
                live |= self._manifest_layers(rec.manifest)
            for algorithm_dir in (self.blobs_dir.iterdir() if self.blobs_dir.is_dir() else ()):
                for blob in algorithm_dir.iterdir():
                    digest = f"{algorithm_dir.name}:{blob.name}"
                    if digest in live:
                        continue
                    try:
                        size = blob.stat().st_size
                        blob.unlink()
                    except FileNotFoundError:
                        continue
                    removed += 1
                    freed += size
            # Nobody ingests while we hold the exclusive lock: leftovers are abandoned downloads.
            for item in (self.ingest_dir.iterdir() if self.ingest_dir.is_dir() else ()):
                try:
                    if item.suffix == ".partial" or item.name.startswith("."):
                        freed += item.stat().st_size
                    item.unlink()
                except FileNotFoundError:
                    pass
        return removed, freed

    def remove_unreferenced(self, candidates: set[str]) -> int:
        """Remove those of ``candidates`` that no record references (the blobs a refused import
        had already copied); returns how many went. Waits for running ingests like ``collect``."""
        removed = 0
        with _flock(self._gc_lock, fcntl.LOCK_EX):
            live: set[str] = set()
            for rec in self.load_records().values():
                live |= rec.blobs()
                live |= self._manifest_layers(rec.manifest)
            for digest in candidates - live:
                algorithm, hexpart = split_digest(digest)
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(digest).unlink()
                    removed += 1
                with contextlib.suppress(FileNotFoundError):
                    (self.ingest_dir / f"{algorithm}-{hexpart}.lock").unlink()
        return removed

    def _manifest_layers(self, manifest_digest: str) -> set[str]:
        try:
            doc = json.loads(self.read_blob(manifest_digest, 4 << 20))
        except (ImageError, ValueError, OSError):
            return set()
        return {layer["digest"] for layer in doc.get("layers", []) if isinstance(layer, dict)
                and isinstance(layer.get("digest"), str)}

    def disk_usage(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.blobs_dir):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_size
        return total


def now() -> float:
    return time.time()


def is_no_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
