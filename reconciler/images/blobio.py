"""Blob plumbing shared by the transports: verifying writers, file-backed sources, compression.

Every byte a transport writes goes through a ``BlobWriter``: it counts and hashes what it is
given and refuses, on ``commit()``, content whose size or digest is not what the descriptor
said. The writers share the interface of the store's ``Ingest`` (``offset``, ``write``,
``reset``, ``discard``, ``commit``), so every ``BlobSource.copy_blob`` can fill any of them:
the registry client resumes into them, files are streamed into them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconciler import sha
from reconciler.errors import ImageError
from reconciler.images.reference import validate_digest

CHUNK = 1 << 20
GZIP_LEVEL = 6  # what the containers tools and docker use: level 9 is several times slower for ~2% less


@dataclass(frozen=True)
class CopiedImage:
    """What a destination is told once an image's blobs are all written: its manifest, as
    written (possibly converted), and what its config says about the layers."""

    data: bytes  # the manifest (or index) as written
    digest: str
    media_type: str
    config_digest: str = ""  # "" for an index
    diff_ids: tuple[str, ...] = ()

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + sha.sha256(data).hexdigest()


def hasher_for(digest: str):
    return sha.streaming(digest.split(":", 1)[0])


def detect_compression(head: bytes) -> str:
    """"gzip", "zstd", "xz", "bzip2" or "none", from the first bytes of a stream."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    # A zstd frame, or a skippable frame (magic 0x184D2A5?) that may precede one.
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and 0x50 <= head[0] <= 0x5F):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4].isdigit():
        return "bzip2"
    return "none"


class _Plain:
    """``raw`` as it is, usable in ``with`` without closing it (like the decompressors)."""

    def __init__(self, raw):
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)

    def readinto(self, b) -> int:
        data = self.raw.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def decompressor(kind: str, raw) -> BinaryIO:
    """A reader of the decompressed stream of ``raw`` (``kind`` from ``detect_compression``).
    Closing it never closes ``raw``."""
    if kind == "none":
        return _Plain(raw)  # type: ignore[return-value]
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "zstd":
        from backports import zstd

        return zstd.ZstdFile(raw, "rb")
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(raw, "rb")
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(raw, "rb")
    raise ImageError(f"unknown compression {kind!r}")


def compressor(kind: str, out: BinaryIO) -> BinaryIO:
    """A writer that compresses into ``out`` (gzip or zstd); close it to finish the stream."""
    if kind == "gzip":
        import gzip

        # mtime 0 and no file name: the same input always gives the same blob (and digest).
        return gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0, compresslevel=GZIP_LEVEL)
    if kind == "zstd":
        from backports import zstd

        return zstd.ZstdFile(out, "wb")
    raise ImageError(f"cannot compress layers with {kind!r}: use gzip or zstd")


def decompression_errors() -> tuple[type[BaseException], ...]:
    import lzma
    import zlib

    from backports import zstd

    return (OSError, EOFError, zlib.error, lzma.LZMAError, zstd.ZstdError, ValueError)


class BlobWriter:
    """Counts and hashes a blob on its way somewhere; ``commit()`` refuses wrong content.

    Subclasses move the bytes: ``_put`` (append), ``_truncate`` (back to empty), ``_drop``
    (give up: remove whatever was written) and ``_finish`` (the content is verified: keep it).
    """

    def __init__(self, digest: str, size: int, what: str = ""):
        self.digest, self.size = validate_digest(digest), size
        self.what = what or f"blob {digest}"
        self._hash = hasher_for(digest)
        self.offset = 0
        self.done = False
        self.dropped = False

    def write(self, chunk: bytes) -> None:
        if self.offset + len(chunk) > self.size:
            self.discard()
            raise ImageError(f"{self.what} is larger than the {self.size} bytes its descriptor declares")
        self._put(chunk)
        self._hash.update(chunk)
        self.offset += len(chunk)

    def reset(self) -> None:
        self._truncate()
        self._hash = hasher_for(self.digest)
        self.offset = 0

    def discard(self) -> None:
        """Give up (once; a refused blob is discarded where it was refused and again on the way out)."""
        if not self.done and not self.dropped:
            self.dropped = True
            self._drop()
            self._hash = hasher_for(self.digest)
            self.offset = 0

    def commit(self) -> None:
        if self.offset != self.size:
            got = self.offset
            self.discard()
            raise ImageError(f"{self.what}: got {got} bytes, its descriptor declares {self.size}")
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self.digest:
            self.discard()
            raise ImageError(f"{self.what} failed verification: its content has digest {actual}")
        self._finish()
        self.done = True

    # --- hooks ---------------------------------------------------------------------------------

    def _put(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _truncate(self) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        self._truncate()

    def _finish(self) -> None:
        pass


class MemoryWriter(BlobWriter):
    """A small blob (a config, a manifest) into memory, with a size limit."""

    def __init__(self, digest: str, size: int, limit: int, what: str = ""):
        super().__init__(digest, size, what)
        if size > limit:
            raise ImageError(f"{self.what} is {size} bytes, more than the {limit} allowed")
        self.data = bytearray()

    def _put(self, chunk: bytes) -> None:
        self.data += chunk

    def _truncate(self) -> None:
        self.data = bytearray()


class FileWriter(BlobWriter):
    """A blob into a temporary file in ``directory``, renamed to ``target`` once verified
    (or kept as an anonymous temporary file when ``target`` is None: read it with ``file``)."""

    def __init__(self, digest: str, size: int, directory: str | os.PathLike, target: str | os.PathLike | None,
                 what: str = ""):
        super().__init__(digest, size, what)
        self.target = Path(target) if target is not None else None
        if self.target is None:
            self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by close()
            self.tmp: Path | None = None
        else:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".podplay-blob-", suffix=".tmp")
            self.file = os.fdopen(fd, "w+b")
            self.tmp = Path(tmp)

    def _put(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def _truncate(self) -> None:
        self.file.seek(0)
        self.file.truncate(0)

    def _drop(self) -> None:
        self._truncate()
        self.close()

    def _finish(self) -> None:
        self.file.flush()
        if self.target is not None and self.tmp is not None:
            os.fsync(self.file.fileno())
            os.chmod(self.tmp, 0o644)
            os.rename(self.tmp, self.target)
            self.tmp = None
        else:
            self.file.seek(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            self.tmp = None


def stream_into(reader: BinaryIO, writer, progress: Callable[[int], None] | None = None) -> None:
    """Copy ``reader`` (positioned at ``writer.offset``) into ``writer`` and commit it."""
    while chunk := reader.read(CHUNK):
        writer.write(chunk)
        if progress:
            progress(len(chunk))
    writer.commit()


def copy_file_blob(open_blob: Callable[[], BinaryIO], writer, progress: Callable[[int], None] | None = None) -> None:
    """A ``copy_blob`` for content in a file: resume at the writer's offset, stream, commit."""
    with open_blob() as f:
        if writer.offset:
            f.seek(writer.offset)
        stream_into(f, writer, progress)


class HashingReader:
    """Hashes (and counts) what is read through it."""

    def __init__(self, raw: BinaryIO, algorithm: str = "sha256"):
        self.raw = raw
        self.hash = sha.streaming(algorithm)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"


class HashingWriter:
    """Hashes and counts what goes through it into ``out``."""

    def __init__(self, out: BinaryIO, algorithm: str = "sha256"):
        self.out = out
        self.hash = sha.streaming(algorithm)
        self.count = 0

    def write(self, data) -> int:
        self.out.write(data)
        self.hash.update(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"


def iter_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk
