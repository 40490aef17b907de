"""Image transports: copy images between registries, OCI layouts, archives and the local store.

Names follow skopeo and containers-image:

    docker://REF                 a registry (pulling and pushing; registries.conf and auth.json apply)
    oci:DIR[:NAME]               an OCI image layout directory; NAME is the index.json entry's
                                 ``org.opencontainers.image.ref.name`` (the only entry if omitted)
    oci-archive:FILE[:NAME]      the same layout in a tar file
    dir:DIR                      one image as plain files, as skopeo writes it (reconciler.images.dirtransport)
    docker-archive:FILE[:REF]    ``docker save`` format; REF is a RepoTag to write or to pick,
                                 or ``@N`` for the N-th image of an archive being read
    podplay:REF  or a bare REF   podplay's own image store (REF is a name or an image id).
                                 ``containers-storage:`` is deliberately not accepted: this is not
                                 the podman/buildah store.

Like in containers-image, the first ``:`` after the transport ends the path, so paths with a
colon cannot be named; a local image whose name starts like a transport (``oci:latest``) must be
written ``podplay:oci:latest``. Everything is verified on the way: every blob's size and digest (and a
layer's diff_id whenever it is decompressed); nothing unverified is written anywhere, and a copy
into the store that fails leaves no blob behind. Multi-platform images: ``all_platforms`` copies
the whole index where the destination can hold one (``oci:``, ``oci-archive:``, ``docker://``);
otherwise the image for ``platform`` (default: this host) is chosen. Layers keep their
compression unless ``compression`` asks for another; ``oci:`` destinations get OCI manifests
(converted from Docker schema 2 as skopeo does), ``docker-archive:`` uncompressed layers.

Entry points: ``parse_location``, ``copy_image``, ``save_images``, ``load_images``,
``inspect_location``; ``reconciler.images.importer`` makes images from root file system tarballs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from reconciler.errors import ImageError, InputError, NotFoundError
from reconciler.images.archive import TarArchive
from reconciler.images.blobio import (
    CHUNK,
    BlobWriter,
    CopiedImage,
    FileWriter,
    HashingWriter,
    MemoryWriter,
    compressor,
    copy_file_blob,
    decompression_errors,
    decompressor,
    detect_compression,
    hasher_for,
    sha256_digest,
    stream_into,
)
from reconciler.images.dockerarchive import MANIFEST_FILE, DockerArchiveDestination, DockerArchiveSource
from reconciler.images.ingest import Ingested, RegistrySource, ingest_image, resolve_manifest
from reconciler.images.layout import INDEX_FILE, LAYOUT_FILE, DirFiles, LayoutDestination, LayoutSource
from reconciler.images.manifest import (
    CONFIG_TYPES,
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    LAYER_TYPES,
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    ParsedConfig,
    parse_config,
    parse_manifest,
)
from reconciler.images.platform import Platform, parse_platform
from reconciler.images.reference import (
    LOCAL_DOMAIN,
    InvalidReferenceError,
    Reference,
    looks_like_image_id,
    parse_reference,
    validate_digest,
)
from reconciler.images.registry import BlobUpload, FetchedManifest, RegistryClient

if TYPE_CHECKING:
    from reconciler.images.driver import LocalImageStore
    from reconciler.images.progress import Progress

TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "podplay", "dir")
UNSUPPORTED = {"containers-storage": "podplay has its own image store: name it podplay:REF (or just REF)",
               "docker-daemon": "there is no docker daemon here: `docker save` into docker-archive:FILE instead",
               "ostree": "the ostree: transport is not supported", "sif": "the sif: transport is not supported",
               "tarball": "for a root file system tarball use `podplay import FILE NAME`"}
ARCHIVE_FORMATS = ("docker-archive", "oci-archive")
COMPRESSIONS = ("none", "gzip", "zstd")
FORMATS = ("oci", "v2s2")
DEFAULT_CHUNK = 16 << 20

OCI_LAYERS = {"none": "application/vnd.oci.image.layer.v1.tar",
              "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
              "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
DOCKER_LAYERS = {"none": "application/vnd.docker.image.rootfs.diff.tar",
                 "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd"}

# index.json ref names, from the image-spec's grammar (a ':' is allowed: oci:DIR:busybox:1.36).
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME_RE = re.compile(rf"^{_REF_COMPONENT}(?:/{_REF_COMPONENT})*$")


# --- names --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageLocation:
    transport: str  # one of TRANSPORTS
    path: str  # docker/podplay: the reference as written; others: the file or directory
    ref: str = ""  # oci/oci-archive: the ref name; docker-archive: a RepoTag or "@N"

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.path}"
        if self.transport == "podplay":
            return f"podplay:{self.path}"
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")

    @property
    def is_archive(self) -> bool:
        return self.transport in ARCHIVE_FORMATS


def parse_location(text: str) -> ImageLocation:
    """``docker://REF``, ``oci:DIR[:NAME]``, ``oci-archive:FILE[:NAME]``,
    ``docker-archive:FILE[:REF|@N]``, ``podplay:REF`` or a bare REF (the local store)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty image location: expected docker://REF, oci:DIR[:NAME], oci-archive:FILE[:NAME], "
                         "docker-archive:FILE[:REF] or a local image name")
    if text.startswith("docker://"):
        ref = text[len("docker://"):]
        parse_reference(ref)  # the error says what is wrong with it
        return ImageLocation("docker", ref)
    head, sep, rest = text.partition(":")
    if sep and head == "docker":
        raise InputError(f"invalid location {text!r}: the registry transport is written docker://REF")
    if sep and head in UNSUPPORTED:
        raise InputError(f"invalid location {text!r}: {UNSUPPORTED[head]}")
    if sep and head == "podplay":
        if rest:
            _check_local(rest, text)
        return ImageLocation("podplay", rest)
    if sep and head == "dir":
        if not rest:
            raise InputError(f"invalid location {text!r}: dir: needs a directory")
        return ImageLocation("dir", rest)  # the whole rest: dir: takes no image name
    if sep and head in ("oci", "oci-archive", "docker-archive"):
        path, _, ref = rest.partition(":")
        if not path:
            raise InputError(f"invalid location {text!r}: {head}: needs a {'directory' if head == 'oci' else 'file'}")
        if ref:
            if head == "docker-archive":
                if not ref.startswith("@"):
                    parse_reference(ref)
                elif not ref[1:].isdigit():
                    raise InvalidReferenceError(f"invalid location {text!r}: @{ref[1:]} is not an image position")
            elif not _REF_NAME_RE.match(ref):
                raise InvalidReferenceError(f"invalid location {text!r}: {ref!r} is not a valid image name for an "
                                            "OCI layout (letters, digits and . _ - : @ + /)")
        return ImageLocation(head, path, ref)
    _check_local(text, text)
    return ImageLocation("podplay", text)


