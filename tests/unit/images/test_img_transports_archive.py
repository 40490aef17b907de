"""Archives read in place (hostile members refused, links resolved inside the archive only) and
written atomically with patched headers; blob writers refuse wrong content."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import subprocess
import tarfile

import pytest

from reconciler.errors import ImageError
from reconciler.images.archive import TarArchive, TarWriter, _header
from reconciler.images.blobio import FileWriter, MemoryWriter


def make_tar(entries) -> bytes:
    """entries: (name, kind, data_or_target); kind: file, dir, sym, hard, fifo, chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, value in entries:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(value)
                t.addfile(ti, io.BytesIO(value))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                       "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}[kind]
            if kind in ("sym", "hard"):
                ti.linkname = value
            t.addfile(ti)
    return buf.getvalue()


def open_archive(tmp_path, data: bytes, name: str = "a.tar") -> TarArchive:
    p = tmp_path / name
    p.write_bytes(data)
    return TarArchive(p, description=f"archive {name}", tmpdir=tmp_path)


def test_members_read_in_place(tmp_path):
    data = make_tar([("./", "dir", None), ("./blobs/sha256/x", "file", b"hello"), ("index.json", "file", b"{}"),
                     ("blobs/link", "sym", "sha256/x"), ("hard", "hard", "blobs/sha256/x")])
    with open_archive(tmp_path, data) as a:
        assert a.names() == ["blobs/link", "blobs/sha256/x", "hard", "index.json"]
        assert a.read("blobs/sha256/x", 100) == b"hello"
        # docker save links repeated layers: a link to another member reads that member
        assert a.read("blobs/link", 100) == b"hello" and a.read("hard", 100) == b"hello"
        with a.open("blobs/sha256/x") as f:
            f.seek(2)
            assert f.read() == b"llo"
        assert not a.has("missing") and a.has("index.json")
        with pytest.raises(ImageError, match="more than the 3 allowed"):
            a.read("blobs/sha256/x", 3)
        with pytest.raises(ImageError, match="'nope' is not in the archive"):
            a.open("nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]  # nothing was extracted


@pytest.mark.parametrize(("entries", "message"), [
    ([("../evil", "file", b"x")], "leaves the archive"),
    ([("a/../../evil", "file", b"x")], "leaves the archive"),
    ([("/etc/passwd", "file", b"x")], "absolute path"),
    ([("blobs/sha256/aa", "sym", "/etc/shadow")], "outside the archive"),
    ([("blobs/sha256/aa", "sym", "../../../etc/shadow")], "outside the archive"),
    ([("x", "hard", "../outside")], "outside the archive"),
    ([("x", "sym", ".")], "archive root"),
    ([("dev", "chr", None)], "device, FIFO"),
    ([("fifo", "fifo", None)], "device, FIFO"),
    ([("a", "file", b"1"), ("a", "file", b"2")], "two members are named 'a'"),
    ([("./a", "file", b"1"), ("a", "file", b"2")], "two members are named 'a'"),
    ([("a", "sym", "b"), ("b", "sym", "a")], "chain of links"),
    ([("a", "sym", "missing")], "which is not in the archive"),
])
def test_hostile_members_refuse_the_archive(tmp_path, entries, message):
    with pytest.raises(ImageError, match=message):
        open_archive(tmp_path, make_tar(entries))


def zstd_compress(data: bytes) -> bytes:
    from backports import zstd

    return zstd.compress(data)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, zstd_compress], ids=["gzip", "xz", "zstd"])
def test_compressed_archives_are_read(tmp_path, compress):
    data = make_tar([("manifest.json", "file", b"[]")])
    with open_archive(tmp_path, compress(data), "a.tar.x") as a:
        assert a.read("manifest.json", 10) == b"[]"


