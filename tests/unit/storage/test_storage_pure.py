"""Pure pieces of the storage driver, table-driven: chain IDs, format sniffing, names."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from backports import zstd

from reconciler.errors import StorageError
from reconciler.storage.layers import chain_ids, layer_name
from reconciler.storage.unpack import detect_compression, keep_xattr, parse_digest
from reconciler.storage.volumes import split_claim


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_chain_ids_follow_the_image_spec():
    a, b, c = (digest(x) for x in (b"a", b"b", b"c"))
    ab = digest(f"{a} {b}".encode())
    assert chain_ids([a, b, c]) == [a, ab, digest(f"{ab} {c}".encode())]
    assert chain_ids([]) == []


@pytest.mark.parametrize("bad", ["", "sha256:", "sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64,
                                 "sha256:" + "0" * 63, "sha256:../../etc"])
def test_malformed_diff_ids_are_refused(bad):
    with pytest.raises(StorageError, match="diff_id"):
        chain_ids([digest(b"a"), bad])
    with pytest.raises(StorageError):
        parse_digest(bad)


def test_layer_names_are_path_safe():
    assert layer_name(digest(b"a")) == "sha256-" + hashlib.sha256(b"a").hexdigest()
    assert layer_name("sha512:" + "ab" * 64).startswith("sha512-")


@pytest.mark.parametrize(("head", "kind"), [
    (gzip.compress(b"x", mtime=0)[:6], "gzip"),
    (zstd.compress(b"x")[:6], "zstd"),
    (b"\x50\x2a\x4d\x18\x00\x00", "zstd"),  # a skippable frame first
    (b"etc/\x00\x00", "none"),
    (b"", "none"),
], ids=["gzip", "zstd", "zstd-skippable", "tar", "empty"])
def test_compression_is_sniffed_from_content(head, kind):
    assert detect_compression(head) == kind


@pytest.mark.parametrize("head", [b"\xfd7zXZ\x00", b"BZh91A"])
def test_compressions_oci_does_not_allow_are_refused(head):
    with pytest.raises(StorageError, match="OCI layers are"):
        detect_compression(head)


@pytest.mark.parametrize(("name", "kept"), [
    ("security.capability", True), ("user.mime_type", True), ("security.ima", True),
    ("security.selinux", False), ("trusted.overlay.opaque", False), ("trusted.overlay.redirect", False),
    ("system.posix_acl_access", False), ("unknown", False),
])
def test_which_xattrs_a_layer_may_set(name, kept):
    assert keep_xattr(name) is kept


@pytest.mark.parametrize(("ref", "want"), [("default/data", ("default", "data")), ("a-b/c.d", ("a-b", "c.d"))])
def test_claim_references(ref, want):
    assert split_claim(ref) == want


@pytest.mark.parametrize("ref", ["", "x", "/x", "x/", "A/b", "a/B", "a/b/c", "../b", "a/..", "a/-b"])
def test_bad_claim_references(ref):
    with pytest.raises(StorageError, match="invalid claim reference"):
        split_claim(ref)
