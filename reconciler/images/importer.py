"""``podplay import``: a root file system tarball becomes a one-layer image in the store.

Like ``podman import``: the tarball (plain, gzip, zstd, xz or bzip2; a file or a stream) is
read once; its uncompressed bytes give the layer's diff_id and are stored gzip-compressed
(deterministically: the same tarball always gives the same layer digest). The content is only
hashed and stored here, never unpacked, so a hostile tarball cannot touch the host now; the
storage driver's safe unpack deals with it when a container uses the image. The config gets
this host's os/architecture (or the platform asked for), a creation time, a history entry and
the Dockerfile-style ``--change`` instructions ``parse_changes`` understands.

``parse_changes`` is pure: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR and
STOPSIGNAL, each in its Dockerfile forms (exec form as a JSON array, shell form run with
``/bin/sh -c``), written ``INSTRUCTION value`` or, as podman also takes, ``INSTRUCTION=value``.
Variables are not expanded (there is no build environment to expand them from).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import tarfile
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from reconciler.errors import ImageError, InputError
from reconciler.images.blobio import (
    CHUNK,
    HashingReader,
    HashingWriter,
    compressor,
    decompression_errors,
    decompressor,
    detect_compression,
    sha256_digest,
    stream_into,
)
from reconciler.images.manifest import OCI_CONFIG, OCI_MANIFEST, parse_config, parse_manifest
from reconciler.images.platform import Platform

if TYPE_CHECKING:
    from reconciler.images.driver import LocalImageStore
    from reconciler.images.store import ImageRecord

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
_ENV_NAME_RE = re.compile(r"^[^=\s]+$")
_PORT_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?$", re.IGNORECASE)
_SIGNAL_RE = re.compile(r"^(?:SIG)?[A-Z][A-Z0-9]*(?:[+-]\d+)?$|^\d{1,2}$")


# --- --change -------------------------------------------------------------------------------------

def parse_changes(changes: Sequence[str]) -> dict:
    """The image config (``Cmd``, ``Env``…, only the keys that were set) described by
    Dockerfile instructions, applied in order. InputError names the instruction at fault."""
    config: dict = {}
    for change in changes:
        _apply(config, change)
    return config


def _split(change: str) -> tuple[str, str]:
    text = change.strip()
    m = re.match(r"^([A-Za-z]+)(?:\s+|=)(.*)$", text, re.DOTALL)
    if not m:
        word = re.match(r"^[A-Za-z]+", text)
        if word and word.group(0).upper() in INSTRUCTIONS:
            raise InputError(f"--change {change!r}: {word.group(0).upper()} needs a value")
        raise InputError(f"--change {change!r}: expected 'INSTRUCTION value' (one of {', '.join(INSTRUCTIONS)})")
    return m.group(1).upper(), m.group(2).strip()


def _json_list(value: str, change: str) -> list[str] | None:
    """The exec form: a JSON array of strings; None when ``value`` is not one (shell form)."""
    if not value.startswith("["):
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None  # Docker treats a malformed array as shell form too
    if not isinstance(doc, list) or not all(isinstance(x, str) for x in doc):
        raise InputError(f"--change {change!r}: the exec form must be a JSON array of strings")
    return doc


def _words(value: str, change: str) -> list[str]:
    try:
        return shlex.split(value, posix=True)
    except ValueError as exc:
        raise InputError(f"--change {change!r}: {exc}") from None


def _pairs(value: str, change: str, what: str) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` (or the legacy ``K some value`` with one pair)."""
    words = _words(value, change)
    if not words:
        raise InputError(f"--change {change!r}: {what} needs KEY=VALUE")
    if "=" not in words[0]:
        # Legacy form: the first word is the key, the rest of the line (as written) the value.
        key, _, rest = value.strip().partition(" ")
        rest = rest.strip()
        if not rest:
            raise InputError(f"--change {change!r}: {what} {key} needs a value (KEY=VALUE or KEY VALUE)")
        return [(key, _unquote(rest))]
    out = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise InputError(f"--change {change!r}: {word!r} is not KEY=VALUE")
        out.append((key, val))
    return out


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _apply(config: dict, change: str) -> None:
    if not isinstance(change, str) or not change.strip():
        raise InputError("--change needs an instruction, e.g. 'CMD [\"sh\"]'")
    instruction, value = _split(change)
    if instruction not in INSTRUCTIONS:
        raise InputError(f"--change {change!r}: {instruction} is not supported by import "
                         f"(supported: {', '.join(INSTRUCTIONS)})")
    if not value:
        raise InputError(f"--change {change!r}: {instruction} needs a value")
    _CHANGES[instruction](config, value, change)


