"""The quick tar header decoder in storage.unpack agrees with tarfile's own on every header:
real ones of every format and type, and random damage to them."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.storage.unpack import _LayerTarInfo

FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname",
          "devmajor", "devminor")


def decode(cls, buf: bytes):
    try:
        ti = cls.frombuf(buf, "utf-8", "surrogateescape")
    except Exception as e:  # noqa: BLE001 - the kind of failure is what is compared
        return type(e).__name__
    return {name: getattr(ti, name) for name in FIELDS}


def header(name: str, kind: bytes, fmt: int, **attrs) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in attrs.items():
        setattr(ti, k, v)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        t.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.size else None)
    # The last header block before the data: the member itself, after any PAX or GNU extension.
    data = buf.getvalue()
    offset = 0
    while True:
        block = data[offset:offset + 512]
        member = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        if member.type not in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            return block
        offset += 512 + (member.size + 511) // 512 * 512


names = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=120)
kinds = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"V", b"Z"])
formats = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
numbers = st.integers(0, 8**7 - 1) | st.integers(8**7, 2**40)


@settings(max_examples=500, deadline=None)
@given(names, kinds, formats, numbers, numbers, st.integers(0, 2**33), st.integers(0, 3000), st.data())
def test_quick_decoder_agrees_with_tarfile(name, kind, fmt, uid, gid, mtime, size, data):
    attrs = {"uid": uid, "gid": gid, "mtime": mtime, "mode": data.draw(st.integers(0, 0o7777)),
             "size": size if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0,
             "linkname": data.draw(names) if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "",
             "devmajor": data.draw(st.integers(0, 4095)), "devminor": data.draw(st.integers(0, 4095))}
    try:
        buf = bytearray(header(name, kind, fmt, **attrs))
    except (ValueError, UnicodeError):
        return  # tarfile cannot write this one in this format
    assert decode(_LayerTarInfo, bytes(buf)) == decode(tarfile.TarInfo, bytes(buf))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, 511))
        buf[pos] = data.draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x38, 0x5F, 0x80, 0xFF]) | st.integers(0, 255))
    assert decode(_LayerTarInfo, bytes(buf)) == decode(tarfile.TarInfo, bytes(buf))


def test_end_blocks_and_short_blocks_agree():
    for buf in (bytes(512), b"", bytes(100), b"\x01" * 512):
        assert decode(_LayerTarInfo, buf) == decode(tarfile.TarInfo, buf)
