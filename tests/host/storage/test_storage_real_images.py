"""Images made by third-party tools (buildah builds, skopeo writes the OCI layout in each
compression) unpack and mount, and busybox runs in the result (chroot)."""

from __future__ import annotations

import subprocess

import pytest

from reconciler.storage.snapshots import OverlaySnapshotter
from tests.host.storage.kit import OCILayoutStore
from tests.support.images import factory


def chroot(rootfs: str, *argv: str) -> str:
    return subprocess.run(["chroot", rootfs, *argv], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_busybox_image_from_skopeo_layout_runs(host_paths, compression):
    fac = factory()
    layout = fac.layout(fac.build(layers=2), compression)
    store = OCILayoutStore(layout)
    image = store.image_info()
    assert len(image.layers) == 2
    snaps = OverlaySnapshotter(host_paths, store)
    rootfs = snaps.prepare("real.busybox", image)
    try:
        assert chroot(rootfs, "/bin/sh", "-c", "echo hello from $(basename $0)") == "hello from sh\n"
        assert "app:x:1000" in chroot(rootfs, "/bin/cat", "/etc/passwd")
        assert chroot(rootfs, "/bin/ls", "/layers") == "1\n"
    finally:
        snaps.remove("real.busybox")


def _image_with_deletions(fac) -> str:
    """A layer made by buildah that deletes a file and replaces a directory's contents."""
    base = fac.build(layers=1)
    name = "localhost/pp-storage-whiteouts:latest"
    ctr = fac.buildah("from", "--pull-never", base)
    try:
        mnt = fac.buildah("mount", ctr)
        subprocess.run(["sh", "-c", f"rm {mnt}/etc/group && rm -r {mnt}/home/app && mkdir {mnt}/home/app && "
                        f"echo new > {mnt}/home/app/fresh && rm {mnt}/bin/vi"], check=True)
        fac.buildah("umount", ctr)
        fac.buildah("commit", "-q", "--omit-history", ctr, name)
    finally:
        fac.buildah("rm", ctr)
    return name


def test_whiteouts_written_by_buildah_hide_lower_files(host_paths):
    fac = factory()
    store = OCILayoutStore(fac.layout(_image_with_deletions(fac), "gzip"))
    image = store.image_info()
    for force_copy in (False, True):
        snaps = OverlaySnapshotter(host_paths, store, force_copy=force_copy)
        rootfs = snaps.prepare(f"wh.{int(force_copy)}", image)
        try:
            out = chroot(rootfs, "/bin/sh", "-c", "ls /etc; ls /home/app; test -e /bin/vi || echo no-vi")
            assert "group" not in out.split() and "passwd" in out.split()
            assert "fresh" in out.split() and "no-vi" in out.split()
        finally:
            snaps.remove(f"wh.{int(force_copy)}")
