"""Unpack budgets: a layer (and an image) may expand only into the free space of the layer
store's file system, less a reserve; a decompression bomb is refused before it fills the disk,
and the refusal leaves nothing behind. The layer store gets its own small tmpfs here, so that
"free space" is something the test controls."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import tarfile

import pytest

from reconciler.errors import StorageError
from reconciler.observed import LayerInfo
from reconciler.storage import mounts
from reconciler.storage.layers import INCOMPLETE, LayerStore
from reconciler.storage.unpack import UnpackLimits
from tests.host.storage.kit import GZIP, BlobStore, f, sha256, tar_bytes
from tests.support.registry import registry  # noqa: F401 - a fixture

MiB = 1 << 20


@pytest.fixture
def small_store(host_paths):
    """The layer store's directory on a 64 MiB tmpfs (unmounted afterwards)."""
    host_paths.layers.mkdir(parents=True)
    mounts.mount("tmpfs", host_paths.layers, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV, "size=64m,mode=0700")
    try:
        yield host_paths
    finally:
        mounts.remove_tree(host_paths.layers)


def zeros_layer(blobs: BlobStore, name: str, size: int, *, exact_diff_id: bool = True) -> LayerInfo:
    """A gzip layer holding one file of ``size`` zero bytes, made of concatenated gzip members
    (one per MiB), so that a 3 GiB file costs about 3 MiB of blob and no time to build."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = 0o644
    header = ti.tobuf(tarfile.PAX_FORMAT)
    member = gzip.compress(bytes(MiB), 9)
    tail = bytes(-size % 512) + bytes(1024)
    blob = gzip.compress(header) + member * (size // MiB) + gzip.compress(bytes(size % MiB) + tail)
    if exact_diff_id:
        raw = io.BytesIO()
        raw.write(header)
        raw.write(bytes(size))
        raw.write(tail)
        diff_id = sha256(raw.getvalue())
    else:
        diff_id = sha256(name.encode())  # never reached: the budget refuses the layer first
    return LayerInfo(blobs.put(blob), diff_id, GZIP, len(blob))


def image(blobs: BlobStore, *layers: LayerInfo, name: str = "localhost/bomb:latest"):
    return dataclasses.replace(blobs.image(*layers), names=(name,))


def assert_nothing_half_made(paths) -> None:
    leftovers = [n for n in os.listdir(paths.layers) if n.endswith(INCOMPLETE)]
    assert not leftovers, f"half-unpacked layers left: {leftovers}"


def test_gzip_bomb_is_refused_by_the_free_space_budget(small_store):
    blobs = BlobStore()
    bomb = zeros_layer(blobs, "zeros", 3 << 30, exact_diff_id=False)  # ~3 MiB expanding to 3 GiB
    assert bomb.size < 4 * MiB
    store = LayerStore(small_store, blobs)
    with pytest.raises(StorageError) as err:
        store.ensure_layers(image(blobs, bomb))
    text = str(err.value)
    assert "image localhost/bomb:latest" in text and bomb.digest in text and "compressed" in text
    assert f"{small_store.layers} has" in text and "free" in text and "reserve" in text
    assert "refused, nothing of it was kept" in text
    assert store.list_layers() == []
    assert_nothing_half_made(small_store)
    st = os.statvfs(small_store.layers)
    assert st.f_bfree * st.f_frsize > 60 * MiB  # the refused bytes went with it


def test_the_image_budget_counts_every_layer_of_the_image(small_store):
    blobs = BlobStore()
    first = zeros_layer(blobs, "first", 40 * MiB)
    second = zeros_layer(blobs, "second", 40 * MiB)  # fits alone, not after the first
    store = LayerStore(small_store, blobs)
    with pytest.raises(StorageError) as err:
        store.ensure_layers(image(blobs, first, second))
    text = str(err.value)
    assert second.digest in text and "other layers took 40.0 MiB" in text
    # The first layer is complete and kept (the next image may share it); the second left nothing.
    assert len(store.list_layers()) == 1
    assert_nothing_half_made(small_store)


def test_a_layer_that_fits_is_unpacked(small_store):
    blobs = BlobStore()
    layer = zeros_layer(blobs, "fits", 8 * MiB)
    [got] = LayerStore(small_store, blobs).ensure_layers(image(blobs, layer))
    assert os.path.getsize(got.path / "fits") == 8 * MiB


def test_the_per_layer_cap_applies_however_much_is_free(host_paths):
    blobs = BlobStore()
    layer = blobs.layer(tar_bytes([f("big", b"x" * (2 * MiB))]))
    store = LayerStore(host_paths, blobs, limits=UnpackLimits(max_bytes=MiB))
    with pytest.raises(StorageError, match=r"expands to more than 1.0 MiB, the limit for one layer"):
        store.ensure_layers(image(blobs, layer))
    assert store.list_layers() == []
    assert_nothing_half_made(host_paths)


def test_a_bomb_pulled_from_a_registry_is_refused_at_prepare(small_store, registry, tmp_path, monkeypatch):  # noqa: F811
    """The whole way: the 3 MiB blob is pulled (it is small), and preparing a container's
    snapshot refuses it with the image's name; no layer, snapshot or mount is left."""
    import json

    from reconciler.images.driver import LocalImageStore
    from reconciler.images.platform import host_platform
    from reconciler.storage.snapshots import OverlaySnapshotter

    conf = tmp_path / "registries.conf"
    conf.write_text("")
    monkeypatch.setenv("PODPLAY_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    blobs = BlobStore()
    bomb = zeros_layer(blobs, "zeros", 3 << 30, exact_diff_id=False)
    repo = "budget/bomb"
    registry.put_blob(repo, blobs.blobs[bomb.digest])
    config = json.dumps({"architecture": host_platform().architecture, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [bomb.diff_id]}}).encode()
    config_digest = registry.put_blob(repo, config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": len(config)},
                "layers": [{"mediaType": GZIP, "digest": bomb.digest, "size": bomb.size}]}
    registry.put_manifest(repo, "latest", json.dumps(manifest).encode(), manifest["mediaType"])
    images = LocalImageStore(small_store, retries=1, backoff=0.01, timeout=10)
    try:
        ref = registry.ref(repo)
        image = images.ensure_image(ref, "IfNotPresent")
        snapshots = OverlaySnapshotter(small_store, images)
        with pytest.raises(StorageError) as err:
            snapshots.prepare("c0ffee-app", image)
        assert f"image {ref}" in str(err.value) and bomb.digest in str(err.value) and "free" in str(err.value)
        assert snapshots.list_snapshots() == []
        assert not mounts.mounts_at_or_under(small_store.runroot)
        assert_nothing_half_made(small_store)
    finally:
        images.close()
