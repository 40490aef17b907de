"""Tar archives as the image transports use them: read in place, written atomically.

Reading never extracts anything: the member headers are indexed once and member data is read
at its offset in the file, so nothing in an archive can write to the host. Member names are
normalised and refused when they leave the archive (absolute, ``..``). A symbolic or hard link
to another member is followed when that member is read (``docker save`` links repeated
layers); a link out of the archive, a device node, a FIFO or a sparse file refuses the whole
archive. A compressed archive (gzip, zstd, xz, bzip2: ``docker save | gzip``) is first
decompressed into an anonymous temporary file.

Writing goes to a temporary file next to the target, renamed into place by ``finish()``;
``abort()`` removes it, so a failed save never leaves half an archive. Members are streamed:
each header is written with size 0 and patched when the member ends, so a member (e.g. a
layer being decompressed) needs no size in advance.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reconciler.errors import ImageError
from reconciler.fsutil import fsync_dir
from reconciler.images.blobio import CHUNK, decompression_errors, decompressor, detect_compression

MAX_MEMBERS = 100_000
MAX_LINK_HOPS = 16
BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class Member:
    name: str  # normalised: "blobs/sha256/…", never "./…", "/…" or "…/../…"
    kind: str  # "file" | "dir" | "link"
    offset: int  # where the data starts in the (uncompressed) archive
    size: int
    target: str = ""  # for links: the normalised name of the member it points at


def normalize_member_name(name: str, where: str) -> str:
    """``./a//b/`` → ``a/b``; "" for the archive root; ImageError for a name leaving the archive."""
    if name.startswith("/"):
        raise ImageError(f"{where}: member {name!r} is an absolute path; refusing the archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{where}: member {name!r} leaves the archive ('..'); refusing the archive")
    return "/".join(parts)


def resolve_relative(base_dir: str, target: str, where: str, what: str) -> str:
    """The member name ``target`` means when written in directory ``base_dir`` of the archive."""
    if target.startswith("/"):
        raise ImageError(f"{where}: {what} points at the absolute path {target!r}, outside the archive; "
                         "refusing the archive")
    joined = posixpath.normpath(posixpath.join(base_dir, target)) if target else ""
    if joined == ".." or joined.startswith("../"):
        raise ImageError(f"{where}: {what} points at {target!r}, outside the archive; refusing the archive")
    return "" if joined == "." else joined


