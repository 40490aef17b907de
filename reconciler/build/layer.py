"""Layer tarballs made by a build: deterministic, hashed as they are written.

Entries are written sorted by path (a parent before its children), with owner names empty,
PAX headers only where a value needs one, and mtimes clamped to the build's timestamp when one
is given (``--timestamp`` / ``SOURCE_DATE_EPOCH``), so the same inputs give the same diff_id and
the same gzip digest. The uncompressed stream is hashed (diff_id) while the gzip stream is
hashed and counted (digest, size): one pass, no re-read.

``LowerTree`` is the file system a build's next layer goes onto, as far as the tar headers of
the layers below say (no file content): COPY needs it to put a file into an existing directory,
follow the image's own symlinks (``/bin`` → ``usr/bin``) and keep an existing parent's mode
and owner (``/tmp`` stays 1777) instead of guessing.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from reconciler.build.parse import BuildError
from reconciler.images.blobio import HashingWriter, compressor

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass
class Entry:
    """One tar entry; ``path`` has no leading slash."""

    path: str
    type: bytes  # tarfile.REGTYPE, DIRTYPE, SYMTYPE, LNKTYPE, CHRTYPE, BLKTYPE, FIFOTYPE
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    linkname: str = ""
    opener: object = None  # () -> binary file, for regular files
    data: bytes | None = None
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenLayer:
    diff_id: str
    digest: str
    size: int
    media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"


def write_layer(entries: Iterable[Entry], out: BinaryIO, *, clamp: int | None = None) -> WrittenLayer:
    """Write ``entries`` (sorted here) as a gzip layer into ``out``."""
    compressed = HashingWriter(out)
    gz = compressor("gzip", compressed)
    plain = HashingWriter(gz)
    with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path.split("/")):
            info = tarfile.TarInfo(e.path + ("/" if e.type == tarfile.DIRTYPE and e.path else ""))
            info.type = e.type
            info.mode = e.mode & 0o7777
            info.uid, info.gid = e.uid, e.gid
            info.uname = info.gname = ""
            info.mtime = min(e.mtime, clamp) if clamp is not None else e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in sorted(e.xattrs.items())}
            if e.type == tarfile.REGTYPE:
                if e.data is not None:
                    info.size = len(e.data)
                    tar.addfile(info, io.BytesIO(e.data))
                else:
                    info.size = e.size
                    with e.opener() as f:  # type: ignore[operator]
                        tar.addfile(info, _Exact(f, e.size, e.path))
            else:
                tar.addfile(info)
    gz.close()
    return WrittenLayer(plain.digest, compressed.digest, compressed.count)


class _Exact:
    """A file read for exactly the size its header declared (a file that changed size while
    being read is an error, not a corrupt layer)."""

    def __init__(self, f, size: int, path: str):
        self.f, self.left, self.path = f, size, path

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            raise BuildError(f"{self.path} changed while it was being copied into the layer")
        self.left -= len(data)
        return data


# --- what is below ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    type: bytes
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str = ""


class LowerTree:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"": Node(tarfile.DIRTYPE, 0o755, 0, 0, 0)}

    def copy(self) -> LowerTree:
        t = LowerTree()
        t.nodes = dict(self.nodes)
        return t

    def apply_tar(self, fileobj: BinaryIO) -> None:
        """Apply one layer's headers (whiteouts and opaque directories included)."""
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for info in tar:
                path = posixpath.normpath("/" + info.name).lstrip("/")
                if path in ("", "."):
                    continue
                parent, base = posixpath.split(path)
                if base == OPAQUE:
                    self._remove_below(parent)
                    continue
                if base.startswith(WHITEOUT):
                    self.remove(posixpath.join(parent, base[len(WHITEOUT):]))
                    continue
                self.add(path, Node(info.type if info.type != tarfile.AREGTYPE else tarfile.REGTYPE,
                                    info.mode, info.uid, info.gid, int(info.mtime), info.linkname))

    def apply_entries(self, entries: Iterable[Entry]) -> None:
        """Apply a layer made here (sorted as it is written, whiteouts included)."""
        # Whiteouts hide what is below only: apply them before the layer's own entries.
        ordered = sorted(entries, key=lambda e: (not posixpath.basename(e.path).startswith(WHITEOUT),
                                                 e.path.split("/")))
        for e in ordered:
            parent, base = posixpath.split(e.path)
            if base == OPAQUE:
                self._remove_below(parent)
            elif base.startswith(WHITEOUT):
                self.remove(posixpath.join(parent, base[len(WHITEOUT):]))
            else:
                self.add(e.path, Node(e.type, e.mode, e.uid, e.gid, e.mtime, e.linkname))

    def add(self, path: str, node: Node) -> None:
        old = self.nodes.get(path)
        if old is not None and old.type == tarfile.DIRTYPE and node.type != tarfile.DIRTYPE:
            self._remove_below(path)
        self.nodes[path] = node

    def remove(self, path: str) -> None:
        self.nodes.pop(path, None)
        self._remove_below(path)

    def _remove_below(self, path: str) -> None:
        prefix = path + "/" if path else ""
        for p in [p for p in self.nodes if p.startswith(prefix) and p != path]:
            del self.nodes[p]

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """``path`` with the tree's symlinks followed, as if the tree were ``/``."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            cur = "/".join(done + [part])
            node = self.nodes.get(cur)
            if node is not None and node.type == tarfile.SYMTYPE and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise BuildError(f"too many levels of symbolic links in /{path} in the image")
                if node.linkname.startswith("/"):
                    done = []
                parts = [p for p in node.linkname.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/".join(done)

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)
