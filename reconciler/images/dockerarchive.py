"""``docker save`` archives (``docker-archive:FILE[:REF]``), read and written.

The format: ``manifest.json`` is a list of ``{"Config": FILE, "RepoTags": [NAME…], "Layers":
[FILE…]}``; the config is the image config, each layer a tar named by the archive (docker
writes ``<id>/layer.tar``, skopeo ``<diff_id hex>.tar``, docker 25 ``blobs/sha256/<hex>``).
Layers are uncompressed, so a layer's digest is its diff_id; reading also accepts gzip and
zstd layers (then the layer is kept compressed, and its uncompressed content must match
the diff_id the config lists).

Reading synthesises a Docker schema 2 manifest for each image, so an archive is a
``BlobSource`` like any other and every blob is verified on the way out. Every file name in
``manifest.json`` must stay inside the archive.

Writing always stores layers uncompressed (what ``docker load`` of any version reads): a
compressed layer is decompressed on the way in, and both its digest and its diff_id are
verified. Several images share one archive and their common layers.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ImageError
from reconciler.images.archive import TarArchive, TarWriter, normalize_member_name
from reconciler.images.blobio import (
    CHUNK,
    BlobWriter,
    CopiedImage,
    HashingReader,
    copy_file_blob,
    decompression_errors,
    decompressor,
    detect_compression,
    hasher_for,
    sha256_digest,
)
from reconciler.images.layout import TarMemberWriter
from reconciler.images.manifest import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    parse_config,
)
from reconciler.images.reference import InvalidReferenceError, parse_reference
from reconciler.images.registry import FetchedManifest

MANIFEST_FILE = "manifest.json"
LAYER_TYPES = {"none": "application/vnd.docker.image.rootfs.diff.tar",
               "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd"}


@dataclass(frozen=True)
class ArchivedImage:
    position: int  # in manifest.json
    repo_tags: tuple[str, ...]  # as written in the archive
    manifest: FetchedManifest  # synthesised Docker schema 2 manifest
    config_member: str
    layer_members: dict[str, str]  # layer digest → member name


class DockerArchiveSource:
    """A ``BlobSource`` over a docker-archive; ``get_manifest`` takes an image's manifest digest."""

    def __init__(self, archive: TarArchive, description: str):
        self.archive, self.description = archive, description
        self.images = self._read()
        self._members: dict[str, str] = {}
        self._manifests = {img.manifest.digest: img.manifest for img in self.images}
        for img in self.images:
            self._members.update(img.layer_members)
            self._members[_config_digest(img)] = img.config_member

    def _read(self) -> list[ArchivedImage]:
        where = f"{self.description}: {MANIFEST_FILE}"
        raw = self.archive.read(MANIFEST_FILE, MAX_MANIFEST_SIZE, MANIFEST_FILE)
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(doc, list) or not doc:
            raise ImageError(f"{where}: expected a non-empty list of images")
        return [self._image(i, entry, where) for i, entry in enumerate(doc)]

    def _member(self, value, where: str, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise ImageError(f"{where}: {field} must be a file name")
        # A name that leaves the archive is refused even though we would never touch the host
        # with it: such a manifest was made to attack whoever unpacks it.
        name = normalize_member_name(value, f"{where}: {field}")
        if not name:
            raise ImageError(f"{where}: {field} {value!r} names the archive root")
        return name

    def _image(self, position: int, entry, where: str) -> ArchivedImage:
        where = f"{where}[{position}]"
        if not isinstance(entry, dict):
            raise ImageError(f"{where}: not an object")
        config_member = self._member(entry.get("Config"), where, "Config")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageError(f"{where}: RepoTags must be a list of strings")
        layers = entry.get("Layers")
        if not isinstance(layers, list):
            raise ImageError(f"{where}: Layers must be a list")
        members = [self._member(v, where, f"Layers[{i}]") for i, v in enumerate(layers)]
        if entry.get("LayerSources"):
            raise ImageError(f"{where}: foreign layers (LayerSources) are not supported")
        config_bytes = self.archive.read(config_member, MAX_CONFIG_SIZE, f"config {config_member!r}")
        config_digest = sha256_digest(config_bytes)
        config = parse_config(config_bytes, len(members), f"{self.description}: image config {config_member!r}")
        descs = []
        layer_members: dict[str, str] = {}
        for i, (member, diff_id) in enumerate(zip(members, config.diff_ids)):
            what = f"layer {member!r}"
            with self.archive.open(member, f"Layers[{i}] {member!r}") as f:
                kind = detect_compression(f.read(8))
            size = self.archive.size(member)
            if kind == "none":
                digest = diff_id  # checked when the layer is copied: it must hash to its diff_id
            elif kind in ("gzip", "zstd"):
                digest = self._check_compressed(member, kind, diff_id, what)
            else:
                raise ImageError(f"{self.description}: {what} is {kind}-compressed; layers are tar, gzip or zstd")
            descs.append({"mediaType": LAYER_TYPES[kind], "size": size, "digest": digest})
            layer_members[digest] = member
        doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": {"mediaType": DOCKER_CONFIG, "size": len(config_bytes), "digest": config_digest},
               "layers": descs}
        data = json.dumps(doc, separators=(",", ":")).encode()
        return ArchivedImage(position, tuple(tags), FetchedManifest(data, sha256_digest(data), DOCKER_MANIFEST),
                             config_member, layer_members)

    def _check_compressed(self, member: str, kind: str, diff_id: str, what: str) -> str:
        """The digest of a compressed layer, after checking that its content is its diff_id."""
        with self.archive.open(member) as f:
            outer = HashingReader(f)
            inner = hasher_for(diff_id)
            try:
                with decompressor(kind, outer) as d:
                    while chunk := d.read(CHUNK):
                        inner.update(chunk)
            except decompression_errors() as exc:
                raise ImageError(f"{self.description}: {what} cannot be decompressed ({exc})") from None
            outer.drain()
        actual = f"{inner.name}:{inner.hexdigest()}"
        if actual != diff_id:
            raise ImageError(f"{self.description}: {what} does not match the image config: its content has "
                             f"digest {actual}, the config lists {diff_id}; refusing it")
        return outer.digest

    # --- selection ---------------------------------------------------------------------------

    def find(self, ref: str) -> ArchivedImage:
        """The image ``ref`` names: ``@N`` (position), a RepoTag, or the only image."""
        if not ref:
            if len(self.images) == 1:
                return self.images[0]
            raise ImageError(f"{self.description}: the archive holds {len(self.images)} images; name one "
                             f"(it has: {', '.join(t for img in self.images for t in img.repo_tags) or 'no names'}"
                             f"; or @0…@{len(self.images) - 1})")
        if ref.startswith("@"):
            try:
                n = int(ref[1:])
            except ValueError:
                raise InvalidReferenceError(f"{self.description}: {ref!r} is not @<position>") from None
            if not 0 <= n < len(self.images):
                raise ImageError(f"{self.description}: no image @{n} (the archive holds {len(self.images)})")
            return self.images[n]
        want = parse_reference(ref).name
        for img in self.images:
            for tag in img.repo_tags:
                with contextlib.suppress(InvalidReferenceError):
                    if parse_reference(tag).name == want:
                        return img
        raise ImageError(f"{self.description}: no image named {ref} (it has: "
                         f"{', '.join(t for img in self.images for t in img.repo_tags) or 'no names'})")

    # --- BlobSource ----------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> FetchedManifest:
        m = self._manifests.get(reference)
        if m is None:
            m = self.find(reference).manifest
        return m

    def copy_blob(self, desc, writer, progress: Callable[[int], None] | None = None) -> None:
        member = self._members.get(desc.digest)
        if member is None:
            raise ImageError(f"{self.description}: no blob {desc.digest} in the archive")
        copy_file_blob(lambda: self.archive.open(member, f"blob {desc.digest}"), writer, progress)

    def mount_candidates(self) -> list[tuple[str, str]]:
        return []

    def close(self) -> None:
        self.archive.close()


