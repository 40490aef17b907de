"""Tampered layouts and archives are refused with an error that names the blob or entry at fault,
and nothing is left behind: no image, no blob, no partial file, no half-written archive."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from reconciler.errors import ImageError, StorageError
from reconciler.images.importer import import_rootfs
from reconciler.images.transports import copy_image, load_images
from tests.host.images.conftest import assert_nothing_stored, assert_store_verified, blob_files
from tests.host.images.transport_kit import Podplay, sha, skopeo, skopeo_json
from tests.support.images import make_busybox_image


@pytest.fixture
def layout(registry, repo, tmp_path) -> tuple[Path, dict]:
    """A two-layer image as an OCI layout written by skopeo, and its manifest."""
    pushed = make_busybox_image(registry, repo, layers=2)
    path = tmp_path / "layout"
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{pushed.ref}", f"oci:{path}:v1")
    index = json.loads((path / "index.json").read_text())
    manifest = json.loads(blob(path, index["manifests"][0]["digest"]).read_bytes())
    return path, manifest


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def tar_dir(src: Path, dst: Path) -> None:
    with tarfile.open(dst, "w") as t:
        for p in sorted(src.rglob("*")):
            t.add(p, arcname=str(p.relative_to(src)), recursive=False)


def rewrite_tar(src: Path, dst: Path, edit) -> None:
    """Copy an archive member by member; ``edit(info, data)`` returns [(info, data)…] instead."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin.getmembers():
            data = tin.extractfile(info).read() if info.isreg() else None
            for new_info, new_data in edit(info, data):
                if new_data is not None:
                    new_info.size = len(new_data)
                tout.addfile(new_info, io.BytesIO(new_data) if new_data is not None else None)


def assert_untouched(host_paths) -> None:
    assert_nothing_stored(host_paths)
    assert blob_files(host_paths.images) == {}, "a refused copy left blobs in the store"


@pytest.mark.parametrize("what", ["layer", "config", "manifest"])
def test_flipped_byte_in_a_layout(make_store, layout, host_paths, what):
    path, manifest = layout
    digest = {"layer": manifest["layers"][1]["digest"], "config": manifest["config"]["digest"],
              "manifest": json.loads((path / "index.json").read_text())["manifests"][0]["digest"]}[what]
    flip(blob(path, digest))
    with pytest.raises(ImageError, match=f"{digest}.*failed verification") as err:
        copy_image(make_store(), f"oci:{path}:v1", "podplay:localhost/tampered:1")
    assert f"oci:{path}:v1" in str(err.value)
    assert_untouched(host_paths)


def test_manifest_pointing_at_a_missing_blob(make_store, layout, host_paths):
    path, manifest = layout
    missing = manifest["layers"][0]["digest"]
    blob(path, missing).unlink()
    with pytest.raises(ImageError, match=f"blob {missing} is missing"):
        copy_image(make_store(), f"oci:{path}:v1", "podplay:localhost/incomplete:1")
    assert_untouched(host_paths)


def test_blob_that_is_a_symlink_in_a_layout_directory(make_store, layout, host_paths, tmp_path):
    path, manifest = layout
    layer = blob(path, manifest["layers"][0]["digest"])
    outside = tmp_path / "elsewhere"
    layer.rename(outside)
    layer.symlink_to(outside)  # same content, but a layout is no place to point elsewhere
    with pytest.raises(ImageError, match="symbolic link"):
        copy_image(make_store(), f"oci:{path}:v1", "podplay:localhost/linked:1")
    assert_untouched(host_paths)