def _check_local(ref: str, text: str) -> None:
    if looks_like_image_id(ref) or re.fullmatch(r"(?:sha256:)?[0-9a-f]{3,64}", ref):
        return
    try:
        parse_reference(ref)
    except InvalidReferenceError as exc:
        raise InvalidReferenceError(f"invalid location {text!r}: {exc} (or use docker://, oci:, oci-archive:, "
                                    "docker-archive:)") from None


def name_from_ref_annotation(ref: str) -> Reference | None:
    """The store name of an OCI layout entry: a full reference as it is (``localhost/app:1``,
    ``quay.io/x/y:2``), anything else under ``localhost/`` (``app:1`` → ``localhost/app:1``),
    as podman names what it loads. None when the name is not an image reference."""
    if not ref:
        return None
    try:
        parsed = parse_reference(ref)
    except InvalidReferenceError:
        return None
    if not parsed.short:
        return parsed
    return Reference(LOCAL_DOMAIN, _plain_path(parsed, ref), parsed.tag, parsed.digest)


def _local_name(text: str) -> Reference:
    """A name for an image made or loaded here: a short name goes under ``localhost/``."""
    parsed = parse_reference(text)
    if parsed.digest:
        raise InvalidReferenceError(f"cannot name an image with a digest reference {text!r}")
    if parsed.short:
        return Reference(LOCAL_DOMAIN, _plain_path(parsed, text), parsed.tag)
    return parsed


def _plain_path(parsed: Reference, text: str) -> str:
    """The path as written: parse_reference put ``library/`` before one-component Docker Hub names."""
    if parsed.path.startswith("library/") and not text.startswith("library/"):
        return parsed.path[len("library/"):]
    return parsed.path


# --- options and results -----------------------------------------------------------------------

@dataclass(frozen=True)
class CopyOptions:
    all_platforms: bool = False  # copy a whole index (destinations that hold one)
    platform: Platform | str | None = None  # else the image for this platform (default: the store's)
    compression: str | None = None  # None keeps each layer as it is; "none" | "gzip" | "zstd"
    format: str | None = None  # None keeps the manifest type (oci: destinations: always OCI); "oci" | "v2s2"
    chunk_size: int = DEFAULT_CHUNK  # pushing: larger blobs go in PATCH chunks of this size
    workers: int = 3

    def checked(self) -> CopyOptions:
        if self.compression is not None and self.compression not in COMPRESSIONS:
            raise InputError(f"unknown compression {self.compression!r}: use {', '.join(COMPRESSIONS)}")
        if self.format is not None and self.format not in FORMATS:
            raise InputError(f"unknown manifest format {self.format!r}: use oci or v2s2")
        if self.chunk_size < 1:
            raise InputError("chunk size must be positive")
        return self


@dataclass(frozen=True)
class CopyResult:
    digest: str  # of the manifest (or index) the destination holds
    media_type: str
    destination: str
    image_id: str = ""  # when the destination is the store
    names: tuple[str, ...] = ()
    uploaded: tuple[str, ...] = ()  # pushing: blobs sent to the registry
    mounted: tuple[str, ...] = ()  # pushing: blobs linked from another repository of the registry


@dataclass(frozen=True)
class LoadedImage:
    image_id: str
    names: tuple[str, ...]
    manifest_digest: str


@dataclass
class Credentials:
    """``--src-creds`` / ``--dest-creds``: used before any auth file (like an imagePullSecret)."""

    registry: str
    username: str = ""
    password: str = ""
    identity_token: str = ""


