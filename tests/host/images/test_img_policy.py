"""Kubernetes pull policies through ``ensure_image``, short names and registries.conf."""

from __future__ import annotations

import pytest

from reconciler.drivers.base import ImageStore
from reconciler.errors import ImageError, InputError, TemporaryImageError
from tests.host.images.conftest import RecordingProgress, assert_nothing_stored, assert_store_verified
from tests.support.images import make_busybox_image
from tests.support.registry import free_port


def test_local_image_store_is_an_image_store(make_store):
    assert isinstance(make_store(), ImageStore)


def test_if_not_present_pulls_once(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo)
    progress = RecordingProgress()
    store = make_store(progress=progress)
    first = store.ensure_image(pushed.ref, "IfNotPresent")
    # Gone from the registry: IfNotPresent must not even ask.
    registry.delete_manifest(repo, pushed.digest)
    again = store.ensure_image(pushed.ref, "IfNotPresent")
    assert again == first and progress.pulls == [pushed.ref]


def test_never(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    with pytest.raises(ImageError) as err:
        store.ensure_image(pushed.ref, "Never")
    assert str(err.value) == f"image {pushed.ref} is not present and pull policy is Never"
    assert_nothing_stored(host_paths)
    info = store.pull(pushed.ref)
    assert store.ensure_image(pushed.ref, "Never") == info


def test_always_heads_and_pulls_only_when_the_tag_moved(make_store, registry, repo, host_paths):
    v1 = make_busybox_image(registry, repo, config={"labels": {"v": "1"}})
    progress = RecordingProgress()
    store = make_store(progress=progress)
    first = store.ensure_image(v1.ref, "Always")
    assert progress.pulls == [v1.ref]
    # unchanged: one HEAD, no pull
    assert store.ensure_image(v1.ref, "Always") == first
    assert progress.pulls == [v1.ref]
    # moved: pulled again, and only the new config's image is different
    v2 = make_busybox_image(registry, repo, config={"labels": {"v": "2"}})
    second = store.ensure_image(v1.ref, "Always")
    assert second.id != first.id and second.config.labels["v"] == "2"
    assert store.record(v1.ref).names[v1.ref] == v2.digest
    assert len(progress.pulls) == 2
    # the layer was already there: nothing downloaded but the documents
    assert progress.downloaded.count(second.layers[0].digest) <= 1
    assert_store_verified(host_paths, images=2)


def test_always_with_digest_reference_needs_no_registry(make_store, registry, repo):
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    info = store.ensure_image(pushed.by_digest, "Always")
    registry.delete_manifest(repo, pushed.digest)
    assert store.ensure_image(pushed.by_digest, "Always") == info


def test_always_fails_when_the_registry_is_down(make_store, registry, repo, host_paths):
    """Like the kubelet: Always means ask the registry; no answer is an error (temporary)."""
    pushed = make_busybox_image(registry, repo)
    store = make_store(retries=0)
    info = store.pull(pushed.ref)
    gone = f"127.0.0.1:{free_port()}/gone/app:latest"
    store.tag_image(info.id, gone)
    assert store.ensure_image(gone, "IfNotPresent").id == info.id
    with pytest.raises(TemporaryImageError, match="cannot reach registry"):
        store.ensure_image(gone, "Always")


def test_localhost_images_are_never_pulled(make_store, registry, repo, host_paths):
    store = make_store()
    with pytest.raises(ImageError) as err:
        store.ensure_image("localhost/busybox:latest", "Always")
    assert "no registry to pull it from" in str(err.value)
    with pytest.raises(ImageError, match="no registry behind it"):
        store.pull("localhost/busybox:latest")
    pushed = make_busybox_image(registry, repo)
    info = store.pull(pushed.ref)
    store.tag_image(pushed.ref, "localhost/busybox:latest")
    for policy in ("Always", "IfNotPresent", "Never"):
        assert store.ensure_image("localhost/busybox:latest", policy).id == info.id
    # the podman-kube corpus spells it as a short name too
    assert store.get_image("busybox").id == info.id
    assert store.get_image("localhost/busybox").id == info.id


@pytest.mark.parametrize(("policy", "pulls"), [("missing", 1), ("always", 1), ("never", 0), ("newer", 1)])
def test_podman_policy_spellings(make_store, registry, repo, policy, pulls):
    pushed = make_busybox_image(registry, repo)
    progress = RecordingProgress()
    store = make_store(progress=progress)
    if pulls:
        store.ensure_image(pushed.ref, policy)
    else:
        with pytest.raises(ImageError, match="pull policy is Never"):
            store.ensure_image(pushed.ref, policy)
    assert len(progress.pulls) == pulls


def test_unknown_policy_is_input_error(make_store):
    with pytest.raises(InputError, match="unknown image pull policy"):
        make_store().ensure_image("busybox", "Sometimes")


def test_damaged_image_is_pulled_again(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    info = store.pull(pushed.ref)
    store.store.blob_path(info.layers[0].digest).unlink()  # e.g. someone cleaned the disk by hand
    again = store.ensure_image(pushed.ref, "IfNotPresent")
    assert again.id == info.id
    assert store.store.has_blob(info.layers[0].digest)
    assert_store_verified(host_paths, images=1)


def test_short_names_use_search_registries(make_store, registry, repo, no_registries_conf, host_paths):
    pushed = make_busybox_image(registry, repo)
    no_registries_conf.write_text(f'unqualified-search-registries = ["{registry.host}"]\n'
                                  f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    store = make_store()
    info = store.ensure_image(f"{repo}:latest", "IfNotPresent")
    assert info.names == (pushed.ref,)  # recorded under the name it was found as
    assert store.get_image(repo).id == info.id


def test_short_name_alias(make_store, registry, repo, no_registries_conf):
    pushed = make_busybox_image(registry, repo)
    no_registries_conf.write_text(f'[aliases]\n"myapp" = "{registry.host}/{repo}"\n')
    store = make_store()
    info = store.ensure_image("myapp", "IfNotPresent")
    assert info.names == (pushed.ref,)
    assert store.get_image("myapp:latest").id == info.id


def test_mirror_serves_a_registry_that_is_unreachable(make_store, registry, repo, no_registries_conf):
    """quay.io/… is fetched from a mirror; the primary (a closed local port) is never needed,
    and the image keeps its logical name."""
    pushed = make_busybox_image(registry, repo)
    no_registries_conf.write_text(
        '[[registry]]\n'
        'prefix = "quay.io/podplay-test"\n'
        f'location = "127.0.0.1:{free_port()}/never"\n'
        '[[registry.mirror]]\n'
        f'location = "{registry.host}/{repo.split("/")[0]}"\n')
    name = repo.split("/", 1)[1]
    store = make_store()
    info = store.pull(f"quay.io/podplay-test/{name}:latest")
    assert info.names == (f"quay.io/podplay-test/{name}:latest",)
    assert info.manifest_digest == pushed.digest


def test_blocked_registry(make_store, registry, repo, no_registries_conf, host_paths):
    pushed = make_busybox_image(registry, repo)
    no_registries_conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\nblocked = true\n')
    with pytest.raises(ImageError, match="blocked"):
        make_store().pull(pushed.ref)
    assert_nothing_stored(host_paths)


def test_remove_by_name_and_by_id(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    info = store.pull(pushed.ref)
    store.tag_image(info.id, "localhost/a:1")
    store.remove_image("localhost/a:1")  # one of two names: only the name goes
    assert store.get_image(info.id).names == (pushed.ref,)
    store.remove_image(pushed.ref)  # the last name: the image and its blobs go
    assert store.get_image(info.id) is None
    assert store.store.disk_usage() == 0
    store.remove_image(pushed.ref)  # idempotent
    info = store.pull(pushed.ref)
    store.tag_image(info.id, "localhost/b:1")
    store.remove_image(info.id[7:19])  # by id: the whole image, whatever its names
    assert store.list_images() == []


def test_prune_keeps_what_images_use(make_store, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo)
    store = make_store()
    info = store.pull(pushed.ref)
    stray = store.store.blobs_dir / "sha256" / ("0" * 64)
    stray.write_bytes(b"left by a crash")
    result = store.prune()
    assert result.blobs_removed == 1 and result.bytes_freed == len(b"left by a crash")
    assert store.get_image(pushed.ref) == info
    assert_store_verified(host_paths, images=1)


def test_id_prefix_ambiguity(make_store, registry, repo):
    from reconciler.images.store import ImageRecord

    pushed = make_busybox_image(registry, repo)
    store = make_store()
    info = store.pull(pushed.ref)
    twin = info.id[:11] + ("0" if info.id[11] != "0" else "1") + info.id[12:]

    def add_twin(records):
        records[twin] = ImageRecord(twin, info.manifest_digest, "", {"localhost/twin:1": ""})

    store.store.update_records(add_twin)
    with pytest.raises(ImageError, match="ambiguous"):
        store.get_image(info.id[7:11])
    assert store.get_image(info.id[7:12]).id == info.id


def test_corrupt_index_is_a_state_error(make_store, host_paths):
    from reconciler.errors import StateError

    store = make_store()
    host_paths.images.mkdir(parents=True)
    (host_paths.images / "images.json").write_text("{oops")
    with pytest.raises(StateError, match="corrupt"):
        store.list_images()