def _command(key: str):
    def apply(config: dict, value: str, change: str) -> None:
        exec_form = _json_list(value, change)
        config[key] = exec_form if exec_form is not None else ["/bin/sh", "-c", value]
    return apply


def _env(config: dict, value: str, change: str) -> None:
    env = list(config.get("Env") or [])
    for key, val in _pairs(value, change, "ENV"):
        if not _ENV_NAME_RE.match(key):
            raise InputError(f"--change {change!r}: {key!r} is not a variable name")
        env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={val}"]
    config["Env"] = env


def _label(config: dict, value: str, change: str) -> None:
    config["Labels"] = {**(config.get("Labels") or {}), **dict(_pairs(value, change, "LABEL"))}


def _expose(config: dict, value: str, change: str) -> None:
    ports = dict(config.get("ExposedPorts") or {})
    for word in _words(value, change):
        m = _PORT_RE.match(word)
        if not m or not 1 <= int(m.group(1)) <= 65535 or (m.group(2) and not
                                                          int(m.group(1)) <= int(m.group(2)) <= 65535):
            raise InputError(f"--change {change!r}: {word!r} is not PORT[-PORT][/tcp|udp|sctp]")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        proto = (m.group(3) or "tcp").lower()
        for port in range(low, high + 1):
            ports[f"{port}/{proto}"] = {}
    config["ExposedPorts"] = ports


def _volume(config: dict, value: str, change: str) -> None:
    paths = _json_list(value, change)
    if paths is None:
        paths = _words(value, change)
    volumes = dict(config.get("Volumes") or {})
    for p in paths:
        if not p.startswith("/"):
            raise InputError(f"--change {change!r}: volume {p!r} must be an absolute path")
        volumes[p] = {}
    config["Volumes"] = volumes


def _workdir(config: dict, value: str, change: str) -> None:
    path = _unquote(value)
    base = config.get("WorkingDir") or "/"
    config["WorkingDir"] = os.path.normpath(os.path.join(base, path)) if not path.startswith("/") \
        else os.path.normpath(path)
    if config["WorkingDir"].startswith("//"):
        config["WorkingDir"] = "/" + config["WorkingDir"].lstrip("/")


def _user(config: dict, value: str, change: str) -> None:
    user = _unquote(value)
    if not user or any(c.isspace() for c in user):
        raise InputError(f"--change {change!r}: USER takes one USER[:GROUP] without spaces")
    config["User"] = user


def _stopsignal(config: dict, value: str, change: str) -> None:
    sig = _unquote(value).upper()
    if not _SIGNAL_RE.match(sig) or (sig.isdigit() and not 1 <= int(sig) <= 64):
        raise InputError(f"--change {change!r}: {value!r} is not a signal name or number (e.g. SIGTERM, 15)")
    config["StopSignal"] = sig


_CHANGES = {"CMD": _command("Cmd"), "ENTRYPOINT": _command("Entrypoint"), "ENV": _env, "LABEL": _label,
            "EXPOSE": _expose, "VOLUME": _volume, "WORKDIR": _workdir, "USER": _user, "STOPSIGNAL": _stopsignal}


# --- the import -----------------------------------------------------------------------------------