def parse_creds(text: str, registry: str) -> Credentials:
    user, sep, password = text.partition(":")
    if not user:
        raise InputError("credentials must be USERNAME[:PASSWORD]")
    if not sep:
        import getpass

        password = getpass.getpass(f"Password for {user}@{registry}: ")
    return Credentials(registry, user, password)


# --- sources ------------------------------------------------------------------------------------

class _RegistrySource(RegistrySource):
    """A registry repository; remembers the top manifest it was resolved with."""

    def __init__(self, client: RegistryClient, repo: str, top_ref: str, top: FetchedManifest):
        super().__init__(client, repo)
        self.description = f"docker://{client.domain}/{repo}"
        self.top_reference, self.top = top_ref, top

    def get_manifest(self, reference: str) -> FetchedManifest:
        if reference == self.top_reference:
            return self.top
        return super().get_manifest(reference)

    def mount_candidates(self) -> list[tuple[str, str]]:
        return [(self.client.domain, self.repo)]

    def close(self) -> None:
        pass


class StoreSource:
    """An image in podplay's store (one platform: the store keeps one per image)."""

    def __init__(self, store: LocalImageStore, record, description: str):
        self.store, self.record, self.description = store, record, description

    def get_manifest(self, reference: str) -> FetchedManifest:
        digest = validate_digest(reference)
        data = self.store.store.read_blob(digest, MAX_MANIFEST_SIZE)
        h = hasher_for(digest)
        h.update(data)
        if f"{h.name}:{h.hexdigest()}" != digest:
            raise ImageError(f"{self.description}: stored manifest {digest} is damaged; remove the image and "
                             "pull it again")
        return FetchedManifest(data, digest, self.record.media_type if digest == self.record.manifest else "")

    def copy_blob(self, desc, writer, progress: Callable[[int], None] | None = None) -> None:
        copy_file_blob(lambda: self.store.open_blob(desc.digest), writer, progress)

    def mount_candidates(self) -> list[tuple[str, str]]:
        out = []
        for rd in self.record.repo_digests:
            with contextlib.suppress(InvalidReferenceError):
                ref = parse_reference(rd)
                out.append((ref.domain, ref.path))
        return out

    def close(self) -> None:
        pass


@dataclass
class OpenedSource:
    source: object  # a BlobSource with mount_candidates() and close()
    reference: str  # what source.get_manifest takes for the image
    names: list[Reference] = field(default_factory=list)  # the names it carries there
    description: str = ""
    resolved: str = ""  # the digest those names stand for at the source ("" if none)

    def close(self) -> None:
        self.source.close()


class _Recording:
    """A BlobSource wrapper that remembers which blobs were copied out of it."""

    def __init__(self, source):
        self.source = source
        self.description = source.description
        self.copied: set[str] = set()

    def get_manifest(self, reference: str) -> FetchedManifest:
        return self.source.get_manifest(reference)

    def copy_blob(self, desc, writer, progress=None) -> None:
        self.copied.add(desc.digest)
        self.source.copy_blob(desc, writer, progress)


def open_source(store: LocalImageStore, loc: ImageLocation, *, credentials: Sequence = (),
                tmpdir: str | os.PathLike | None = None, stream: BinaryIO | None = None) -> OpenedSource:
    """Open ``loc`` for reading. For archives, ``stream`` replaces the file (``-``: stdin)."""
    if loc.transport == "docker":
        ref = parse_reference(loc.path)
        if ref.is_local:
            raise ImageError(f"cannot read docker://{loc.path}: localhost/ names local images; use podplay:{loc.path}")

        def attempt(src, client):
            reference = src.ref.digest or src.ref.tag
            top = client.get_manifest(src.ref.path, reference)
            return _RegistrySource(client, src.ref.path, reference, top)

        name, source = store.try_sources(ref, credentials, attempt)
        return OpenedSource(source, source.top_reference, [name], str(loc), source.top.digest)
    if loc.transport == "podplay":
        if not loc.path:
            raise InputError("podplay: as a source needs an image name or id")
        rec = store.record(loc.path)
        if rec is None:
            raise NotFoundError(f"image {loc.path} is not present in podplay's store")
        matched = store._matched_name(rec, loc.path)
        names = [parse_reference(matched)] if matched else []
        return OpenedSource(StoreSource(store, rec, str(loc)), rec.manifest, names, str(loc), "")
    if loc.transport == "oci":
        layout = LayoutSource(DirFiles(loc.path, str(loc)), str(loc))
        return _layout_source(layout, loc)
    if loc.transport == "dir":
        from reconciler.images.dirtransport import DirSource

        source = DirSource(loc.path, str(loc))
        return OpenedSource(source, source.digest, [], str(loc), source.digest)
    archive = TarArchive(loc.path if stream is None else None, description=str(loc), tmpdir=tmpdir, stream=stream)
    try:
        if loc.transport == "oci-archive":
            return _layout_source(LayoutSource(archive, str(loc)), loc)
        source = DockerArchiveSource(archive, str(loc))
        img = source.find(loc.ref)
        names = _repo_tag_names(img.repo_tags, str(loc))
        if loc.ref and not loc.ref.startswith("@"):
            names = [parse_reference(loc.ref)]
        return OpenedSource(source, img.manifest.digest, names, str(loc), img.manifest.digest)
    except BaseException:
        archive.close()
        raise


