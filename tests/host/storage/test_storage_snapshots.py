"""Snapshots: real overlay mounts of unpacked layers (and the copy fallback) as a container sees them."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from reconciler.drivers.base import SnapshotDriver
from reconciler.errors import StorageError
from reconciler.storage import mounts
from reconciler.storage.layers import LayerStore
from reconciler.storage.snapshots import OverlaySnapshotter
from tests.host.storage.kit import BlobStore, d, f, node, sym, tree

BASE = [d("etc"), f("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), f("etc/group", "root:x:0:\n"),
        d("var/cache"), f("var/cache/old", "old"), d("data", mode=0o750, uid=1000), f("data/keep", "k"),
        d("usr/bin"), f("usr/bin/tool", "#!/bin/sh\n", mode=0o755), sym("bin", "usr/bin"),
        node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666), d("gone"), f("gone/x", "x")]
TOP = [f("etc/.wh.group"), d("var/cache"), f("var/cache/.wh..wh..opq"), f("var/cache/new", "new"),
       f("data/added", "a"), f("etc/passwd", "root:x:0:0::/root:/bin/ash\n"), f(".wh.gone")]


def three_layer_image(blobs: BlobStore):
    return blobs.image(BASE, TOP, [f("etc/motd", "hi\n")])


@pytest.fixture
def blobs() -> BlobStore:
    return BlobStore()


def check_view(rootfs: str) -> None:
    r = rootfs
    assert Path(f"{r}/etc/passwd").read_text().endswith("/bin/ash\n")  # upper layer wins
    assert not os.path.lexists(f"{r}/etc/group")  # whiteout hides the lower file
    assert sorted(os.listdir(f"{r}/var/cache")) == ["new"]  # opaque dir hides lower contents
    assert sorted(os.listdir(f"{r}/data")) == ["added", "keep"]  # plain dirs merge
    assert not os.path.lexists(f"{r}/gone")
    assert Path(f"{r}/etc/motd").read_text() == "hi\n"
    assert os.readlink(f"{r}/bin") == "usr/bin" and os.path.isfile(f"{r}/bin/tool")
    st = os.stat(f"{r}/data")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o750, 1000)
    root = os.stat(r)  # no layer has a "./" entry: the root is 0755 root, usable by any user
    assert (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid) == (0o755, 0, 0)


@pytest.mark.parametrize("force_copy", [False, True], ids=["overlay", "copy"])
def test_layers_merge_as_overlayfs_shows_them(host_paths, blobs, force_copy):
    snaps = OverlaySnapshotter(host_paths, blobs, force_copy=force_copy)
    assert isinstance(snaps, SnapshotDriver)
    rootfs = snaps.prepare("pod1.web", three_layer_image(blobs))
    assert rootfs == str(host_paths.mounts / "pod1.web" / "rootfs")
    assert snaps.mode("pod1.web") == ("copy" if force_copy else "overlay")
    assert mounts.is_mountpoint(rootfs)
    check_view(rootfs)
    snaps.remove("pod1.web")
    assert not mounts.mounts_at_or_under(host_paths.runroot)


def test_writes_land_in_the_snapshot_not_in_the_layers(host_paths, blobs):
    snaps = OverlaySnapshotter(host_paths, blobs)
    image = three_layer_image(blobs)
    rootfs = snaps.prepare("pod1.a", image)
    other = snaps.prepare("pod1.b", image)
    layers_before = {layer.chain_id: tree(layer.path) for layer in snaps.layers.ensure_layers(image)}
    with open(f"{rootfs}/etc/passwd", "a") as fh:
        fh.write("app:x:1000:1000::/:/bin/sh\n")
    os.unlink(f"{rootfs}/data/keep")
    with open(f"{rootfs}/new-file", "w") as fh:
        fh.write("mine")
    upper = host_paths.snapshots / "pod1.a" / "upper"
    assert (upper / "new-file").read_text() == "mine"
    assert "app:x" in (upper / "etc/passwd").read_text()
    assert stat.S_ISCHR(os.lstat(upper / "data/keep").st_mode)  # overlay's own whiteout
    # The shared layers and the other container's view did not change.
    assert {layer.chain_id: tree(layer.path) for layer in snaps.layers.ensure_layers(image)} == layers_before
    assert not os.path.exists(f"{other}/new-file") and os.path.exists(f"{other}/data/keep")
    snaps.remove("pod1.a")
    snaps.remove("pod1.b")


def test_copy_fallback_gives_the_same_view_as_overlay(host_paths, blobs):
    image = three_layer_image(blobs)
    ov = OverlaySnapshotter(host_paths, blobs)
    cp = OverlaySnapshotter(host_paths, blobs, force_copy=True)
    a = ov.prepare("same.overlay", image)
    b = cp.prepare("same.copy", image)
    assert tree(a, times=True) == tree(b, times=True)
    root_a, root_b = os.stat(a), os.stat(b)
    assert (root_a.st_mode, root_a.st_uid) == (root_b.st_mode, root_b.st_uid)
    ov.remove("same.overlay")
    cp.remove("same.copy")


@pytest.mark.parametrize("force_copy", [False, True], ids=["overlay", "copy"])
def test_device_nodes_from_an_image_cannot_be_opened(host_paths, blobs, force_copy):
    """Snapshots are mounted nodev: a device node in an image is inert."""
    snaps = OverlaySnapshotter(host_paths, blobs, force_copy=force_copy)
    rootfs = snaps.prepare("dev.test", three_layer_image(blobs))
    assert stat.S_ISCHR(os.lstat(f"{rootfs}/dev/null").st_mode)
    with pytest.raises(PermissionError):
        os.close(os.open(f"{rootfs}/dev/null", os.O_RDONLY))
    snaps.remove("dev.test")


def test_image_with_130_layers_mounts_as_overlay(host_paths, blobs):
    layers = [[d("layers"), f(f"layers/{i}", str(i))] for i in range(130)]
    image = blobs.image(*layers)
    snaps = OverlaySnapshotter(host_paths, blobs, durable=False)
    rootfs = snaps.prepare("deep.one", image)
    # Absolute layer paths would need far more than a page of mount options; short links do not.
    assert len(",".join(str(x.path) for x in snaps.layers.ensure_layers(image))) > 4096
    assert snaps.mode("deep.one") == "overlay"
    assert len(os.listdir(f"{rootfs}/layers")) == 130
    assert Path(f"{rootfs}/layers/129").read_text() == "129"
    snaps.remove("deep.one")
    assert not mounts.mounts_at_or_under(host_paths.runroot)


def test_stack_too_deep_for_overlay_falls_back_to_a_copy(host_paths, blobs):
    layers = [[f(f"f{i}", str(i))] for i in range(501)]
    snaps = OverlaySnapshotter(host_paths, blobs, durable=False)
    rootfs = snaps.prepare("very.deep", blobs.image(*layers))
    assert snaps.mode("very.deep") == "copy"
    assert len(os.listdir(rootfs)) == 501
    snaps.remove("very.deep")


def test_prepare_is_idempotent_and_remounts_after_a_reboot(host_paths, blobs):
    snaps = OverlaySnapshotter(host_paths, blobs)
    image = three_layer_image(blobs)
    rootfs = snaps.prepare("pod2.web", image)
    with open(f"{rootfs}/state", "w") as fh:
        fh.write("kept")
    assert snaps.prepare("pod2.web", image) == rootfs
    assert [s.mounted for s in snaps.list_snapshots()] == [True]
    # A reboot: the run root is wiped, the durable root stays.
    mounts.umount(rootfs)
    subprocess.run(["rm", "-rf", "--one-file-system", str(host_paths.mounts)], check=True)
    fresh = OverlaySnapshotter(host_paths, blobs)
    [snap] = fresh.list_snapshots()
    assert (snap.key, snap.rootfs, snap.mounted) == ("pod2.web", rootfs, False)
    assert fresh.prepare("pod2.web", image) == rootfs
    assert Path(f"{rootfs}/state").read_text() == "kept"
    assert fresh.list_snapshots()[0].mounted
    fresh.remove("pod2.web")


def test_a_snapshot_deleted_under_its_mount_is_listed_and_removed_or_prepared_anew(host_paths, blobs):
    """`rm -rf` of a snapshot's directory while its root filesystem is mounted: the mount is still
    listed (observe sees it), remove unmounts it, and prepare replaces it with a fresh snapshot."""
    import shutil

    snaps = OverlaySnapshotter(host_paths, blobs)
    image = three_layer_image(blobs)
    for then in ("remove", "prepare"):
        rootfs = snaps.prepare("pod1.web", image)
        Path(rootfs, "written").write_text("by the container")
        shutil.rmtree(host_paths.snapshots / "pod1.web")
        (listed,) = snaps.list_snapshots()
        assert (listed.key, listed.mounted, listed.present) == ("pod1.web", True, False)
        if then == "remove":
            snaps.remove("pod1.web")
            assert snaps.list_snapshots() == [] and not mounts.mounts_at_or_under(host_paths.mounts)
        else:
            assert snaps.prepare("pod1.web", image) == rootfs
            (listed,) = snaps.list_snapshots()
            assert (listed.mounted, listed.present) == (True, True)
            assert not os.path.exists(Path(rootfs, "written")), "the new snapshot, not the stale mount"
            check_view(rootfs)
            snaps.remove("pod1.web")
    umounted = snaps.prepare("pod1.web", image)
    mounts.umount(umounted)
    (listed,) = snaps.list_snapshots()
    assert (listed.mounted, listed.present) == (False, True)
    snaps.remove("pod1.web")


def test_same_key_with_other_layers_is_refused(host_paths, blobs):
    snaps = OverlaySnapshotter(host_paths, blobs)
    snaps.prepare("pod3.web", three_layer_image(blobs))
    with pytest.raises(StorageError, match="other layers"):
        snaps.prepare("pod3.web", blobs.image([f("other", "o")]))
    snaps.remove("pod3.web")


@pytest.mark.parametrize("key", ["", ".", "..", "../x", "a/b", "-x", "a" * 200, "a\x00b"])
def test_bad_keys_are_refused(host_paths, blobs, key):
    snaps = OverlaySnapshotter(host_paths, blobs)
    with pytest.raises(StorageError, match="invalid snapshot key"):
        snaps.prepare(key, three_layer_image(blobs))
    with pytest.raises(StorageError, match="invalid snapshot key"):
        snaps.remove(key)
    assert not os.path.exists(host_paths.snapshots) or os.listdir(host_paths.snapshots) in ([], [".locks"])


def test_remove_refuses_a_busy_mount_and_deletes_nothing(host_paths, blobs):
    snaps = OverlaySnapshotter(host_paths, blobs)
    rootfs = snaps.prepare("busy.web", three_layer_image(blobs))
    with open(f"{rootfs}/work", "w") as fh:
        fh.write("in use")
    proc = subprocess.Popen(["sleep", "300"], cwd=f"{rootfs}/etc")
    try:
        with pytest.raises(StorageError, match="busy"):
            snaps.remove("busy.web")
        assert mounts.is_mountpoint(rootfs)
        assert (host_paths.snapshots / "busy.web" / "upper" / "work").read_text() == "in use"
    finally:
        proc.kill()
        proc.wait()
    snaps.remove("busy.web")
    snaps.remove("busy.web")  # idempotent
    assert snaps.list_snapshots() == []
    assert not (host_paths.snapshots / "busy.web").exists()
    assert not mounts.mounts_at_or_under(host_paths.runroot)


def test_remove_never_deletes_through_a_mount(host_paths, blobs, tmp_path):
    """Something mounted inside a snapshot (a bind mount of precious data) is unmounted before
    the delete, so the data survives."""
    snaps = OverlaySnapshotter(host_paths, blobs)
    rootfs = snaps.prepare("bind.web", three_layer_image(blobs))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("do not delete")
    os.mkdir(f"{rootfs}/mnt")
    mounts.mount(str(precious), f"{rootfs}/mnt", None, mounts.MS_BIND)
    snaps.remove("bind.web")
    assert (precious / "data").read_text() == "do not delete"
    assert not mounts.mounts_at_or_under(host_paths.runroot)


def test_gc_keeps_layers_of_snapshots_and_live_images(host_paths, blobs):
    a = blobs.image(BASE, [f("a-only", "a")])
    b = blobs.image(BASE, [f("b-only", "b")])
    snaps = OverlaySnapshotter(host_paths, blobs)
    snaps.prepare("gc.a", a)
    snaps.prepare("gc.b", b)
    snaps.remove("gc.b")
    store = snaps.layers
    assert len(store.list_layers()) == 3
    removed = snaps.gc(live_images=[])
    assert len(removed) == 1  # b's top layer: no image, no snapshot
    assert len(store.list_layers()) == 2
    assert snaps.gc(live_images=[b]) == []  # nothing else to remove
    snaps.remove("gc.a")
    assert len(snaps.gc(live_images=[b])) == 1  # a's top layer; the shared base stays for b
    assert len(snaps.gc(live_images=[])) == 1
    assert store.list_layers() == []
    assert os.listdir(host_paths.layers / "l") == []
    # The layers come back when needed.
    rootfs = snaps.prepare("gc.again", a)
    assert Path(f"{rootfs}/a-only").read_text() == "a"
    snaps.remove("gc.again")


def test_crash_leftovers_are_cleaned_up(host_paths, blobs):
    image = three_layer_image(blobs)
    snaps = OverlaySnapshotter(host_paths, blobs)
    snaps.prepare("crash.web", image)
    snaps.remove("crash.web")
    # What a crash leaves: half an unpack, a link to it, half a snapshot.
    (host_paths.layers / "sha256-dead.incomplete" / "diff").mkdir(parents=True)
    os.symlink("../sha256-dead/diff", host_paths.layers / "l" / "DEADLINK")
    (host_paths.snapshots / ".tmp-crash.web-0123abcd" / "upper").mkdir(parents=True)
    fresh = OverlaySnapshotter(host_paths, blobs)
    fresh.gc(live_images=[image])
    assert not (host_paths.layers / "sha256-dead.incomplete").exists()
    assert not os.path.lexists(host_paths.layers / "l" / "DEADLINK")
    assert not (host_paths.snapshots / ".tmp-crash.web-0123abcd").exists()
    assert len(fresh.layers.list_layers()) == 3


def test_an_overlay_probe_left_mounted_by_a_killed_process_is_removed(host_paths, blobs):
    from reconciler.storage.layers import flocked

    image = three_layer_image(blobs)
    probes = {}
    for tag in ("0badc0de", "1f2e3d4c"):
        probe = host_paths.snapshots / f".probe-{tag}"
        for sub in ("lower", "upper", "work", "merged"):
            (probe / sub).mkdir(parents=True)
        mounts.mount("overlay", probe / "merged", "overlay", mounts.MS_NODEV,
                     f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}")
        probes[tag] = probe
    dead, live = probes.values()
    try:
        # The live one's process still holds its lock: it is not touched.
        with flocked(host_paths.snapshots / ".locks" / f"probe-{live.name.split('-')[1]}.lock"):
            snaps = OverlaySnapshotter(host_paths, blobs)
            snaps.prepare("probe.web", image)
            assert not dead.exists()
            assert mounts.is_mountpoint(live / "merged")
        snaps.remove("probe.web")
    finally:
        for probe in probes.values():
            mounts.remove_tree(probe)


class _SlowBlobs(BlobStore):
    """Reads blobs in small pieces so two processes really overlap in their unpacks."""

    def open_blob(self, digest):
        import io

        self.opened.append(digest)
        raw = io.BytesIO(self.blobs[digest])

        class Slow:
            def read(self, n=-1):
                return raw.read(min(n, 4096) if n and n > 0 else 4096)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Slow()


def _prepare_in_child(paths, blobs, image, queue):
    store = LayerStore(paths, blobs)
    layers = store.ensure_layers(image)
    queue.put(([str(x.path) for x in layers], blobs.opened))


def test_two_processes_unpack_a_shared_layer_once(host_paths):
    blobs = _SlowBlobs()
    image = blobs.image([f(f"dir{i // 100}/f{i}", os.urandom(100)) for i in range(3000)])
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(host_paths, blobs, image, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert results[0][0] == results[1][0]
    assert sum(len(opened) for _, opened in results) == 1  # the loser waited and found it done
    assert len(os.listdir(host_paths.layers / "l")) == 1
    assert not [n for n in os.listdir(host_paths.layers) if n.endswith(".incomplete")]
    assert len(os.listdir(results[0][0][0])) == 30
