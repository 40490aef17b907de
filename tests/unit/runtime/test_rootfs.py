"""Reading files inside an untrusted rootfs and resolving subPaths inside a volume."""

from __future__ import annotations

import os

import pytest

from reconciler.errors import ContainerRuntimeError
from reconciler.runtime.rootfs import ensure_subpath, read_file_in_root, resolve_in_root


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (tmp_path / "outside").write_text("host secret")
    return r


@pytest.mark.parametrize("target", ["/../../outside", "../../../outside", "../../../../../../../../outside"])
def test_symlinks_cannot_leave_the_root(root, target):
    os.symlink(target, root / "etc" / "passwd")
    assert read_file_in_root(str(root), "/etc/passwd") is None  # resolves to <root>/outside, absent


def test_symlinks_inside_the_root_are_followed(root):
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    os.symlink("/usr/lib/passwd", root / "etc" / "passwd")
    assert read_file_in_root(str(root), "/etc/passwd") == b"root:x:0:0::/:/bin/sh\n"
    os.symlink("../usr", root / "etc" / "up")
    assert resolve_in_root(str(root), "/etc/up/lib") == str(root.resolve() / "usr" / "lib")


def test_symlink_loops_are_refused(root):
    os.symlink("b", root / "etc" / "a")
    os.symlink("a", root / "etc" / "b")
    with pytest.raises(ContainerRuntimeError, match="symbolic links"):
        read_file_in_root(str(root), "/etc/a")


def test_fifos_and_directories_are_not_read(root):
    os.mkfifo(root / "etc" / "passwd")
    assert read_file_in_root(str(root), "/etc/passwd") is None  # and it did not block
    os.mkdir(root / "etc" / "group")
    assert read_file_in_root(str(root), "/etc/group") is None


def test_huge_files_are_refused(root):
    (root / "etc" / "passwd").write_bytes(b"x" * 2000)
    with pytest.raises(ContainerRuntimeError, match="larger than"):
        read_file_in_root(str(root), "/etc/passwd", limit=1000)


def test_sub_path_is_created_inside_the_volume(tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    got = ensure_subpath(str(vol), "logs/app")
    assert got == str(vol.resolve() / "logs" / "app")
    assert os.path.isdir(got)


@pytest.mark.parametrize("link", ["/etc", "../../..", "../outside"])
def test_sub_path_symlinks_out_of_the_volume_are_refused(tmp_path, link):
    vol = tmp_path / "vol"
    vol.mkdir()
    os.symlink(link, vol / "evil")
    with pytest.raises(ContainerRuntimeError, match="not within its volume"):
        ensure_subpath(str(vol), "evil/x")
    assert not (tmp_path / "outside").exists()
    assert not (vol / "x").exists()


def test_sub_path_symlinks_inside_the_volume_are_followed(tmp_path):
    vol = tmp_path / "vol"
    (vol / "real").mkdir(parents=True)
    os.symlink("real", vol / "alias")
    assert ensure_subpath(str(vol), "alias/logs") == str(vol.resolve() / "real" / "logs")