def test_tampered_oci_archive_is_refused_by_load(make_store, layout, host_paths, tmp_path):
    path, manifest = layout
    flip(blob(path, manifest["layers"][1]["digest"]))
    archive = tmp_path / "tampered.tar"
    tar_dir(path, archive)
    with pytest.raises(ImageError, match=f"{manifest['layers'][1]['digest']}.*failed verification"):
        load_images(make_store(), archive)
    assert_untouched(host_paths)
    # into a new layout: the layout the copy began is gone again
    with pytest.raises(ImageError, match="failed verification"):
        copy_image(make_store(), f"oci-archive:{archive}:v1", f"oci:{tmp_path / 'new'}:v1")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("target", "message"), [
    ("/etc/passwd", "absolute path '/etc/passwd', outside the archive"),
    ("../../../../etc/passwd", "outside the archive"),
])
def test_symlink_out_of_an_archive(make_store, layout, host_paths, tmp_path, target, message):
    path, manifest = layout
    name = f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"
    good = tmp_path / "good.tar"
    tar_dir(path, good)

    def edit(info, data):
        if info.name == name:
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            return [(link, None)]
        return [(info, data)]

    hostile = tmp_path / "hostile.tar"
    rewrite_tar(good, hostile, edit)
    with pytest.raises(ImageError, match=message):
        load_images(make_store(), hostile)
    with pytest.raises(ImageError, match=message):
        copy_image(make_store(), f"oci-archive:{hostile}:v1", f"oci:{tmp_path / 'out'}:v1")
    assert not (tmp_path / "out").exists()
    assert_untouched(host_paths)


@pytest.fixture
def docker_archive(make_store, registry, repo, tmp_path) -> Path:
    pushed = make_busybox_image(registry, repo, layers=2)
    path = tmp_path / "docker.tar"
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{pushed.ref}",
           f"docker-archive:{path}:localhost/victim:1")
    return path


def archived_manifest(path: Path) -> list:
    with tarfile.open(path) as t:
        return json.loads(t.extractfile("manifest.json").read())


@pytest.mark.parametrize("entry", ["../../etc/passwd", "/etc/passwd", "a/../../../x.tar"])
def test_path_traversal_in_docker_archive_layers(make_store, docker_archive, host_paths, tmp_path, entry):
    def edit(info, data):
        if info.name == "manifest.json":
            doc = json.loads(data)
            doc[0]["Layers"][1] = entry
            return [(info, json.dumps(doc).encode())]
        return [(info, data)]

    hostile = tmp_path / "hostile.tar"
    rewrite_tar(docker_archive, hostile, edit)
    podplay = Podplay(host_paths, tmp_path)
    res = podplay("load", "-i", str(hostile), ok=False)
    assert res.returncode == 5
    assert b"Layers[1]" in res.stderr and (b"leaves the archive" in res.stderr or b"absolute path" in res.stderr)
    assert b"Traceback" not in res.stderr
    assert_untouched(host_paths)


def test_tampered_docker_archive_layer(make_store, docker_archive, host_paths, tmp_path):
    layer = archived_manifest(docker_archive)[0]["Layers"][1]

    def edit(info, data):
        if info.name == layer:
            data = bytearray(data)
            data[1000] ^= 0x01
            return [(info, bytes(data))]
        return [(info, data)]

    hostile = tmp_path / "hostile.tar"
    rewrite_tar(docker_archive, hostile, edit)
    diff_id = "sha256:" + layer.split(".")[0].split("/")[-1]
    with pytest.raises(ImageError, match=f"{diff_id} failed verification"):
        load_images(make_store(), hostile)
    assert_untouched(host_paths)
    # the same archive into another archive: refused, and no archive appears
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ImageError, match="failed verification"):
        copy_image(make_store(), f"docker-archive:{hostile}", f"oci-archive:{out / 'x.tar'}")
    assert list(out.iterdir()) == []


