"""``LocalImageStore``: the ImageStore driver over the content store and registry client.

Kubernetes pull policies: ``Always`` asks the registry (a HEAD) which digest the tag has now
and pulls only when it moved (and then only the blobs that are missing); ``IfNotPresent``
pulls when nothing local matches; ``Never`` never talks to a registry. podman's spellings
(``always``, ``missing``, ``never``, ``newer``) are accepted too. ``localhost/…`` names
images made on this host: they are never pulled, whatever the policy.

A short name (``busybox``) is looked up locally as its Docker Hub name, its registries.conf
alias, each unqualified-search registry and ``localhost/busybox``; it is pulled from the
alias, else the search registries in order, else Docker Hub.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from reconciler.errors import ImageError, InputError, TemporaryImageError
from reconciler.images.config import (
    RegistriesConfig,
    find_credential,
    load_registries_conf,
)
from reconciler.images.ingest import Ingested, RegistrySource, ingest_image, resolve_manifest
from reconciler.images.manifest import (
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    ImageIndex,
    ImageManifest,
    ParsedConfig,
    parse_config,
    parse_manifest,
)
from reconciler.images.platform import Platform, host_platform, parse_platform
from reconciler.images.progress import Progress, default_progress
from reconciler.images.reference import (
    DEFAULT_DOMAIN,
    LOCAL_DOMAIN,
    InvalidReferenceError,
    Reference,
    parse_reference,
    validate_digest,
)
from reconciler.images.registry import AuthenticationError, FetchedManifest, ImageNotFoundError, RegistryClient
from reconciler.images.store import ContentStore, ImageRecord, now
from reconciler.observed import ImageInfo, LayerInfo
from reconciler.paths import HostPaths

POLICIES = {"always": "Always", "ifnotpresent": "IfNotPresent", "never": "Never",
            "missing": "IfNotPresent", "newer": "Always"}

if TYPE_CHECKING:  # only a type here: the CLI's pull path need not import the kube model
    from reconciler.desired import RegistryCredential


# The share of the image store's file system a pull leaves free (as the layer store does).
RESERVE_FRACTION = 0.05


class DownloadBudget:
    """The content store as one pull sees it: a blob is downloaded only when its declared size
    fits in the free space of the store's file system, less a reserve, less what the pull's
    other blobs claimed. Checked before the first byte, so a manifest that declares a layer
    larger than the disk fails at once with a message, not with ENOSPC half-way through."""

    def __init__(self, store: ContentStore, what: str):
        self._store, self._what = store, what
        self._lock = threading.Lock()
        self._space: tuple[int, int] | None = None  # (free, reserve) when first measured
        self._claimed = 0

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    @contextlib.contextmanager
    def ingest(self, digest: str, size: int):
        if not self._store.has_blob(digest):
            self._claim(digest, size)
        with self._store.ingest(digest, size) as w:
            yield w

    def _claim(self, digest: str, size: int) -> None:
        with self._lock:
            if self._space is None:
                self._space = _free_space(self._store.root)
            free, reserve = self._space
            if self._claimed + size > free - reserve:
                other = f", {_human(self._claimed)} of it claimed by this image's other blobs" if self._claimed else ""
                raise ImageError(
                    f"image {self._what}: blob {digest} is {_human(size)}, more than the image store "
                    f"{self._store.root} can take: {_human(free)} free, {_human(reserve)} of which stay in "
                    f"reserve{other}; free space, or remove unused images with `podplay image prune`")
            self._claimed += size


def _free_space(path: Path) -> tuple[int, int]:
    """(bytes free to us, the reserve) of the file system holding ``path`` (or its nearest
    existing parent: the store may not exist before its first pull)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError as exc:
        raise ImageError(f"cannot read the free space of {path}: {exc.strerror}") from None
    return st.f_bavail * st.f_frsize, int(st.f_blocks * st.f_frsize * RESERVE_FRACTION)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def normalize_policy(policy: str) -> str:
    value = POLICIES.get((policy or "").strip().lower())
    if value is None:
        raise InputError(f"unknown image pull policy {policy!r}: use Always, IfNotPresent or Never")
    return value


@dataclass(frozen=True)
class PruneResult:
    images_removed: tuple[str, ...]
    blobs_removed: int
    bytes_freed: int


@dataclass(frozen=True)
class RemoteImage:
    """What ``inspect docker://`` shows: the image behind a reference, not pulled."""

    reference: Reference  # where it was found (after aliases/search/mirrors)
    top: FetchedManifest
    manifest: FetchedManifest
    index: ImageIndex | None
    parsed: ImageManifest
    config_bytes: bytes
    config: ParsedConfig
    tags: tuple[str, ...]


