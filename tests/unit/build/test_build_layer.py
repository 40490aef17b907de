"""The build's layer writer and its view of the layers below (no host state)."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from reconciler.build.layer import Entry, LowerTree, Node, write_layer


def tree(*nodes: tuple[str, bytes, str]) -> LowerTree:
    t = LowerTree()
    for path, kind, link in nodes:
        t.add(path, Node(kind, 0o755, 0, 0, 0, link))
    return t


@pytest.mark.parametrize(("path", "expected"), [
    ("bin/sh", "usr/bin/sh"),  # through the image's own /bin -> usr/bin
    ("abs/x", "usr/bin/x"),  # an absolute link stays inside the image
    ("../../etc/passwd", "etc/passwd"),  # `..` stops at the image's root
    ("up/x", "x"),
    ("usr/bin", "usr/bin"),
])
def test_lower_tree_resolves_inside_the_image(path, expected):
    t = tree(("usr", tarfile.DIRTYPE, ""), ("usr/bin", tarfile.DIRTYPE, ""), ("bin", tarfile.SYMTYPE, "usr/bin"),
             ("abs", tarfile.SYMTYPE, "/usr/bin"), ("up", tarfile.SYMTYPE, "../../.."))
    assert t.resolve(path) == expected


def test_lower_tree_link_loop_is_an_error():
    t = tree(("a", tarfile.SYMTYPE, "b"), ("b", tarfile.SYMTYPE, "a"))
    with pytest.raises(Exception, match="too many levels"):
        t.resolve("a/x")


def test_lower_tree_applies_whiteouts_and_opaque_dirs():
    t = tree(("d", tarfile.DIRTYPE, ""), ("d/old", tarfile.REGTYPE, ""), ("f", tarfile.REGTYPE, ""))
    t.apply_entries([Entry("d", tarfile.DIRTYPE, 0o755), Entry("d/.wh..wh..opq", tarfile.REGTYPE, 0),
                     Entry("d/-new", tarfile.REGTYPE, 0o644), Entry(".wh.f", tarfile.REGTYPE, 0)])
    assert t.get("d/old") is None and t.get("f") is None and t.get("d/-new") is not None


def _entries():
    return [Entry("b/file", tarfile.REGTYPE, 0o644, 1, 2, 2_000_000_000, data=b"x"),
            Entry("b", tarfile.DIRTYPE, 0o755, 0, 0, 5),
            Entry("a", tarfile.SYMTYPE, 0o777, 0, 0, 5, linkname="b/file")]


def test_layer_is_sorted_clamped_and_hashed_while_written():
    out = io.BytesIO()
    written = write_layer(_entries(), out, clamp=100)
    blob = out.getvalue()
    assert written.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and written.size == len(blob)
    import gzip

    plain = gzip.decompress(blob)
    assert written.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(plain)) as t:
        members = t.getmembers()
    assert [m.name for m in members] == ["a", "b", "b/file"]
    assert max(m.mtime for m in members) == 100 and all(m.uname == "" for m in members)
    again = io.BytesIO()
    assert write_layer(list(reversed(_entries())), again, clamp=100) == written  # order of input is irrelevant