def _layout_source(layout: LayoutSource, loc: ImageLocation) -> OpenedSource:
    desc = layout.find(loc.ref)
    ref_name = desc.annotations.get("org.opencontainers.image.ref.name", "")
    name = name_from_ref_annotation(ref_name)
    return OpenedSource(layout, desc.digest, [name] if name else [], str(loc), desc.digest)


def _repo_tag_names(tags: Sequence[str], where: str) -> list[Reference]:
    out = []
    for tag in tags:
        try:
            ref = parse_reference(tag)
        except InvalidReferenceError as exc:
            raise ImageError(f"{where}: RepoTags entry {tag!r} is not an image name ({exc})") from None
        if ref.digest:
            raise ImageError(f"{where}: RepoTags entry {tag!r} has a digest")
        out.append(ref)
    return out


# --- destinations -------------------------------------------------------------------------------

class RegistryDestination:
    """Pushes to a repository: HEAD before each blob, a cross-repository mount when the source
    says where else on the registry the blob lives, else an upload (one PUT, or PATCH chunks)."""

    accepts_index = True
    oci_only = False
    needs_diff_ids = False
    parallel = True

    def __init__(self, client: RegistryClient, ref: Reference, *, chunk_size: int = DEFAULT_CHUNK):
        self.client, self.ref, self.repo = client, ref, ref.path
        self.chunk_size = chunk_size
        self.description = f"docker://{ref}"
        self._present: set[str] = set()
        self.mounted: list[str] = []  # for diagnostics and tests
        self.uploaded: list[str] = []

    def has_blob(self, desc, diff_id: str | None = None) -> bool:
        if desc.digest in self._present:
            return True
        if self.client.blob_exists(self.repo, desc.digest):
            self._present.add(desc.digest)
            return True
        return False

    @contextlib.contextmanager
    def writer(self, desc, diff_id: str | None = None, mount_from=()) -> Iterator[BlobWriter | None]:
        if self.has_blob(desc):
            yield None
            return
        location = None
        for domain, repo in mount_from:
            if domain != self.client.domain or repo == self.repo:
                continue
            try:
                location = self.client.mount_blob(self.repo, desc.digest, repo)
            except ImageError:
                continue  # no pull access there, or no such blob: upload it
            if location is None:
                self._present.add(desc.digest)
                self.mounted.append(desc.digest)
                yield None
                return
            break  # the registry opened an upload session instead: use it
        w = BlobUpload(self.client, self.repo, desc, chunk_size=self.chunk_size, location=location)
        try:
            yield w
            if not w.done:
                raise ImageError(f"internal error: blob {desc.digest} was not committed")
            self._present.add(desc.digest)
            self.uploaded.append(desc.digest)
        except BaseException:
            w.discard()
            raise

    def put_manifest(self, data: bytes, digest: str, media_type: str) -> None:
        self.client.put_manifest(self.repo, digest, data, media_type)

    def commit(self, image: CopiedImage, tag: str = "") -> None:
        self.client.put_manifest(self.repo, self.ref.digest or self.ref.tag or image.digest, image.data,
                                 image.media_type)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _open_destination(store: LocalImageStore, loc: ImageLocation, opts: CopyOptions, *, credentials: Sequence = (),
                      tmpdir=None):
    if loc.transport == "oci":
        return LayoutDestination(loc.path, description=str(loc))
    if loc.transport == "dir":
        from reconciler.images.dirtransport import DirDestination

        return DirDestination(loc.path, str(loc))
    if loc.transport == "oci-archive":
        return LayoutDestination(loc.path, archive=True, tmpdir=tmpdir, description=str(loc))
    if loc.transport == "docker-archive":
        return DockerArchiveDestination(loc.path, tmpdir=tmpdir, description=str(loc))
    if loc.transport == "docker":
        ref = parse_reference(loc.path)
        if ref.is_local:
            raise ImageError(f"cannot push to docker://{loc.path}: localhost/ is the name space of local images, "
                             "not a registry (a registry on this host is 127.0.0.1:PORT/…)")
        entry = store.config.entry_for(ref)
        if entry is not None and entry.blocked:
            raise ImageError(f"registry {ref.domain} is blocked for {ref} in registries.conf")
        client = store.client(ref.domain, ref.path, credentials=credentials)
        return RegistryDestination(client, ref, chunk_size=opts.chunk_size)
    raise ImageError(f"internal error: no destination for {loc}")


# --- the copy ----------------------------------------------------------------------------------

