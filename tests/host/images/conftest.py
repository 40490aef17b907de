"""Fixtures for the image tests: the real registries and image builders, and store checks."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from reconciler.images.driver import LocalImageStore
from reconciler.images.progress import Progress
from tests.support.images import _tool_env, busybox_image, image_factory  # noqa: F401 - fixtures
from tests.support.registry import (  # noqa: F401 - fixtures
    auth_registry,
    registry,
    repo,
    tls_registry,
    token_registry,
)


class RecordingProgress(Progress):
    """Remembers which blobs a pull really downloaded."""

    def __init__(self):
        self.pulls: list[str] = []
        self.downloaded: list[str] = []
        self.present: list[str] = []

    def begin(self, reference):
        self.pulls.append(reference)

    def blob_queued(self, digest, size, present):
        if present:
            self.present.append(digest)

    def blob_start(self, digest, size):
        self.downloaded.append(digest)


@pytest.fixture
def no_registries_conf(tmp_path, monkeypatch):
    """Tests never read the host's registries.conf or auth files."""
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    monkeypatch.setenv("PODPLAY_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    return conf


@pytest.fixture
def make_store(host_paths, no_registries_conf):
    """``make_store(**kw)`` → a LocalImageStore on the test's own root, quick to give up on errors."""
    stores = []

    def make(**kw):
        kw.setdefault("retries", 2)
        kw.setdefault("backoff", 0.01)
        kw.setdefault("timeout", 10)
        s = LocalImageStore(host_paths, **kw)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()


def blob_files(root: Path) -> dict[str, Path]:
    out = {}
    blobs = root / "blobs"
    if blobs.is_dir():
        for alg in blobs.iterdir():
            for f in alg.iterdir():
                out[f"{alg.name}:{f.name}"] = f
    return out


def assert_store_verified(paths, *, images: int | None = None) -> None:
    """Everything in the store is what its name says: every blob hashes to its digest, every
    record's manifest, config and layers are present. ``images`` checks the record count."""
    root = paths.images
    for digest, f in blob_files(root).items():
        alg, hexpart = digest.split(":")
        assert hashlib.new(alg, f.read_bytes()).hexdigest() == hexpart, f"unverified blob {digest} in the store"
    index = root / "images.json"
    records = json.loads(index.read_text())["images"] if index.exists() else {}
    if images is not None:
        assert len(records) == images, f"expected {images} image records, found {sorted(records)}"
    blobs = blob_files(root)
    for image_id, rec in records.items():
        assert image_id in blobs and rec["manifest"] in blobs
        manifest = json.loads(blobs[rec["manifest"]].read_bytes())
        for layer in manifest["layers"]:
            assert layer["digest"] in blobs, f"image {image_id} lacks layer {layer['digest']}"


def assert_nothing_stored(paths) -> None:
    """A refused pull leaves no image record and no partial download behind."""
    assert_store_verified(paths, images=0)
    ingest = paths.images / "ingest"
    partials = [p.name for p in ingest.iterdir() if p.suffix == ".partial"] if ingest.is_dir() else []
    assert not partials, f"partial downloads left: {partials}"


def skopeo_inspect(ref: str, *extra: str) -> dict | bytes:
    res = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         capture_output=True, check=True, env=_tool_env())
    return res.stdout if "--raw" in extra else json.loads(res.stdout)
