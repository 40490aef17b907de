"""Platform choice (containerd's rules) and the strict manifest/config checks."""

from __future__ import annotations

import json

import pytest

from reconciler.errors import ImageError, InputError
from reconciler.images import manifest as m
from reconciler.images.platform import Platform, compatible, normalize, parse_platform, rank
from reconciler.images.registry import parse_www_authenticate

D1, D2, D3, D4 = ("sha256:" + c * 64 for c in "1234")


@pytest.mark.parametrize(("text", "expected"), [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/amd64/v1", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"),
    ("arm64", "linux/arm64"),
    ("Linux/AMD64/V3", "linux/amd64/v3"),
])
def test_platform_normalisation(text, expected):
    assert str(parse_platform(text)) == expected


@pytest.mark.parametrize("text", ["", "linux/", "a/b/c/d", "linux/amd 64", "linux/../x"])
def test_bad_platform_is_input_error(text):
    with pytest.raises(InputError):
        parse_platform(text)


def test_amd64_levels_fall_back_in_order():
    assert [str(p) for p in compatible(Platform("linux", "amd64", "v3"))] == [
        "linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]
    assert rank(Platform("linux", "amd64"), Platform("linux", "amd64", "v2")) is None
    assert rank(Platform("linux", "amd64", "v2"), Platform("linux", "x86_64")) == 1


def test_arm64_runs_arm32_and_arm_runs_older_arm():
    arm64 = [str(p) for p in compatible(Platform("linux", "arm64"))]
    assert arm64[0] == "linux/arm64" and "linux/arm/v7" in arm64 and "linux/arm/v5" in arm64
    assert rank(Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7")) is None
    assert rank(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6")) == 1
    assert rank(Platform("linux", "arm64"), Platform("linux", "amd64")) is None
    assert rank(Platform("linux", "amd64"), Platform("windows", "amd64")) is None


def _index(entries, media_type=m.OCI_INDEX):
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": m.OCI_MANIFEST, "digest": d, "size": 100, "platform": p} for d, p in entries]}
    return m.parse_manifest(json.dumps(doc).encode())


def test_select_prefers_best_variant_then_index_order():
    idx = _index([
        (D1, {"os": "linux", "architecture": "amd64"}),
        (D2, {"os": "linux", "architecture": "amd64", "variant": "v3"}),
        (D3, {"os": "linux", "architecture": "amd64", "variant": "v3"}),
        (D4, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ])
    assert m.select_platform(idx, Platform("linux", "amd64", "v4"), "x").digest == D2
    assert m.select_platform(idx, Platform("linux", "amd64", "v2"), "x").digest == D1
    assert m.select_platform(idx, Platform("linux", "arm64"), "x").digest == D4


def test_select_skips_attestations_and_lists_what_exists():
    idx = _index([
        (D1, {"os": "unknown", "architecture": "unknown"}),
        (D2, {"os": "linux", "architecture": "s390x"}),
    ])
    with pytest.raises(ImageError) as err:
        m.select_platform(idx, Platform("linux", "amd64"), "index x")
    assert "no image for platform linux/amd64" in str(err.value)
    assert "linux/s390x" in str(err.value) and "unknown" not in str(err.value)


DROP = object()


def _manifest(**over):
    """A valid OCI manifest with fields replaced (``None`` keeps the default, DROP removes it)."""
    doc = {"schemaVersion": 2, "mediaType": m.OCI_MANIFEST,
           "config": {"mediaType": m.OCI_CONFIG, "digest": D1, "size": 10},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 5}]}
    doc.update({k: v for k, v in over.items() if v is not None})
    return {k: v for k, v in doc.items() if v is not DROP}


def test_manifest_without_media_type_is_inferred_from_its_shape():
    parsed = m.parse_manifest(json.dumps(_manifest(mediaType=DROP)).encode())
    assert parsed.media_type == m.OCI_MANIFEST
    idx = m.parse_manifest(json.dumps({"schemaVersion": 2, "manifests": []}).encode())
    assert idx.media_type == m.OCI_INDEX


@pytest.mark.parametrize(("doc", "content_type", "expected", "message"), [
    # the document says index but is a manifest
    (_manifest(mediaType=m.OCI_INDEX), "", "", "refusing"),
    (_manifest(mediaType=m.DOCKER_LIST), "", "", "refusing"),
    # served as one thing, is another
    (_manifest(), m.DOCKER_MANIFEST, "", "served as"),
    (_manifest(mediaType=DROP), m.OCI_INDEX, "", "served as"),
    # the index said it was a Docker manifest
    (_manifest(), "", m.DOCKER_MANIFEST, "the index lists it"),
    # both shapes at once (the OCI spec's ambiguity)
    (_manifest(manifests=[]), "", "", "ambiguous"),
    ({"schemaVersion": 1, "name": "x", "fsLayers": []}, "", "", "schema 1"),
    ({"schemaVersion": 3, "layers": []}, "", "", "schemaVersion"),
    (_manifest(mediaType="application/vnd.example+json"), "", "", "unsupported manifest media type"),
    (_manifest(config={"mediaType": m.OCI_CONFIG, "digest": "sha256:../../x", "size": 1}), "", "", "invalid digest"),
    (_manifest(config={"mediaType": m.OCI_CONFIG, "digest": D1, "size": -1}), "", "", "size"),
    (_manifest(config={"mediaType": m.OCI_CONFIG, "digest": D1, "size": True}), "", "", "size"),
    (_manifest(layers="x"), "", "", "not a list"),
    ([1, 2], "", "", "not a JSON object"),
])
def test_lying_or_broken_manifests_are_refused(doc, content_type, expected, message):
    with pytest.raises(ImageError) as err:
        m.parse_manifest(json.dumps(doc).encode(), content_type=content_type, expected=expected)
    assert message in str(err.value)


def test_generic_content_type_is_tolerated():
    for ct in ("application/json", "text/plain; charset=utf-8", ""):
        assert m.parse_manifest(json.dumps(_manifest()).encode(), content_type=ct).media_type == m.OCI_MANIFEST


def test_oversize_manifest_refused_before_parsing():
    with pytest.raises(ImageError, match="larger than"):
        m.parse_manifest(b" " * (m.MAX_MANIFEST_SIZE + 1))


@pytest.mark.parametrize(("config", "layers", "message"), [
    ({"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": D1, "size": 1}, None, "not a container image"),
    ({"mediaType": m.OCI_CONFIG, "digest": D1, "size": 5 << 20}, None, "more than"),
    (None, [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": D2, "size": 1}],
     "foreign"),
    (None, [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "digest": D2, "size": 1}],
     "unsupported media type"),
])
def test_images_podplay_cannot_run_are_refused(config, layers, message):
    parsed = m.parse_manifest(json.dumps(_manifest(config=config, layers=layers)).encode())
    with pytest.raises(ImageError, match=message):
        m.check_image_manifest(parsed, "x")


def test_config_fields_and_diff_id_count():
    cfg = {"architecture": "arm64", "os": "linux", "variant": "v8", "created": "2024-01-01T00:00:00Z",
           "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"], "Env": ["A=1"], "WorkingDir": "/w",
                      "User": "1000:1000", "StopSignal": "SIGINT", "ExposedPorts": {"80/tcp": {}},
                      "Volumes": {"/data": {}}, "Labels": {"a": "b"}},
           "rootfs": {"type": "layers", "diff_ids": [D3]}}
    parsed = m.parse_config(json.dumps(cfg).encode(), 1)
    c = parsed.config
    assert (c.entrypoint, c.cmd, c.env, c.working_dir, c.user, c.stop_signal) == (
        ("/bin/sh",), ("-c", "x"), ("A=1",), "/w", "1000:1000", "SIGINT")
    assert c.exposed_ports == ("80/tcp",) and c.volumes == ("/data",) and c.labels == {"a": "b"}
    assert normalize(parsed.platform) == Platform("linux", "arm64")
    with pytest.raises(ImageError, match="1 layer diff_ids but the manifest has 2"):
        m.parse_config(json.dumps(cfg).encode(), 2)
    cfg["rootfs"]["diff_ids"] = ["sha256:zz"]
    with pytest.raises(ImageError, match="invalid digest"):
        m.parse_config(json.dumps(cfg).encode(), 1)
    cfg["config"]["Env"] = "A=1"  # a string where a list belongs is accepted as one entry
    cfg["rootfs"]["diff_ids"] = [D3]
    assert m.parse_config(json.dumps(cfg).encode(), 1).config.env == ("A=1",)
    cfg["config"]["Cmd"] = {"x": 1}
    with pytest.raises(ImageError, match="Cmd"):
        m.parse_config(json.dumps(cfg).encode(), 1)


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull"',
     [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                  "scope": "repository:library/x:pull"})]),
    ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
    ('Basic realm="a, b", Bearer realm="https://x/t",service=reg',
     [("basic", {"realm": "a, b"}), ("bearer", {"realm": "https://x/t", "service": "reg"})]),
    ('Bearer realm="q\\"uoted"', [("bearer", {"realm": 'q"uoted'})]),
    ("Bearer", [("bearer", {})]),
    ("", []),
])
def test_www_authenticate(header, expected):
    assert [(c.scheme, c.params) for c in parse_www_authenticate(header)] == expected
