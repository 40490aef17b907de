"""fsutil.resolve_subpath / resolve_in_root: paths inside a directory that never lead out of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconciler.fsutil import UnsafePathError, open_in_root, open_subpath, resolve_in_root, resolve_subpath


@pytest.fixture
def vol(tmp_path) -> Path:
    """A volume with links that stay inside and links that lead out."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("host secret")
    v = tmp_path / "vol"
    (v / "sub" / "deeper").mkdir(parents=True)
    (v / "sub" / "file").write_text("in volume")
    os.symlink("sub", v / "inner")  # stays inside
    os.symlink("../../sub/file", v / "sub" / "deeper" / "up-and-back")  # stays inside
    os.symlink(str(tmp_path / "outside"), v / "abs-out")
    os.symlink("../outside", v / "rel-out")
    os.symlink("sub/../../outside", v / "sneaky")
    os.symlink("loop2", v / "loop1")
    os.symlink("loop1", v / "loop2")
    os.chmod(v, 0o750)
    return v


@pytest.mark.parametrize(("sub", "want"), [
    ("sub/file", "sub/file"),
    ("inner/file", "sub/file"),
    ("./inner//file", "sub/file"),
    ("sub/deeper/up-and-back", "sub/file"),
    ("", ""),
    ("sub", "sub"),
])
def test_subpath_inside_the_volume_resolves(vol, sub, want):
    assert resolve_subpath(vol, sub) == str((vol / want).resolve())


@pytest.mark.parametrize(("sub", "match"), [
    ("../outside/secret", "'..'"),
    ("sub/../../outside", "'..'"),
    ("/etc/passwd", "relative"),
    ("abs-out/secret", "points outside"),
    ("rel-out/secret", "leaves"),
    ("sneaky/secret", "leaves"),
    ("abs-out", "points outside"),
    ("loop1", "too many levels"),
    ("sub\x00x", "NUL"),
])
def test_subpath_escapes_are_refused(vol, sub, match):
    with pytest.raises(UnsafePathError, match=match):
        resolve_subpath(vol, sub)
    with pytest.raises(UnsafePathError, match=match):
        resolve_subpath(vol, sub, create=True)
    assert not (vol.parent / "outside" / "x").exists()


def test_missing_subpath_is_created_as_directories_with_the_volume_mode(vol):
    with pytest.raises(FileNotFoundError):
        resolve_subpath(vol, "new/dir")
    got = resolve_subpath(vol, "inner/new/dir", create=True)
    assert got == str(vol / "sub" / "new" / "dir")
    assert stat.S_IMODE(os.stat(got).st_mode) == 0o750
    # Creation never goes through an escaping link.
    with pytest.raises(UnsafePathError):
        resolve_subpath(vol, "rel-out/new", create=True)
    assert not (vol.parent / "outside" / "new").exists()


def test_subpath_below_a_file_is_not_a_directory(vol):
    with pytest.raises(NotADirectoryError):
        resolve_subpath(vol, "sub/file/x")


def test_open_subpath_gives_the_inode_itself(vol):
    fd = open_subpath(vol, "inner/file")
    try:
        assert os.fstat(fd).st_ino == os.stat(vol / "sub" / "file").st_ino
    finally:
        os.close(fd)


@pytest.fixture
def rootfs(tmp_path) -> Path:
    """A container root whose links would lead out if followed on the host."""
    (tmp_path / "host-etc").mkdir()
    (tmp_path / "host-etc" / "passwd").write_text("host passwd")
    r = tmp_path / "rootfs"
    (r / "usr" / "etc").mkdir(parents=True)
    (r / "usr" / "etc" / "passwd").write_text("container passwd")
    os.symlink("/usr/etc", r / "etc")  # absolute: inside the container it means rootfs/usr/etc
    os.symlink("../../../../../host-etc", r / "usr" / "climb")
    os.symlink(str(tmp_path / "host-etc"), r / "hostlink")
    return r


@pytest.mark.parametrize(("path", "want"), [
    ("/etc/passwd", "usr/etc/passwd"),
    ("etc/passwd", "usr/etc/passwd"),
    ("/../../etc/passwd", "usr/etc/passwd"),
    ("/usr/climb/passwd", "host-etc/passwd"),  # '..' stops at the container's root
    ("/hostlink/passwd", "tmp/*/host-etc/passwd"),
    ("/etc/missing/../passwd", "usr/etc/passwd"),
    ("/nothing/here", "nothing/here"),
])
def test_in_root_resolution_stays_in_the_root(rootfs, path, want):
    got = resolve_in_root(rootfs, path)
    assert got.startswith(str(rootfs.resolve()) + "/") or got == str(rootfs.resolve())
    if "*" not in want:
        assert got == str(rootfs.resolve() / want)


def test_open_in_root_reads_the_containers_file_not_the_hosts(rootfs):
    fd = open_in_root(rootfs, "/etc/passwd")
    with os.fdopen(fd) as fh:
        assert fh.read() == "container passwd"
    with pytest.raises(FileNotFoundError):
        open_in_root(rootfs, "/hostlink/passwd")
    with pytest.raises(FileNotFoundError):
        open_in_root(rootfs, "/usr/climb/passwd")