_HEX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{3,64})$")


class LocalImageStore:
    def __init__(self, paths: HostPaths, *, platform: str | Platform | None = None,
                 registries_conf: str | os.PathLike | None = None, auth_file: str | os.PathLike | None = None,
                 progress: Progress | None = None, tls_verify: bool = True, retries: int = 4,
                 backoff: float = 0.5, timeout: float | None = None, connect_timeout: float | None = None,
                 workers: int = 3,
                 certs_dir: str | os.PathLike | None = None, isolate: bool = False,
                 signature_policy: str | os.PathLike | None = None, registries_d: str | os.PathLike | None = None):
        self.paths = paths
        self.isolate = isolate  # registry work in a forked child (see reconciler.forked)
        self.store = ContentStore(paths.images)
        if isinstance(platform, str):
            platform = parse_platform(platform)
        self.platform = platform or host_platform()
        self._registries_conf = registries_conf
        self._config: RegistriesConfig | None = None
        self.auth_file = auth_file
        self.progress = progress or default_progress()
        self.tls_verify = tls_verify
        self.retries, self.backoff, self.timeout, self.workers = retries, backoff, timeout, workers
        self.connect_timeout = connect_timeout  # None: $PODPLAY_CONNECT_TIMEOUT or the default (as timeout)
        self.certs_dirs = (certs_dir,) if certs_dir else None
        self._clients: dict[tuple, RegistryClient] = {}
        self._details: dict[tuple[str, str], tuple] = {}
        self._trust_files = (signature_policy, registries_d)

    # --- configuration -------------------------------------------------------------------

    @property
    def config(self) -> RegistriesConfig:
        if self._config is None:
            self._config = load_registries_conf(self._registries_conf)
        return self._config

    def client(self, domain: str, path: str, *, insecure: bool = False,
               credentials: Sequence[RegistryCredential] = ()) -> RegistryClient:
        """A client for ``domain`` with the credential that applies to repository ``path``;
        clients are reused so that their tokens are too."""
        cred = find_credential(domain, path, pull_secrets=credentials, auth_file=self.auth_file)
        insecure = insecure or self.config.insecure(domain) or not self.tls_verify
        key = (domain, insecure, cred)
        c = self._clients.get(key)
        if c is None:
            c = RegistryClient(domain, insecure=insecure, credential=cred, retries=self.retries,
                               backoff=self.backoff, timeout=self.timeout, connect_timeout=self.connect_timeout,
                               certs_dirs=self.certs_dirs)
            self._clients[key] = c
        return c

    @property
    def trust(self):
        """The signature policy and registries.d (``reconciler.images.trust``), read afresh for
        each image that comes in, as the containers tools do: a month-long ``watch`` obeys an
        edited policy at its next pull."""
        from reconciler.images.trust import ImageTrust

        return ImageTrust.load(*self._trust_files)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    # --- ImageStore Protocol ----------------------------------------------------------------

    def ensure_image(self, ref: str, policy: str, credentials: Sequence[RegistryCredential] = ()) -> ImageInfo:
        policy = normalize_policy(policy)
        parsed = parse_reference(ref)
        local = self._usable(self._find(ref))
        if policy == "Never":
            if local is None:
                raise ImageError(f"image {ref} is not present and pull policy is Never")
            return local
        if parsed.is_local:
            if local is None:
                raise ImageError(f"image {ref} is not present: localhost/ names images built or loaded on this "
                                 "host, there is no registry to pull it from")
            return local
        if local is not None and (policy == "IfNotPresent" or parsed.digest):
            return local
        if self.isolate:
            from reconciler import forked

            return forked.call(self._from_registry, ref, parsed, local, credentials)
        return self._from_registry(ref, parsed, local, credentials)

    def _from_registry(self, ref: str, parsed: Reference, local: ImageInfo | None,
                       credentials: Sequence[RegistryCredential]) -> ImageInfo:
        """The stored image if the registry's tag still names it, else the image pulled."""
        if local is not None:
            name, digest = self.remote_digest(parsed, credentials)
            rec = self._record_of(local.id)
            if rec is not None and rec.names.get(name.name) == digest:
                return local
        return self.pull(ref, credentials)

    def get_image(self, ref_or_id: str) -> ImageInfo | None:
        rec = self._find(ref_or_id)
        return self._info(rec) if rec is not None else None

    def list_images(self) -> list[ImageInfo]:
        out = []
        for rec in sorted(self.store.load_records().values(), key=lambda r: (-r.added, r.id)):
            try:
                out.append(self._info(rec))
            except ImageError:
                continue  # a damaged record is reported by get_image, not by a listing
        return out

    def open_blob(self, digest: str) -> BinaryIO:
        validate_digest(digest)
        return self.store.open_blob(digest)

    def remove_image(self, ref_or_id: str) -> None:
        self.untag_or_remove(ref_or_id)

    # --- more than the Protocol --------------------------------------------------------------

    def pull(self, ref: str, credentials: Sequence[RegistryCredential] = (), *,
             platform: str | Platform | None = None) -> ImageInfo:
        """Pull ``ref`` now (whatever is stored) and record it; the image's info."""
        parsed = parse_reference(ref)
        if parsed.is_local:
            raise ImageError(f"cannot pull {ref}: localhost/ names images built or loaded on this host, "
                             "there is no registry behind it")
        want = parse_platform(platform) if isinstance(platform, str) else platform or self.platform
        self.progress.begin(str(parsed))
        try:
            name, ingested = self._try_sources(parsed, credentials,
                                               lambda src, client: ingest_image(
                                                   DownloadBudget(self.store, str(src.ref)),
                                                   self._trusted_source(src, client),
                                                   src.ref.digest or src.ref.tag, platform=want,
                                                   progress=self.progress, workers=self.workers))
        finally:
            self.progress.end()
        rec = self._record(name, ingested)
        return self._info(rec)

    def _trusted_source(self, src, client: RegistryClient) -> RegistrySource:
        """A registry source whose first manifest (what the reference resolves to) is judged
        by the signature policy before any blob is fetched."""
        from reconciler.images.trust import CheckedRegistrySource

        return CheckedRegistrySource(client, src.ref.path, self.trust, src.logical or src.ref, src.ref)

    def remote_digest(self, ref: str | Reference, credentials: Sequence[RegistryCredential] = ()
                      ) -> tuple[Reference, str]:
        """(the name that answered, the digest its tag has now) from a HEAD request."""
        parsed = parse_reference(ref) if isinstance(ref, str) else ref
        return self._try_sources(parsed, credentials,
                                 lambda src, client: client.head_manifest(src.ref.path, src.ref.digest or src.ref.tag))

    def inspect_remote(self, ref: str, credentials: Sequence[RegistryCredential] = (), *,
                       platform: str | Platform | None = None, tags: bool = True) -> RemoteImage:
        parsed = parse_reference(ref)
        if parsed.is_local:
            raise ImageError(f"cannot inspect docker://{ref}: localhost/ names local images; "
                             f"use `podplay inspect {ref}`")
        want = parse_platform(platform) if isinstance(platform, str) else platform or self.platform

        def fetch(src, client):
            source = RegistrySource(client, src.ref.path)
            top, fetched, index, manifest = resolve_manifest(source, src.ref.digest or src.ref.tag, want)
            config_bytes = client.get_blob_bytes(src.ref.path, manifest.config, MAX_CONFIG_SIZE)
            config = parse_config(config_bytes, len(manifest.layers), f"image config of {src.ref}")
            tag_list = tuple(client.list_tags(src.ref.path)) if tags else ()
            return RemoteImage(src.ref, top, fetched, index, manifest, config_bytes, config, tag_list)

        return self._try_sources(parsed, credentials, fetch)[1]

    def tag_image(self, ref_or_id: str, new_name: str) -> None:
        rec = self._find(ref_or_id)
        if rec is None:
            raise ImageError(f"image {ref_or_id} is not present")
        target = parse_reference(new_name)
        if target.digest:
            raise InvalidReferenceError(f"cannot tag with a digest reference {new_name!r}")

        def change(records: dict[str, ImageRecord]) -> None:
            for other in records.values():
                other.names.pop(target.name, None)
            records[rec.id].names[target.name] = ""

        self.store.update_records(change)

    def would_remove(self, ref_or_id: str) -> str | None:
        """The image id that ``untag_or_remove(ref_or_id)`` would delete, or None if it would only
        untag (or find nothing)."""
        rec = self._find(ref_or_id)
        if rec is None:
            return None
        by_name = self._matched_name(rec, ref_or_id)
        return None if by_name and len(rec.names) > 1 else rec.id

    def untag_or_remove(self, ref_or_id: str) -> tuple[list[str], str | None]:
        """Remove a name, or the image when that was its last name or it was named by id.
        Frees the blobs nothing else uses. Returns (names removed, image id removed or None)."""
        rec = self._find(ref_or_id)
        if rec is None:
            return [], None
        by_name = self._matched_name(rec, ref_or_id)

        def change(records: dict[str, ImageRecord]) -> tuple[list[str], str | None]:
            current = records.get(rec.id)
            if current is None:
                return [], None
            if by_name and len(current.names) > 1:
                current.names.pop(by_name, None)
                return [by_name], None
            del records[rec.id]
            return list(current.names), rec.id

        untagged, removed = self.store.update_records(change)
        if removed:
            self.store.collect()
            self._details = {k: v for k, v in self._details.items() if k[0] != removed}
        return untagged, removed

    def prune(self, *, dangling: bool = False, keep: Iterable[str] = ()) -> PruneResult:
        """Remove blobs no image references (and with ``dangling`` the images without a name,
        except those in ``keep``, e.g. images of running containers)."""
        keep_ids = set(keep)
        removed: list[str] = []
        if dangling:
            def change(records: dict[str, ImageRecord]) -> None:
                for image_id in [i for i, r in records.items() if not r.names and i not in keep_ids]:
                    del records[image_id]
                    removed.append(image_id)
            self.store.update_records(change)
        blobs, freed = self.store.collect()
        return PruneResult(tuple(removed), blobs, freed)

    def records(self) -> list[ImageRecord]:
        return sorted(self.store.load_records().values(), key=lambda r: (-r.added, r.id))

    def record(self, ref_or_id: str) -> ImageRecord | None:
        return self._find(ref_or_id)

    def info(self, rec: ImageRecord) -> ImageInfo:
        return self._info(rec)

    def config_bytes(self, image_id: str) -> bytes:
        return self.store.read_blob(image_id, MAX_CONFIG_SIZE)

    def manifest_bytes(self, digest: str) -> bytes:
        return self.store.read_blob(digest, MAX_MANIFEST_SIZE)

    # --- internals --------------------------------------------------------------------------

    def _try_sources(self, ref: Reference, credentials, attempt):
        """Run ``attempt(source, client)`` for each candidate name and each of its sources
        (mirrors first) until one succeeds; return (candidate, result)."""
        candidates = self.config.candidates(ref)
        plan = [(cand, src) for cand in candidates for src in self.config.pull_sources(cand)]
        errors: list[tuple[str, ImageError]] = []
        for cand, src in plan:
            client = self.client(src.ref.domain, src.ref.path, insecure=src.insecure, credentials=credentials)
            try:
                return cand, attempt(src, client)
            except ImageError as exc:
                # Try the next mirror or search registry; Docker Hub even answers 401 for a
                # repository that does not exist, so auth failures do not stop the search.
                errors.append((str(src.ref), exc))
        if len(errors) == 1:
            raise errors[0][1]
        detail = "; ".join(f"{where}: {exc}" for where, exc in errors)
        kinds = {type(e) for _, e in errors}
        if kinds == {TemporaryImageError}:
            raise TemporaryImageError(f"pulling {ref}: every source failed: {detail}")
        if kinds == {ImageNotFoundError}:
            raise ImageNotFoundError(f"image {ref} not found: {detail}")
        if kinds == {AuthenticationError}:
            raise AuthenticationError(f"pulling {ref}: {detail}")
        raise ImageError(f"pulling {ref} failed: {detail}")

    def _record(self, name: Reference, ing: Ingested) -> ImageRecord:
        return self.record_image([name], ing, resolved=ing.top_digest)

    def record_image(self, names: Sequence[Reference], ing: Ingested, *, resolved: str = "") -> ImageRecord:
        """Record an ingested image under ``names`` (taken from any other image that had them).
        ``resolved`` is the digest the names resolved to where the image came from (a registry
        tag's digest, an archive's manifest digest); "" for images made here."""
        keys = [n.name for n in names]

        def change(records: dict[str, ImageRecord]) -> ImageRecord:
            rec = records.get(ing.config_digest)
            if rec is None:
                rec = ImageRecord(ing.config_digest, ing.manifest_digest, ing.manifest_media_type, added=now())
                records[rec.id] = rec
            rec.manifest, rec.media_type, rec.index = ing.manifest_digest, ing.manifest_media_type, ing.index_digest
            for other in records.values():
                if other is not rec:
                    for key in keys:
                        other.names.pop(key, None)
            for name in names:
                rec.names[name.name] = resolved
                for d in dict.fromkeys(d for d in (resolved, ing.manifest_digest) if d):
                    rd = f"{name.repository}@{d}"
                    if rd not in rec.repo_digests:
                        rec.repo_digests.append(rd)
            return rec

        return self.store.update_records(change)

    def try_sources(self, ref: Reference, credentials, attempt):
        """Run ``attempt(source, client)`` for each registry a reference may come from
        (registries.conf aliases, search registries, mirrors) until one succeeds; returns
        (the name that answered, the result)."""
        return self._try_sources(ref, credentials, attempt)

    def _local_names(self, ref: Reference) -> list[Reference]:
        """Names a reference may have in the store: itself, or for a short name every name
        it could have been pulled or built as."""
        if not ref.short:
            return [ref]
        plain = ref.path[len("library/"):] if ref.path.startswith("library/") else ref.path
        out = [ref]
        cfg = self.config
        alias = cfg.aliases.get(plain)
        if alias:
            target = parse_reference(alias, default_tag="")
            out.append(Reference(target.domain, target.path, ref.tag, ref.digest))
        for registry in cfg.search:
            out.append(Reference(registry, ref.path if registry == DEFAULT_DOMAIN else plain, ref.tag, ref.digest))
        out.append(Reference(LOCAL_DOMAIN, plain, ref.tag, ref.digest))
        return out

    def _find(self, ref_or_id: str) -> ImageRecord | None:
        text = (ref_or_id or "").strip()
        records = self.store.load_records()
        m = _HEX_RE.match(text)
        if m and len(m.group(1)) == 64:
            return records.get(f"sha256:{m.group(1)}")
        try:
            ref = parse_reference(text)
        except InvalidReferenceError:
            if not m:
                raise
            ref = None
        if ref is not None:
            for cand in self._local_names(ref):
                for rec in records.values():
                    if cand.digest:
                        if f"{cand.repository}@{cand.digest}" in rec.repo_digests:
                            return rec
                    elif cand.name in rec.names:
                        return rec
        if m:
            prefix = f"sha256:{m.group(1)}"
            hits = [r for i, r in records.items() if i.startswith(prefix)]
            if len(hits) > 1:
                raise ImageError(f"{text!r} is ambiguous: it is the start of {len(hits)} image ids")
            if hits:
                return hits[0]
        return None

    def _matched_name(self, rec: ImageRecord, text: str) -> str:
        if _HEX_RE.match(text.strip()) and not any(text.strip() in n for n in rec.names):
            return ""
        try:
            ref = parse_reference(text.strip())
        except InvalidReferenceError:
            return ""
        for cand in self._local_names(ref):
            if cand.name in rec.names:
                return cand.name
        return ""

    def _record_of(self, image_id: str) -> ImageRecord | None:
        return self.store.load_records().get(image_id)

    def _usable(self, rec: ImageRecord | None) -> ImageInfo | None:
        """The info of a stored image whose blobs are all there; None if absent or damaged
        (a damaged image is pulled again rather than failing the pod)."""
        if rec is None:
            return None
        try:
            info = self._info(rec)
        except ImageError:
            return None
        if not all(self.store.has_blob(layer.digest) for layer in info.layers):
            return None
        return info

    def _info(self, rec: ImageRecord) -> ImageInfo:
        key = (rec.id, rec.manifest)
        details = self._details.get(key)
        if details is None:
            where = f"stored image {rec.id}"
            try:
                manifest = parse_manifest(self.store.read_blob(rec.manifest, MAX_MANIFEST_SIZE), where=where)
                if not isinstance(manifest, ImageManifest):
                    raise ImageError(f"{where}: its manifest is an index")
                config_data = self.store.read_blob(rec.id, MAX_CONFIG_SIZE)
            except ImageError as exc:
                raise ImageError(f"{where} is damaged ({exc}); remove it and pull it again") from None
            config = parse_config(config_data, len(manifest.layers), where)
            layers = tuple(LayerInfo(d.digest, diff_id, d.media_type, d.size)
                           for d, diff_id in zip(manifest.layers, config.diff_ids))
            size = sum(layer.size for layer in layers) + len(config_data)
            details = (config, layers, size)
            self._details[key] = details
        config, layers, size = details
        p = config.platform
        return ImageInfo(id=rec.id, manifest_digest=rec.manifest, names=tuple(rec.names), config=config.config,
                         layers=layers, os=p.os or "linux", architecture=p.architecture or "", variant=p.variant,
                         size=size, created=config.created)
