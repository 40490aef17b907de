"""Generated tar streams (random names with '..', '/', whiteouts; random types, link targets,
sizes, formats; random byte damage): unpack either succeeds or raises StorageError, and never
writes outside the layer directory."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reconciler.errors import StorageError
from reconciler.storage.unpack import UnpackLimits, unpack_layer
from tests.host.storage.kit import E, Victim, compress, sha256, tar_bytes

LIMITS = UnpackLimits(max_bytes=4 * 1024 * 1024, max_entries=200, max_header_bytes=64 * 1024)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])

segment = st.one_of(
    st.sampled_from(["a", "b", "a", "b", "sub", "sub/x", "sub/op", "sub/gone", "file", "..", ".", "",
                     ".wh.a", ".wh..wh..opq", ".wh.", ".wh...", ".wh..", "victim", "caf\udce9", " ", "-",
                     "x" * 255, "y" * 256]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
            min_size=1, max_size=6),
)
TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, b"V", b"9"]


def names(victim: str, relative_only: bool = False):
    rel = st.lists(segment, min_size=1, max_size=5).map("/".join)
    if relative_only:
        return rel
    hostile = st.one_of(rel.map(lambda n: "/" + n), rel.map(lambda n: f"{victim}/{n}"),
                        st.sampled_from([victim, "/", ".", "./", "../victim/file", f"{victim}/file", "/etc/passwd"]))
    # Mostly relative names, so that many streams get far enough to build symlink traps.
    return st.one_of(rel, rel, rel, rel, rel, rel, hostile)


@st.composite
def entries(draw, victim: str):
    out = []
    # Half the streams use relative entry names only (symlink targets stay hostile): those get
    # past the name checks and probe the no-follow walk with links they planted themselves.
    relative_only = draw(st.booleans())
    for _ in range(draw(st.integers(1, 8))):
        ti = tarfile.TarInfo(draw(names(victim, relative_only)))
        ti.type = draw(st.sampled_from(TYPES))
        ti.mode = draw(st.integers(0, 0o7777))
        ti.uid, ti.gid = draw(st.integers(0, 70000)), draw(st.integers(0, 70000))
        ti.mtime = draw(st.integers(0, 2**33))
        if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            ti.linkname = draw(names(victim))
        if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            ti.devmajor, ti.devminor = draw(st.integers(0, 300)), draw(st.integers(0, 300))
        data = b""
        if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
            data = draw(st.binary(max_size=2000))
            ti.size = len(data)
        if draw(st.booleans()):
            ti.pax_headers = {f"SCHILY.xattr.{draw(st.sampled_from(['user.a', 'trusted.overlay.opaque', 'security.capability', 'security.selinux']))}": "y"}  # noqa: E501
        out.append(E(ti, data))
    return out


def _build(es, fmt) -> bytes:
    try:
        return tar_bytes(es, fmt=fmt)
    except (ValueError, UnicodeError, tarfile.TarError):
        assume(False)  # tarfile itself cannot write this one
        raise


def _check(work, blob: bytes, diff_id: str | None, lowers=()):
    base, dest, victim, top = work
    try:
        unpack_layer(io.BytesIO(blob), dest, diff_id=diff_id, limits=LIMITS, lowers=lowers)
    except StorageError:
        assert not os.path.lexists(dest)
    finally:
        assert victim.untouched()
        assert sorted(os.listdir(base)) == top
        assert sorted(os.listdir(dest.parent)) in ([], ["layer"])
        shutil.rmtree(dest, ignore_errors=True)


def _work(host_paths):
    base = host_paths.root.parent
    victim = Victim.make(base)
    (base / "work").mkdir()
    # A lower layer full of traps for the directories a layer uses without declaring them.
    lower = base / "lower"
    (lower / "sub" / "op").mkdir(parents=True)
    os.symlink(str(victim.path), lower / "a")
    os.symlink("../victim", lower / "b")
    os.symlink("/", lower / "sub" / "x")
    (lower / "file").write_text("f")
    os.mknod(lower / "sub" / "gone", stat.S_IFCHR, 0)
    os.setxattr(lower / "sub" / "op", "trusted.overlay.opaque", b"y")
    return base, base / "work" / "layer", victim, sorted(os.listdir(base))


def test_generated_tars_never_escape(host_paths):
    work = _work(host_paths)
    victim = str(work[2].path)

    @SETTINGS
    @given(st.data())
    def run(data):
        es = data.draw(entries(victim))
        raw = _build(es, data.draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])))
        how = data.draw(st.sampled_from(["none", "gzip", "zstd"]))
        lowers = [work[0] / "lower"] if data.draw(st.booleans()) else []
        _check(work, compress(raw, how), data.draw(st.sampled_from([sha256(raw), None])), lowers)

    run()


def test_damaged_tars_never_escape(host_paths):
    work = _work(host_paths)
    victim = str(work[2].path)

    @SETTINGS
    @given(st.data())
    def run(data):
        raw = bytearray(_build(data.draw(entries(victim)), tarfile.PAX_FORMAT))
        for _ in range(data.draw(st.integers(1, 20))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        _check(work, bytes(raw[:cut]), None)

    run()
