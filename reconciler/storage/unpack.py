"""Secure unpack of one OCI layer blob into its own directory, in overlayfs form.

Every layer is unpacked into a directory of its own (``lowerdir`` material), never onto a merged
view, so the questions a hostile layer can ask are narrow: can an entry land outside the
directory, and can it write through a symlink? The answer must be no for every entry, so:

* Headers come from ``tarfile`` reading a forward-only stream (with a quicker decoder for the
  plain 512-byte header that falls back to tarfile's own for anything unusual); entries are
  created by this module with dir fds, ``O_NOFOLLOW`` and ``*at`` calls relative to the layer
  root. No path is ever resolved by the kernel through a symlink, and ``..`` or absolute names
  are refused outright (real layers never contain them).
* A directory this layer needs but does not declare (``a/file`` with no ``a/`` entry) is looked
  up in the lower layers. Where a lower layer has a symlink there, the layer meant to write
  through it (containerd would follow it inside the rootfs); we refuse instead of guessing.
  A lower directory's owner, mode and mtime are copied so the merged view does not change.
* Whiteouts become overlayfs whiteouts: ``.wh.name`` → a 0:0 character device ``name``,
  ``.wh..wh..opq`` → ``trusted.overlay.opaque=y`` on the directory. Other ``.wh..wh.*`` names
  (aufs bookkeeping) are ignored, as Docker does. Per the OCI spec a whiteout hides lower layers
  only, so an entry of the same layer keeps its name; a directory that replaces a whiteout is
  made opaque, since the lower directory it would otherwise merge with was deleted.
* Device nodes are created as the tar says (podman does the same as root): layer directories
  are root-only (0700) and snapshots are mounted ``nodev``, so a node from an image cannot be
  opened through a container's root filesystem; containers get their /dev from the runtime.
* Extended attributes: ``user.*`` and ``security.*`` (``security.capability`` matters) are kept;
  ``trusted.*`` (overlayfs keeps its own state there), ``system.*`` and ``security.selinux`` are
  dropped, so a layer cannot forge overlay metadata.
* Sizes are bounded (uncompressed bytes, entries, extended header size) against decompression
  bombs; the uncompressed stream is hashed as it is read and must match the layer's diff_id.

On any failure the destination directory is removed; the caller unpacks into a temporary name
and renames it into place only on success.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import struct
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from reconciler import sha
from reconciler.errors import StorageError

GiB = 1 << 30
MiB = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = b"BZh"

# Uncompressed bytes decompressed and hashed at a time (handed to tarfile in slices).
_CHUNK = 256 * 1024
_COPY_CHUNK = 1 * MiB
_MAX_CACHED_DIRS = 512
_MAX_DEPTH = 1024  # path components; each open directory on the way holds an fd

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_NODES = (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)
_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)
_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
_DIGEST_HEX_LEN = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds against decompression bombs. ``max_bytes`` counts the uncompressed tar stream."""

    max_bytes: int = 20 * GiB
    max_entries: int = 1_000_000
    max_header_bytes: int = 1 * MiB  # one PAX or GNU long-name header


DEFAULT_LIMITS = UnpackLimits()


class LayerTooLarge(StorageError):
    """A layer went past ``limit`` (uncompressed bytes, or entries): refused as soon as the
    stream crossed it, before anything past it was written. The layer store says why the
    limit was what it was (the image's budget, the free space)."""

    def __init__(self, message: str, *, what: str, limit: int, reached: int):
        super().__init__(message)
        self.what, self.limit, self.reached = what, limit, reached

    def __reduce__(self):  # crosses from a forked unpacker (reconciler.forked) by pickle
        return _too_large, (str(self), self.what, self.limit, self.reached)


def _too_large(message: str, what: str, limit: int, reached: int) -> LayerTooLarge:
    return LayerTooLarge(message, what=what, limit=limit, reached=reached)


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str  # digest of the uncompressed stream, as computed
    size: int  # uncompressed bytes
    entries: int