class _Copier:
    """Copies one image (or index) from a source to a destination, converting if asked."""

    def __init__(self, source, dest, opts: CopyOptions, progress: Progress, tmpdir, mount_from):
        self.source, self.dest, self.opts = source, dest, opts
        self.progress, self.tmpdir, self.mount_from = progress, tmpdir, list(mount_from)

    def copy(self, reference: str, platform: Platform) -> CopiedImage:
        top = self.source.get_manifest(reference)
        where = f"{self.source.description}@{top.digest}"
        parsed = parse_manifest(top.data, content_type=top.content_type, where=f"manifest {where}")
        if isinstance(parsed, ImageIndex) and self.opts.all_platforms:
            if not self.dest.accepts_index:
                raise ImageError(f"{self.dest.description} holds one image per name: copy without --all "
                                 "(this host's platform, or --platform), or to oci:, oci-archive: or docker://")
            return self._index(top, parsed, where)
        _, fetched, _, manifest = resolve_manifest(self.source, reference, platform)
        return self._image(fetched, manifest, f"{self.source.description}@{fetched.digest}")

    def _index(self, top: FetchedManifest, index: ImageIndex, where: str) -> CopiedImage:
        children: list[tuple[Descriptor, CopiedImage]] = []
        for i, d in enumerate(index.manifests):
            child_where = f"{where}: manifests[{i}]"
            fetched = self.source.get_manifest(d.digest)
            if len(fetched.data) != d.size:
                raise ImageError(f"{child_where}: manifest {d.digest} is {len(fetched.data)} bytes, the index "
                                 f"says {d.size}; refusing it")
            child = parse_manifest(fetched.data, content_type=fetched.content_type, expected=d.media_type,
                                   where=f"manifest {self.source.description}@{d.digest}")
            if isinstance(child, ImageIndex):
                raise ImageError(f"{child_where}: an index inside an index is not supported")
            copied = self._image(fetched, child, f"{self.source.description}@{d.digest}")
            self.dest.put_manifest(copied.data, copied.digest, copied.media_type)
            children.append((d, copied))
        kind = self._target(index.media_type, index=True)
        if kind == index.media_type and all(c.digest == d.digest for d, c in children):
            data = top.data
        else:
            data = _rewrite_index(top.data, kind, children)
        return CopiedImage(data, sha256_digest(data), kind)

    def _target(self, media_type: str, *, index: bool = False) -> str:
        fmt = self.opts.format or ("oci" if self.dest.oci_only else None)
        if fmt is None:
            return media_type
        if index:
            return OCI_INDEX if fmt == "oci" else DOCKER_LIST
        return OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST

    def _image(self, fetched: FetchedManifest, manifest: ImageManifest, where: str) -> CopiedImage:
        kind = self._target(manifest.media_type)
        is_image = manifest.config.media_type in CONFIG_TYPES
        converting = kind != manifest.media_type or self.opts.compression is not None
        if not is_image and (converting or self.dest.needs_diff_ids):
            raise ImageError(f"{where} is not a container image (config {manifest.config.media_type!r}); "
                             f"it can only be copied as it is, to oci: or docker://")
        cw = MemoryWriter(manifest.config.digest, manifest.config.size, MAX_CONFIG_SIZE,
                          f"config {manifest.config.digest}")
        self.source.copy_blob(manifest.config, cw)
        config_bytes = bytes(cw.data)
        diff_ids: tuple[str, ...] = ()
        if is_image:
            diff_ids = parse_config(config_bytes, len(manifest.layers), f"image config of {where}").diff_ids
        layers = self._layers(manifest, diff_ids, kind)
        config_type = manifest.config.media_type
        if is_image and kind != manifest.media_type:
            config_type = OCI_CONFIG if kind == OCI_MANIFEST else DOCKER_CONFIG
        config_desc = Descriptor(config_type, manifest.config.digest, manifest.config.size)
        with self.dest.writer(config_desc, None, self.mount_from) as w:
            if w is not None:
                w.write(config_bytes)
                w.commit()
        if kind == manifest.media_type and all(
                (a.digest, a.media_type) == (b.digest, b.media_type) for a, b in zip(layers, manifest.layers)):
            data = fetched.data
        else:
            data = _rewrite_manifest(fetched.data, kind, config_type, layers)
        return CopiedImage(data, sha256_digest(data), kind, manifest.config.digest, diff_ids)

    def _layers(self, manifest: ImageManifest, diff_ids: tuple[str, ...], kind: str) -> list[Descriptor]:
        todo: dict[str, tuple[Descriptor, str | None]] = {}
        for i, layer in enumerate(manifest.layers):
            todo.setdefault(layer.digest, (layer, diff_ids[i] if diff_ids else None))
        for layer, diff_id in todo.values():
            self.progress.blob_queued(layer.digest, layer.size, self.dest.has_blob(layer, diff_id))
        done: dict[str, Descriptor] = {}
        if self.dest.parallel and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=max(1, self.opts.workers), thread_name_prefix="copy") as pool:
                futures = {pool.submit(self._layer, layer, diff_id, kind): layer.digest
                           for layer, diff_id in todo.values()}
                try:
                    for f in as_completed(futures):
                        done[futures[f]] = f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()  # those not started yet; running ones end with the pool
                    raise
        else:
            for layer, diff_id in todo.values():
                done[layer.digest] = self._layer(layer, diff_id, kind)
        return [done[layer.digest] for layer in manifest.layers]

    def _advance(self, digest: str) -> Callable[[int], None]:
        from reconciler.images.progress import BlobFeed

        return BlobFeed(self.progress, digest)

    def _layer(self, layer: Descriptor, diff_id: str | None, kind: str) -> Descriptor:
        want = self.opts.compression
        if want is not None and not self.dest.needs_diff_ids and LAYER_TYPES.get(layer.media_type, want) != want:
            return self._convert(layer, diff_id, want, kind)
        media_type = layer.media_type if kind == self._kind_of(layer.media_type) else _layer_type(layer.media_type,
                                                                                                   kind)
        with self.dest.writer(layer, diff_id, self.mount_from) as w:
            if w is not None:
                self.progress.blob_start(layer.digest, layer.size)
                self.source.copy_blob(layer, w, self._advance(layer.digest))
                self.progress.blob_done(layer.digest)
        return Descriptor(media_type, layer.digest, layer.size, urls=layer.urls, annotations=layer.annotations)

    @staticmethod
    def _kind_of(layer_type: str) -> str:
        return DOCKER_MANIFEST if layer_type.startswith("application/vnd.docker.") else OCI_MANIFEST

    def _convert(self, layer: Descriptor, diff_id: str | None, want: str, kind: str) -> Descriptor:
        """Recompress a layer: spooled (verified) to a temporary file, transformed into a second
        one while its diff_id is checked, then written like any other blob."""
        spool = FileWriter(layer.digest, layer.size, self.tmpdir, None, f"layer {layer.digest}")
        out = tempfile.TemporaryFile(dir=self.tmpdir)  # noqa: SIM115 - closed below
        try:
            self.progress.blob_start(layer.digest, layer.size)
            self.source.copy_blob(layer, spool, self._advance(layer.digest))
            self.progress.blob_done(layer.digest)
            f = spool.file
            have = detect_compression(f.read(8))
            f.seek(0)
            if have not in COMPRESSIONS:
                raise ImageError(f"layer {layer.digest} is {have}-compressed; layers are tar, gzip or zstd")
            hw = HashingWriter(out)
            inner = hasher_for(diff_id) if diff_id else None
            try:
                with decompressor(have, f) as d:
                    sink = hw if want == "none" else compressor(want, hw)
                    while chunk := d.read(CHUNK):
                        if inner is not None:
                            inner.update(chunk)
                        sink.write(chunk)
                    if sink is not hw:
                        sink.close()
            except decompression_errors() as exc:
                raise ImageError(f"layer {layer.digest} cannot be decompressed ({exc})") from None
            if inner is not None and f"{inner.name}:{inner.hexdigest()}" != diff_id:
                raise ImageError(f"layer {layer.digest} does not match the image config: uncompressed it has "
                                 f"digest {inner.name}:{inner.hexdigest()}, the config lists {diff_id}; refusing it")
            media_type = (OCI_LAYERS if kind == OCI_MANIFEST else DOCKER_LAYERS)[want]
            if kind == DOCKER_MANIFEST and want == "zstd":
                raise ImageError("zstd layers need an OCI manifest: add --format oci")
            new = Descriptor(media_type, hw.digest, hw.count, annotations=layer.annotations)
            out.seek(0)
            with self.dest.writer(new, diff_id, ()) as w:
                if w is not None:
                    stream_into(out, w)
            return new
        finally:
            spool.close()
            out.close()


