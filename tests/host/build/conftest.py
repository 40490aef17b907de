"""Fixtures for the build tests: a store holding localhost/busybox (imported from the host's
busybox, offline), and a reader of an image's merged file tree."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.images.blobio import decompressor, detect_compression
from reconciler.images.driver import LocalImageStore
from reconciler.images.importer import import_rootfs

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "rm", "mkdir", "touch", "chmod", "ln", "id", "true", "mknod")


def busybox_rootfs(path: Path) -> Path:
    """A small root file system: /bin/busybox with applet links, /etc/passwd, /tmp 1777."""
    with tarfile.open(path, "w") as t:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("home", 0o755), ("usr", 0o755)):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1_600_000_000
            t.addfile(info)
        t.add(BUSYBOX, "bin/busybox")
        for name in APPLETS:
            info = tarfile.TarInfo("bin/" + name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "busybox", 1_600_000_000
            t.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
                           ("etc/group", "root:x:0:\napp:x:1000:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            t.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def store(host_paths, tmp_path):
    s = LocalImageStore(host_paths)
    import_rootfs(s, busybox_rootfs(tmp_path / "rootfs.tar"), "busybox", changes=['CMD ["sh"]'])
    yield s
    s.close()


@dataclass
class FileNode:
    type: bytes
    mode: int
    uid: int
    gid: int
    linkname: str
    data: bytes | None
    mtime: int


def image_tree(store: LocalImageStore, ref: str) -> tuple[dict, dict[str, FileNode]]:
    """(config document, merged files: path -> FileNode) of a stored image, whiteouts applied."""
    info = store.get_image(ref)
    assert info is not None, ref
    doc = json.loads(store.config_bytes(info.id))
    tree: dict[str, FileNode] = {}
    for layer in info.layers:
        tree = apply_layer(tree, store.open_blob(layer.digest))
    return doc, tree


def layer_entries(store: LocalImageStore, digest: str) -> list[tarfile.TarInfo]:
    with store.open_blob(digest) as raw:
        head = raw.read(8)
        raw.seek(0)
        with decompressor(detect_compression(head), raw) as plain, tarfile.open(fileobj=plain, mode="r|") as t:
            return list(t)


def apply_layer(tree: dict[str, FileNode], blob) -> dict[str, FileNode]:
    with blob as raw:
        head = raw.read(8)
        raw.seek(0)
        with decompressor(detect_compression(head), raw) as plain, tarfile.open(fileobj=plain, mode="r|") as t:
            for info in t:
                name = info.name.rstrip("/").removeprefix("./")
                parent, _, base = name.rpartition("/")
                if base == ".wh..wh..opq":
                    for p in [p for p in tree if p.startswith(parent + "/")]:
                        del tree[p]
                    continue
                if base.startswith(".wh."):
                    gone = (parent + "/" if parent else "") + base[4:]
                    for p in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                        del tree[p]
                    continue
                data = t.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
                link = info.linkname if info.issym() or info.islnk() else ""
                tree[name] = FileNode(info.type if info.type != tarfile.AREGTYPE else tarfile.REGTYPE,
                                      info.mode, info.uid, info.gid, link, data, int(info.mtime))
    return tree
