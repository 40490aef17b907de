"""/etc/subuid and /etc/subgid: podplay's own entry, made on first use.

Pods with ``hostUsers: false`` take their host IDs from the entry named ``podplay`` (as the
kubelet takes them from its ``kubelet`` entry). When there is none, podplay appends one after
every existing range (and never below ``DEFAULT_START``), aligned to 65536, large enough for
``DEFAULT_SLOTS`` pods. The file is rewritten whole (temp file, fsync, rename) with the mode
and owner it had (0644 root:root when new), under a lock that other podplay processes honour.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.errors import EnvironmentProblem
from reconciler.idmap import RANGE_SIZE

ENTRY = "podplay"
SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
DEFAULT_START = 1 << 30
DEFAULT_SLOTS = 1024
MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "no change"
LOCK = "/run/lock/podplay-subid.lock"


@dataclass(frozen=True)
class SubIdRange:
    name: str
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


def parse(text: str) -> list[SubIdRange]:
    """The well-formed ``name:start:count`` lines (others are kept in the file, never read)."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or not parts[0] or parts[0].startswith("#"):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            out.append(SubIdRange(parts[0], start, count))
    return out


def ranges_of(name: str, text: str) -> list[SubIdRange]:
    """``name``'s ranges; a numeric name matches too (useradd writes names, some tools uids)."""
    return [r for r in parse(text) if r.name == name]


def new_range(existing: list[SubIdRange], slots: int = DEFAULT_SLOTS) -> SubIdRange:
    """A range for podplay above every existing one, aligned to RANGE_SIZE."""
    floor = max([DEFAULT_START] + [r.end for r in existing])
    start = -(-floor // RANGE_SIZE) * RANGE_SIZE
    count = slots * RANGE_SIZE
    if start + count - 1 > MAX_ID:
        raise EnvironmentProblem(f"no room for podplay's ID range above the existing subordinate ranges (they end "
                                 f"at {floor}); add a line 'podplay:START:COUNT' to /etc/subuid and /etc/subgid")
    return SubIdRange(ENTRY, start, count)


@contextlib.contextmanager
def _locked(lock: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _append(path: str, line: str) -> None:
    """Rewrite ``path`` with ``line`` appended, keeping its mode and owner."""
    text = _read(path)
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o644, (0, 0)
    if text and not text.endswith("\n"):
        text += "\n"
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.podplay-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (text + line + "\n").encode())
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ensure_entry(path: str, lock: str = LOCK, slots: int = DEFAULT_SLOTS) -> SubIdRange:
    """podplay's range in ``path`` (a subuid or subgid file), appended when there is none."""
    try:
        with _locked(lock):
            text = _read(path)
            mine = ranges_of(ENTRY, text)
            if mine:
                best = max(mine, key=lambda r: r.count)
                if best.count < RANGE_SIZE:
                    raise EnvironmentProblem(f"{path}: the {ENTRY} range has {best.count} IDs; a pod needs "
                                             f"{RANGE_SIZE}: make it a multiple of {RANGE_SIZE}")
                return best
            entry = new_range(parse(text), slots)
            _append(path, f"{entry.name}:{entry.start}:{entry.count}")
            return entry
    except OSError as e:
        raise EnvironmentProblem(f"cannot read or extend {path} for hostUsers: false pods: "
                                 f"{e.strerror or e}") from None