def _layer_type(media_type: str, kind: str) -> str:
    """A layer's media type in the other manifest format."""
    compression = LAYER_TYPES.get(media_type)
    if compression is None:
        raise ImageError(f"cannot convert a layer of type {media_type!r} between manifest formats")
    if kind == OCI_MANIFEST:
        return OCI_LAYERS[compression]
    if compression == "zstd":
        raise ImageError("zstd layers cannot be described by a Docker schema 2 manifest: add --format oci")
    return DOCKER_LAYERS[compression]


def _descriptor_json(old: dict, new: Descriptor) -> dict:
    out = dict(old) if isinstance(old, dict) else {}
    out.update(mediaType=new.media_type, digest=new.digest, size=new.size)
    return out


def _rewrite_manifest(original: bytes, kind: str, config_type: str, layers: list[Descriptor]) -> bytes:
    doc = json.loads(original)
    old_layers = doc.get("layers") or []
    rewritten = {"schemaVersion": 2, "mediaType": kind}
    for k, v in doc.items():
        if k in ("schemaVersion", "mediaType"):
            continue
        if kind == DOCKER_MANIFEST and k not in ("config", "layers"):
            continue  # Docker schema 2 has no annotations, subject or artifactType
        rewritten[k] = v
    config = dict(doc.get("config") or {})
    config["mediaType"] = config_type
    rewritten["config"] = config
    rewritten["layers"] = [_descriptor_json(old, new) for old, new in zip(old_layers, layers)]
    if kind == DOCKER_MANIFEST:
        for d in [rewritten["config"], *rewritten["layers"]]:
            d.pop("annotations", None)
    return json.dumps(rewritten, separators=(",", ":")).encode()


def _rewrite_index(original: bytes, kind: str, children: list[tuple[Descriptor, CopiedImage]]) -> bytes:
    doc = json.loads(original)
    rewritten = {"schemaVersion": 2, "mediaType": kind}
    for k, v in doc.items():
        if k in ("schemaVersion", "mediaType"):
            continue
        if kind == DOCKER_LIST and k != "manifests":
            continue
        rewritten[k] = v
    entries = []
    for old, (_, copied) in zip(doc.get("manifests") or [], children):
        entry = dict(old)
        entry.update(mediaType=copied.media_type, digest=copied.digest, size=len(copied.data))
        if kind == DOCKER_LIST:
            entry.pop("annotations", None)
        entries.append(entry)
    rewritten["manifests"] = entries
    return json.dumps(rewritten, separators=(",", ":")).encode()


