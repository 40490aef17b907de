"""Copying images between transports with real components: docker-registry, skopeo as the
third-party reader and writer of layouts and archives, podplay's store. Digests are compared
with what skopeo sees at every step where they are comparable."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile

import pytest

from reconciler.errors import ImageError, InputError
from reconciler.images.transports import CopyOptions, Credentials, copy_image
from reconciler.paths import HostPaths
from tests.host.images.conftest import assert_store_verified, blob_files, skopeo_inspect
from tests.host.images.transport_kit import Podplay, sha, skopeo, skopeo_config, skopeo_json, skopeo_raw
from tests.support.images import make_busybox_image

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def podplay(host_paths, tmp_path):
    return Podplay(host_paths, tmp_path)


def test_round_trip_through_every_transport(make_store, registry, repo, tmp_path, host_paths):
    """docker:// → oci: → oci-archive: → store → docker-archive: → docker://, read by skopeo at
    every step; the image id (config digest) survives the whole trip."""
    pushed = make_busybox_image(registry, repo, layers=2, config={"env": {"GREETING": "hi"}})
    store = make_store()
    origin = skopeo_inspect(pushed.ref)
    config = skopeo_config(f"docker://{pushed.ref}")
    image_id = sha(config)
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]

    layout = tmp_path / "layout"
    res = copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:v1")
    assert res.digest == pushed.digest  # an OCI image is copied byte for byte
    theirs = skopeo_json(f"oci:{layout}:v1")
    assert theirs["Digest"] == pushed.digest and theirs["Layers"] == origin["Layers"]
    assert skopeo_raw(f"oci:{layout}:v1") == skopeo_inspect(pushed.ref, "--raw")

    archive = tmp_path / "image.oci.tar"
    res = copy_image(store, f"oci:{layout}:v1", f"oci-archive:{archive}:busybox")
    assert res.digest == pushed.digest
    assert skopeo_json(f"oci-archive:{archive}:busybox")["Digest"] == pushed.digest

    res = copy_image(store, f"oci-archive:{archive}:busybox", "podplay:localhost/trip:1")
    assert res.image_id == image_id and res.names == ("localhost/trip:1",)
    info = store.get_image("localhost/trip:1")
    assert info.manifest_digest == pushed.digest
    assert [layer.digest for layer in info.layers] == origin["Layers"]
    assert "GREETING=hi" in info.config.env
    assert_store_verified(host_paths, images=1)

    darchive = tmp_path / "image.docker.tar"
    copy_image(store, "localhost/trip:1", f"docker-archive:{darchive}:localhost/trip:1")
    theirs = skopeo_json(f"docker-archive:{darchive}")
    assert theirs["Layers"] == diff_ids  # docker save layers are uncompressed: digest = diff_id
    assert sha(skopeo_config(f"docker-archive:{darchive}")) == image_id
    manifest = json.loads(_member(darchive, "manifest.json"))
    assert manifest == [{"Config": f"{image_id[7:]}.json", "RepoTags": ["localhost/trip:1"],
                         "Layers": [f"{d[7:]}.tar" for d in diff_ids]}]

    back = f"{registry.host}/{repo}-back:v2"
    res = copy_image(store, f"docker-archive:{darchive}", f"docker://{back}")
    theirs = skopeo_inspect(back)
    assert theirs["Digest"] == res.digest and theirs["Layers"] == diff_ids
    assert sha(skopeo_config(f"docker://{back}")) == image_id
    assert json.loads(skopeo_inspect(back, "--raw"))["mediaType"] == DOCKER_MANIFEST


def _member(archive, name: str) -> bytes:
    with tarfile.open(archive) as t:
        return t.extractfile(name).read()


def test_skopeo_archives_are_read_and_ours_are_read_by_podman_tools(podplay, registry, repo, tmp_path, host_paths):
    pushed = make_busybox_image(registry, repo, layers=2)
    image_id = sha(skopeo_config(f"docker://{pushed.ref}"))
    oci_tar, docker_tar = tmp_path / "skopeo-oci.tar", tmp_path / "skopeo-docker.tar"
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{pushed.ref}", f"oci-archive:{oci_tar}:img")
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{pushed.ref}",
           f"docker-archive:{docker_tar}:localhost/from-skopeo:1")

    # inspect reads archives like skopeo does, without storing anything
    ours = json.loads(podplay.text("inspect", f"docker-archive:{docker_tar}"))
    theirs = skopeo_json(f"docker-archive:{docker_tar}")
    assert ours["Layers"] == theirs["Layers"] and ours["Architecture"] == theirs["Architecture"]
    ours = json.loads(podplay.text("inspect", f"oci-archive:{oci_tar}:img"))
    assert ours["Digest"] == skopeo_json(f"oci-archive:{oci_tar}:img")["Digest"]
    assert blob_files(host_paths.images) == {}

    assert podplay.text("load", "-i", str(oci_tar)) == "Loaded image: localhost/img:latest\n"
    assert podplay.text("load", "-i", str(docker_tar)) == "Loaded image: localhost/from-skopeo:1\n"
    listed = json.loads(podplay.text("images", "--output", "json"))
    assert {n for img in listed for n in img["Names"]} == {"localhost/img:latest", "localhost/from-skopeo:1"}
    assert {img["Id"] for img in listed} == {image_id[7:]}  # the same image, whichever way it came
    assert_store_verified(host_paths, images=1)

    # what we save, skopeo reads (and podman loads: it uses the same library)
    # (the docker-archive load came last: the store keeps its uncompressed layers for this image)
    podplay("save", "-o", str(tmp_path / "ours.tar"), "localhost/img")
    assert sha(skopeo_config(f"docker-archive:{tmp_path / 'ours.tar'}")) == image_id
    assert skopeo_json(f"docker-archive:{tmp_path / 'ours.tar'}")["Layers"] == theirs["Layers"]
    podplay("save", "--format", "oci-archive", "-o", str(tmp_path / "ours.oci.tar"), "localhost/from-skopeo:1")
    assert sha(skopeo_config(f"oci-archive:{tmp_path / 'ours.oci.tar'}:localhost/from-skopeo:1")) == image_id


def test_save_and_load_for_an_air_gapped_host(podplay, registry, repo, tmp_path):
    """Several images in one docker-archive (shared layers stored once), loaded on a host that
    has nothing: from a file, gzip-compressed, from standard input."""
    one = make_busybox_image(registry, repo, layers=1)
    two = make_busybox_image(registry, repo, tag="two", layers=2)
    podplay("pull", one.ref)
    podplay("pull", two.ref)
    archive = tmp_path / "images.tar"
    podplay("save", "-o", str(archive), one.ref, two.ref)
    entries = json.loads(_member(archive, "manifest.json"))
    assert [e["RepoTags"] for e in entries] == [[one.ref], [two.ref]]
    assert entries[1]["Layers"][0] == entries[0]["Layers"][0]  # the shared base layer
    with tarfile.open(archive) as t:
        names = t.getnames()
    assert names.count(entries[0]["Layers"][0]) == 1

    ids = {json.loads(podplay.text("inspect", r))[0]["Id"] for r in (one.ref, two.ref)}
    for how in ("file", "gzip", "stdin"):
        fresh = HostPaths(tmp_path / how / "root", tmp_path / how / "run", tmp_path / how / "net")
        other = Podplay(fresh, tmp_path)
        if how == "file":
            out = other.text("load", "-i", str(archive))
        elif how == "gzip":
            gz = tmp_path / "images.tar.gz"
            gz.write_bytes(gzip.compress(archive.read_bytes()))
            out = other.text("load", "--input", str(gz))
        else:
            with open(archive, "rb") as f:
                out = other.text("load", stdin_file=f)
        assert out.splitlines() == [f"Loaded image: {one.ref}", f"Loaded image: {two.ref}"]
        assert {json.loads(other.text("inspect", r))[0]["Id"] for r in (one.ref, two.ref)} == ids
        assert_store_verified(fresh, images=2)

    # save to standard output
    res = podplay("save", one.ref)
    with tarfile.open(fileobj=io.BytesIO(res.stdout)) as t:
        assert json.loads(t.extractfile("manifest.json").read())[0]["RepoTags"] == [one.ref]
    # an oci-archive of two images names each entry by its full name
    podplay("save", "--format", "oci-archive", "-o", str(tmp_path / "two.oci.tar"), one.ref, two.ref)
    index = json.loads(_member(tmp_path / "two.oci.tar", "index.json"))
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [one.ref, two.ref]


def test_all_platforms_where_the_destination_holds_an_index(make_store, registry, repo, image_factory, tmp_path):
    pushed = image_factory.push_index(registry, repo, tag="multi")
    store = make_store()
    layout = tmp_path / "layout"
    res = copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:all", options=CopyOptions(all_platforms=True))
    assert res.digest == pushed.digest and res.media_type == OCI_INDEX
    assert skopeo_raw(f"oci:{layout}:all") == skopeo_inspect(pushed.ref, "--raw")
    for arch, variant in (("amd64", ""), ("arm64", "v8"), ("arm", "v7")):
        extra = ["--override-arch", arch] + (["--override-variant", variant] if variant else [])
        assert skopeo_json(f"oci:{layout}:all", *extra)["Architecture"] == arch

    dest = f"{registry.host}/{repo}-copy:multi"
    res = copy_image(store, f"oci:{layout}:all", f"docker://{dest}", options=CopyOptions(all_platforms=True))
    assert res.digest == pushed.digest
    assert skopeo_inspect(dest, "--raw") == skopeo_inspect(pushed.ref, "--raw")
    assert skopeo_inspect(dest, "--override-arch", "arm64", "--override-variant", "v8")["Architecture"] == "arm64"

    # without --all one platform is chosen, and only that image is written
    res = copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:arm64",
                     options=CopyOptions(platform="linux/arm64"))
    assert skopeo_json(f"oci:{layout}:arm64")["Architecture"] == "arm64"
    assert res.media_type == OCI_MANIFEST

    for where, message in (("podplay:localhost/x", "one platform per image"),
                           (f"docker-archive:{tmp_path / 'd.tar'}", "one image per name")):
        with pytest.raises(ImageError, match=message):
            copy_image(store, f"docker://{pushed.ref}", where, options=CopyOptions(all_platforms=True))
    assert not (tmp_path / "d.tar").exists()


def test_docker_manifest_list_becomes_an_oci_index_in_a_layout(make_store, registry, repo, image_factory, tmp_path):
    """oci: layouts hold OCI manifests (as skopeo writes them): a Docker list is converted, every
    child with it, and the layers stay as they are."""
    pushed = image_factory.push_index(registry, repo, tag="v2list", format="v2s2",
                                      platforms=("linux/amd64", "linux/arm64/v8"))
    store = make_store()
    layout = tmp_path / "layout"
    copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:l", options=CopyOptions(all_platforms=True))
    index = json.loads(skopeo_raw(f"oci:{layout}:l"))
    assert index["mediaType"] == OCI_INDEX
    assert {m["mediaType"] for m in index["manifests"]} == {OCI_MANIFEST}
    for arch, variant in (("amd64", ""), ("arm64", "v8")):
        extra = ["--override-arch", arch] + (["--override-variant", variant] if variant else [])
        ours = skopeo_json(f"oci:{layout}:l", *extra)
        origin = skopeo_inspect(pushed.ref, *extra)
        assert ours["Layers"] == origin["Layers"] and ours["Architecture"] == arch
        assert skopeo_config(f"oci:{layout}:l", *extra) == skopeo_config(f"docker://{pushed.ref}", *extra)


def test_push_needs_and_uses_credentials(podplay, registry, auth_registry, repo, tmp_path):
    pushed = make_busybox_image(registry, repo)
    podplay("pull", pushed.ref)
    podplay("tag", pushed.ref, "localhost/app:1")
    dest = f"{auth_registry.host}/{repo}:pushed"

    res = podplay("push", "localhost/app:1", dest, ok=False)
    assert res.returncode == 5 and b"podplay login" in res.stderr
    assert skopeo("inspect", "--tls-verify=false", "--creds", auth_registry.creds, f"docker://{dest}",
                  check=False).returncode != 0

    podplay("login", auth_registry.host, "-u", auth_registry.username, "--password-stdin",
            stdin=auth_registry.password + "\n")
    digestfile = tmp_path / "digest"
    podplay("push", "--digestfile", str(digestfile), "localhost/app:1", dest)
    theirs = skopeo_json(f"docker://{dest}", "--creds", auth_registry.creds)
    assert theirs["Digest"] == digestfile.read_text().strip() == pushed.digest
    assert theirs["Layers"] == skopeo_inspect(pushed.ref)["Layers"]

    # copy with explicit credentials (no auth file entry needed), registry to registry
    podplay("logout", auth_registry.host)
    other = f"{auth_registry.host}/{repo}-copy:1"
    podplay("copy", "--dest-creds", f"{auth_registry.username}:{auth_registry.password}",
            f"docker://{pushed.ref}", f"docker://{other}")
    assert skopeo_json(f"docker://{other}", "--creds", auth_registry.creds)["Digest"] == pushed.digest
    res = podplay("copy", "--dest-creds", f"{auth_registry.username}:wrong", f"docker://{pushed.ref}",
                  f"docker://{other}", ok=False)
    assert res.returncode == 5 and b"refused the credentials" in res.stderr


def test_push_mounts_blobs_the_registry_has_and_skips_those_it_has(make_store, registry, repo):
    pushed = make_busybox_image(registry, repo, layers=2)
    store = make_store()
    info = store.pull(pushed.ref)
    blobs = {layer.digest for layer in info.layers} | {info.id}
    res = copy_image(store, pushed.ref, f"docker://{registry.host}/{repo}-mounted:1")
    assert set(res.mounted) == blobs and res.uploaded == ()  # nothing travelled
    assert skopeo_inspect(f"{registry.host}/{repo}-mounted:1")["Digest"] == pushed.digest
    res = copy_image(store, pushed.ref, f"docker://{registry.host}/{repo}-mounted:2")
    assert res.mounted == res.uploaded == ()  # same repository again: HEAD finds every blob there


def test_chunked_upload_of_a_layer_larger_than_the_chunk(make_store, registry, repo, tmp_path, host_paths):
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    layout = tmp_path / "layout"
    copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:x")  # no mount source from a layout
    layer = json.loads(skopeo_inspect(pushed.ref, "--raw"))["layers"][0]
    assert layer["size"] > 3 * 64 * 1024
    dest = f"{registry.host}/{repo}-chunked:1"
    res = copy_image(store, f"oci:{layout}:x", f"docker://{dest}", options=CopyOptions(chunk_size=64 * 1024))
    assert layer["digest"] in res.uploaded
    assert skopeo_inspect(dest)["Digest"] == pushed.digest
    # what went up in chunks comes back down verified
    assert make_store().pull(dest).layers[0].digest == layer["digest"]
    assert_store_verified(host_paths, images=1)


def test_recompression_and_manifest_format(make_store, registry, repo, tmp_path, host_paths):
    from reconciler.storage.unpack import unpack_layer

    pushed = make_busybox_image(registry, repo)
    store = make_store()
    image_id = sha(skopeo_config(f"docker://{pushed.ref}"))
    diff_id = json.loads(skopeo_config(f"docker://{pushed.ref}"))["rootfs"]["diff_ids"][0]
    layout = tmp_path / "layout"
    copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:zstd", options=CopyOptions(compression="zstd"))
    copy_image(store, f"docker://{pushed.ref}", f"oci:{layout}:plain", options=CopyOptions(compression="none"))
    zstd_layer = json.loads(skopeo_raw(f"oci:{layout}:zstd"))["layers"][0]
    plain_layer = json.loads(skopeo_raw(f"oci:{layout}:plain"))["layers"][0]
    assert zstd_layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert plain_layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert plain_layer["digest"] == diff_id  # uncompressed: the digest is the diff_id
    assert skopeo_json(f"oci:{layout}:zstd")["Layers"] == [zstd_layer["digest"]]
    for ref in ("zstd", "plain"):
        assert sha(skopeo_config(f"oci:{layout}:{ref}")) == image_id  # the config is untouched
    # the recompressed layer still unpacks to the content the config promises
    blob = layout / "blobs" / "sha256" / zstd_layer["digest"][7:]
    with open(blob, "rb") as f:
        result = unpack_layer(f, tmp_path / "unpacked", diff_id=diff_id)
    assert result.diff_id == diff_id and (tmp_path / "unpacked" / "bin" / "busybox").is_file()

    dest = f"{registry.host}/{repo}-v2s2:1"
    copy_image(store, f"oci:{layout}:plain", f"docker://{dest}", options=CopyOptions(format="v2s2",
                                                                                    compression="gzip"))
    raw = json.loads(skopeo_inspect(dest, "--raw"))
    assert raw["mediaType"] == DOCKER_MANIFEST
    assert raw["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert raw["config"]["digest"] == image_id
    info = make_store().pull(dest)
    assert info.id == image_id
    with pytest.raises(ImageError, match="--format oci"):
        copy_image(store, f"oci:{layout}:zstd", f"docker://{dest}", options=CopyOptions(format="v2s2"))
    with pytest.raises(InputError, match="keeps layers"):
        copy_image(store, f"oci:{layout}:zstd", "podplay:localhost/z", options=CopyOptions(compression="gzip"))


def test_copy_into_an_existing_layout_keeps_other_images(make_store, registry, repo, tmp_path):
    one = make_busybox_image(registry, repo, layers=1)
    two = make_busybox_image(registry, repo, tag="two", layers=2)
    store = make_store()
    layout = tmp_path / "layout"
    copy_image(store, f"docker://{one.ref}", f"oci:{layout}:one")
    copy_image(store, f"docker://{two.ref}", f"oci:{layout}:two")
    copy_image(store, f"docker://{two.ref}", f"oci:{layout}:one")  # a name moves to the new image
    assert skopeo_json(f"oci:{layout}:one")["Digest"] == two.digest
    assert skopeo_json(f"oci:{layout}:two")["Digest"] == two.digest
    index = json.loads((layout / "index.json").read_text())
    assert len(index["manifests"]) == 2
    with pytest.raises(ImageError, match="no image named 'three'.*'one', 'two'"):
        copy_image(store, f"oci:{layout}:three", "podplay:localhost/x")
    with pytest.raises(ImageError, match="holds 2 images; name one"):
        copy_image(store, f"oci:{layout}", "podplay:localhost/x")

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("mine")
    with pytest.raises(ImageError, match="not empty and not an OCI layout"):
        copy_image(store, f"docker://{one.ref}", f"oci:{occupied}:x")
    assert sorted(p.name for p in occupied.iterdir()) == ["precious.txt"]


def test_registry_copy_like_pull_names_and_later_pulls(make_store, registry, repo, host_paths):
    """docker:// → podplay: records the name with the digest it resolved to, like pull does, so
    that pull policy Always finds nothing new."""
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    res = copy_image(store, f"docker://{pushed.ref}", "podplay:")
    assert res.names == (pushed.ref,)
    rec = store.record(pushed.ref)
    assert rec.names[pushed.ref] == pushed.digest
    again = store.ensure_image(pushed.ref, "Always")
    assert again.id == res.image_id
    assert_store_verified(host_paths, images=1)


def test_cli_copy_errors_are_clear(podplay, tmp_path, host_paths):
    res = podplay("copy", "containers-storage:busybox", f"oci:{tmp_path}/x", ok=False)
    assert res.returncode == 1 and b"podplay:REF" in res.stderr
    res = podplay("copy", f"oci:{tmp_path}/nowhere:x", "podplay:localhost/x", ok=False)
    assert res.returncode == 5 and b"does not exist" in res.stderr
    res = podplay("copy", "localhost/absent", f"oci:{tmp_path}/x", ok=False)
    assert res.returncode == 6 and b"not present" in res.stderr
    res = podplay("load", "-i", str(tmp_path / "missing.tar"), ok=False)
    assert res.returncode == 5 and b"no such file" in res.stderr
    (tmp_path / "junk.tar").write_bytes(b"junk" * 300)
    res = podplay("load", "-i", str(tmp_path / "junk.tar"), ok=False)
    assert res.returncode == 5 and b"not a tar archive" in res.stderr
    assert b"Traceback" not in res.stderr
    assert not list(tmp_path.glob("x*"))
    assert blob_files(host_paths.images) == {}


def test_copy_between_layouts_with_shutil_copied_layout(make_store, image_factory, tmp_path):
    """A layout made by skopeo from buildah's storage (no registry involved) is a source too."""
    image = image_factory.build()
    made = image_factory.layout(image, "zstd")
    layout = tmp_path / "theirs"
    shutil.copytree(made, layout)
    store = make_store()
    res = copy_image(store, f"oci:{layout}:img", "podplay:localhost/from-layout:1")
    info = store.get_image("localhost/from-layout:1")
    assert info.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert res.digest == skopeo_json(f"oci:{layout}:img")["Digest"]