def is_whiteout(st: os.stat_result) -> bool:
    """An overlayfs whiteout: a character device with device number 0:0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def keep_xattr(name: str) -> bool:
    """Whether an extended attribute from a layer is applied (see the module docstring)."""
    if name.startswith("user."):
        return True
    return name.startswith("security.") and name != "security.selinux"


def parse_digest(digest: str) -> tuple[str, str]:
    m = _DIGEST.match(digest or "")
    if not m or len(m.group(2)) != _DIGEST_HEX_LEN[m.group(1)]:
        raise StorageError(f"layer diff_id {digest!r} is not a sha256 or sha512 digest")
    return m.group(1), m.group(2)


# --- the decompressed, hashed stream ---------------------------------------------------------

class _Prefixed:
    """Gives back the bytes read to sniff the format, then the rest of the blob."""

    def __init__(self, head: bytes, raw: BinaryIO):
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._raw.read(n)
        if n is None or n < 0:
            head, self._head = self._head, b""
            return head + self._raw.read()
        head, self._head = self._head[:n], self._head[n:]
        return head


def detect_compression(head: bytes) -> str:
    """"gzip", "zstd" or "none", from the first bytes of a blob (content wins over media type:
    registries and tools mislabel layers)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    # A zstd frame, or a skippable frame (magic 0x184D2A5?) that may precede one.
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50):
        return "zstd"
    if head.startswith(_XZ_MAGIC):
        raise StorageError("the content is xz-compressed; OCI layers are tar, tar+gzip or tar+zstd")
    if head.startswith(_BZIP2_MAGIC) and len(head) > 3 and head[3:4].isdigit():
        raise StorageError("the content is bzip2-compressed; OCI layers are tar, tar+gzip or tar+zstd")
    return "none"


class _HashingReader:
    """The uncompressed layer stream, as the tar reader sees it: decompressed, counted and hashed
    a chunk at a time (one large read of the decompressor, one hash update), then handed out in
    slices. ``seek`` only goes forward, which is all tarfile's "r:" mode asks of a file object:
    the tar reader never buffers or copies the stream itself.

    (A thread decompressing ahead was tried: with many small files the unpacker holds the GIL
    most of the time, and handing it back and forth cost more than the overlap gained.)"""

    def __init__(self, raw, algorithm: str, limit: int):
        self._raw = raw
        self._hash = sha.streaming(algorithm)
        self._limit = limit
        self.algorithm = algorithm
        self.count = 0  # bytes read and hashed so far
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self._eof = False

    def _take(self) -> bytes | None:
        """The next chunk of the stream (None at the end)."""
        if self._eof:
            return None
        data = self._raw.read(_CHUNK)
        if not data:
            self._eof = True
            return None
        self.count += len(data)
        if self.count > self._limit:
            self._eof = True
            raise LayerTooLarge(f"the uncompressed layer exceeds the limit of {self._limit} bytes "
                                "(a decompression bomb, or raise the limit)",
                                what="bytes", limit=self._limit, reached=self.count)
        self._hash.update(data)
        return data

    def _next_chunk(self) -> bool:
        item = self._take()
        if item is None:
            return False
        self._base += len(self._buf)
        self._buf, self._pos = item, 0
        return True

    def read(self, n: int = -1) -> bytes:
        buf, pos = self._buf, self._pos
        if n is not None and 0 <= n <= len(buf) - pos:
            self._pos = pos + n
            return buf[pos:pos + n]
        parts = [buf[pos:]]
        self._pos = len(buf)
        need = -1 if n is None or n < 0 else n - len(parts[0])
        while need and self._next_chunk():
            take = len(self._buf) if need < 0 else min(need, len(self._buf))
            parts.append(self._buf[:take])
            self._pos = take
            if need > 0:
                need -= take
        return b"".join(parts)

    def tell(self) -> int:
        return self._base + self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self._base:
            raise StorageError("the tar reader went back in the layer stream")
        while offset > self._base + len(self._buf):
            if not self._next_chunk():
                self._pos = len(self._buf)
                return self.tell()
        self._pos = offset - self._base
        return offset

    def drain(self) -> None:
        self._pos = len(self._buf)
        while self._next_chunk():
            self._pos = len(self._buf)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"