# --- public operations -------------------------------------------------------------------------

def _tmpdir(store: LocalImageStore) -> Path:
    d = store.store.ingest_dir
    d.mkdir(parents=True, exist_ok=True)
    return d


def _platform(store: LocalImageStore, opts: CopyOptions) -> Platform:
    p = opts.platform
    if isinstance(p, str):
        return parse_platform(p)
    return p or store.platform


def _refine(exc: ImageError, where: str) -> ImageError:
    """Prefix an error with the place it is about, unless it names it already."""
    text = str(exc)
    if where in text:
        return exc
    return type(exc)(f"{where}: {text}")


def copy_image(store: LocalImageStore, src: str | ImageLocation, dest: str | ImageLocation, *,
               options: CopyOptions | None = None, src_credentials: Sequence = (),
               dest_credentials: Sequence = ()) -> CopyResult:
    """Copy one image (or with ``all_platforms`` a whole index) from ``src`` to ``dest``."""
    opts = (options or CopyOptions()).checked()
    src_loc = parse_location(src) if isinstance(src, str) else src
    dest_loc = parse_location(dest) if isinstance(dest, str) else dest
    platform = _platform(store, opts)
    if src_loc.transport == "podplay" and dest_loc.transport == "podplay":
        if not dest_loc.path:
            raise InputError("copying inside podplay's store needs a new name: podplay:NAME")
        store.tag_image(src_loc.path, str(_local_name(dest_loc.path)) if _is_short(dest_loc.path) else dest_loc.path)
        info = store.get_image(dest_loc.path)
        assert info is not None
        return CopyResult(info.manifest_digest, "", str(dest_loc), info.id, (dest_loc.path,))
    tmpdir = _tmpdir(store)
    opened = open_source(store, src_loc, credentials=src_credentials, tmpdir=tmpdir)
    try:
        from reconciler.images.trust import check_source

        check_source(store, src_loc, opened)  # the signature policy, before anything is copied
        if dest_loc.transport == "podplay":
            return _into_store(store, opened, dest_loc, opts, platform)
        target = _open_destination(store, dest_loc, opts, credentials=dest_credentials, tmpdir=tmpdir)
        try:
            copied = _copy(opened, target, opts, store.progress, tmpdir, platform)
            target.commit(copied, _dest_name(dest_loc, opened))
            target.finish()
        except BaseException:
            target.abort()
            raise
        return CopyResult(copied.digest, copied.media_type, str(dest_loc),
                          uploaded=tuple(getattr(target, "uploaded", ())),
                          mounted=tuple(getattr(target, "mounted", ())))
    finally:
        opened.close()


def _is_short(text: str) -> bool:
    try:
        return parse_reference(text).short
    except InvalidReferenceError:
        return False


def _dest_name(loc: ImageLocation, opened: OpenedSource) -> str:
    """The name written into an archive or layout entry."""
    if loc.transport in ("oci", "oci-archive"):
        return loc.ref
    if loc.transport == "docker-archive":
        if loc.ref:
            return str(parse_reference(loc.ref))
        return ""
    return ""


def _copy(opened: OpenedSource, dest, opts: CopyOptions, progress: Progress, tmpdir, platform: Platform) -> CopiedImage:
    source = opened.source
    copier = _Copier(source, dest, opts, progress, tmpdir, source.mount_candidates())
    progress.begin(opened.description)
    try:
        return copier.copy(opened.reference, platform)
    except ImageError as exc:
        raise _refine(exc, opened.description) from None
    finally:
        progress.end()


def _into_store(store: LocalImageStore, opened: OpenedSource, dest: ImageLocation, opts: CopyOptions,
                platform: Platform, *, names: Sequence[Reference] | None = None) -> CopyResult:
    if opts.all_platforms:
        raise ImageError("podplay's store keeps one platform per image: copy without --all (this host's platform, "
                         "or --platform), or to oci:, oci-archive: or docker://")
    if opts.compression is not None or opts.format is not None:
        raise InputError("podplay's store keeps layers and manifests as they come: --dest-compress-format, "
                         "--dest-compress and --format apply to other destinations")
    if names is None:
        names = [_local_name(dest.path)] if dest.path else list(opened.names)
    ingested = ingest_into_store(store, opened.source, opened.reference, platform=platform,
                                 description=opened.description)
    # The digest a name stands for where it came from (what a later `Always` pull compares).
    resolved = opened.resolved if all(n in opened.names for n in names) else ""
    rec = store.record_image(names, ingested, resolved=resolved)
    return CopyResult(ingested.top_digest, ingested.manifest_media_type, str(dest), rec.id,
                      tuple(n.name for n in names))


def ingest_into_store(store: LocalImageStore, source, reference: str, *, platform: Platform,
                      description: str = "") -> Ingested:
    """``ingest_image`` that takes back what it copied when it fails: a refused archive or layout
    leaves the store as it was (blobs other images use stay, of course)."""
    recording = _Recording(source)
    store.progress.begin(description or source.description)
    try:
        return ingest_image(store.store, recording, reference, platform=platform, progress=store.progress,
                            workers=store.workers)
    except BaseException as exc:
        if recording.copied:
            store.store.remove_unreferenced(recording.copied)
        if isinstance(exc, ImageError):
            raise _refine(exc, description or source.description) from None
        raise
    finally:
        store.progress.end()