def test_gzip_layer_that_is_not_its_diff_id(make_store, docker_archive, host_paths, tmp_path):
    """A docker-archive may carry gzip layers; their content must still be the config's diff_id."""
    layer = archived_manifest(docker_archive)[0]["Layers"][1]

    def edit(info, data):
        if info.name == layer:
            return [(info, gzip.compress(data + b"\0" * 512))]  # one more zero block: another diff_id
        return [(info, data)]

    hostile = tmp_path / "hostile.tar"
    rewrite_tar(docker_archive, hostile, edit)
    with pytest.raises(ImageError, match="does not match the image config"):
        load_images(make_store(), hostile)
    assert_untouched(host_paths)

    def good_gzip(info, data):
        return [(info, gzip.compress(data) if info.name == layer else data)]

    fine = tmp_path / "gzip-layers.tar"
    rewrite_tar(docker_archive, fine, good_gzip)
    (loaded,) = load_images(make_store(), fine)
    assert loaded.names == ("localhost/victim:1",)
    assert_store_verified(host_paths, images=1)


def test_refused_copy_keeps_what_other_images_use(make_store, registry, repo, tmp_path, host_paths):
    """The store held an image already: a refused copy of an image sharing its base layer takes
    back only what it added."""
    base = make_busybox_image(registry, repo, layers=1)
    store = make_store()
    kept = store.pull(base.ref)
    before = set(blob_files(host_paths.images))
    bigger = make_busybox_image(registry, repo, tag="bigger", layers=2)
    path = tmp_path / "layout"
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{bigger.ref}", f"oci:{path}:v1")
    manifest = json.loads(blob(path, json.loads((path / "index.json").read_text())["manifests"][0]["digest"])
                          .read_bytes())
    assert manifest["layers"][0]["digest"] == kept.layers[0].digest
    flip(blob(path, manifest["layers"][1]["digest"]))
    with pytest.raises(ImageError, match="failed verification"):
        copy_image(store, f"oci:{path}:v1", "podplay:localhost/bigger:1")
    assert set(blob_files(host_paths.images)) == before
    assert_store_verified(host_paths, images=1)
    assert store.get_image(base.ref).id == kept.id


def test_tampered_source_never_reaches_a_registry(make_store, layout, registry, repo, host_paths):
    path, manifest = layout
    flip(blob(path, manifest["layers"][1]["digest"]))
    dest = f"{registry.host}/{repo}-never:1"
    with pytest.raises(ImageError, match="failed verification"):
        copy_image(make_store(), f"oci:{path}:v1", f"docker://{dest}")
    assert skopeo("inspect", "--tls-verify=false", f"docker://{dest}", check=False).returncode != 0
    status, _, _ = registry.request("HEAD", f"/v2/{repo}-never/blobs/{manifest['layers'][1]['digest']}")
    assert status == 404


def test_hostile_rootfs_imports_but_never_unpacks_outside(make_store, host_paths, tmp_path):
    """import only hashes and stores a tarball; the storage driver refuses its escape later."""
    from reconciler.storage.unpack import unpack_layer

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, value in (("bin/ok", "file", b"fine"), ("../escape", "file", b"gotcha"),
                                  ("etc/shadow-link", "sym", "/etc/shadow")):
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(value)
                t.addfile(ti, io.BytesIO(value))
            else:
                ti.type, ti.linkname = tarfile.SYMTYPE, value
                t.addfile(ti)
    rootfs = tmp_path / "hostile-rootfs.tar"
    rootfs.write_bytes(buf.getvalue())
    store = make_store()
    rec = import_rootfs(store, rootfs, "localhost/hostile:1")
    info = store.get_image(rec.id)
    assert info.layers[0].diff_id == sha(buf.getvalue())
    work = tmp_path / "work"
    work.mkdir()
    with store.open_blob(info.layers[0].digest) as f, pytest.raises(StorageError, match="escape"):
        unpack_layer(f, work / "layer", diff_id=info.layers[0].diff_id)
    assert os.listdir(work) == []
    assert not (tmp_path / "escape").exists() and not (work.parent / "escape").exists()
    # a third party reads the stored image just the same
    out = tmp_path / "layout"
    copy_image(store, "localhost/hostile:1", f"oci:{out}:h")
    assert skopeo_json(f"oci:{out}:h")["Layers"] == [info.layers[0].digest]
    shutil.rmtree(out)