def open_uncompressed(blob: BinaryIO, media_type: str = ""):
    """A file-like object reading the uncompressed tar stream of a layer blob.

    The compression is detected from the content; ``media_type`` is only used in messages."""
    if media_type.endswith("+encrypted"):
        raise StorageError(f"encrypted layers ({media_type}) are not supported")
    head = blob.read(6)
    kind = detect_compression(head)
    src = _Prefixed(head, blob)
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=src, mode="rb")
    if kind == "zstd":
        from backports import zstd

        return zstd.ZstdFile(src, "rb")
    return src


# --- tar headers: bounded extended headers, and a quicker plain header -----------------------

# The classic 512-byte header: name, mode, uid, gid, size, mtime, chksum, type, linkname,
# magic+version, uname, gname, devmajor, devminor, prefix.
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s")


# Decoded header fields by their bytes: modes, owners, times and names repeat from header to
# header, and a dict lookup is much quicker than decoding again.
_NUMBERS: dict[bytes, int] = {}
_NAMES: dict[tuple[bytes, str, str], str] = {}
_MEMO_MAX = 4096


def _octal(field: bytes) -> int:
    v = _NUMBERS.get(field)
    if v is None:
        v = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
        if len(_NUMBERS) >= _MEMO_MAX:
            _NUMBERS.clear()
        _NUMBERS[field] = v
    return v


def _text(field: bytes, encoding: str, errors: str) -> str:
    return field.split(b"\0", 1)[0].decode(encoding, errors)


def _short_text(field: bytes, encoding: str, errors: str) -> str:
    """_text for fields that are mostly empty or repeat (link name, owner names, prefix)."""
    if not field[0]:
        return ""
    key = (field, encoding, errors)
    v = _NAMES.get(key)
    if v is None:
        v = field.split(b"\0", 1)[0].decode(encoding, errors)
        if len(_NAMES) >= _MEMO_MAX:
            _NAMES.clear()
        _NAMES[key] = v
    return v


class _LayerTarInfo(tarfile.TarInfo):
    """tarfile's TarInfo with two changes that do not alter what it reads:

    * a PAX or GNU long-name header is read into memory whole by tarfile; its size is bounded
      before that happens;
    * ``frombuf`` decodes the common header (octal numbers, an unsigned checksum that matches)
      in one struct unpack, which halves tarfile's cost per entry (layers hold many small files).
      Anything else (base-256 numbers, a signed checksum, sparse headers, end blocks, damage)
      goes to tarfile's own ``frombuf``. tests/unit/storage checks both agree on every header.
    """

    max_header = DEFAULT_LIMITS.max_header_bytes

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, _magic, uname, gname, devmajor, devminor,
         prefix) = _HEADER.unpack_from(buf)
        if (mode + uid + gid + size + mtime + chksum + devmajor + devminor).translate(None, b"01234567 \0"):
            return super().frombuf(buf, encoding, errors)
        try:
            total = int(chksum.split(b"\0", 1)[0].strip() or b"0", 8)
            if total != 256 + sum(buf) - sum(chksum):
                return super().frombuf(buf, encoding, errors)
            obj = cls()
            obj.mode = _octal(mode)
            obj.uid = _octal(uid)
            obj.gid = _octal(gid)
            obj.size = int(size.split(b"\0", 1)[0].strip() or b"0", 8)
            obj.mtime = _octal(mtime)
            obj.devmajor = _octal(devmajor)
            obj.devminor = _octal(devminor)
        except ValueError:  # e.g. a space inside a number: tarfile reports that its own way
            return super().frombuf(buf, encoding, errors)
        obj.name = _text(name, encoding, errors)
        obj.chksum = total
        obj.type = kind
        obj.linkname = _short_text(linkname, encoding, errors)
        obj.uname = _short_text(uname, encoding, errors)
        obj.gname = _short_text(gname, encoding, errors)
        prefix = _short_text(prefix, encoding, errors)
        # The same normalizations as tarfile's frombuf.
        if kind == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE
        if obj.isdir():
            obj.name = obj.name.rstrip("/")
        if prefix and obj.type not in tarfile.GNU_TYPES:
            obj.name = prefix + "/" + obj.name
        return obj

    def _proc_member(self, tarfile_):
        if self.type in _HEADER_TYPES and self.size > self.max_header:
            raise StorageError(f"an extended tar header of {self.size} bytes "
                               f"(limit {self.max_header})")
        return super()._proc_member(tarfile_)


