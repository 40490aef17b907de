"""Pulling every shape real registries serve, checked against skopeo's view of the same image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from reconciler.errors import EXIT_IMAGE, ImageError
from reconciler.images.registry import ImageNotFoundError
from tests.host.images.conftest import (
    RecordingProgress,
    assert_nothing_stored,
    assert_store_verified,
    skopeo_inspect,
)
from tests.support.images import make_busybox_image

SHAPES = {
    "oci-gzip": dict(compression="gzip"),
    "oci-zstd": dict(compression="zstd"),
    "oci-uncompressed": dict(compression="none"),
    "docker-v2s2": dict(format="v2s2"),
    "multi-layer": dict(layers=3),
}
LAYER_TYPES = {
    "oci-gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "oci-zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "oci-uncompressed": "application/vnd.oci.image.layer.v1.tar",
    "docker-v2s2": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "multi-layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}


def _check_against_skopeo(store, info, ref: str) -> None:
    """The image podplay stored is the one skopeo sees in the registry, byte for byte."""
    remote = skopeo_inspect(ref)
    config_raw = skopeo_inspect(ref, "--config", "--raw")
    assert info.id == "sha256:" + hashlib.sha256(config_raw).hexdigest()
    assert [layer.digest for layer in info.layers] == remote["Layers"]
    config = json.loads(config_raw)
    assert [layer.diff_id for layer in info.layers] == config["rootfs"]["diff_ids"]
    assert list(info.config.env) == config["config"]["Env"]
    assert list(info.config.cmd) == config["config"]["Cmd"]
    for layer in info.layers:
        with store.open_blob(layer.digest) as f:
            data = f.read()
        assert len(data) == layer.size
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest


@pytest.mark.parametrize("shape", SHAPES)
def test_pull_each_shape(make_store, registry, repo, host_paths, shape):
    pushed = make_busybox_image(registry, repo, **SHAPES[shape])
    store = make_store()
    info = store.pull(pushed.ref)
    top = skopeo_inspect(pushed.ref)["Digest"]
    assert top == pushed.digest == info.manifest_digest
    assert {layer.media_type for layer in info.layers} == {LAYER_TYPES[shape]}
    assert len(info.layers) == SHAPES[shape].get("layers", 1)
    _check_against_skopeo(store, info, pushed.ref)
    assert store.get_image(pushed.ref) == info
    assert store.get_image(info.id) == info
    assert store.get_image(info.id[7:19]) == info  # a unique id prefix
    assert info.names == (pushed.ref,)
    assert_store_verified(host_paths, images=1)


def test_pull_manifest_without_media_type(make_store, registry, repo, image_factory, host_paths):
    pushed = image_factory.push_without_media_type(registry, repo)
    raw = skopeo_inspect(pushed.ref, "--raw")
    assert "mediaType" not in json.loads(raw)  # really the shape under test
    info = make_store().pull(pushed.ref)
    assert info.manifest_digest == pushed.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert_store_verified(host_paths, images=1)


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_pull_multi_platform_picks_the_host(make_store, registry, repo, image_factory, host_paths, fmt):
    pushed = image_factory.push_index(registry, repo, format=fmt)
    index = json.loads(skopeo_inspect(pushed.ref, "--raw"))
    expected_type = {"oci": "application/vnd.oci.image.index.v1+json",
                     "v2s2": "application/vnd.docker.distribution.manifest.list.v2+json"}[fmt]
    assert index["mediaType"] == expected_type
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    store = make_store(platform="linux/amd64/v3")
    info = store.pull(pushed.ref)
    assert (info.os, info.architecture) == ("linux", "amd64")
    assert info.manifest_digest == by_arch["amd64"]
    assert info.config.labels["platform"] == "linux/amd64"
    rec = store.record(pushed.ref)
    # What the tag points at (the index) is what a HEAD will report later.
    assert rec.names[pushed.ref] == pushed.digest and rec.index == pushed.digest
    assert f"{registry.host}/{repo}@{pushed.digest}" in rec.repo_digests
    # the pull by the index digest finds the same image without a new name being needed
    assert store.get_image(f"{registry.host}/{repo}@{pushed.digest}").id == info.id
    assert_store_verified(host_paths, images=1)


@pytest.mark.parametrize(("platform", "arch", "variant"), [
    ("linux/arm64", "arm64", "v8"),
    ("linux/arm64/v8", "arm64", "v8"),
    ("linux/arm/v7", "arm", "v7"),
    ("linux/arm/v8", "arm", "v7"),   # an armv8 32-bit host runs v7 images
])
def test_pull_platform_override(make_store, registry, repo, image_factory, platform, arch, variant):
    pushed = image_factory.push_index(registry, repo)
    index = json.loads(skopeo_inspect(pushed.ref, "--raw"))
    expected = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == arch)
    info = make_store().pull(pushed.ref, platform=platform)
    assert info.manifest_digest == expected
    assert info.architecture == arch
    assert info.config.labels["platform"] == f"linux/{arch}/{variant}"


def test_platform_missing_from_index_is_clear(make_store, registry, repo, image_factory, host_paths):
    pushed = image_factory.push_index(registry, repo)
    with pytest.raises(ImageError) as err:
        make_store(platform="linux/s390x").pull(pushed.ref)
    assert "no image for platform linux/s390x" in str(err.value)
    assert "linux/amd64, linux/arm/v7, linux/arm64" in str(err.value)
    assert_nothing_stored(host_paths)


def test_single_platform_image_for_another_arch_is_refused(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo, config={"arch": "arm64"})
    with pytest.raises(ImageError) as err:
        make_store(platform="linux/amd64").pull(pushed.ref)
    assert "linux/arm64" in str(err.value) and "cannot run" in str(err.value)
    assert make_store(platform="linux/arm64").pull(pushed.ref).architecture == "arm64"


def test_pull_by_digest_and_tag_plus_digest(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo, tag="v1")
    store = make_store()
    info = store.pull(pushed.by_digest)
    assert info.names == (pushed.by_digest,)
    assert store.get_image(pushed.ref) is None  # the tag was not pulled
    # tag@digest: the digest decides, the tag is not trusted
    info2 = store.pull(f"{registry.host}/{repo}:nonexistent-tag@{pushed.digest}")
    assert info2.id == info.id
    assert store.get_image(pushed.by_digest).id == info.id
    assert_store_verified(host_paths, images=1)


def test_missing_image_is_a_clear_error_and_stores_nothing(make_store, registry, repo, host_paths):
    with pytest.raises(ImageNotFoundError) as err:
        make_store().pull(f"{registry.host}/{repo}:nope")
    assert "not found" in str(err.value) and "MANIFEST_UNKNOWN" in str(err.value)
    assert err.value.exit_code == EXIT_IMAGE and not err.value.temporary
    assert_nothing_stored(host_paths)


def test_unreachable_registry_is_temporary(make_store, host_paths):
    from tests.support.registry import free_port

    with pytest.raises(ImageError) as err:
        make_store(retries=1).pull(f"127.0.0.1:{free_port()}/nothing/here:1")
    assert err.value.temporary and "cannot reach registry" in str(err.value)
    assert_nothing_stored(host_paths)


def test_shared_layers_are_downloaded_once(make_store, registry, repo, host_paths):
    small = make_busybox_image(registry, repo, tag="two", layers=2)
    big = make_busybox_image(registry, repo, tag="three", layers=3)
    progress = RecordingProgress()
    store = make_store(progress=progress)
    a = store.pull(small.ref)
    first = list(progress.downloaded)
    assert {layer.digest for layer in a.layers} <= set(first)
    b = store.pull(big.ref)
    again = progress.downloaded[len(first):]
    assert set(again) & {layer.digest for layer in a.layers} == set()
    assert b.layers[:2] == a.layers and b.layers[2].digest in again
    assert_store_verified(host_paths, images=2)


def test_retag_moves_the_name(make_store, registry, repo, host_paths):
    one = make_busybox_image(registry, repo, tag="t", config={"labels": {"v": "1"}})
    store = make_store()
    first = store.pull(one.ref)
    make_busybox_image(registry, repo, tag="t", config={"labels": {"v": "2"}})
    second = store.pull(one.ref)
    assert first.id != second.id
    assert store.get_image(one.ref).id == second.id
    # the old image stays, nameless (dangling) until pruned
    old = store.get_image(first.id)
    assert old is not None and old.names == ()
    result = store.prune(dangling=True)
    assert result.images_removed == (first.id,) and result.bytes_freed > 0
    assert store.get_image(first.id) is None and store.get_image(one.ref).id == second.id
    assert_store_verified(host_paths, images=1)


def test_concurrent_pulls_from_two_processes(host_paths, registry, repo, no_registries_conf):
    pushed = make_busybox_image(registry, repo, layers=3)
    code = (
        "import sys\n"
        "from reconciler.paths import HostPaths\n"
        "from reconciler.images.driver import LocalImageStore\n"
        "p = HostPaths(*map(__import__('pathlib').Path, sys.argv[1:4]))\n"
        "print(LocalImageStore(p).pull(sys.argv[4]).id)\n"
    )
    args = [sys.executable, "-c", code, str(host_paths.root), str(host_paths.runroot), str(host_paths.network_dir),
            pushed.ref]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o[0].strip() for o in outs}) == 1
    assert_store_verified(host_paths, images=1)


def test_resume_of_a_download_left_by_an_earlier_process(make_store, registry, repo, host_paths):
    """A partial blob on disk (a pull killed half-way) is resumed, not fetched again from zero,
    and the result is verified as a whole."""
    pushed = make_busybox_image(registry, repo)
    layer = json.loads(skopeo_inspect(pushed.ref, "--raw"))["layers"][0]
    status, _, data = registry.request("GET", f"/v2/{repo}/blobs/{layer['digest']}")
    assert status == 200 and len(data) == layer["size"]
    ingest = host_paths.images / "ingest"
    ingest.mkdir(parents=True)
    partial = ingest / f"sha256-{layer['digest'].split(':')[1]}.partial"
    partial.write_bytes(data[: len(data) // 2])
    info = make_store().pull(pushed.ref)
    assert info.layers[0].digest == layer["digest"]
    assert not partial.exists()
    assert_store_verified(host_paths, images=1)


def test_corrupt_partial_is_discarded_and_the_pull_fails_safely(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo)
    layer = json.loads(skopeo_inspect(pushed.ref, "--raw"))["layers"][0]
    ingest = host_paths.images / "ingest"
    ingest.mkdir(parents=True)
    partial = ingest / f"sha256-{layer['digest'].split(':')[1]}.partial"
    partial.write_bytes(b"\0" * 1000)  # garbage that a resume would trust if it did not verify
    with pytest.raises(ImageError, match="failed verification"):
        make_store().pull(pushed.ref)
    assert_nothing_stored(host_paths)
    # the next attempt starts from scratch and succeeds
    assert make_store().pull(pushed.ref).layers[0].digest == layer["digest"]
