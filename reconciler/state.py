"""The state store: what podplay owns, what it last applied, and the apply journal.

One sqlite file under the storage root (WAL mode: a reader never blocks the applier, and a
process killed mid-write loses nothing that was committed). A separate lock file serializes
applies between processes; the holder writes who it is into it so that a second process can
say who is in the way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import LockedError, StateError

if TYPE_CHECKING:
    from reconciler.diff import LastApplied
    from reconciler.steps import Step

SCHEMA = """
CREATE TABLE IF NOT EXISTS pods (
    ref TEXT PRIMARY KEY, uid TEXT NOT NULL, spec_hash TEXT NOT NULL, source TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '', applied_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (ref TEXT PRIMARY KEY, source TEXT NOT NULL, declared INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS txns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL, uid TEXT NOT NULL,
    status TEXT NOT NULL, started REAL NOT NULL, finished REAL, error TEXT NOT NULL DEFAULT '',
    record TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS journal (
    txn INTEGER NOT NULL REFERENCES txns(id), seq INTEGER NOT NULL, step TEXT NOT NULL, undo TEXT,
    status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', PRIMARY KEY (txn, seq)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    ts REAL NOT NULL, level TEXT NOT NULL, key TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS txns_open ON txns(status);
CREATE TABLE IF NOT EXISTS last_good (
    path TEXT PRIMARY KEY, digest TEXT NOT NULL, content TEXT NOT NULL, saved REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (id TEXT PRIMARY KEY, record TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS probes (
    container_id TEXT PRIMARY KEY, pod_uid TEXT NOT NULL, pod TEXT NOT NULL, name TEXT NOT NULL,
    record TEXT NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    deployment TEXT NOT NULL, revision INTEGER NOT NULL, template_hash TEXT NOT NULL, template TEXT NOT NULL,
    context TEXT NOT NULL, source TEXT NOT NULL, applied_at REAL NOT NULL, outcome TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '', progress_at REAL NOT NULL, progress INTEGER NOT NULL DEFAULT 0,
    finished_at REAL, PRIMARY KEY (deployment, revision)
);
CREATE TABLE IF NOT EXISTS pins (
    deployment TEXT PRIMARY KEY, revision INTEGER NOT NULL, manifest_hash TEXT NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""

# Journal step states.
PENDING, STARTED, DONE, UNDONE, FAILED = "pending", "started", "done", "undone", "failed"
# Transaction states.
OPEN, COMMITTED, ROLLED_BACK, ABORTED = "open", "committed", "rolled_back", "aborted"
KEEP_TXNS = 500  # finished transactions kept for `podplay status` and debugging
KEEP_EVENTS = 1000


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    step: Step
    undo: Step | None
    status: str


@dataclass(frozen=True)
class OpenTxn:
    id: int
    kind: str
    key: str
    uid: str
    entries: tuple[JournalEntry, ...]
    record: dict


# --- probes and rollouts (reconciler.health, reconciler.revisions) --------------------------------

@dataclass(frozen=True)
class Revision:
    deployment: str
    revision: int
    template_hash: str
    template: dict  # the pod template as JSON
    context: dict  # {"objects": [...]}: the ConfigMaps and Secrets it consumed, as JSON
    source: str
    applied_at: float
    outcome: str  # progressing | complete | failed | superseded
    message: str
    progress_at: float  # last time the rollout made progress (progressDeadlineSeconds counts from it)
    progress: int  # replicas of this revision available at that time
    finished_at: float | None


@dataclass(frozen=True)
class Pin:
    """`rollout undo` or an automatic rollback: run `revision` while the manifest's template
    hash is still `manifest_hash`."""

    deployment: str
    revision: int
    manifest_hash: str
    reason: str
    at: float


class _HealthTables:
    db: _LockedConnection  # and _tx(): both provided by StateStore

    def save_probes(self, records: list[tuple[str, str, str, str, dict]]) -> None:
        """(container id, pod uid, pod ref, container name, record) rows, replacing older ones."""
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO probes VALUES (?, ?, ?, ?, ?, ?)",
                            [(cid, uid, pod, name, json.dumps(rec), now) for cid, uid, pod, name, rec in records])

    def probe_records(self, pod_uids: list[str] | None = None) -> dict[str, dict]:
        """container id → record, for some pods or all."""
        if pod_uids is None:
            rows = self.db.execute("SELECT container_id, record FROM probes")
        else:
            marks = ",".join("?" * len(pod_uids))
            rows = self.db.execute(f"SELECT container_id, record FROM probes WHERE pod_uid IN ({marks})",  # noqa: S608
                                   list(pod_uids))
        return {cid: json.loads(rec) for cid, rec in rows}

    def forget_probes(self, keep_pod_uids: set[str]) -> None:
        """Drop the records of pods that are gone."""
        uids = [r[0] for r in self.db.execute("SELECT DISTINCT pod_uid FROM probes")]
        gone = [u for u in uids if u not in keep_pod_uids]
        if gone:
            self.db.executemany("DELETE FROM probes WHERE pod_uid = ?", [(u,) for u in gone])

    def revisions(self, deployment: str) -> list[Revision]:
        rows = self.db.execute("SELECT * FROM revisions WHERE deployment = ? ORDER BY revision", (deployment,))
        return [_revision(r) for r in rows]

    def revision_deployments(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT deployment FROM revisions ORDER BY deployment")]

    def add_revision(self, deployment: str, template_hash: str, template: dict, context: dict, source: str,
                     outcome: str, keep: int) -> int:
        """A new newest revision; an older revision with the same template is renumbered (as
        Kubernetes does). Keeps `keep` old revisions besides the newest."""
        with self._tx() as db:
            db.execute("DELETE FROM revisions WHERE deployment = ? AND template_hash = ?", (deployment, template_hash))
            row = db.execute("SELECT MAX(revision) FROM revisions WHERE deployment = ?", (deployment,)).fetchone()
            number = (row[0] or 0) + 1
            now = time.time()
            db.execute("INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, 0, NULL)",
                       (deployment, number, template_hash, json.dumps(template), json.dumps(context), source, now,
                        outcome, now))
            db.execute("DELETE FROM revisions WHERE deployment = ? AND revision NOT IN (SELECT revision FROM "
                       "revisions WHERE deployment = ? ORDER BY revision DESC LIMIT ?)",
                       (deployment, deployment, max(keep, 0) + 1))
        return number

    def update_revision(self, deployment: str, revision: int, **values) -> None:
        allowed = {"outcome", "message", "progress_at", "progress", "finished_at"}
        cols = [k for k in values if k in allowed]
        if not cols:
            return
        self.db.execute(f"UPDATE revisions SET {', '.join(f'{c} = ?' for c in cols)} "  # noqa: S608
                        "WHERE deployment = ? AND revision = ?", [values[c] for c in cols] + [deployment, revision])

    def forget_revisions(self, deployment: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM revisions WHERE deployment = ?", (deployment,))
            db.execute("DELETE FROM pins WHERE deployment = ?", (deployment,))

    def pin(self, deployment: str) -> Pin | None:
        row = self.db.execute("SELECT * FROM pins WHERE deployment = ?", (deployment,)).fetchone()
        return Pin(*row) if row else None

    def pins(self) -> dict[str, Pin]:
        return {r[0]: Pin(*r) for r in self.db.execute("SELECT * FROM pins ORDER BY deployment")}

    def set_pin(self, deployment: str, revision: int, manifest_hash: str, reason: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?, ?)",
                        (deployment, revision, manifest_hash, reason, time.time()))

    def clear_pin(self, deployment: str) -> None:
        self.db.execute("DELETE FROM pins WHERE deployment = ?", (deployment,))


def _revision(r) -> Revision:
    return Revision(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11])


class _Rows:
    """A query's rows, read in full under the store's lock (a cursor must not outlive it)."""

    def __init__(self, cursor: sqlite3.Cursor):
        self.rows = cursor.fetchall()
        self.lastrowid = cursor.lastrowid
        self.rowcount = cursor.rowcount

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return list(self.rows)

    def __iter__(self):
        return iter(self.rows)


class _LockedConnection:
    """One sqlite connection shared by the threads of an apply: every statement, and every
    BEGIN…COMMIT block (``StateStore._tx`` holds the same re-entrant lock), runs alone."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self.conn, self.lock = conn, lock

    def execute(self, sql: str, params=()) -> _Rows:
        with self.lock:
            return _Rows(self.conn.execute(sql, params))

    def executemany(self, sql: str, seq) -> _Rows:
        with self.lock:
            return _Rows(self.conn.executemany(sql, seq))

    def executescript(self, sql: str) -> None:
        with self.lock:
            self.conn.executescript(sql)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class StateStore(_HealthTables):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db = _LockedConnection(conn, self._lock)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state store {self.path} is unreadable: {exc}") from None

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_LockedConnection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # --- what podplay owns -----------------------------------------------------------------------

    def last_applied(self) -> LastApplied:
        from reconciler.diff import AppliedPod, LastApplied

        pods = {r[0]: AppliedPod(*r) for r in self.db.execute(
            "SELECT ref, uid, spec_hash, source, owner FROM pods")}
        claims = dict(self.db.execute("SELECT ref, source FROM claims"))
        return LastApplied(pods=pods, claims=claims)

    def record_pod(self, ref: str, uid: str, spec_hash: str, source: str, owner: str) -> None:
        """Say which instance of a pod is podplay's now (a rollout that dropped the instance
        recorded last keeps the one that stays)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO pods VALUES (?, ?, ?, ?, ?, ?)",
                       (ref, uid, spec_hash, source, owner, time.time()))

    def record_claim(self, ref: str, source: str, declared: bool) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (ref, source, int(declared)))

    def forget_claim(self, ref: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM claims WHERE ref = ?", (ref,))

    # --- journal ---------------------------------------------------------------------------------

    def begin_txn(self, kind: str, key: str, uid: str, steps: list[Step], record: dict | None = None) -> int:
        """Write the whole transaction, every step pending with its undo, before any runs."""
        with self._tx() as db:
            cur = db.execute("INSERT INTO txns (kind, key, uid, status, started, record) VALUES (?, ?, ?, ?, ?, ?)",
                             (kind, key, uid, OPEN, time.time(), json.dumps(record or {})))
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
        """Close a transaction and apply its effect on what podplay owns, atomically."""
        with self._tx() as db:
            row = db.execute("SELECT kind, key, uid, record FROM txns WHERE id = ?", (txn,)).fetchone()
            if row is None:
                raise StateError(f"no transaction {txn} in the journal")
            kind, key, uid, record = row
            record = json.loads(record or "{}")
            if status == COMMITTED and kind == "create":
                db.execute("INSERT OR REPLACE INTO pods VALUES (?, ?, ?, ?, ?, ?)",
                           (key, uid, record.get("spec_hash", ""), record.get("source", ""),
                            record.get("owner", ""), time.time()))
            if status == COMMITTED and kind == "delete":
                db.execute("DELETE FROM pods WHERE ref = ? AND uid = ?", (key, uid))
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

    def prune_history(self) -> None:
        with self._tx() as db:
            cutoff = db.execute("SELECT id FROM txns WHERE status != ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                                (OPEN, KEEP_TXNS)).fetchone()
            if cutoff:
                db.execute("DELETE FROM journal WHERE txn <= ? AND txn NOT IN (SELECT id FROM txns WHERE status = ?)",
                           (cutoff[0], OPEN))
                db.execute("DELETE FROM txns WHERE id <= ? AND status != ?", (cutoff[0], OPEN))
            db.execute("DELETE FROM events WHERE rowid NOT IN (SELECT rowid FROM events ORDER BY ts DESC LIMIT ?)",
                       (KEEP_EVENTS,))

    # --- status ----------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def add_event(self, level: str, key: str, message: str) -> None:
        self.db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (time.time(), level, key, message))

    def events(self, limit: int = 50) -> list[tuple[float, str, str, str]]:
        return list(self.db.execute("SELECT ts, level, key, message FROM events ORDER BY ts DESC LIMIT ?", (limit,)))

    def recent_txns(self, limit: int = 20) -> list[dict]:
        rows = self.db.execute("SELECT id, kind, key, uid, status, started, finished, error FROM txns "
                               "ORDER BY id DESC LIMIT ?", (limit,))
        cols = ("id", "kind", "key", "uid", "status", "started", "finished", "error")
        return [dict(zip(cols, r)) for r in rows]


    # --- watch and sync: last good manifests, and what each keeper last did ------------------------

    def last_good(self) -> dict[str, tuple[str, str]]:
        """manifest path → (digest, content) of its last valid version, as `watch` saved it."""
        return {p: (d, c) for p, d, c in self.db.execute("SELECT path, digest, content FROM last_good")}

    def save_last_good(self, path: str, digest: str, content: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO last_good VALUES (?, ?, ?, ?)", (path, digest, content, time.time()))

    def forget_last_good(self, path: str) -> None:
        self.db.execute("DELETE FROM last_good WHERE path = ?", (path,))

    def set_source(self, source_id: str, record: dict) -> None:
        """What a `watch` or `sync` keeper reports about itself, for `podplay status`."""
        self.db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?)",
                        (source_id, json.dumps(record), time.time()))

    def sources(self) -> dict[str, dict]:
        return {i: json.loads(r) for i, r in self.db.execute("SELECT id, record FROM sources ORDER BY id")}

    def forget_source(self, source_id: str) -> None:
        self.db.execute("DELETE FROM sources WHERE id = ?", (source_id,))


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
        os.pwrite(fd, f"pid {os.getpid()} ({cmd}) since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
