"""Hostile layers: every way out of the layer directory is refused with a StorageError, nothing
outside changes (a victim directory is compared in full before and after), and no half-unpacked
layer stays behind."""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.errors import StorageError
from reconciler.storage.layers import LayerStore
from reconciler.storage.unpack import UnpackLimits, unpack_layer
from tests.host.storage.kit import GZIP, BlobStore, E, Victim, compress, d, f, hard, sha256, sym, tar_bytes


@dataclass
class Work:
    base: Path
    dest: Path
    victim: Victim
    top: list[str]

    def refused(self, blob: bytes, match: str, *, diff_id: str | None = None, raw: bytes | None = None,
                limits: UnpackLimits | None = None) -> StorageError:
        """Unpack must fail with ``match`` in the message and leave everything as it was."""
        if diff_id is None and raw is not None:
            diff_id = sha256(raw)
        kwargs = {"limits": limits} if limits else {}
        with pytest.raises(StorageError, match=match) as err:
            unpack_layer(io.BytesIO(blob), self.dest, diff_id=diff_id, **kwargs)
        assert not os.path.lexists(self.dest), "a refused layer must not stay on disk"
        assert self.victim.untouched(), "the victim directory changed"
        assert sorted(os.listdir(self.base)) == self.top, "something appeared next to the victim"
        assert os.listdir(self.dest.parent) == []
        return err.value


@pytest.fixture
def work(host_paths) -> Work:
    base = host_paths.root.parent
    victim = Victim.make(base)
    (base / "work").mkdir()
    return Work(base, base / "work" / "layer", victim, sorted(os.listdir(base)))


def _pax_name(name: str, data: bytes = b"x") -> E:
    """A file whose name travels in a PAX header (so it may hold anything)."""
    e = f("placeholder", data)
    e.info.pax_headers = {"path": name}
    return e


# Each case: entries built from the victim's absolute path, and what the refusal must say.
CASES = {
    "dotdot": (lambda v: [f("../escape", "x")], "'..'"),
    "dotdot-in-the-middle": (lambda v: [d("a"), f("a/../../escape", "x")], "'..'"),
    "dotdot-in-pax-path": (lambda v: [_pax_name("a/../../../escape")], "'..'"),
    "absolute-path": (lambda v: [f(f"{v}/pwned", "x")], "absolute"),
    "absolute-dir": (lambda v: [d(f"{v}/newdir")], "absolute"),
    "symlink-then-file-through-it": (lambda v: [sym("s", str(v)), f("s/pwned", "x")], "symlink"),
    "symlink-then-dir-through-it": (lambda v: [sym("s", str(v)), d("s/newdir")], "symlink"),
    "symlink-then-overwrite-through-it": (lambda v: [sym("s", str(v)), f("s/file", "owned")], "symlink"),
    "symlink-to-root-then-write": (lambda v: [sym("r", "/"), f(f"r{v}/pwned", "x")], "symlink"),
    "relative-symlink-up-then-write": (lambda v: [sym("up", "../../.."), f("up/victim/pwned", "x")], "symlink"),
    "symlink-chain-then-write": (lambda v: [sym("a", "b"), sym("b", str(v)), f("a/pwned", "x")], "symlink"),
    "hardlink-to-etc-passwd": (lambda v: [hard("h", "/etc/passwd")], "absolute"),
    "hardlink-to-victim-absolute": (lambda v: [hard("h", f"{v}/file")], "absolute"),
    "hardlink-outside-by-dotdot": (lambda v: [hard("h", "../../victim/file")], "'..'"),
    "hardlink-through-symlink": (lambda v: [sym("s", str(v)), hard("h", "s/file")], "not an earlier entry"),
    "hardlink-to-missing": (lambda v: [hard("h", "etc/shadow")], "not an earlier entry"),
    "hardlink-to-dir": (lambda v: [d("dir"), hard("h", "dir")], "directory"),
    "root-replaced-by-symlink": (lambda v: [sym(".", str(v)), f("pwned", "x")], "layer root"),
    "root-replaced-by-symlink-slash": (lambda v: [sym("./", str(v)), f("pwned", "x")], "layer root"),
    "root-replaced-by-file": (lambda v: [f(".", "x")], "layer root"),
    "whiteout-escaping": (lambda v: [f("../.wh.file")], "'..'"),
    "whiteout-of-dotdot": (lambda v: [f(".wh...")], "names no file"),
    "whiteout-of-nothing": (lambda v: [f(".wh.")], "names no file"),
    "whiteout-through-symlink": (lambda v: [sym("s", str(v)), f("s/.wh.file")], "symlink"),
    "opaque-through-symlink": (lambda v: [sym("s", str(v)), f("s/.wh..wh..opq")], "symlink"),
    "opaque-at-root": (lambda v: [f(".wh..wh..opq")], "root opaque"),
    "whiteout-as-directory": (lambda v: [d(".wh.x")], "whiteout"),
    "entry-below-a-whiteout-name": (lambda v: [f(".wh.x/y", "x")], "whiteout name"),
    "entry-below-opaque-marker": (lambda v: [f("a/.wh..wh..opq/y", "x")], "whiteout name"),
    "nul-in-name": (lambda v: [_pax_name("a\x00b")], "NUL"),
    "file-below-a-file": (lambda v: [f("a", "x"), f("a/b", "y")], "not a directory"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_layer_is_refused_and_nothing_outside_changes(work, case):
    make, match = CASES[case]
    raw = tar_bytes(make(work.victim.path))
    work.refused(compress(raw, "gzip"), match, raw=raw)


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_SPARSE, b"V", b"D", b"M", b"Z"])
def test_unsupported_tar_type_is_refused(work, kind):
    e = f("dump", "x")
    e.info.type = kind
    raw = tar_bytes([e], fmt=tarfile.GNU_FORMAT)
    work.refused(raw, "unsupported tar type", raw=raw)


