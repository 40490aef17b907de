"""One sqlite connection shared by every concern of the store, and the schema they share."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from reconciler.errors import StateError
from reconciler.fsutil import private_file

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


class Rows:
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


class Connection:
    """One sqlite connection shared by the threads of an apply: every statement, and every
    BEGIN…COMMIT block (``transaction``, which holds the same re-entrant lock), runs alone."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock | None = None):
        self.conn, self.lock = conn, lock or threading.RLock()

    def execute(self, sql: str, params=()) -> Rows:
        with self.lock:
            return Rows(self.conn.execute(sql, params))

    def executemany(self, sql: str, seq) -> Rows:
        with self.lock:
            return Rows(self.conn.executemany(sql, seq))

    def executescript(self, sql: str) -> None:
        with self.lock:
            self.conn.executescript(sql)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception; nests no other statement of
        another thread in between."""
        with self.lock:
            self.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.execute("ROLLBACK")
                raise
            self.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def connect(path: str | os.PathLike) -> Connection:
    """The read-write store at ``path``, created (with every table) if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = Connection(sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False))
        private_file(path, "-wal", "-shm")  # pull secrets, sources: root's alone (-wal takes its mode)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state store {path} is unreadable: {exc}") from None
    return db


class ReadOnlyConnection(Connection):
    """A reader that never creates, migrates or locks the store; any sqlite error (no such
    table in an older store, a corrupt file) is a StateError that the reader may ignore."""

    def execute(self, sql: str, params=()) -> Rows:
        try:
            return super().execute(sql, params)
        except sqlite3.Error as exc:
            raise StateError(f"state store: {exc}") from None


def connect_readonly(path: str | os.PathLike) -> ReadOnlyConnection | None:
    """The store at ``path`` opened read-only, or None when there is none (nothing was applied)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return ReadOnlyConnection(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5))
    except sqlite3.Error as exc:
        raise StateError(f"state store {path} is unreadable: {exc}") from None