def _config_digest(img: ArchivedImage) -> str:
    return json.loads(img.manifest.data)["config"]["digest"]


# --- writing --------------------------------------------------------------------------------------

class _LayerWriter(BlobWriter):
    """Takes a layer blob (any compression), writes it uncompressed into a member and checks
    both the blob digest and, on the uncompressed side, the diff_id."""

    def __init__(self, tar: TarWriter, desc, diff_id: str, what: str):
        super().__init__(desc.digest, desc.size, what)
        self.diff_id = diff_id
        self.member = tar.member(member_for_layer(diff_id))
        self._start()

    def _start(self) -> None:
        self._inner = hasher_for(self.diff_id)
        self._head = b""
        self._kind = ""
        self._error: BaseException | None = None
        self._thread = None

    def _begin(self) -> None:
        """Decide on the compression from the first bytes (content wins over media type)."""
        import queue
        import threading

        self._kind = detect_compression(self._head)
        head, self._head = self._head, b""
        if self._kind == "none":
            self._plain(head)
            return
        # The decompressor pulls, the source pushes: a thread with a small queue joins them.
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, args=(head,), daemon=True, name="docker-archive-layer")
        self._thread.start()

    def _plain(self, chunk: bytes) -> None:
        self._inner.update(chunk)
        self.member.write(chunk)

    def _run(self, head: bytes) -> None:
        reader = _QueueReader(self._queue, head)
        try:
            with decompressor(self._kind, reader) as d:
                while chunk := d.read(CHUNK):
                    self._plain(chunk)
            reader.drain()
        except BaseException as exc:  # noqa: BLE001 - reported by commit()
            self._error = exc
            reader.drain()  # the pushing side must never block on a full queue

    def _put(self, chunk: bytes) -> None:
        if not self._kind:
            self._head += chunk
            if len(self._head) >= 8:
                self._begin()
        elif self._kind == "none":
            self._plain(chunk)
        else:
            self._queue.put(chunk)

    def _stop(self) -> None:
        if not self._kind and self._head:
            self._begin()  # a blob shorter than 8 bytes
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _truncate(self) -> None:
        self._stop()
        self.member.reset()
        self._start()

    def _drop(self) -> None:
        self._stop()
        self.member.drop()

    def _finish(self) -> None:
        self._stop()
        if self._error is not None:
            self.member.drop()
            if isinstance(self._error, ImageError):
                raise self._error
            raise ImageError(f"{self.what} cannot be decompressed ({self._error})")
        actual = f"{self._inner.name}:{self._inner.hexdigest()}"
        if actual != self.diff_id:
            self.member.drop()
            raise ImageError(f"{self.what} does not match the image config: uncompressed it has digest {actual}, "
                             f"the config lists {self.diff_id}; refusing it")
        self.member.close()


