"""PURE  manifests, indexes and image configs: media types, strict parsing, platform choice.

Every document from a registry (or any other blob source) passes through here before it is
trusted: the declared ``mediaType`` must agree with the document's shape, with the HTTP
Content-Type and with the descriptor that pointed at it (a manifest that claims to be one
thing and is another is refused, as the OCI image-spec asks); digests are validated before
they name anything; sizes are integers; an image config must list one diff_id per layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from reconciler.errors import ImageError
from reconciler.images.platform import Platform, normalize, rank
from reconciler.images.reference import validate_digest
from reconciler.observed import ImageConfig

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES + INDEX_TYPES
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)

# What we send in Accept, best first; schema 1 is deliberately absent.
ACCEPT = ", ".join(MANIFEST_TYPES)

# Layer media types and the compression each implies. The storage driver detects compression
# by content too; this table decides what we accept at all.
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
FOREIGN_LAYER_TYPES = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                       "application/vnd.docker.image.rootfs.foreign.diff.tar")

# Content types that say nothing about the manifest kind (some registries serve these).
_GENERIC_CONTENT_TYPES = ("", "application/json", "text/plain", "application/octet-stream")

MAX_MANIFEST_SIZE = 4 << 20
MAX_CONFIG_SIZE = 4 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str = ""

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            out["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedConfig:
    config: ImageConfig
    platform: Platform
    created: str
    diff_ids: tuple[str, ...]
    raw: dict


def _fail(where: str, message: str) -> ImageError:
    return ImageError(f"{where}: {message}")


def _str_map(value, where: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise _fail(where, f"{name} must be a map of strings")
    return dict(value)


def parse_descriptor(value, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _fail(where, "descriptor is not an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _fail(where, "descriptor has no mediaType")
    digest = validate_digest(value.get("digest"), error=lambda m: _fail(where, m))
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _fail(where, f"descriptor size {size!r} is not a non-negative integer")
    platform = None
    if isinstance(value.get("platform"), dict):
        p = value["platform"]
        os_name, arch = p.get("os", ""), p.get("architecture", "")
        variant = p.get("variant", "") or ""
        if not all(isinstance(x, str) for x in (os_name, arch, variant)):
            raise _fail(where, "platform fields must be strings")
        platform = Platform(os_name, arch, variant)
    urls = value.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise _fail(where, "urls must be a list of strings")
    artifact_type = value.get("artifactType", "") or ""
    return Descriptor(media_type, digest, size, platform, tuple(urls),
                      _str_map(value.get("annotations"), where, "annotations"),
                      artifact_type if isinstance(artifact_type, str) else "")


def load_json(data: bytes, where: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(where, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _fail(where, "not a JSON object")
    return doc


def manifest_kind(doc: dict, content_type: str = "", expected: str = "", where: str = "manifest") -> str:
    """The media type of a manifest document, after checking that everything that names it
    agrees: its own ``mediaType``, its shape, the Content-Type it came with, and the media
    type of the descriptor that pointed at it."""
    content_type = content_type.split(";", 1)[0].strip().lower()
    declared = doc.get("mediaType", "")
    schema = doc.get("schemaVersion")
    if schema == 1 or declared in DOCKER_SCHEMA1 or content_type in DOCKER_SCHEMA1:
        raise _fail(where, "Docker schema 1 manifests are not supported (deprecated since 2017); "
                           "the image needs to be pushed again with a current tool")
    if schema != 2:
        raise _fail(where, f"unsupported schemaVersion {schema!r} (expected 2)")
    if not isinstance(declared, str):
        raise _fail(where, "mediaType is not a string")
    has_manifests, has_layers = "manifests" in doc, ("config" in doc or "layers" in doc)
    if has_manifests and has_layers:
        raise _fail(where, "document has both 'manifests' and 'config'/'layers': refusing an ambiguous manifest")
    if not has_manifests and not has_layers:
        raise _fail(where, "document is neither an image manifest nor an index")
    if declared:
        if declared not in MANIFEST_TYPES:
            raise _fail(where, f"unsupported manifest media type {declared!r}")
        if (declared in INDEX_TYPES) != has_manifests:
            shape = "an index" if has_manifests else "an image manifest"
            raise _fail(where, f"mediaType says {declared!r} but the document is {shape}: refusing it")
        kind = declared
    else:
        # Only OCI documents may omit mediaType (Docker schema 2 requires it).
        kind = OCI_INDEX if has_manifests else OCI_MANIFEST
    if (content_type and content_type not in _GENERIC_CONTENT_TYPES and content_type != kind
            and (content_type in MANIFEST_TYPES or not declared)):
        raise _fail(where, f"served as {content_type!r} but the document is {kind!r}: refusing it")
    if expected and expected in MANIFEST_TYPES and expected != kind:
        raise _fail(where, f"the index lists it as {expected!r} but the document is {kind!r}: refusing it")
    return kind


def parse_manifest(data: bytes, *, content_type: str = "", expected: str = "",
                   where: str = "manifest") -> ImageManifest | ImageIndex:
    if len(data) > MAX_MANIFEST_SIZE:
        raise _fail(where, f"larger than {MAX_MANIFEST_SIZE} bytes")
    doc = load_json(data, where)
    kind = manifest_kind(doc, content_type, expected, where)
    annotations = _str_map(doc.get("annotations"), where, "annotations")
    if kind in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise _fail(where, "'manifests' is not a list")
        return ImageIndex(kind, tuple(parse_descriptor(e, f"{where}: manifests[{i}]")
                                      for i, e in enumerate(entries)), annotations)
    config = parse_descriptor(doc.get("config"), f"{where}: config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _fail(where, "'layers' is not a list")
    parsed = tuple(parse_descriptor(x, f"{where}: layers[{i}]") for i, x in enumerate(layers))
    return ImageManifest(kind, config, parsed, annotations)


def check_image_manifest(m: ImageManifest, where: str) -> None:
    """Refuse what podplay cannot run: artifacts, encrypted or foreign layers."""
    if m.config.media_type not in CONFIG_TYPES:
        raise _fail(where, f"not a container image: config media type {m.config.media_type!r} "
                           "(an OCI artifact, e.g. a signature or a Helm chart?)")
    if m.config.size > MAX_CONFIG_SIZE:
        raise _fail(where, f"image config is {m.config.size} bytes, more than the {MAX_CONFIG_SIZE} allowed")
    for i, layer in enumerate(m.layers):
        if layer.media_type in FOREIGN_LAYER_TYPES:
            raise _fail(where, f"layer {i} is a foreign (Windows) layer; only Linux images are supported")
        if layer.media_type not in LAYER_TYPES:
            raise _fail(where, f"layer {i} has unsupported media type {layer.media_type!r}")


def select_platform(index: ImageIndex, want: Platform, where: str) -> Descriptor:
    """The best entry of an index for ``want`` (containerd's order), or an ImageError listing
    what the index offers."""
    best: tuple[int, int, Descriptor] | None = None
    for i, d in enumerate(index.manifests):
        if d.platform is None or d.media_type not in MANIFEST_TYPES:
            continue
        r = rank(want, d.platform)
        if r is not None and (best is None or (r, i) < best[:2]):
            best = (r, i, d)
    if best is None:
        offered = sorted({str(normalize(d.platform)) for d in index.manifests
                          if d.platform is not None and d.platform.os not in ("unknown", "")})
        raise _fail(where, f"no image for platform {want} (the index has: {', '.join(offered) or 'none'})")
    return best[2]


def _strs(value, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise _fail(where, f"{name} must be a list of strings")
    return tuple(value)


def _keys(value, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _fail(where, f"{name} must be an object")
    return tuple(sorted(str(k) for k in value))


def _str(value, where: str, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(where, f"{name} must be a string")
    return value


def parse_config(data: bytes, layer_count: int, where: str = "image config") -> ParsedConfig:
    if len(data) > MAX_CONFIG_SIZE:
        raise _fail(where, f"larger than {MAX_CONFIG_SIZE} bytes")
    doc = load_json(data, where)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise _fail(where, "'config' is not an object")
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict):
        raise _fail(where, "Labels must be an object")
    config = ImageConfig(
        entrypoint=_strs(cfg.get("Entrypoint"), where, "Entrypoint"),
        cmd=_strs(cfg.get("Cmd"), where, "Cmd"),
        env=_strs(cfg.get("Env"), where, "Env"),
        working_dir=_str(cfg.get("WorkingDir"), where, "WorkingDir"),
        user=_str(cfg.get("User"), where, "User"),
        stop_signal=_str(cfg.get("StopSignal"), where, "StopSignal"),
        exposed_ports=_keys(cfg.get("ExposedPorts"), where, "ExposedPorts"),
        volumes=_keys(cfg.get("Volumes"), where, "Volumes"),
        labels={str(k): str(v) for k, v in labels.items()},
    )
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise _fail(where, "rootfs.type must be 'layers'")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list):
        raise _fail(where, "rootfs.diff_ids is not a list")
    diff_ids = tuple(validate_digest(d, error=lambda m: _fail(where, m)) for d in diff_ids)
    if len(diff_ids) != layer_count:
        raise _fail(where, f"the config lists {len(diff_ids)} layer diff_ids but the manifest has "
                           f"{layer_count} layers")
    platform = Platform(_str(doc.get("os"), where, "os"), _str(doc.get("architecture"), where, "architecture"),
                        _str(doc.get("variant"), where, "variant"))
    return ParsedConfig(config, platform, _str(doc.get("created"), where, "created"), diff_ids, doc)
