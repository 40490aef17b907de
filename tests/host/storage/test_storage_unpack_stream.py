"""Layer unpack, the parts that make it quick: the stream is decompressed and hashed in large
chunks handed to the tar reader in slices, and files are created with their final mode and
owner where that saves a chmod or a chown. None of it may change what lands on disk, nor leave
anything behind when a layer is refused."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
from pathlib import Path

import pytest

from reconciler.errors import StorageError
from reconciler.storage import unpack as unpack_mod
from reconciler.storage.unpack import LayerTooLarge, UnpackLimits, unpack_layer
from tests.host.storage.kit import compress, d, f, sha256, sym, tar_bytes


@pytest.fixture
def dest(host_paths) -> Path:
    (host_paths.root / "work").mkdir()
    return host_paths.root / "work" / "layer"


@pytest.fixture
def small_chunks(monkeypatch):
    """A reader that is only a little ahead, so that files are created before it meets the end."""
    monkeypatch.setattr(unpack_mod, "_CHUNK", 4096)


def many_files(n: int, size: int = 3000) -> list:
    rnd = random.Random(n)
    return [d("data")] + [f(f"data/f{i}", rnd.randbytes(size)) for i in range(n)]


def count_entries(monkeypatch) -> list[int]:
    seen = [0]
    real = unpack_mod._Unpacker.entry

    def entry(self, ti, tar):
        seen[0] += 1
        return real(self, ti, tar)

    monkeypatch.setattr(unpack_mod._Unpacker, "entry", entry)
    return seen


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_corrupt_stream_midway_is_refused_after_files_were_made(dest, small_chunks, monkeypatch, how):
    raw = tar_bytes(many_files(200))
    blob = bytearray(compress(raw, how))
    blob[len(blob) * 3 // 4] ^= 0xFF
    seen = count_entries(monkeypatch)
    with pytest.raises(StorageError, match="cannot unpack|does not match") as err:
        unpack_layer(io.BytesIO(bytes(blob)), dest, diff_id=sha256(raw))
    assert "layer sha256:" in str(err.value)
    assert seen[0] > 10, "the stream should break after files were written"
    assert not os.path.lexists(dest)


def test_truncated_stream_is_refused_and_removed(dest, small_chunks):
    raw = tar_bytes(many_files(50))
    with pytest.raises(StorageError, match="truncated|unexpected end|ended|cannot unpack"):
        unpack_layer(io.BytesIO(compress(raw, "gzip")[:-5000]), dest, diff_id=sha256(raw))
    assert not os.path.lexists(dest)


def test_a_refusal_early_in_a_large_layer_reads_no_further(dest):
    """A hostile entry early in a large layer: refused at once, without reading (decompressing,
    hashing) the rest of the blob."""
    entries = [sym("s", "/etc"), f("s/passwd", "owned")] + many_files(2000)
    raw = tar_bytes(entries)
    src = io.BytesIO(compress(raw, "none"))
    with pytest.raises(StorageError, match="symlink"):
        unpack_layer(src, dest, diff_id=sha256(raw))
    assert src.tell() <= 2 * unpack_mod._CHUNK < len(raw)
    assert not os.path.lexists(dest)


def test_size_limit_crossed_after_files_were_made(dest, small_chunks, monkeypatch):
    raw = tar_bytes(many_files(100))
    seen = count_entries(monkeypatch)
    with pytest.raises(LayerTooLarge, match="exceeds the limit") as err:
        unpack_layer(io.BytesIO(compress(raw, "gzip")), dest, diff_id=sha256(raw),
                     limits=UnpackLimits(max_bytes=len(raw) // 2))
    assert err.value.what == "bytes" and err.value.limit == len(raw) // 2
    assert 0 < seen[0] < 100
    assert not os.path.lexists(dest)


def test_reader_slices_across_chunks(monkeypatch):
    monkeypatch.setattr(unpack_mod, "_CHUNK", 7)
    data = bytes(range(256)) * 3
    r = unpack_mod._HashingReader(io.BytesIO(data), "sha256", limit=1 << 20)
    assert r.read(3) == data[:3] and r.tell() == 3
    assert r.read(20) == data[3:23] and r.tell() == 23
    assert r.seek(100) == 100 and r.read(1) == data[100:101]
    assert r.read(0) == b""
    with pytest.raises(StorageError, match="went back"):
        r.seek(10)
    assert r.read(-1) == data[101:]
    assert r.read(5) == b"" and r.tell() == len(data)
    r.drain()
    assert r.count == len(data)
    assert r.digest() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_reader_seek_past_the_end_stops_at_the_end(monkeypatch):
    monkeypatch.setattr(unpack_mod, "_CHUNK", 5)
    r = unpack_mod._HashingReader(io.BytesIO(b"x" * 12), "sha256", limit=100)
    assert r.seek(50) == 12 and r.read(1) == b""


# --- owners and modes without chown/chmod where they are what a new file gets ----------------

@pytest.mark.parametrize("umask", [0, 0o022, 0o077, 0o777])
def test_file_modes_do_not_depend_on_the_umask(dest, umask):
    old = os.umask(umask)
    try:
        unpack_layer(io.BytesIO(raw := tar_bytes([
            f("a", "x", mode=0o644), f("b", "x", mode=0o666), f("c", "x", mode=0o600), f("e", "x", mode=0o755),
            f("n", "x", mode=0o000), f("s", "x", mode=0o4755), f("g", "x", mode=0o2711), f("t", "x", mode=0o1777),
        ])), dest, diff_id=sha256(raw))
    finally:
        os.umask(old)
    modes = {n: stat.S_IMODE(os.lstat(dest / n).st_mode) for n in "abcenstg"}
    assert modes == {"a": 0o644, "b": 0o666, "c": 0o600, "e": 0o755, "n": 0o000, "s": 0o4755, "t": 0o1777,
                     "g": 0o2711}


def test_files_in_setgid_directories_get_the_group_the_tar_says(dest):
    """A new file in a setgid directory takes the directory's group: where the tar says
    otherwise, the file is chowned (also below an undeclared directory that inherited it)."""
    unpack_layer(io.BytesIO(raw := tar_bytes([
        d("g", mode=0o2775, gid=5),
        f("g/root", "x", uid=0, gid=0),
        f("g/five", "x", uid=0, gid=5),
        f("g/implicit/deeper", "x", uid=0, gid=0),
        d("g/plain", mode=0o755, gid=0),
        f("g/plain/root", "x", uid=0, gid=0),
        d("g", mode=0o755, gid=0),  # no longer setgid: its later files are plain
        f("g/later", "x", uid=0, gid=0),
        f("top", "x", uid=0, gid=0),
    ])), dest, diff_id=sha256(raw))
    groups = {n: os.lstat(dest / n).st_gid for n in
              ["g/root", "g/five", "g/implicit/deeper", "g/plain/root", "g/later", "top"]}
    assert groups == {"g/root": 0, "g/five": 5, "g/implicit/deeper": 0, "g/plain/root": 0, "g/later": 0, "top": 0}


def test_layer_root_in_a_setgid_directory_of_another_group(host_paths):
    """The layer root inherits the group of a setgid parent (and keeps it: the tar has no "./"
    entry): files the tar says are root's must still end up root's."""
    parent = host_paths.root / "sgid"
    parent.mkdir()
    os.chown(parent, 0, 7)
    os.chmod(parent, 0o2775)
    raw = tar_bytes([f("a", "x"), f("b", "x", gid=7), d("sub"), f("sub/c", "x")])
    unpack_layer(io.BytesIO(raw), parent / "layer", diff_id=sha256(raw))
    assert os.lstat(parent / "layer/a").st_gid == 0
    assert os.lstat(parent / "layer/b").st_gid == 7
    assert os.lstat(parent / "layer/sub/c").st_gid == 0


def test_other_owners_are_applied(dest):
    unpack_layer(io.BytesIO(raw := tar_bytes([f("u", "x", uid=1000, gid=0), f("g", "x", uid=0, gid=1000),
                                              f("ug", "x", uid=33, gid=44, mode=0o640)])),
                 dest, diff_id=sha256(raw))
    own = {n: (os.lstat(dest / n).st_uid, os.lstat(dest / n).st_gid) for n in ["u", "g", "ug"]}
    assert own == {"u": (1000, 0), "g": (0, 1000), "ug": (33, 44)}
    assert stat.S_IMODE(os.lstat(dest / "ug").st_mode) == 0o640
