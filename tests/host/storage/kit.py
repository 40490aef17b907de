"""Helpers for the storage tests: crafted layer tars, a dict-backed blob store, tree listings.

The storage driver reads blobs only through the ``ImageStore`` Protocol; ``BlobStore`` is the
smallest real implementation of the part it calls (``open_blob``), fed with tars made here
with ``tarfile`` or read from an OCI layout written by skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.observed import ImageConfig, ImageInfo, LayerInfo

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"
MTIME = 1_700_000_000


# --- tar entries -------------------------------------------------------------------------------

@dataclass
class E:
    """One tar entry: a TarInfo to write and its data."""

    info: tarfile.TarInfo
    data: bytes = b""


def _ti(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, mtime: int = MTIME) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.mtime = mtime
    return ti


def f(name: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int = MTIME,
      xattrs: dict[str, bytes] | None = None) -> E:
    data = data.encode() if isinstance(data, str) else data
    ti = _ti(name, tarfile.REGTYPE, mode, uid, gid, mtime)
    ti.size = len(data)
    if xattrs:
        ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
    return E(ti, data)


def d(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = MTIME) -> E:
    return E(_ti(name, tarfile.DIRTYPE, mode, uid, gid, mtime))


def sym(name: str, target: str, uid: int = 0, gid: int = 0) -> E:
    ti = _ti(name, tarfile.SYMTYPE, 0o777, uid, gid)
    ti.linkname = target
    return E(ti)


def hard(name: str, target: str) -> E:
    ti = _ti(name, tarfile.LNKTYPE, 0o644)
    ti.linkname = target
    return E(ti)


def node(name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o600) -> E:
    ti = _ti(name, kind, mode)
    ti.devmajor, ti.devminor = major, minor
    return E(ti)


def tar_bytes(entries: list[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            t.addfile(e.info, io.BytesIO(e.data) if e.data else None)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(raw, 1)
    if how == "zstd":
        from backports import zstd

        return zstd.compress(raw)
    return raw


# --- a blob store ----------------------------------------------------------------------------

class BlobStore:
    """Blobs by digest in memory; the ImageStore methods the storage driver does not call are
    refused loudly so a test notices if that changes."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.opened: list[str] = []

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def open_blob(self, digest: str):
        self.opened.append(digest)
        return io.BytesIO(self.blobs[digest])

    def layer(self, raw_tar: bytes, compression: str = "gzip", media_type: str | None = None,
              diff_id: str | None = None) -> LayerInfo:
        blob = compress(raw_tar, compression)
        mt = media_type or {"gzip": GZIP, "zstd": ZSTD, "none": TAR}[compression]
        return LayerInfo(self.put(blob), diff_id or sha256(raw_tar), mt, len(blob))

    def image(self, *layers: LayerInfo | list[E], compression: str = "gzip") -> ImageInfo:
        infos = tuple(x if isinstance(x, LayerInfo) else self.layer(tar_bytes(x), compression) for x in layers)
        config = json.dumps({"rootfs": {"diff_ids": [x.diff_id for x in infos]}}).encode()
        return ImageInfo(id=self.put(config), manifest_digest=sha256(config + b"m"), names=(),
                         config=ImageConfig(), layers=infos)

    def ensure_image(self, ref, policy, credentials=()):
        raise NotImplementedError("the storage driver must not pull")

    def get_image(self, ref_or_id):
        raise NotImplementedError

    def list_images(self):
        raise NotImplementedError

    def remove_image(self, ref_or_id):
        raise NotImplementedError


class OCILayoutStore(BlobStore):
    """Blobs of an ``oci:`` layout directory (written by skopeo), and its image as ImageInfo."""

    def __init__(self, layout: Path):
        super().__init__()
        self.layout = layout

    def open_blob(self, digest: str):
        self.opened.append(digest)
        alg, hexpart = digest.split(":", 1)
        return open(self.layout / "blobs" / alg / hexpart, "rb")

    def read_json(self, digest: str) -> dict:
        with self.open_blob(digest) as fh:
            return json.load(fh)

    def image_info(self, tag: str = "img") -> ImageInfo:
        index = json.loads((self.layout / "index.json").read_text())
        desc = next(m for m in index["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
        manifest = self.read_json(desc["digest"])
        config = self.read_json(manifest["config"]["digest"])
        layers = tuple(LayerInfo(m["digest"], diff, m["mediaType"], m["size"])
                       for m, diff in zip(manifest["layers"], config["rootfs"]["diff_ids"]))
        return ImageInfo(id=manifest["config"]["digest"], manifest_digest=desc["digest"], names=(tag,),
                         config=ImageConfig(), layers=layers)


# --- looking at trees ------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    extra: str = ""  # content hash, link target or device number


def tree(root: Path | str, *, times: bool = False) -> dict[str, Node]:
    """Everything under ``root`` (not following symlinks): type, mode, owner, content."""
    root = str(root)
    out: dict[str, Node] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            m = st.st_mode
            if stat.S_ISREG(m):
                with open(p, "rb") as fh:
                    extra = hashlib.sha256(fh.read()).hexdigest()[:16]
                kind = "file"
            elif stat.S_ISDIR(m):
                kind, extra = "dir", ""
            elif stat.S_ISLNK(m):
                kind, extra = "link", os.readlink(p)
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                kind, extra = ("chr" if stat.S_ISCHR(m) else "blk"), f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            else:
                kind, extra = "other", ""
            if times and not stat.S_ISLNK(m):
                extra += f"@{st.st_mtime_ns}"
            out[rel] = Node(kind, stat.S_IMODE(m), st.st_uid, st.st_gid, extra)
    return out


@dataclass
class Victim:
    """A directory outside every layer that hostile layers try to reach."""

    path: Path
    before: dict[str, Node] = field(default_factory=dict)

    @classmethod
    def make(cls, base: Path) -> Victim:
        path = base / "victim"
        (path / "sub").mkdir(parents=True)
        (path / "file").write_text("precious\n")
        (path / "sub" / "inner").write_text("also precious\n")
        return cls(path, cls._look(path))

    @staticmethod
    def _look(path: Path) -> dict[str, Node]:
        st = path.lstat()
        listing = tree(path, times=True)
        listing["."] = Node("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, f"@{st.st_mtime_ns}")
        return listing

    def untouched(self) -> bool:
        return self._look(self.path) == self.before
