"""References normalise exactly as docker/podman/containerd do; bad ones fail clearly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import ImageError, InputError
from reconciler.images.reference import (
    InvalidReferenceError,
    parse_reference,
    parse_repository_prefix,
    split_digest,
    validate_digest,
)

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "expected", "short"), [
    ("busybox", "docker.io/library/busybox:latest", True),
    ("busybox:1.36", "docker.io/library/busybox:1.36", True),
    ("library/busybox:1.36", "docker.io/library/busybox:1.36", True),
    ("docker.io/busybox", "docker.io/library/busybox:latest", False),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", False),
    ("user/app", "docker.io/user/app:latest", True),
    ("quay.io/org/app@" + D, "quay.io/org/app@" + D, False),
    ("localhost:5000/x:y", "localhost:5000/x:y", False),
    ("localhost/busybox:latest", "localhost/busybox:latest", False),
    ("localhost/busybox", "localhost/busybox:latest", False),
    ("127.0.0.1:5000/a/b/c:v1.2-rc_3", "127.0.0.1:5000/a/b/c:v1.2-rc_3", False),
    ("[::1]:5000/app", "[::1]:5000/app:latest", False),
    ("Example.com/app", "Example.com/app:latest", False),  # an upper-case first part is a host
    ("busybox:1.36@" + D, "docker.io/library/busybox:1.36@" + D, True),
    ("my-registry.local/a__b/c--d.e:tag", "my-registry.local/a__b/c--d.e:tag", False),
])
def test_normalisation(text, expected, short):
    ref = parse_reference(text)
    assert str(ref) == expected
    assert ref.short is short


def test_parts_and_names():
    ref = parse_reference("busybox:1.36@" + D)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "1.36", D)
    # A tag next to a digest was never verified: the digest is what names the image.
    assert ref.name == "docker.io/library/busybox@" + D
    assert parse_reference("busybox").name == "docker.io/library/busybox:latest"
    assert parse_reference("busybox").familiar == "busybox:latest"
    assert parse_reference("quay.io/a/b:c").familiar == "quay.io/a/b:c"
    assert parse_reference("localhost/busybox").is_local
    assert not parse_reference("localhost:5000/busybox").is_local


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("docker.io/Library/busybox", "lowercase"),
    ("a" * 64, "image id"),
    ("busybox:", "tag"),
    ("busybox:-bad", "tag"),
    ("busybox:" + "t" * 129, "tag"),
    ("busybox@sha256:abc", "digest"),
    ("busybox@sha256:" + "A" * 64, "lowercase hex"),
    ("busybox@md5:" + "a" * 32, "unsupported algorithm"),
    ("busybox@sha512:" + "a" * 64, "128"),
    ("/busybox", "empty path"),
    ("a//b", "empty path"),
    ("registry:5000/", "empty path"),
    ("busy box", "expected"),
    (" busybox", "white space"),
    ("docker://busybox", "transport"),
    ("a/" + "b" * 260, "longer than 255"),
    ("../../etc/passwd", "expected"),
])
def test_invalid_references_are_clear_input_errors(text, reason):
    with pytest.raises(InvalidReferenceError) as err:
        parse_reference(text)
    assert reason in str(err.value)
    # Bad input (exit code 1) and an image problem at the same time.
    assert isinstance(err.value, InputError) and isinstance(err.value, ImageError)
    assert err.value.exit_code == 1


@pytest.mark.parametrize("digest", [
    "sha256:" + "0" * 64,
    "sha512:" + "f" * 128,
])
def test_valid_digests(digest):
    assert validate_digest(digest) == digest
    assert split_digest(digest)[1] == digest.split(":")[1]


@pytest.mark.parametrize("digest", [
    "sha256:../../../../etc/passwd",
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 65,
    "sha256:" + "0" * 63 + "/",
    "sha256/" + "0" * 64,
    "../sha256:" + "0" * 64,
    "SHA256:" + "0" * 64,
    "sha384:" + "0" * 96,
    "",
    None,
    12,
])
def test_digests_that_could_become_paths_are_refused(digest):
    with pytest.raises(ImageError):
        validate_digest(digest)


@given(st.text(max_size=80))
def test_parse_never_raises_anything_but_input_errors(text):
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return
    # Whatever parses round-trips through its own text.
    again = parse_reference(str(ref))
    assert again == ref
    if ref.digest:
        validate_digest(ref.digest)


@pytest.mark.parametrize(("text", "expected"), [
    ("quay.io", ("quay.io", "")),
    ("https://index.docker.io/v1/", ("docker.io", "")),
    ("registry:5000/ns/repo", ("registry:5000", "ns/repo")),
    ("http://127.0.0.1:5000", ("127.0.0.1:5000", "")),
])
def test_repository_prefixes(text, expected):
    assert parse_repository_prefix(text) == expected


def test_with_tag_and_digest():
    ref = parse_reference("quay.io/a/b:c")
    assert str(ref.with_tag("d")) == "quay.io/a/b:d"
    assert str(ref.with_digest(D)) == "quay.io/a/b:c@" + D
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("-x")
    with pytest.raises(InvalidReferenceError):
        ref.with_digest("sha256:1")
