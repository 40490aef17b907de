"""The apply journal: every transaction is written, each step pending with its undo, before any
step runs; crash recovery reads the open ones back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.errors import StateError
from reconciler.store.db import Connection
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
CREATE, DELETE, START, STOP = "create", "delete", "start", "stop"


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

    def begin_txn(self, kind: str, key: str, uid: str, steps: list[Step], record: dict | None = None) -> int:
        """Write the whole transaction, every step pending with its undo, before any runs."""
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
        self.db.execute("UPDATE journal SET status = ?, error = ? WHERE txn = ? AND seq = ?",
                        (status, error, txn, seq))

    def finish_txn(self, txn: int, status: str, error: str = "") -> None:
        """Close a transaction; a commit applies what its record says podplay owns (pods,
        claims), atomically with the commit: ownership is never recorded beside the journal."""
        with self.db.transaction() as db:
            row = db.execute("SELECT kind, key, uid, record FROM txns WHERE id = ?", (txn,)).fetchone()
            if row is None:
                raise StateError(f"no transaction {txn} in the journal")
            kind, key, uid, record = row
            if status == COMMITTED:
                commit_ownership(db, kind, key, uid, json.loads(record or "{}"))
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