class _Slice:
    """A read-only file over ``size`` bytes at ``start`` of a file descriptor (pread: several
    threads may read different members at once)."""

    def __init__(self, fd: int, start: int, size: int):
        self.fd, self.start, self.size, self.pos = fd, start, size, 0

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.start + self.pos)
        if not data:
            raise ImageError("archive ended in the middle of a member (truncated file?)")
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TarArchive:
    """An archive opened for reading. ``open(name)`` gives a member's data (links followed)."""

    def __init__(self, path: str | os.PathLike | None, *, description: str = "",
                 tmpdir: str | os.PathLike | None = None, stream: BinaryIO | None = None):
        self.description = description or f"archive {path}"
        self._file: BinaryIO | None = None
        self._members: dict[str, Member] = {}
        try:
            self._file = self._open(path, stream, tmpdir)
            self._index()
        except BaseException:
            self.close()
            raise

    @property
    def fd(self) -> int:
        assert self._file is not None
        return self._file.fileno()

    def _open(self, path, stream: BinaryIO | None, tmpdir) -> BinaryIO:
        if stream is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ImageError(f"{self.description}: no such file") from None
            except IsADirectoryError:
                raise ImageError(f"{self.description}: is a directory, not an archive") from None
            except OSError as exc:
                raise ImageError(f"{self.description}: cannot open: {exc.strerror}") from None
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise ImageError(f"{self.description}: is a directory, not an archive")
            raw = os.fdopen(fd, "rb")
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                stream, raw = raw, None  # a pipe or a device: spool it like stdin
            else:
                head = os.pread(fd, 8, 0)
                kind = detect_compression(head)
                if kind == "none":
                    return raw
                stream = raw
        else:
            raw = None
        # A stream or a compressed archive: spool the (decompressed) tar into an anonymous file.
        head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
        kind = detect_compression(head) if head else "none"
        spool = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115 - owned by the archive
        try:
            if not head:
                first = stream.read(CHUNK)
                kind = detect_compression(first)
                source = _Prepend(first, stream)
            else:
                source = stream
            reader = decompressor(kind, source)
            try:
                while chunk := reader.read(CHUNK):
                    spool.write(chunk)
            except decompression_errors() as exc:
                raise ImageError(f"{self.description}: cannot decompress the {kind} archive: {exc}") from None
            spool.flush()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        finally:
            if stream is not None and path is not None:
                stream.close()
        return spool

    def _index(self) -> None:
        assert self._file is not None
        self._file.seek(0, os.SEEK_END)
        total = self._file.tell()
        self._file.seek(0)
        where = self.description
        try:
            tar = tarfile.open(fileobj=self._file, mode="r:")  # noqa: SIM115 - closed below
        except tarfile.ReadError as exc:
            raise ImageError(f"{where}: not a tar archive ({exc})") from None
        try:
            count = 0
            while True:
                try:
                    ti = tar.next()
                except tarfile.ReadError as exc:
                    raise ImageError(f"{where}: damaged tar archive ({exc})") from None
                if ti is None:
                    break
                count += 1
                if count > MAX_MEMBERS:
                    raise ImageError(f"{where}: more than {MAX_MEMBERS} members; refusing the archive")
                if ti.isreg() and ti.offset_data + ti.size > total:
                    raise ImageError(f"{where}: member {ti.name!r} ends after the end of the file "
                                     "(a truncated archive?)")
                self._add(ti, where)
                # Nothing is kept but our own index.
                tar.members = []
        finally:
            tar.close()
        # Links must point at members that exist and must not loop.
        for m in self._members.values():
            if m.kind == "link":
                self._follow(m.name)

    def _add(self, ti: tarfile.TarInfo, where: str) -> None:
        name = normalize_member_name(ti.name, where)
        if not name:
            return  # the archive's own root ("./")
        if ti.isdir():
            self._members.setdefault(name, Member(name, "dir", 0, 0))
            return
        if ti.issym() or ti.islnk():
            what = f"member {name!r} ({'symbolic' if ti.issym() else 'hard'} link to {ti.linkname!r})"
            base = posixpath.dirname(name) if ti.issym() else ""
            target = resolve_relative(base, ti.linkname, where, what)
            if not target:
                raise ImageError(f"{where}: {what} points at the archive root; refusing the archive")
            kind, offset, size = "link", 0, 0
        elif ti.isreg():
            if ti.issparse():
                raise ImageError(f"{where}: member {name!r} is a sparse file; refusing the archive")
            kind, offset, size, target = "file", ti.offset_data, ti.size, ""
        else:
            raise ImageError(f"{where}: member {name!r} is a device, FIFO or other special file; "
                             "image archives hold only files, directories and links; refusing the archive")
        if name in self._members and self._members[name].kind != "dir":
            raise ImageError(f"{where}: two members are named {name!r}; refusing an ambiguous archive")
        self._members[name] = Member(name, kind, offset, size, target)

    def _follow(self, name: str) -> Member:
        seen = []
        current = name
        for _ in range(MAX_LINK_HOPS):
            m = self._members.get(current)
            if m is None:
                if seen:
                    raise ImageError(f"{self.description}: member {seen[0]!r} is a link to {current!r}, "
                                     "which is not in the archive; refusing the archive")
                raise KeyError(current)
            if m.kind != "link":
                return m
            seen.append(current)
            current = m.target
        raise ImageError(f"{self.description}: member {name!r} is a chain of links that does not end; "
                         "refusing the archive")

    # --- lookups ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(n for n, m in self._members.items() if m.kind != "dir")

    def has(self, name: str) -> bool:
        try:
            return self._follow(name).kind == "file"
        except KeyError:
            return False

    def member(self, name: str, what: str = "") -> Member:
        try:
            m = self._follow(name)
        except KeyError:
            raise ImageError(f"{self.description}: {what or name!r} is not in the archive") from None
        if m.kind != "file":
            raise ImageError(f"{self.description}: {what or name!r} is a directory, not a file")
        return m

    def size(self, name: str) -> int:
        return self.member(name).size

    def open(self, name: str, what: str = "") -> _Slice:
        m = self.member(name, what)
        return _Slice(self.fd, m.offset, m.size)

    def read(self, name: str, limit: int, what: str = "") -> bytes:
        m = self.member(name, what)
        if m.size > limit:
            raise ImageError(f"{self.description}: {what or name!r} is {m.size} bytes, more than the {limit} "
                             "allowed; refusing it")
        return _Slice(self.fd, m.offset, m.size).read()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def __enter__(self) -> TarArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Prepend:
    """A reader that first returns ``head``, then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO):
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.raw.read(n)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


# --- writing --------------------------------------------------------------------------------------

def _header(name: str, size: int, *, directory: bool = False) -> bytes:
    ti = tarfile.TarInfo(name + ("/" if directory else ""))
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.mode = 0o755 if directory else 0o644
    ti.size = size
    ti.mtime = 0  # the same content gives the same archive
    ti.uname = ti.gname = ""
    # GNU format: a size too large for the octal field is written in base-256 in the same
    # 512 bytes, so a header can always be patched in place once the size is known.
    # A name longer than 100 bytes gets a GNU long-name block first; its length does not
    # depend on the size, so the patched header has the same length too.
    return ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")


class TarWriter:
    """Writes a tar archive to ``target`` (atomically) or, when ``target`` is None, to a
    temporary file that ``finish(stream)`` copies out (e.g. to standard output)."""

    def __init__(self, target: str | os.PathLike | None, *, tmpdir: str | os.PathLike | None = None):
        self.target = Path(target) if target is not None else None
        self._lock = threading.Lock()
        self._open_member: _MemberWriter | None = None
        self._tmp: Path | None = None
        self._dirs: set[str] = set()
        if self.target is not None:
            parent = self.target.parent
            if not parent.is_dir():
                raise ImageError(f"cannot write {self.target}: directory {parent} does not exist")
            if self.target.is_dir():
                raise ImageError(f"cannot write {self.target}: it is a directory")
            try:
                fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.target.name}.", suffix=".tmp")
            except OSError as exc:
                raise ImageError(f"cannot write {self.target}: {exc.strerror}") from None
            self._tmp = Path(tmp)
            self.file = os.fdopen(fd, "w+b")
        else:
            self.file = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115 - closed by finish/abort

    def add_dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self.file.write(_header(d, 0, directory=True))

    def add_bytes(self, name: str, data: bytes) -> None:
        with self.member(name) as m:
            m.write(data)

    def member(self, name: str) -> _MemberWriter:
        """A writer for one regular member; close it to end the member (one at a time)."""
        if self._open_member is not None:
            raise ImageError("internal error: two archive members written at once")
        parent = posixpath.dirname(name)
        if parent:
            self.add_dir(parent)
        self._open_member = _MemberWriter(self, name)
        return self._open_member

    def _member_closed(self) -> None:
        self._open_member = None

    def finish(self, stream: BinaryIO | None = None) -> None:
        """End the archive and put it in place (or copy it to ``stream``)."""
        if self._open_member is not None:
            raise ImageError("internal error: an archive member is still open")
        self.file.write(b"\0" * (BLOCK * 2))
        self.file.flush()
        if self.target is not None and self._tmp is not None:
            os.fsync(self.file.fileno())
            os.fchmod(self.file.fileno(), 0o644)
            self.file.close()
            os.rename(self._tmp, self.target)
            self._tmp = None
            fsync_dir(self.target.parent)
        else:
            self.file.seek(0)
            out = stream
            assert out is not None, "finish() of a temporary archive needs a stream"
            while chunk := self.file.read(CHUNK):
                out.write(chunk)
            out.flush()
            self.file.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class _MemberWriter:
    def __init__(self, tar: TarWriter, name: str):
        self.tar, self.name = tar, name
        self.f = tar.file
        self.header_at = self.f.tell()
        self.f.write(_header(name, 0))
        self.data_at = self.f.tell()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.size += len(data)

    def reset(self) -> None:
        """Start the member's data again."""
        self.f.seek(self.data_at)
        self.f.truncate()
        self.size = 0

    def drop(self) -> None:
        """Remove the member altogether."""
        if not self.closed:
            self.f.seek(self.header_at)
            self.f.truncate()
            self.closed = True
            self.tar._member_closed()

    def close(self) -> None:
        if self.closed:
            return
        pad = (-self.size) % BLOCK
        if pad:
            self.f.write(b"\0" * pad)
        end = self.f.tell()
        header = _header(self.name, self.size)
        if len(header) != self.data_at - self.header_at:
            raise ImageError(f"internal error: the header of archive member {self.name!r} changed length")
        self.f.seek(self.header_at)
        self.f.write(header)
        self.f.seek(end)
        self.closed = True
        self.tar._member_closed()

    def __enter__(self) -> _MemberWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.drop()
