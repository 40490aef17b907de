"""Layer unpack: what a well-formed layer becomes on disk (overlayfs form, metadata kept)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from reconciler.errors import StorageError
from reconciler.storage.layers import LayerStore
from reconciler.storage.unpack import OPAQUE_XATTR, unpack_layer
from tests.host.storage.kit import MTIME, BlobStore, compress, d, f, hard, node, sha256, sym, tar_bytes

CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")  # v2 caps: cap_net_raw+ep


@pytest.fixture
def dest(host_paths) -> Path:
    (host_paths.root / "work").mkdir()
    return host_paths.root / "work" / "layer"


def unpack(entries, dest, how="gzip", lowers=(), **kw):
    raw = tar_bytes(entries, **kw)
    return unpack_layer(io.BytesIO(compress(raw, how)), dest, diff_id=sha256(raw), lowers=lowers)


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_files_dirs_links_and_metadata_survive(dest, how):
    res = unpack([
        d("etc", mode=0o755),
        f("etc/hostname", "box\n", mode=0o640, uid=1000, gid=33, mtime=MTIME - 100),
        d("usr/bin", mode=0o711, uid=0, gid=0),
        f("usr/bin/su", b"\x7fELF", mode=0o4755),
        f("usr/bin/wall", b"\x7fELF", mode=0o2755, gid=5),
        d("tmp", mode=0o1777),
        sym("usr/bin/sh", "busybox", uid=7, gid=8),
        hard("usr/bin/su2", "usr/bin/su"),
        node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666),
        node("dev/sda", tarfile.BLKTYPE, 8, 0, mode=0o660),
        node("run/fifo", tarfile.FIFOTYPE, mode=0o620),
    ], dest, how)
    assert res.entries == 11
    st = os.stat(dest / "etc/hostname")
    assert (dest / "etc/hostname").read_text() == "box\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o640, 1000, 33, MTIME - 100)
    assert stat.S_IMODE(os.stat(dest / "usr/bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "usr/bin/wall").st_mode) == 0o2755
    assert stat.S_IMODE(os.stat(dest / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(dest / "usr/bin").st_mode) == 0o711
    assert os.stat(dest / "etc").st_mtime == MTIME  # set after its children were created
    link = os.lstat(dest / "usr/bin/sh")
    assert os.readlink(dest / "usr/bin/sh") == "busybox" and (link.st_uid, link.st_gid) == (7, 8)
    assert os.stat(dest / "usr/bin/su2").st_ino == os.stat(dest / "usr/bin/su").st_ino
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(os.lstat(dest / "dev/sda").st_mode)
    fifo = os.lstat(dest / "run/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    # Directories the layer did not declare are made 0755 root, the root of a base layer too.
    assert stat.S_IMODE(os.stat(dest / "dev").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755


def test_root_entry_sets_the_layer_root(dest):
    unpack([d(".", mode=0o751, uid=0, gid=10), f("a", "x")], dest)
    st = os.stat(dest)
    assert (stat.S_IMODE(st.st_mode), st.st_gid, st.st_mtime) == (0o751, 10, MTIME)


def test_whiteouts_and_opaque_dirs_take_overlay_form(dest):
    unpack([d("etc"), f("etc/.wh.passwd"), d("var/cache"), f("var/cache/.wh..wh..opq"),
            f("var/cache/new", "n"), f(".wh..wh.plnk"), f(".wh.gone")], dest)
    wh = os.lstat(dest / "etc/passwd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert not (dest / "etc/.wh.passwd").exists()
    assert os.getxattr(dest / "var/cache", OPAQUE_XATTR) == b"y"
    assert (dest / "var/cache/new").read_text() == "n"
    assert stat.S_ISCHR(os.lstat(dest / "gone").st_mode)
    assert not (dest / ".wh..wh.plnk").exists() and not (dest / ".wh..wh.plnk").is_symlink()


def test_whiteout_then_same_name_in_the_same_layer(dest):
    """OCI: a whiteout hides lower layers only. A file of the same layer keeps the name; a
    directory replacing the whiteout becomes opaque (the lower directory was deleted)."""
    unpack([f(".wh.a"), f("a", "kept"), f("b", "first"), f(".wh.b"), f(".wh.c"), d("c"), f("c/x", "x"),
            f(".wh.e"), f("e/y", "y")], dest)
    assert (dest / "a").read_text() == "kept"
    assert (dest / "b").read_text() == "first"
    assert os.getxattr(dest / "c", OPAQUE_XATTR) == b"y"
    assert os.getxattr(dest / "e", OPAQUE_XATTR) == b"y"
    assert (dest / "e/y").read_text() == "y"


def test_later_entries_replace_earlier_ones_without_following_links(dest, tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    unpack([
        sym("s", str(outside)), f("s", "now a file"),  # replaces the link, never writes through it
        f("a", "x"), hard("b", "a"), f("b", "new b"),  # b unlinked first: a keeps its content
        d("dir"), f("dir/inner", "i"), f("dir", "file over dir"),
        f("g", "file"), d("g", mode=0o700),
        d("same", mode=0o700), d("same", mode=0o755),
    ], dest)
    assert outside.read_text() == "keep"
    assert (dest / "s").read_text() == "now a file" and not (dest / "s").is_symlink()
    assert (dest / "a").read_text() == "x" and (dest / "b").read_text() == "new b"
    assert (dest / "dir").read_text() == "file over dir"
    assert (dest / "g").is_dir()
    assert stat.S_IMODE(os.stat(dest / "same").st_mode) == 0o755


def test_xattrs_capabilities_kept_and_overlay_xattrs_dropped(dest):
    unpack([
        f("bin/ping", b"\x7fELF", mode=0o755, xattrs={"security.capability": CAP_NET_RAW}),
        f("data", "x", xattrs={"user.comment": "h\u00e9".encode(), "trusted.overlay.opaque": b"y",
                               "trusted.other": b"1", "security.selinux": b"system_u:object_r:bin_t:s0"}),
    ], dest)
    assert os.getxattr(dest / "bin/ping", "security.capability") == CAP_NET_RAW
    assert os.getxattr(dest / "data", "user.comment") == "h\u00e9".encode()
    names = os.listxattr(dest / "data")
    assert "trusted.overlay.opaque" not in names and "trusted.other" not in names
    assert "security.selinux" not in names


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_and_link_targets(dest, fmt):
    deep = "/".join(["d" * 100] * 5)
    unpack([f(f"{deep}/{'n' * 200}", "deep"), sym("l", "t" * 300), hard("h", f"{deep}/{'n' * 200}")], dest, fmt=fmt)
    assert (dest / deep / ("n" * 200)).read_text() == "deep"
    assert os.readlink(dest / "l") == "t" * 300
    assert (dest / "h").read_text() == "deep"


def test_non_utf8_names_round_trip(dest):
    raw_name = b"caf\xe9"  # latin-1, not UTF-8
    ti = tarfile.TarInfo(raw_name.decode("utf-8", "surrogateescape"))
    ti.size = 1
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as t:
        t.addfile(ti, io.BytesIO(b"x"))
    raw = buf.getvalue()
    unpack_layer(io.BytesIO(raw), dest, diff_id=sha256(raw))
    assert os.listdir(os.fsencode(dest)) == [raw_name]


def test_empty_layers(dest, tmp_path):
    res = unpack_layer(io.BytesIO(b""), dest, diff_id=sha256(b""))
    assert res.entries == 0 and os.listdir(dest) == []
    raw = tar_bytes([])
    other = tmp_path / "other"
    unpack_layer(io.BytesIO(compress(raw, "gzip")), other, diff_id=sha256(raw))
    assert os.listdir(other) == []


def test_trailing_bytes_after_the_archive_are_part_of_the_diff_id(dest):
    raw = tar_bytes([f("a", "x")]) + bytes(10240)  # tar pads to a record; the hash covers it all
    res = unpack_layer(io.BytesIO(compress(raw, "gzip")), dest, diff_id=sha256(raw))
    assert res.size == len(raw)


def test_multi_member_gzip_and_multi_frame_zstd(dest, tmp_path):
    raw = tar_bytes([f("a", "x" * 5000), f("b", "y" * 5000)])
    half = len(raw) // 2
    import gzip

    from backports import zstd

    unpack_layer(io.BytesIO(gzip.compress(raw[:half]) + gzip.compress(raw[half:])), dest, diff_id=sha256(raw))
    assert (dest / "b").read_text() == "y" * 5000
    other = tmp_path / "z"
    unpack_layer(io.BytesIO(zstd.compress(raw[:half]) + zstd.compress(raw[half:])), other, diff_id=sha256(raw))
    assert (other / "a").read_text() == "x" * 5000


def test_undeclared_directory_takes_its_attributes_from_the_lower_layer(host_paths):
    blobs = BlobStore()
    image = blobs.image([d("srv", mode=0o750, uid=33, gid=33, mtime=MTIME - 5), d(".", mode=0o711)],
                        [f("srv/new", "n")], [f("other", "o")])
    layers = LayerStore(host_paths, blobs).ensure_layers(image)
    st = os.stat(layers[1].path / "srv")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o750, 33, 33, MTIME - 5)
    # A layer without a root entry keeps the root as the layers below have it.
    assert stat.S_IMODE(os.stat(layers[2].path).st_mode) == 0o711


def test_layer_made_by_gnu_tar_with_xattrs(dest, tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin/tool").write_bytes(b"\x7fELF tool")
    os.chmod(src / "bin/tool", 0o4711)
    os.setxattr(src / "bin/tool", "security.capability", CAP_NET_RAW)
    os.setxattr(src / "bin/tool", "user.origin", b"gnu tar")
    os.symlink("tool", src / "bin/alias")
    os.link(src / "bin/tool", src / "bin/tool2")
    os.chown(src / "bin", 1000, 1000)
    raw = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=posix", "--numeric-owner", "-C", str(src),
                          "-cf", "-", "."], capture_output=True, check=True).stdout
    unpack_layer(io.BytesIO(compress(raw, "gzip")), dest, diff_id=sha256(raw))
    assert stat.S_IMODE(os.stat(dest / "bin/tool").st_mode) == 0o4711
    assert os.getxattr(dest / "bin/tool", "security.capability") == CAP_NET_RAW
    assert os.getxattr(dest / "bin/tool", "user.origin") == b"gnu tar"
    assert os.readlink(dest / "bin/alias") == "tool"
    assert os.stat(dest / "bin/tool2").st_ino == os.stat(dest / "bin/tool").st_ino
    assert os.stat(dest / "bin").st_uid == 1000


def test_many_directories_and_hardlinks_across_them(dest):
    """More directories than the unpacker keeps open at once; links reach back to early ones."""
    entries = []
    for i in range(1200):
        entries += [d(f"d{i}"), f(f"d{i}/f", str(i))]
    entries += [hard(f"d{1199 - i}/link", f"d{i}/f") for i in range(0, 1200, 7)]
    entries += [d(f"d{i}", mode=0o700, mtime=MTIME + i) for i in range(0, 1200, 5)]
    unpack(entries, dest)
    for i in range(0, 1200, 7):
        assert (dest / f"d{1199 - i}" / "link").read_text() == str(i)
        assert os.stat(dest / f"d{1199 - i}" / "link").st_ino == os.stat(dest / f"d{i}" / "f").st_ino
    for i in range(0, 1200, 5):
        st = os.stat(dest / f"d{i}")
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o700, MTIME + i)


def test_hardlink_replacing_the_directory_that_held_its_target(dest):
    with pytest.raises(StorageError, match="went away"):
        unpack([d("a"), f("a/f", "x"), hard("a", "a/f")], dest)
    assert not dest.exists()


def test_paths_deeper_than_the_limit_are_refused(dest):
    with pytest.raises(StorageError, match="directories deep"):
        unpack([f("/".join(["d"] * 1100) + "/f", "x")], dest)
    assert not dest.exists()


def test_unpacking_leaks_no_file_descriptors(host_paths, tmp_path):
    """`podplay watch` unpacks for days: neither success nor refusal may leave fds open."""
    blobs = BlobStore()
    # "a" open again while "a/b" is not (the cache was trimmed in between): the lookup of a/b/f
    # must reuse the open "a", not open and forget another.
    good = [d("a"), d("a/b"), f("a/b/f", "x")] + [d(f"d{i}/sub") for i in range(700)] + \
        [f("a/x", "y"), hard("l", "a/b/f"), f("d5/.wh..wh..opq"), f(".wh.d6")]
    bad = [[sym("s", "/"), f("s/x", "y")], [d("a"), hard("a", "a/f")], [f("a", "x"), f("a/b", "y")]]

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    for i in range(3):
        unpack(good, tmp_path / f"ok{i}")
        for j, entries in enumerate(bad):
            with pytest.raises(StorageError):
                unpack(entries, tmp_path / f"bad{i}-{j}")
    image = blobs.image([d("a"), sym("b", "/")], [f("a/x/y", "z")], [f("b/z", "escape")])
    with pytest.raises(StorageError):
        LayerStore(host_paths, blobs).ensure_layers(image)
    assert fds() == before