def test_push_with_bearer_tokens_mounts_across_repositories(make_store, registry, token_registry, repo):
    """With token auth a mount needs pull access to the other repository: both scopes are asked
    for in one token request, as docker does."""
    pushed = make_busybox_image(registry, repo, layers=2)
    creds = [Credentials(token_registry.host, token_registry.username, token_registry.password)]
    store = make_store()
    first = f"docker://{token_registry.host}/{repo}:1"
    res = copy_image(store, f"docker://{pushed.ref}", first, dest_credentials=creds)
    assert res.uploaded and not res.mounted
    second = f"docker://{token_registry.host}/{repo}-other:1"
    res = copy_image(store, first, second, src_credentials=creds, dest_credentials=creds)
    assert res.mounted and not res.uploaded
    scopes = [r["scope"] for r in token_registry.token_server.token_requests(f"{repo}-other")]
    assert f"repository:{repo}-other:pull,push repository:{repo}:pull" in scopes
    theirs = skopeo_json(second, "--creds", token_registry.creds)
    assert theirs["Digest"] == pushed.digest


def test_cli_copy_flags_and_push_to_the_images_own_name(podplay, registry, repo, image_factory, tmp_path):
    index = image_factory.push_index(registry, repo, tag="multi", platforms=("linux/amd64", "linux/arm64/v8"))
    layout = tmp_path / "layout"
    digestfile = tmp_path / "digest"
    podplay("copy", "--all", "--dest-compress-format", "zstd", "--digestfile", str(digestfile),
            f"docker://{index.ref}", f"oci:{layout}:multi")
    raw = json.loads(skopeo_raw(f"oci:{layout}:multi"))
    assert sha(skopeo_raw(f"oci:{layout}:multi")) == digestfile.read_text().strip() != index.digest
    assert raw["mediaType"] == OCI_INDEX and len(raw["manifests"]) == 2
    for entry in raw["manifests"]:
        child = json.loads((layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes())
        assert {layer["mediaType"] for layer in child["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert skopeo_json(f"oci:{layout}:multi", "--override-arch", "arm64", "--override-variant", "v8")[
        "Architecture"] == "arm64"

    res = podplay("copy", "--dest-compress=false", "--dest-compress-format", "gzip", f"oci:{layout}:multi",
                  f"oci:{layout}:x", ok=False)
    assert res.returncode == 1 and b"contradict" in res.stderr
    res = podplay("copy", "--chunk-size", "lots", f"oci:{layout}:multi", f"oci:{layout}:x", ok=False)
    assert res.returncode == 2 and b"expected a size" in res.stderr

    # push without a destination goes to the image's own name
    one = make_busybox_image(registry, repo, tag="one")
    podplay("pull", one.ref)
    own = f"{registry.host}/{repo}-own:1"
    podplay("tag", one.ref, own)
    podplay("push", own)
    assert skopeo_inspect(own)["Digest"] == one.digest
    podplay("push", "--format", "v2s2", own, f"{registry.host}/{repo}-own:v2s2")
    assert json.loads(skopeo_inspect(f"{registry.host}/{repo}-own:v2s2", "--raw"))["mediaType"] == DOCKER_MANIFEST
    res = podplay("push", "localhost/nothing:1", ok=False)
    assert res.returncode == 6 and b"not present" in res.stderr
    res = podplay("push", one.ref, "localhost/somewhere:1", ok=False)
    assert res.returncode == 5 and b"not a registry" in res.stderr