# --- save and load ------------------------------------------------------------------------------

def save_images(store: LocalImageStore, refs: Sequence[str], output: str | os.PathLike | None, *,
                format: str = "docker-archive", stream: BinaryIO | None = None) -> list[str]:
    """Write local images into one archive (``output``, or ``stream`` when it is None); returns
    the names written. docker-archive holds several images (shared layers once); oci-archive
    names each entry with the image's full name."""
    if format not in ARCHIVE_FORMATS:
        raise InputError(f"unknown archive format {format!r}: use docker-archive or oci-archive")
    if not refs:
        raise InputError("save needs at least one image")
    tmpdir = _tmpdir(store)
    dest: DockerArchiveDestination | LayoutDestination
    if format == "docker-archive":
        dest = DockerArchiveDestination(output, tmpdir=tmpdir, description=f"docker-archive:{output or '-'}")
    else:
        dest = LayoutDestination(output, archive=True, tmpdir=tmpdir, description=f"oci-archive:{output or '-'}")
    written: list[str] = []
    try:
        for ref in refs:
            rec = store.record(ref)
            if rec is None:
                raise NotFoundError(f"image {ref} is not present in podplay's store")
            opened = open_source(store, ImageLocation("podplay", ref))
            name = opened.names[0].name if opened.names else ""
            copied = _copy(opened, dest, CopyOptions(), store.progress, tmpdir, store.platform)
            dest.commit(copied, name)
            written.append(name or rec.id)
        dest.finish(stream)
    except BaseException:
        dest.abort()
        raise
    return written


def detect_archive_format(archive: TarArchive) -> str:
    if archive.has(MANIFEST_FILE):
        return "docker-archive"
    if archive.has(INDEX_FILE) and archive.has(LAYOUT_FILE):
        return "oci-archive"
    raise ImageError(f"{archive.description}: neither a docker-archive (no manifest.json) nor an oci-archive "
                     "(no index.json and oci-layout)")


def load_images(store: LocalImageStore, path: str | os.PathLike | None, *, stream: BinaryIO | None = None
                ) -> list[LoadedImage]:
    """Load every image of an archive (format detected, compressed or not) into the store."""
    tmpdir = _tmpdir(store)
    label = str(path) if path is not None else "-"
    archive = TarArchive(path, description=f"archive {label}", tmpdir=tmpdir, stream=stream)
    loaded: list[LoadedImage] = []
    try:
        kind = detect_archive_format(archive)
        archive.description = f"{kind}:{label}"
        from reconciler.images.trust import check_archive

        if kind == "docker-archive":
            source = DockerArchiveSource(archive, archive.description)
            for img in source.images:
                check_archive(store, kind, label, img.manifest.digest)  # the signature policy
            for img in source.images:
                names = _repo_tag_names(img.repo_tags, archive.description)
                loaded.append(_load_one(store, source, img.manifest.digest, names, img.manifest.digest))
        else:
            layout = LayoutSource(archive, archive.description)
            for desc in layout.entries():
                check_archive(store, kind, label, desc.digest)  # the signature policy
            for desc in layout.entries():
                name = name_from_ref_annotation(desc.annotations.get("org.opencontainers.image.ref.name", ""))
                loaded.append(_load_one(store, layout, desc.digest, [name] if name else [], desc.digest))
    finally:
        archive.close()
    return loaded


def _load_one(store: LocalImageStore, source, reference: str, names: list[Reference], resolved: str) -> LoadedImage:
    ingested = ingest_into_store(store, source, reference, platform=store.platform, description=source.description)
    rec = store.record_image(names, ingested, resolved=resolved)
    return LoadedImage(rec.id, tuple(n.name for n in names), ingested.manifest_digest)


# --- inspection ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InspectedImage:
    location: str
    names: tuple[str, ...]
    top: FetchedManifest
    manifest: FetchedManifest
    index: ImageIndex | None
    parsed: ImageManifest
    config_bytes: bytes
    config: ParsedConfig


def inspect_location(store: LocalImageStore, loc: str | ImageLocation, *, platform: str | Platform | None = None
                     ) -> InspectedImage:
    """What ``skopeo inspect`` shows for any transport: the image, read and verified, not copied."""
    loc = parse_location(loc) if isinstance(loc, str) else loc
    want = parse_platform(platform) if isinstance(platform, str) else platform or store.platform
    opened = open_source(store, loc, tmpdir=_tmpdir(store))
    try:
        top, fetched, index, manifest = resolve_manifest(opened.source, opened.reference, want)
        w = MemoryWriter(manifest.config.digest, manifest.config.size, MAX_CONFIG_SIZE)
        opened.source.copy_blob(manifest.config, w)
        config_bytes = bytes(w.data)
        config = parse_config(config_bytes, len(manifest.layers), f"image config of {loc}")
        return InspectedImage(str(loc), tuple(n.name for n in opened.names), top, fetched, index, manifest,
                              config_bytes, config)
    finally:
        opened.close()