class _QueueReader:
    def __init__(self, q, head: bytes):
        self.q, self.buf, self.eof = q, bytearray(head), False

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n is None or n < 0 or len(self.buf) < n):
            item = self.q.get()
            if item is None:
                self.eof = True
            else:
                self.buf += item
        if n is None or n < 0:
            n = len(self.buf)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while not self.eof:
            if self.q.get() is None:
                self.eof = True
        self.buf.clear()


def member_for_layer(diff_id: str) -> str:
    return f"{diff_id.split(':', 1)[1]}.tar"


def member_for_config(digest: str) -> str:
    return f"{digest.split(':', 1)[1]}.json"


class DockerArchiveDestination:
    accepts_index = False
    oci_only = False
    needs_diff_ids = True
    parallel = False

    def __init__(self, path: str | os.PathLike | None, *, tmpdir: str | os.PathLike | None = None,
                 description: str = ""):
        self.path = Path(path) if path is not None else None
        self.description = description or str(path)
        self.tar = TarWriter(self.path, tmpdir=tmpdir)
        self._written: set[str] = set()
        self._entries: list[dict] = []

    def has_blob(self, desc, diff_id: str | None = None) -> bool:
        return (diff_id or desc.digest) in self._written

    @contextlib.contextmanager
    def writer(self, desc, diff_id: str | None = None, mount_from=()) -> Iterator[BlobWriter | None]:
        key = diff_id or desc.digest
        if key in self._written:
            yield None
            return
        if diff_id:
            w: BlobWriter = _LayerWriter(self.tar, desc, diff_id, f"layer {desc.digest}")
        else:
            w = TarMemberWriter(self.tar.member(member_for_config(desc.digest)), desc.digest, desc.size,
                                  f"config {desc.digest}")
        try:
            yield w
            if not w.done:
                raise ImageError(f"internal error: blob {desc.digest} was not committed")
            self._written.add(key)
        except BaseException:
            w.discard()
            raise

    def put_manifest(self, data: bytes, digest: str, media_type: str) -> None:
        pass  # the format has no manifests: manifest.json is written from the configs

    def commit(self, image: CopiedImage, tag: str = "") -> None:
        """Add the image to manifest.json (once per config; every name it is saved under)."""
        tags = [tag] if tag else []
        for entry in self._entries:
            if entry["Config"] == member_for_config(image.config_digest):
                entry["RepoTags"] += [t for t in tags if t not in entry["RepoTags"]]
                return
        self._entries.append({"Config": member_for_config(image.config_digest), "RepoTags": tags,
                              "Layers": [member_for_layer(d) for d in image.diff_ids]})

    def finish(self, stream=None) -> None:
        self.tar.add_bytes(MANIFEST_FILE, json.dumps(self._entries, separators=(",", ":")).encode())
        self.tar.finish(stream)

    def abort(self) -> None:
        self.tar.abort()