def test_pax_sparse_file_is_refused(work):
    e = f("holes", "x")
    e.info.pax_headers = {"GNU.sparse.size": "1099511627776", "GNU.sparse.map": "0,1"}
    raw = tar_bytes([e])
    work.refused(raw, "sparse", raw=raw)


def test_truncated_setuid_file_leaves_no_setuid_file(work):
    raw = tar_bytes([f("bin/su", os.urandom(64 * 1024), mode=0o4755)])
    work.refused(compress(raw[:32 * 1024], "gzip"), "truncated|unexpected end|ended", raw=raw)


def test_diff_id_mismatch_is_refused_and_removed(work):
    raw = tar_bytes([f("etc/motd", "hello")])
    err = work.refused(compress(raw, "gzip"), "does not match its diff_id", diff_id=sha256(b"something else"))
    assert sha256(raw) in str(err)


def test_corrupt_gzip_is_refused(work):
    raw = tar_bytes([f("etc/motd", "hello" * 1000)])
    blob = bytearray(compress(raw, "gzip"))
    blob[len(blob) // 2] ^= 0xFF
    work.refused(bytes(blob), "cannot unpack|does not match", raw=raw)


def test_gzip_bomb_is_refused_by_the_size_limit(work):
    raw = tar_bytes([f("zeros", bytes(64 * 1024 * 1024))])
    blob = compress(raw, "gzip")
    assert len(blob) < 1024 * 1024  # small on the wire, 64 MiB unpacked
    work.refused(blob, "exceeds the limit", raw=raw, limits=UnpackLimits(max_bytes=16 * 1024 * 1024))


def test_zstd_bomb_is_refused_by_the_size_limit(work):
    raw = tar_bytes([f("zeros", bytes(64 * 1024 * 1024))])
    work.refused(compress(raw, "zstd"), "exceeds the limit", raw=raw,
                 limits=UnpackLimits(max_bytes=16 * 1024 * 1024))


def test_entry_count_bomb_is_refused(work):
    raw = tar_bytes([f(f"f{i}") for i in range(2000)])
    work.refused(compress(raw, "gzip"), "entries", raw=raw, limits=UnpackLimits(max_entries=1000))


def test_huge_pax_header_is_refused_before_it_is_read(work):
    e = f("file", "x")
    e.info.pax_headers = {"comment": "y" * (2 * 1024 * 1024)}
    raw = tar_bytes([e])
    work.refused(compress(raw, "gzip"), "extended tar header", raw=raw)


def test_xz_layer_is_refused_clearly(work):
    work.refused(b"\xfd7zXZ\x00" + bytes(100), "xz", diff_id=sha256(b""))


def test_gzip_declared_layer_that_is_really_zstd_unpacks(work):
    raw = tar_bytes([d("etc"), f("etc/motd", "hello from zstd\n")])
    blobs = BlobStore()
    layer = blobs.layer(raw, "zstd", media_type=GZIP)
    assert layer.media_type == GZIP
    res = unpack_layer(blobs.open_blob(layer.digest), work.dest, diff_id=layer.diff_id, media_type=layer.media_type)
    assert (work.dest / "etc/motd").read_text() == "hello from zstd\n"
    assert res.diff_id == layer.diff_id


# --- across layers -----------------------------------------------------------------------------

@pytest.mark.parametrize("second", [
    [f("a/pwned", "x")],
    [d("a/newdir")],
    [f("a/.wh.file")],
    [f("a/.wh..wh..opq")],
    [f("a/sub/deeper/pwned", "x")],
])
def test_a_layer_cannot_write_through_a_symlink_from_a_lower_layer(host_paths, work, second):
    blobs = BlobStore()
    image = blobs.image([sym("a", str(work.victim.path)), sym("b", "a")], second)
    store = LayerStore(host_paths, blobs)
    with pytest.raises(StorageError, match="symlink in a lower layer"):
        store.ensure_layers(image)
    assert work.victim.untouched()
    # The first layer is complete and kept; the refused one left nothing behind.
    assert len(store.list_layers()) == 1
    assert not [n for n in os.listdir(host_paths.layers) if n.endswith(".incomplete")]


def test_a_layer_may_replace_a_lower_symlink_with_a_directory(host_paths, work):
    """Declaring the directory is not writing through the link: the new directory hides it."""
    blobs = BlobStore()
    image = blobs.image([sym("a", str(work.victim.path))], [d("a", mode=0o700), f("a/mine", "ok")])
    layers = LayerStore(host_paths, blobs).ensure_layers(image)
    assert (layers[1].path / "a" / "mine").read_text() == "ok"
    assert (layers[1].path / "a").is_dir() and not (layers[1].path / "a").is_symlink()
    assert work.victim.untouched()
