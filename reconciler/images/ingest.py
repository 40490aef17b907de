"""Bring one image from any blob source into the content store, verifying everything.

A ``BlobSource`` hands out manifests by tag or digest and copies blobs into the store's
ingest writers. A registry is one source (``RegistrySource``); an OCI layout directory or an
archive can be another, and then ``ingest_image`` gives it the same checks for free:

1. the top manifest (digest-checked when the reference is a digest), an index resolved to the
   best platform entry (its size and media type must match the index's descriptor),
2. the image manifest's shape (no artifacts, no foreign or encrypted layers),
3. the config (size-limited, digest-verified) with one diff_id per layer and a platform this
   host can run,
4. the layers, in parallel (bounded), each verified by size and digest on commit,
5. only then the manifest (and index) blobs. The caller records the image.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from reconciler.errors import ImageError, TemporaryImageError
from reconciler.images.manifest import (
    ImageIndex,
    ImageManifest,
    ParsedConfig,
    check_image_manifest,
    parse_config,
    parse_manifest,
    select_platform,
)
from reconciler.images.platform import Platform, normalize, rank
from reconciler.images.progress import BlobFeed, Progress
from reconciler.images.registry import FetchedManifest, RegistryClient
from reconciler.images.store import ContentStore, Ingest

DEFAULT_WORKERS = 3


class BlobSource(Protocol):
    description: str

    def get_manifest(self, reference: str) -> FetchedManifest:
        """A manifest by tag or digest; by digest it must be verified against it."""
        ...

    def copy_blob(self, desc, ingest: Ingest, progress: Callable[[int], None] | None = None) -> None:
        """Write the blob into ``ingest`` (from ``ingest.offset`` on) and ``ingest.commit()`` it."""
        ...


class RegistrySource:
    def __init__(self, client: RegistryClient, repo: str):
        self.client, self.repo = client, repo
        self.description = f"{client.domain}/{repo}"

    def get_manifest(self, reference: str) -> FetchedManifest:
        return self.client.get_manifest(self.repo, reference)

    def copy_blob(self, desc, ingest: Ingest, progress: Callable[[int], None] | None = None) -> None:
        self.client.copy_blob(self.repo, desc, ingest, progress)


@dataclass(frozen=True)
class Ingested:
    top_digest: str  # what the reference resolved to (index or manifest)
    index_digest: str  # "" when the reference named a manifest directly
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    manifest: ImageManifest
    config: ParsedConfig


def resolve_manifest(source: BlobSource, reference: str, platform: Platform
                     ) -> tuple[FetchedManifest, FetchedManifest, ImageIndex | None, ImageManifest]:
    """(top, image manifest, index or None, parsed manifest) for ``reference``."""
    where = f"{source.description}:{reference}" if ":" not in reference else f"{source.description}@{reference}"
    top = source.get_manifest(reference)
    parsed = parse_manifest(top.data, content_type=top.content_type, where=f"manifest {where}")
    index = None
    fetched = top
    if isinstance(parsed, ImageIndex):
        index = parsed
        desc = select_platform(parsed, platform, f"index {where}")
        fetched = source.get_manifest(desc.digest)
        if len(fetched.data) != desc.size:
            raise ImageError(f"manifest {desc.digest} of {where} is {len(fetched.data)} bytes, the index says "
                             f"{desc.size}; refusing it")
        parsed = parse_manifest(fetched.data, content_type=fetched.content_type, expected=desc.media_type,
                                where=f"manifest {source.description}@{desc.digest}")
        if isinstance(parsed, ImageIndex):
            raise ImageError(f"{where}: an index inside an index is not supported")
    check_image_manifest(parsed, f"manifest {where}")
    return top, fetched, index, parsed


def ingest_image(store: ContentStore, source: BlobSource, reference: str, *, platform: Platform,
                 progress: Progress | None = None, workers: int = DEFAULT_WORKERS) -> Ingested:
    progress = progress or Progress()
    with store.lease():
        top, fetched, index, manifest = resolve_manifest(source, reference, platform)
        where = f"{source.description}@{fetched.digest}"
        _copy(store, source, manifest.config, progress)
        config_bytes = store.read_blob(manifest.config.digest, manifest.config.size)
        config = parse_config(config_bytes, len(manifest.layers), f"image config of {where}")
        have = config.platform
        if have.architecture and rank(platform, have) is None:
            raise ImageError(f"{where} is an image for {normalize(have)}, which this host "
                             f"({platform}) cannot run; choose another image or --platform")
        todo = {}
        for layer in manifest.layers:
            todo.setdefault(layer.digest, layer)
        for layer in todo.values():
            progress.blob_queued(layer.digest, layer.size, store.has_blob(layer.digest))
        missing = [d for d in todo.values() if not store.has_blob(d.digest)]
        if missing:
            _copy_all(store, source, missing, progress, workers)
        # The documents go in last: a manifest in the store means its content is there too.
        store.put_blob(config_bytes, manifest.config.digest)
        store.put_blob(fetched.data, fetched.digest)
        if index is not None:
            store.put_blob(top.data, top.digest)
    return Ingested(top.digest, top.digest if index is not None else "", fetched.digest, manifest.media_type,
                    manifest.config.digest, manifest, config)


class _Cancel(threading.Event):
    keep = True  # keep partial downloads of cancelled blobs (interrupted) or not (refused)

    def stop(self, exc: BaseException) -> None:
        """The first failure decides what happens to the partial downloads of the others."""
        if not self.is_set():
            self.keep = not isinstance(exc, ImageError) or exc.temporary
            self.set()


def _copy_all(store: ContentStore, source: BlobSource, descs: list, progress: Progress, workers: int) -> None:
    """Copy ``descs`` on at most ``workers`` threads, each blob verified on its own commit (a
    thread pool without ``concurrent.futures``, whose import with ``logging`` every pull paid).

    The first failure (or Ctrl-C) stops the other downloads at their next chunk and is what
    this raises. After an interruption what they got stays for the next pull to resume; after
    a refusal (bad content) it goes."""
    cancel = _Cancel()
    queue = list(reversed(descs))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not queue or cancel.is_set():
                    return
                desc = queue.pop()
            try:
                _copy(store, source, desc, progress, cancel)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                with lock:
                    failures.append(exc)
                    cancel.stop(exc)
                return

    threads = [threading.Thread(target=work, name=f"pull-{i}", daemon=True)
               for i in range(max(1, min(workers, len(descs))))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException as exc:
        with lock:
            cancel.stop(exc)
        for t in threads:
            t.join()
        raise
    if failures:
        raise failures[0]


def _copy(store: ContentStore, source: BlobSource, desc, progress: Progress,
          cancel: _Cancel | None = None) -> None:
    def check() -> None:
        if cancel is not None and cancel.is_set():
            error = TemporaryImageError if cancel.keep else ImageError
            raise error(f"download of {desc.digest} cancelled")

    advance = BlobFeed(progress, desc.digest, check)

    try:
        with store.ingest(desc.digest, desc.size) as w:
            if w is None:
                return
            if cancel is not None and cancel.is_set():
                return
            progress.blob_start(desc.digest, desc.size)
            source.copy_blob(desc, w, advance)
            progress.blob_done(desc.digest)
    except OSError as exc:
        raise ImageError(f"cannot write blob {desc.digest} to {store.root}: {exc.strerror or exc}") from None