def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_rootfs(store: LocalImageStore, source: str | os.PathLike | None, name: str | None = None, *,
                  stream: BinaryIO | None = None, changes: Sequence[str] = (), message: str = "",
                  platform: Platform | None = None, created: str | None = None) -> ImageRecord:
    """Make an image from a root file system tarball (``source``, or ``stream`` for stdin) and
    record it under ``name`` (a short name goes under ``localhost/``). Returns its record."""
    from reconciler.images.ingest import Ingested
    from reconciler.images.transports import _local_name

    image_config = parse_changes(changes)  # bad --change fails before any work
    names = [_local_name(name)] if name else []
    if platform is None:
        # This host, but without an amd64 micro-architecture level: an image made here runs on
        # any amd64 host (podman writes no variant there either).
        host = store.platform
        platform = Platform(host.os, host.architecture, "" if host.architecture == "amd64" else host.variant)
    label = str(source) if source is not None else "-"
    tmpdir = store.store.ingest_dir
    tmpdir.mkdir(parents=True, exist_ok=True)
    with _open(source, stream, label) as raw, tempfile.TemporaryFile(dir=tmpdir) as layer:
        diff_id, digest, size = _compress(raw, layer, label)
        when = created or now_rfc3339()
        history = {"created": when, "created_by": f"podplay import {os.path.basename(label)}",
                   "comment": message or f"imported from {label}"}
        doc = {"created": when, "architecture": platform.architecture, "os": platform.os or "linux"}
        if platform.variant:
            doc["variant"] = platform.variant
        doc.update({"config": image_config, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [history]})
        config_bytes = json.dumps(doc, separators=(",", ":")).encode()
        config_digest = sha256_digest(config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                    "layers": [{"mediaType": LAYER_TYPE, "digest": digest, "size": size}]}
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = sha256_digest(manifest_bytes)
        parsed = parse_manifest(manifest_bytes, where="imported manifest")
        parsed_config = parse_config(config_bytes, 1, "imported image config")
        content = store.store
        with content.lease():
            layer.seek(0)
            with content.ingest(digest, size) as w:
                if w is not None:
                    stream_into(layer, w)
            content.put_blob(config_bytes, config_digest)
            content.put_blob(manifest_bytes, manifest_digest)
    ingested = Ingested(manifest_digest, "", manifest_digest, OCI_MANIFEST, config_digest, parsed,  # type: ignore[arg-type]
                        parsed_config)
    return store.record_image(names, ingested, resolved="")


class _open:
    """The tarball as a binary stream: a file (not a directory), or the given stream."""

    def __init__(self, source, stream: BinaryIO | None, label: str):
        self.source, self.stream, self.label = source, stream, label
        self.f: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if self.stream is not None:
            return self.stream
        try:
            self.f = open(self.source, "rb")  # noqa: SIM115 - closed in __exit__
        except FileNotFoundError:
            raise ImageError(f"cannot import {self.label}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"cannot import {self.label}: it is a directory; give a tarball of it "
                             f"(e.g. tar -C {self.label} -cf rootfs.tar .)") from None
        except OSError as exc:
            raise ImageError(f"cannot import {self.label}: {exc.strerror}") from None
        return self.f

    def __exit__(self, *exc) -> None:
        if self.f is not None:
            self.f.close()


class _Tee:
    """Reads the uncompressed tarball, hashing it and feeding the gzip writer as it goes."""

    def __init__(self, raw: BinaryIO, sink):
        self.inner = HashingReader(raw)
        self.sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        if data:
            self.sink.write(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _compress(raw: BinaryIO, out: BinaryIO, label: str) -> tuple[str, str, int]:
    """(diff_id, gzip digest, gzip size) of the tarball ``raw``, gzip written to ``out``."""
    head = raw.read(8)
    kind = detect_compression(head)
    hw = HashingWriter(out)
    gz = compressor("gzip", hw)
    try:
        from reconciler.images.archive import _Prepend

        with decompressor(kind, _Prepend(head, raw)) as plain:
            tee = _Tee(plain, gz)
            # Reading the headers checks it is a tar archive (nothing is extracted); then the
            # rest (end-of-archive blocks, padding) goes into the layer as it was.
            try:
                with tarfile.open(fileobj=tee, mode="r|") as tar:
                    for _ in tar:
                        pass
            except tarfile.ReadError as exc:
                raise ImageError(f"cannot import {label}: not a tar archive ({exc})") from None
            tee.drain()
        gz.close()
    except decompression_errors() as exc:
        raise ImageError(f"cannot import {label}: cannot decompress it ({kind}: {exc})") from None
    if tee.inner.count == 0:
        raise ImageError(f"cannot import {label}: it is empty")
    return tee.inner.digest, hw.digest, hw.count
