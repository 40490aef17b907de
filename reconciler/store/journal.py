"""The apply journal: every transaction is written, each step pending with its undo, before any
step runs; crash recovery reads the open ones back.

A journal must be writable when it matters most: while a failed step is undone on a disk that
just filled up, and while `down` frees space on a full one. sqlite (in WAL mode) needs fresh
pages for every write, so the journal keeps a reserve: a file of RESERVE bytes, allocated
beside the store (``journal.reserve``) while there is room, whose blocks nothing else can take.
When a write the journal must make fails for lack of space (a step marked, a transaction
closed, a teardown begun), the reserve is released and the write retried: a compensation
or a teardown never stops at its own bookkeeping. Apply releases it before it undoes
anything on a nearly full disk, and holds it again at the start of the next apply. New work never eats into it:
``check_space`` counts what is missing of the reserve as space needed, and beginning a
create is a write that does not release it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.errors import NoSpaceError, StateError, no_space
from reconciler.store.db import RESERVE_FILE, Connection
from reconciler.store.owned import commit_ownership

if TYPE_CHECKING:
    from reconciler.steps import Step

# Journal step states.
PENDING, STARTED, DONE, UNDONE, FAILED = "pending", "started", "done", "undone", "failed"
# Transaction states.
OPEN, COMMITTED, ROLLED_BACK, ABORTED = "open", "committed", "rolled_back", "aborted"
KEEP_TXNS = 500  # finished transactions kept for `podplay status` and debugging
KEEP_EVENTS = 1000

# The values of reconciler.plan.TxnKind that this module reads back (the store imports nothing
# of the engine, so that `ps` stays light; a unit test holds the two together).
CREATE, DELETE, START, STOP, PREPARE = "create", "delete", "start", "stop", "prepare"
# Kinds whose beginning may use the reserve: they free space rather than take it.
_FREEING = (DELETE, STOP)
RESERVE = 1 << 20  # room for the journal's writes of a compensation (a few hundred WAL pages)
HEADROOM = 256 << 10  # beyond the reserve: the journal's writes of a bring-up that goes well


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    step: Step
    undo: Step | None
    status: str


@dataclass(frozen=True)
class OpenTxn:
    id: int
    kind: str  # a TxnKind value, as journaled
    key: str
    uid: str
    entries: tuple[JournalEntry, ...]
    record: dict


class Journal:
    def __init__(self, db: Connection):
        self.db = db
        self.reserve = db.path.with_name(RESERVE_FILE) if db.path is not None else None

    # --- the reserve (see the module docstring) ---------------------------------------------------

    def held(self) -> int:
        """Bytes of the reserve allocated now."""
        if self.reserve is None:
            return RESERVE
        try:
            return min(os.stat(self.reserve).st_blocks * 512, RESERVE)
        except OSError:
            return 0

    def hold_reserve(self) -> int:
        """Allocate the reserve up to RESERVE bytes, as far as the disk allows; returns what is held."""
        if self.reserve is None:
            return RESERVE
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            return 0
        try:
            step = 64 << 10
            size = self.held() // step * step
            while size < RESERVE:
                try:
                    os.posix_fallocate(fd, size, step)
                except OSError as exc:
                    if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: write zeros
                        try:
                            os.pwrite(fd, b"\0" * step, size)
                            os.fsync(fd)
                        except OSError:
                            break
                    else:
                        break
                size += step
        finally:
            os.close(fd)
        return self.held()

    def release_reserve(self, *, unless_free: bool = False) -> bool:
        """Give the reserve's blocks back to the file system; False when none were held.
        `unless_free`: keep it while the file system has as much free beside it."""
        if self.reserve is None or self.held() == 0:
            return False
        if unless_free:
            with contextlib.suppress(OSError):
                st = os.statvfs(self.reserve.parent)
                if st.f_bavail * st.f_frsize >= RESERVE:
                    return False
        with contextlib.suppress(OSError):
            os.truncate(self.reserve, 0)
        return True

    def check_space(self, need: int) -> None:
        """Refuse, with the one no-space message, unless the storage root (where the store and
        the snapshots live) has `need` bytes free beyond what the journal itself needs."""
        if self.reserve is None:
            return
        root = self.reserve.parent
        try:
            st = os.statvfs(root)
        except OSError:
            return
        want = need + HEADROOM + (RESERVE - self.held())
        if st.f_bavail * st.f_frsize < want:
            raise no_space(root, want)

    def _write(self, fn, *, freeing: bool = True):
        """A write the journal must make: on a full disk the reserve is released and the
        write retried once (`freeing`: what it records frees space or undoes work)."""
        try:
            return fn()
        except NoSpaceError:
            if not freeing or not self.release_reserve():
                raise
            return fn()

    # --- transactions ---------------------------------------------------------------------------

    def begin_txn(self, kind: str, key: str, uid: str, steps: list[Step], record: dict | None = None) -> int:
        """Write the whole transaction, every step pending with its undo, before any runs."""
        return self._write(lambda: self._begin(kind, key, uid, steps, record), freeing=str(kind) in _FREEING)

    def _begin(self, kind: str, key: str, uid: str, steps: list[Step], record: dict | None) -> int:
        with self.db.transaction() as db:
            cur = db.execute("INSERT INTO txns (kind, key, uid, status, started, record) VALUES (?, ?, ?, ?, ?, ?)",
                             (str(kind), key, uid, OPEN, time.time(), json.dumps(record or {})))
            txn = cur.lastrowid
            db.executemany(
                "INSERT INTO journal (txn, seq, step, undo, status) VALUES (?, ?, ?, ?, ?)",
                [(txn, i, json.dumps(s.to_json()), json.dumps(u.to_json()) if (u := s.undo()) else None, PENDING)
                 for i, s in enumerate(steps)])
        return txn

    def mark(self, txn: int, seq: int, status: str, error: str = "") -> None:
        self._write(lambda: self.db.execute("UPDATE journal SET status = ?, error = ? WHERE txn = ? AND seq = ?",
                                            (status, error, txn, seq)))

    def finish_txn(self, txn: int, status: str, error: str = "") -> None:
        """Close a transaction; a commit applies what its record says podplay owns (pods,
        claims), atomically with the commit: ownership is never recorded beside the journal.
        A create's commit also closes its instance's PREPARE (plan.TxnKind): from then on what
        it made belongs to the created pod, and recovery must not undo it."""
        self._write(lambda: self._finish(txn, status, error))

    def _finish(self, txn: int, status: str, error: str) -> None:
        with self.db.transaction() as db:
            row = db.execute("SELECT kind, key, uid, record FROM txns WHERE id = ?", (txn,)).fetchone()
            if row is None:
                raise StateError(f"no transaction {txn} in the journal")
            kind, key, uid, record = row
            if status == COMMITTED:
                commit_ownership(db, kind, key, uid, json.loads(record or "{}"))
                if kind == CREATE:
                    db.execute("UPDATE txns SET status = ?, finished = ?, error = ? WHERE kind = ? AND uid = ? "
                               "AND status = ?", (COMMITTED, time.time(), "", PREPARE, uid, OPEN))
            db.execute("UPDATE txns SET status = ?, finished = ?, error = ? WHERE id = ?",
                       (status, time.time(), error, txn))

    def open_txns(self) -> list[OpenTxn]:
        from reconciler.steps import Step

        out = []
        for tid, kind, key, uid, record in self.db.execute(
                "SELECT id, kind, key, uid, record FROM txns WHERE status = ? ORDER BY id", (OPEN,)).fetchall():
            entries = tuple(
                JournalEntry(seq, Step.from_json(json.loads(step)), Step.from_json(json.loads(undo)) if undo else None,
                             status)
                for seq, step, undo, status in self.db.execute(
                    "SELECT seq, step, undo, status FROM journal WHERE txn = ? ORDER BY seq", (tid,)))
            out.append(OpenTxn(tid, kind, key, uid, entries, json.loads(record or "{}")))
        return out

    def has_open_txns(self) -> bool:
        return self.db.execute("SELECT 1 FROM txns WHERE status = ? LIMIT 1", (OPEN,)).fetchone() is not None

    def prune_history(self) -> None:
        """Keep the newest finished transactions (and every open one) and the newest events: the
        journal is for recovery and `podplay status`, not an archive."""
        with self.db.transaction() as db:
            cutoff = db.execute("SELECT id FROM txns WHERE status != ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                                (OPEN, KEEP_TXNS)).fetchone()
            if cutoff:
                db.execute("DELETE FROM journal WHERE txn <= ? AND txn NOT IN (SELECT id FROM txns WHERE status = ?)",
                           (cutoff[0], OPEN))
                db.execute("DELETE FROM txns WHERE id <= ? AND status != ?", (cutoff[0], OPEN))
            db.execute("DELETE FROM events WHERE rowid NOT IN (SELECT rowid FROM events ORDER BY ts DESC LIMIT ?)",
                       (KEEP_EVENTS,))

    def recent_txns(self, limit: int = 20) -> list[dict]:
        rows = self.db.execute("SELECT id, kind, key, uid, status, started, finished, error FROM txns "
                               "ORDER BY id DESC LIMIT ?", (limit,))
        cols = ("id", "kind", "key", "uid", "status", "started", "finished", "error")
        return [dict(zip(cols, r)) for r in rows]

    def stopped_pods(self, pod_uids: list[str]) -> set[str]:
        """The pod instances among ``pod_uids`` whose last committed create, start or stop was a
        stop (`podplay stop`): `pods` shows them as Stopped rather than Failed or Succeeded."""
        if not pod_uids:
            return set()
        marks = ",".join("?" * len(pod_uids))
        rows = self.db.execute(
            f"SELECT uid, kind FROM txns WHERE uid IN ({marks}) AND status = ? "  # noqa: S608
            "AND kind IN (?, ?, ?) ORDER BY id", [*pod_uids, COMMITTED, STOP, START, CREATE]).fetchall()
        last: dict[str, str] = {}
        for uid, kind in rows:
            last[uid] = kind
        return {uid for uid, kind in last.items() if kind == STOP}
