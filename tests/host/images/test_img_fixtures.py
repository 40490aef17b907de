"""The shared image fixtures other areas build on give what they promise."""

from __future__ import annotations

import gzip
import io
import tarfile

from tests.host.images.conftest import assert_store_verified
from tests.support.images import BUSYBOX_LOCAL, store_with_busybox


def _members(store, info) -> dict[str, tarfile.TarInfo]:
    out = {}
    for layer in info.layers:
        with store.open_blob(layer.digest) as f:
            data = f.read()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
            out.update({m.name.lstrip("./"): m for m in tar.getmembers()})
    return out


def test_store_with_busybox(host_paths, registry, no_registries_conf):
    store, info = store_with_busybox(host_paths, registry)
    try:
        assert store.get_image(BUSYBOX_LOCAL).id == info.id
        assert BUSYBOX_LOCAL in info.names
        assert store.ensure_image(BUSYBOX_LOCAL, "Never").id == info.id
        assert info.config.cmd == ("/bin/sh",)
        assert any(e.startswith("PATH=") for e in info.config.env)
        files = _members(store, info)
        assert files["bin/busybox"].isfile() and files["bin/busybox"].mode & 0o111
        assert files["bin/sh"].issym() and files["bin/sh"].linkname == "busybox"
        assert files["tmp"].mode & 0o7777 == 0o1777
        assert files["etc/passwd"].isfile()
        assert_store_verified(host_paths, images=1)
    finally:
        store.close()


def test_busybox_image_fixture_is_shared(busybox_image, registry, host_paths, make_store):
    # the cached push is a real image in the registry, pulled like any other
    info = make_store().pull(busybox_image.ref)
    assert info.manifest_digest == busybox_image.digest
    assert busybox_image.ref.startswith(registry.host)