# --- the unpacker ------------------------------------------------------------------------------

def _entry_parts(name: str, what: str = "entry") -> list[str]:
    """Split a tar name into components relative to the layer root, refusing escapes."""
    if "\x00" in name:
        raise StorageError(f"{what} {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise StorageError(f"{what} {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise StorageError(f"{what} {name!r} has a '..' component")
    if len(parts) > _MAX_DEPTH:
        raise StorageError(f"{what} {name[:80]!r}… is more than {_MAX_DEPTH} directories deep")
    return parts


def _mtime_ns(ti: tarfile.TarInfo) -> int:
    mt = ti.mtime
    ns = int(mt * 1_000_000_000) if isinstance(mt, float) else int(mt) * 1_000_000_000
    return max(-(1 << 62), min(ns, (1 << 62)))


def _write_all(fd: int, data: bytes) -> None:
    n = os.write(fd, data)
    if n != len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


class _Unpacker:
    def __init__(self, root: str, lowers: Sequence[str], limits: UnpackLimits):
        self.limits = limits
        self.root_fd = os.open(root, _O_DIR)
        self.dirs: dict[str, int] = {"": self.root_fd}
        self.lowers: list[int] = []
        self.dir_times: dict[str, int] = {}
        self.entries = 0
        # A new file is owned by (euid, egid), or by the group of its directory (setgid, or the
        # grpid mount option). It is chowned only when that is not what the tar says: so the
        # directories whose group is not egid are tracked (keys of this layer).
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.other_gid: set[str] = set()
        self.umask = _umask()
        try:
            for lower in lowers:
                self.lowers.append(os.open(lower, _O_DIR))
        except OSError:
            self.close()
            raise
        if self.lowers:
            # A layer without a "./" entry leaves the root as the layers below had it.
            st = os.fstat(self.lowers[0])
            os.fchown(self.root_fd, st.st_uid, st.st_gid)
            os.fchmod(self.root_fd, stat.S_IMODE(st.st_mode))
            self.dir_times[""] = st.st_mtime_ns
            gid = st.st_gid
        else:
            os.fchmod(self.root_fd, 0o755)  # what a base layer without a "./" entry means
            gid = os.fstat(self.root_fd).st_gid
        if gid != self.gid:
            self.other_gid.add("")

    def _dir_group(self, key: str, gid: int | None) -> None:
        """Note the group of directory ``key`` (None: made without chown, inherits its parent's)."""
        if gid is None:
            parent = key.rpartition("/")[0]
            other = parent in self.other_gid
        else:
            other = gid != self.gid
        if other:
            self.other_gid.add(key)
        else:
            self.other_gid.discard(key)

    def close(self) -> None:
        for fd in set(self.dirs.values()) | set(self.lowers):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.dirs = {}
        self.lowers = []

    # -- directories ----------------------------------------------------------------------------

    def _cache(self, key: str, fd: int) -> None:
        self.dirs[key] = fd

    def _trim_cache(self) -> None:
        """Close the cached directory fds when there are many. Only between entries: while an
        entry is handled, the fds it looked up stay open (closing one could let its number be
        reused for another directory)."""
        if len(self.dirs) > _MAX_CACHED_DIRS:
            for k, v in self.dirs.items():
                if k:
                    os.close(v)
            self.dirs = {"": self.root_fd}

    def _forget(self, key: str) -> None:
        """Drop cached fds of a directory about to be removed, and of everything below it."""
        prefix = key + "/"
        for k in [k for k in self.dirs if k == key or k.startswith(prefix)]:
            os.close(self.dirs.pop(k))
        for k in [k for k in self.dir_times if k == key or k.startswith(prefix)]:
            del self.dir_times[k]
        if self.other_gid:
            self.other_gid = {k for k in self.other_gid if k != key and not k.startswith(prefix)}

    def _dir(self, parts: list[str]) -> int:
        """fd of the directory ``parts`` of this layer, creating missing ones (see _implicit_dir).
        Never resolves through a symlink: every component is opened with O_NOFOLLOW."""
        key = "/".join(parts)
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        i = len(parts) - 1
        while i > 0 and "/".join(parts[:i]) not in self.dirs:
            i -= 1
        fd = self.dirs["/".join(parts[:i])]
        for j in range(i, len(parts)):
            comp = parts[j]
            if comp.startswith(WHITEOUT_PREFIX):
                raise StorageError(f"entry under {'/'.join(parts)!r}: a whiteout name "
                                   f"{comp!r} cannot be a directory")
            sub = "/".join(parts[:j + 1])
            try:
                child = os.open(comp, _O_DIR, dir_fd=fd)
            except FileNotFoundError:
                self._implicit_dir(fd, parts[:j + 1], opaque=False)
                child = os.open(comp, _O_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                if not is_whiteout(st):
                    what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                    raise StorageError(f"an entry writes below {sub!r}, which is {what} in the same layer "
                                       "(refusing to write through it)") from None
                # ".wh.a" then "a/file" without an "a/" entry: a new, opaque "a".
                os.unlink(comp, dir_fd=fd)
                self._implicit_dir(fd, parts[:j + 1], opaque=True)
                child = os.open(comp, _O_DIR, dir_fd=fd)
            self._cache(sub, child)
            fd = child
        return fd

    def _existing_dir(self, parts: list[str]) -> int | None:
        """Like _dir but creates nothing: None when the directory is not in this layer."""
        key = "/".join(parts)
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        i = len(parts) - 1
        while i > 0 and "/".join(parts[:i]) not in self.dirs:
            i -= 1
        fd = self.dirs["/".join(parts[:i])]
        for j in range(i, len(parts)):
            try:
                child = os.open(parts[j], _O_DIR, dir_fd=fd)
            except OSError:
                return None
            self._cache("/".join(parts[:j + 1]), child)
            fd = child
        return fd

    def _implicit_dir(self, pfd: int, parts: list[str], *, opaque: bool) -> None:
        """Create a directory the layer uses without declaring it. What the lower layers show at
        that path decides: a directory lends its attributes, a symlink or file is refused."""
        path = "/".join(parts)
        kind, st = ("absent", None) if opaque else self._lower_lookup(parts)
        if kind == "symlink":
            raise StorageError(f"an entry writes below {path!r}, which is a symlink in a lower layer "
                               "(refusing to write through it)")
        if kind == "other":
            raise StorageError(f"an entry writes below {path!r}, which is not a directory in a lower layer")
        os.mkdir(parts[-1], 0o700, dir_fd=pfd)
        fd = os.open(parts[-1], _O_DIR, dir_fd=pfd)
        try:
            if st is not None:
                os.fchown(fd, st.st_uid, st.st_gid)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                self.dir_times[path] = st.st_mtime_ns
            else:
                os.fchmod(fd, 0o755)
            self._dir_group(path, st.st_gid if st is not None else None)
            if opaque:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)

    def _lower_lookup(self, parts: list[str]) -> tuple[str, os.stat_result | None]:
        """What the merged lower layers show at ``parts``: absent, dir, symlink or other.

        Ancestors that are not directories below are hidden by this layer's own directories
        (we only get here with every ancestor a directory in this layer), so they mean absent."""
        candidates = list(self.lowers)
        opened: list[int] = []
        try:
            for i, comp in enumerate(parts):
                last = i == len(parts) - 1
                found = None
                nxt = []
                for fd in candidates:
                    try:
                        st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    if is_whiteout(st):
                        break
                    if found is None:
                        found = st
                    if last or not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(found.st_mode):
                        break
                    sub = os.open(comp, _O_DIR, dir_fd=fd)
                    opened.append(sub)
                    nxt.append(sub)
                    if _is_opaque(sub):
                        break
                if found is None:
                    return "absent", None
                if last:
                    if stat.S_ISDIR(found.st_mode):
                        return "dir", found
                    return ("symlink" if stat.S_ISLNK(found.st_mode) else "other"), found
                if not stat.S_ISDIR(found.st_mode):
                    return "absent", None
                candidates = nxt
            return "absent", None
        finally:
            for fd in opened:
                os.close(fd)

    def _replace(self, pfd: int, name: str, key: str, *, new_is_dir: bool) -> str:
        """Make room for an entry whose name exists already (a later tar entry wins).
        Returns "keep" (directory over directory), "whiteout" (a whiteout was removed) or ""."""
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if new_is_dir:
                return "keep"
            self._forget(key)
            shutil.rmtree(name, dir_fd=pfd)
            return ""
        os.unlink(name, dir_fd=pfd)
        return "whiteout" if is_whiteout(st) else ""

    # -- entries --------------------------------------------------------------------------------

    def entry(self, ti: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self._trim_cache()
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise LayerTooLarge(f"more than {self.limits.max_entries} entries (the limit)", what="entries",
                                limit=self.limits.max_entries, reached=self.entries)
        parts = _entry_parts(ti.name)
        if not parts:
            if not ti.isdir():
                raise StorageError(f"entry {ti.name!r} would replace the layer root with a non-directory")
            self._meta_fd(self.root_fd, ti)
            self._dir_group("", ti.gid)
            self.dir_times[""] = _mtime_ns(ti)
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, ti)
            return
        pfd = self._dir(parts[:-1])
        key = "/".join(parts)
        t = ti.type
        if t in _REGULAR:
            self._file(pfd, base, key, key[:-len(base) - 1] if len(parts) > 1 else "", ti, tar)
        elif t == tarfile.DIRTYPE:
            self._mkdir(pfd, base, key, ti)
        elif t == tarfile.SYMTYPE:
            self._symlink(pfd, base, key, ti)
        elif t == tarfile.LNKTYPE:
            self._hardlink(pfd, base, key, ti)
        elif t in _NODES:
            self._node(pfd, base, key, ti)
        else:
            raise StorageError(f"entry {ti.name!r} has unsupported tar type {t!r}")

    def _meta_fd(self, fd: int, ti: tarfile.TarInfo, *, chown: bool = True, chmod: bool = True) -> None:
        if chown:
            os.fchown(fd, ti.uid, ti.gid)
        if chmod:
            os.fchmod(fd, ti.mode & 0o7777)  # after chown, which clears setuid/setgid
        if ti.pax_headers:
            for k, v in ti.pax_headers.items():
                if k.startswith("SCHILY.xattr.") and keep_xattr(k[13:]):
                    try:
                        os.setxattr(fd, k[13:], v.encode("utf-8", "surrogateescape"))
                    except OSError as e:
                        raise StorageError(f"entry {ti.name!r}: cannot set extended attribute {k[13:]!r}: "
                                           f"{e.strerror}") from e

    def _file(self, pfd: int, base: str, key: str, parent: str, ti: tarfile.TarInfo,
              tar: tarfile.TarFile) -> None:
        if ti.sparse is not None:
            raise StorageError(f"entry {ti.name!r} is a GNU sparse file (not supported in layers)")
        # Created with its final mode when the umask leaves it whole and chown will not clear
        # bits of it; owned as the tar says without chown when that is what a new file gets.
        mode = ti.mode & 0o7777
        final_mode = self.umask is not None and not mode & (0o7000 | self.umask)
        create_mode = mode if final_mode else 0o600
        chown = ti.uid != self.uid or ti.gid != self.gid or parent in self.other_gid
        try:
            fd = os.open(base, _O_NEWFILE, create_mode, dir_fd=pfd)
        except FileExistsError:
            self._replace(pfd, base, key, new_is_dir=False)
            fd = os.open(base, _O_NEWFILE, create_mode, dir_fd=pfd)
        try:
            remaining = ti.size
            src = tar.fileobj
            if src.tell() != ti.offset_data:
                raise StorageError(f"tar reader lost its place at {ti.name!r}")
            while remaining > 0:
                chunk = src.read(min(remaining, _COPY_CHUNK))
                if not chunk:
                    raise StorageError(f"the stream is truncated inside {ti.name!r}")
                _write_all(fd, chunk)
                remaining -= len(chunk)
            self._meta_fd(fd, ti, chown=chown, chmod=not final_mode)
            t = _mtime_ns(ti)
            os.utime(fd, ns=(t, t))
        finally:
            os.close(fd)

    def _mkdir(self, pfd: int, base: str, key: str, ti: tarfile.TarInfo) -> None:
        opaque = False
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            r = self._replace(pfd, base, key, new_is_dir=True)
            if r != "keep":
                os.mkdir(base, 0o700, dir_fd=pfd)
                opaque = r == "whiteout"
        fd = self.dirs.get(key)
        if fd is None:
            fd = os.open(base, _O_DIR, dir_fd=pfd)
            self._cache(key, fd)
        self._meta_fd(fd, ti)
        self._dir_group(key, ti.gid)
        if opaque:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        self.dir_times[key] = _mtime_ns(ti)

    def _symlink(self, pfd: int, base: str, key: str, ti: tarfile.TarInfo) -> None:
        if "\x00" in ti.linkname:
            raise StorageError(f"symlink {ti.name!r} has a NUL byte in its target")
        try:
            os.symlink(ti.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self._replace(pfd, base, key, new_is_dir=False)
            os.symlink(ti.linkname, base, dir_fd=pfd)
        self._node_meta(pfd, base, ti, chmod=False)

    def _hardlink(self, pfd: int, base: str, key: str, ti: tarfile.TarInfo) -> None:
        tparts = _entry_parts(ti.linkname, "hardlink target")
        if not tparts:
            raise StorageError(f"hardlink {ti.name!r} points at the layer root")
        tpfd = self._existing_dir(tparts[:-1])
        try:
            if tpfd is None:
                raise FileNotFoundError
            tst = os.stat(tparts[-1], dir_fd=tpfd, follow_symlinks=False)
        except FileNotFoundError:
            raise StorageError(f"hardlink {ti.name!r} -> {ti.linkname!r}: the target is not an "
                               "earlier entry of the same layer (or lies through a symlink)") from None
        if stat.S_ISDIR(tst.st_mode) or is_whiteout(tst):
            raise StorageError(f"hardlink {ti.name!r} -> {ti.linkname!r}: the target is a "
                               "directory or a whiteout")
        try:
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
                return
            self._replace(pfd, base, key, new_is_dir=False)
            # The replaced entry may have held the target (its fd is closed now): look again.
            tpfd = self._existing_dir(tparts[:-1])
            if tpfd is None:
                raise StorageError(f"hardlink {ti.name!r} -> {ti.linkname!r}: the target went away "
                                   "with the entry it replaces") from None
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _node(self, pfd: int, base: str, key: str, ti: tarfile.TarInfo) -> None:
        def make():
            if ti.type == tarfile.FIFOTYPE:
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                kind = stat.S_IFCHR if ti.type == tarfile.CHRTYPE else stat.S_IFBLK
                os.mknod(base, kind | 0o600, os.makedev(ti.devmajor, ti.devminor), dir_fd=pfd)

        try:
            make()
        except FileExistsError:
            self._replace(pfd, base, key, new_is_dir=False)
            make()
        self._node_meta(pfd, base, ti, chmod=True)

    def _node_meta(self, pfd: int, base: str, ti: tarfile.TarInfo, *, chmod: bool) -> None:
        os.chown(base, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:
            # The name is the fifo or device node just made (never a symlink): chmod may follow.
            os.chmod(base, ti.mode & 0o7777, dir_fd=pfd)
        t = _mtime_ns(ti)
        os.utime(base, ns=(t, t), dir_fd=pfd, follow_symlinks=False)

    def _whiteout(self, parts: list[str], ti: tarfile.TarInfo) -> None:
        base = parts[-1]
        if ti.isdir():
            raise StorageError(f"whiteout {ti.name!r} is a directory")
        if base == OPAQUE_MARKER:
            if len(parts) == 1:
                raise StorageError("the layer marks its root opaque; overlayfs cannot express that")
            fd = self._dir(parts[:-1])
            os.setxattr(fd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise StorageError(f"whiteout {ti.name!r} names no file")
        pfd = self._dir(parts[:-1])
        with contextlib.suppress(FileExistsError):
            # An entry of this layer with that name stays: whiteouts apply to lower layers only.
            os.mknod(target, stat.S_IFCHR, 0, dir_fd=pfd)

    def finish(self) -> None:
        # Creating entries changed directory mtimes; set them last, deepest first.
        for key in sorted(self.dir_times, key=len, reverse=True):
            self._trim_cache()
            fd = self._existing_dir(key.split("/")) if key else self.root_fd
            if fd is not None:
                t = self.dir_times[key]
                os.utime(fd, ns=(t, t))


def _umask() -> int | None:
    """The process's umask, read without changing it (None where the kernel does not say)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _converted() -> tuple[type[BaseException], ...]:
    """What the decompressors and tarfile raise for bad input (reported as StorageError)."""
    import zlib

    from backports import zstd

    return (OSError, tarfile.TarError, EOFError, ValueError, OverflowError, UnicodeError, LookupError,
            zlib.error, zstd.ZstdError)


def unpack_layer(blob: BinaryIO, dest: str | os.PathLike, *, diff_id: str | None,
                 media_type: str = "", lowers: Sequence[str | os.PathLike] = (),
                 limits: UnpackLimits = DEFAULT_LIMITS) -> UnpackResult:
    """Unpack a layer blob (tar, tar+gzip or tar+zstd, detected by content) into ``dest``.

    ``dest`` must not exist; it is created, and removed again on any failure. ``lowers`` are the
    unpacked directories of the layers below, topmost first (consulted for directories this
    layer uses without declaring them). ``diff_id`` (``sha256:…``) is checked against the
    uncompressed stream; ``None`` skips the check (tools only, never for image layers).
    """
    dest = os.fspath(dest)
    algorithm = parse_digest(diff_id)[0] if diff_id else "sha256"
    label = diff_id or media_type or "layer"
    os.mkdir(dest, 0o700)
    unpacker = None
    try:
        try:
            unpacker = _Unpacker(dest, [os.fspath(p) for p in lowers], limits)
            reader = _HashingReader(open_uncompressed(blob, media_type), algorithm, limits.max_bytes)
            tarinfo = type("_TarInfo", (_LayerTarInfo,), {"max_header": limits.max_header_bytes})
            try:
                tar = tarfile.open(fileobj=reader, mode="r:", tarinfo=tarinfo,  # noqa: SIM115
                                   encoding="utf-8", errors="surrogateescape")
            except tarfile.ReadError:
                if reader.count:
                    raise
                tar = None  # an empty stream is an empty layer
            if tar is not None:
                while True:
                    ti = tar.next()
                    if ti is None:
                        break
                    tar.members.clear()  # tarfile keeps every header otherwise
                    try:
                        unpacker.entry(ti, tar)
                    except OSError as e:
                        raise StorageError(f"entry {ti.name!r}: {e.strerror or e}") from e
            reader.drain()
            unpacker.finish()
        except LayerTooLarge as e:
            raise LayerTooLarge(f"layer {label}: {e}", what=e.what, limit=e.limit, reached=e.reached) from None
        except StorageError as e:
            raise StorageError(f"layer {label}: {e}") from None
        except _converted() as e:
            raise StorageError(f"layer {label}: cannot unpack: {e}") from e
        got = reader.digest()
        if diff_id and got != diff_id:
            raise StorageError(f"layer {label}: content does not match its diff_id (got {got}); "
                               "the blob is corrupt or was tampered with")
        return UnpackResult(got, reader.count, unpacker.entries)
    except BaseException:
        if unpacker is not None:
            unpacker.close()
            unpacker = None
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        if unpacker is not None:
            unpacker.close()
