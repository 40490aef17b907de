"""The state store: what podplay owns, what it last applied, and the apply journal.

One sqlite file under the storage root (WAL mode: a reader never blocks the applier, and a
process killed mid-write loses nothing that was committed). ``StateStore`` opens it (one
connection, one lock, the schema) and exposes one object per concern, defined in
``reconciler.store``:

    state.journal    transactions and their steps, open ones, recent ones, history pruning
    state.owned      the pods and claims podplay owns (the diff's last applied)
    state.keepers    keepers' records, probe results, events
    state.rollouts   Deployments' revisions and pins
    state.meta       small facts and the last good version of watched files

A separate lock file serializes applies between processes; the holder writes who it is into it
so that a second process can say who is in the way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from reconciler.errors import LockedError, no_space
from reconciler.store.db import SCHEMA, Connection, connect
from reconciler.store.journal import (
    ABORTED,
    COMMITTED,
    DONE,
    FAILED,
    KEEP_EVENTS,
    KEEP_TXNS,
    OPEN,
    PENDING,
    ROLLED_BACK,
    STARTED,
    UNDONE,
    Journal,
    JournalEntry,
    OpenTxn,
)
from reconciler.store.keepers import KeeperRecords, keeper_alive
from reconciler.store.meta import Meta
from reconciler.store.owned import Ownership
from reconciler.store.rollouts import Pin, Revision, Rollouts
from reconciler.store.workloads import WorkloadRecords

__all__ = ["ABORTED", "COMMITTED", "DONE", "FAILED", "KEEP_EVENTS", "KEEP_TXNS", "OPEN", "PENDING", "ROLLED_BACK",
           "SCHEMA", "STARTED", "UNDONE", "ApplyLock", "JournalEntry", "OpenTxn", "Pin", "Revision", "StateStore",
           "keeper_alive"]


class StateStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.db: Connection = connect(self.path)
        self.journal = Journal(self.db)
        self.owned = Ownership(self.db)
        self.keepers = KeeperRecords(self.db)
        self.rollouts = Rollouts(self.db)
        self.meta = Meta(self.db)
        self.workloads = WorkloadRecords(self.db)

    def close(self) -> None:
        self.db.close()


class ApplyLock:
    """An exclusive flock on the storage root's lock file, naming its holder.

    ``timeout=None`` waits as long as it takes; ``0`` fails at once with LockedError.
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = None):
        self.path = Path(path)
        self.timeout = timeout
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another podplay process"
        except OSError:
            return "another podplay process"

    def __enter__(self) -> ApplyLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise no_space(self.path) from None
            raise
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockedError(f"another podplay is applying changes: {self.holder()} "
                                      f"(lock {self.path})") from None
                time.sleep(0.05)
        cmd = " ".join(os.environ.get("PODPLAY_COMMAND", "").split()) or "podplay"
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # on a full disk the lock holds all the same, unnamed
            os.pwrite(fd, f"pid {os.getpid()} ({cmd}) since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