def test_streams_are_spooled(tmp_path):
    data = make_tar([("index.json", "file", b"{}")])
    with TarArchive(None, stream=io.BufferedReader(io.BytesIO(gzip.compress(data))), tmpdir=tmp_path) as a:
        assert a.read("index.json", 10) == b"{}"
    assert list(tmp_path.iterdir()) == []  # the spool file was anonymous


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not a tar archive"),
    (b"this is not a tar archive at all" * 40, "not a tar archive"),
    (gzip.compress(b"x", mtime=0)[:-4], "cannot decompress"),
], ids=["empty", "text", "truncated-gzip"])
def test_not_archives(tmp_path, data, message):
    with pytest.raises(ImageError, match=message):
        open_archive(tmp_path, data)


def test_truncated_member_is_refused(tmp_path):
    data = make_tar([("big", "file", b"x" * 5000)])
    with pytest.raises(ImageError, match="truncated"):
        open_archive(tmp_path, data[:1024])


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        TarArchive(tmp_path / "nope.tar", description="archive nope.tar")
    with pytest.raises(ImageError, match="is a directory"):
        TarArchive(tmp_path, description="archive dir")


# --- writing --------------------------------------------------------------------------------------

def test_writer_streams_members_and_gnu_tar_agrees(tmp_path):
    target = tmp_path / "out.tar"
    w = TarWriter(target)
    with w.member("blobs/sha256/abc") as m:
        m.write(b"a" * 1000)
        m.reset()  # a resumed download starts the member again
        m.write(b"b" * 700)
    with w.member("dropped") as m:
        m.write(b"zzz")
        m.drop()
    w.add_bytes("index.json", b"{}")
    assert not target.exists()  # nothing until finish
    w.finish()
    listing = subprocess.run(["tar", "-tvf", str(target)], capture_output=True, text=True, check=True).stdout
    assert "dropped" not in listing
    with tarfile.open(target) as t:
        names = t.getnames()
        assert names == ["blobs", "blobs/sha256", "blobs/sha256/abc", "index.json"]
        assert t.extractfile("blobs/sha256/abc").read() == b"b" * 700
        assert t.getmember("blobs").isdir()
    assert [p.name for p in tmp_path.iterdir()] == ["out.tar"]


def test_writer_abort_leaves_nothing(tmp_path):
    w = TarWriter(tmp_path / "out.tar")
    w.add_bytes("x", b"1")
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_header_sizes_beyond_the_octal_field_still_fit():
    buf = _header("layer.tar", 9 << 30)  # over 8 GiB: base-256 in the same field
    assert len(buf) == 512
    assert tarfile.TarInfo.frombuf(buf, "utf-8", "strict").size == 9 << 30
    long_name = "blobs/sha512/" + "a" * 128
    buf = _header(long_name, 5)
    assert len(buf) == len(_header(long_name, 1 << 40))  # patchable in place


def test_writer_refuses_missing_directory(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        TarWriter(tmp_path / "no" / "out.tar")


# --- blob writers ---------------------------------------------------------------------------------

def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_file_writer_renames_only_verified_content(tmp_path):
    target = tmp_path / "blob"
    good = b"content"
    w = FileWriter(digest(good), len(good), tmp_path, target)
    w.write(good)
    w.commit()
    w.close()
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]

    bad_target = tmp_path / "bad"
    w = FileWriter(digest(good), len(good), tmp_path, bad_target)
    w.write(b"CONTENT")
    with pytest.raises(ImageError, match="failed verification"):
        w.commit()
    w.close()
    assert not bad_target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]


def test_memory_writer_limits():
    with pytest.raises(ImageError, match="more than the 4 allowed"):
        MemoryWriter(digest(b"12345"), 5, 4)
    w = MemoryWriter(digest(b"123"), 3, 10)
    with pytest.raises(ImageError, match="larger than the 3 bytes"):
        w.write(b"1234")
    w = MemoryWriter(digest(b"123"), 3, 10)
    w.write(b"12")
    with pytest.raises(ImageError, match="got 2 bytes"):
        w.commit()
