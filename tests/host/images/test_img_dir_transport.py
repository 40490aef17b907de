"""The dir: transport, against skopeo's own reading and writing of it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from reconciler.errors import ImageError
from reconciler.images.driver import LocalImageStore
from reconciler.images.transports import copy_image
from reconciler.paths import HostPaths
from tests.host.build.conftest import store  # noqa: F401 - the fixture: localhost/busybox imported
from tests.support.images import _tool_env


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True, env=_tool_env()).stdout


def test_copy_to_dir_and_back_as_skopeo_does(store, tmp_path):  # noqa: F811
    info = store.get_image("localhost/busybox")
    out = tmp_path / "img"
    copy_image(store, "podplay:localhost/busybox", f"dir:{out}")
    assert (out / "version").read_bytes() == b"Directory Transport Version: 1.1\n"
    manifest = json.loads((out / "manifest.json").read_bytes())
    names = sorted(os.listdir(out))
    assert names == sorted(["version", "manifest.json", manifest["config"]["digest"].split(":")[1],
                            *(layer["digest"].split(":")[1] for layer in manifest["layers"])])
    # skopeo reads it, and copies it (dir: to dir:) byte for byte.
    theirs = json.loads(skopeo("inspect", f"dir:{out}"))
    assert theirs["Layers"] == [layer.digest for layer in info.layers]
    skopeo("copy", "-q", f"dir:{out}", f"dir:{tmp_path / 'theirs'}")
    assert (tmp_path / "theirs" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    # What skopeo wrote comes back into the store as the same image.
    store.untag_or_remove("localhost/busybox")
    copy_image(store, f"dir:{tmp_path / 'theirs'}", "podplay:localhost/back")
    back = store.get_image("localhost/back")
    assert back is not None and back.id == info.id


def test_dir_source_refuses_tampering_and_links(store, tmp_path):  # noqa: F811
    out = tmp_path / "img"
    copy_image(store, "podplay:localhost/busybox", f"dir:{out}")
    manifest = json.loads((out / "manifest.json").read_bytes())
    layer = out / manifest["layers"][0]["digest"].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[-20] ^= 0xFF
    layer.write_bytes(bytes(data))
    # Into a store that does not have the blobs yet (one that has them takes them by digest).
    other = LocalImageStore(HostPaths(tmp_path / "o-root", tmp_path / "o-run", tmp_path / "o-net"))
    try:
        with pytest.raises(ImageError, match="digest|verif"):
            copy_image(other, f"dir:{out}", "podplay:localhost/tampered")
        assert other.get_image("localhost/tampered") is None
        layer.unlink()
        layer.symlink_to("/etc/passwd")
        with pytest.raises(ImageError, match="symbolic link"):
            copy_image(other, f"dir:{out}", "podplay:localhost/linked")
    finally:
        other.close()


def test_dir_destination_refuses_a_directory_with_other_things(store, tmp_path):  # noqa: F811
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ImageError, match="not empty and not a dir: image"):
        copy_image(store, "podplay:localhost/busybox", f"dir:{tmp_path / 'busy'}")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
