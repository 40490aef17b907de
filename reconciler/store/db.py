"""One sqlite connection shared by every concern of the store, and the schema they share."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from reconciler.errors import NoSpaceError, StateError, no_space
from reconciler.fsutil import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS pods (
    ref TEXT PRIMARY KEY, uid TEXT NOT NULL, spec_hash TEXT NOT NULL, source TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '', applied_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (ref TEXT PRIMARY KEY, source TEXT NOT NULL, declared INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS services (ref TEXT PRIMARY KEY, source TEXT NOT NULL, entry TEXT NOT NULL);
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
CREATE TABLE IF NOT EXISTS idranges (
    pod_uid TEXT PRIMARY KEY, uid INTEGER NOT NULL, gid INTEGER NOT NULL, size INTEGER NOT NULL, allocated REAL NOT NULL
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


def _translated(path: Path | None, exc: sqlite3.Error) -> Exception:
    """A sqlite error as what it means to the user: a full disk, a damaged file, or a store
    podplay cannot use (never a traceback)."""
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text and _full(path):
        return no_space(path or "the state store")
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return StateError(f"state store {path} is damaged ({text}); the next podplay command moves it aside "
                          "and rebuilds it from the host")
    return StateError(f"state store {path}: {text}")


def _full(path: Path | None) -> bool:
    """sqlite reports a write that ran out of space as an I/O error at times: look."""
    try:
        st = os.statvfs(path.parent if path is not None else "/")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


class Connection:
    """One sqlite connection shared by the threads of an apply: every statement, and every
    BEGIN…COMMIT block (``transaction``, which holds the same re-entrant lock), runs alone."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock | None = None, path: Path | None = None):
        self.conn, self.lock, self.path = conn, lock or threading.RLock(), path
        self.notice = ""  # what opening it had to do that the user should hear of (a damaged file moved aside)

    def execute(self, sql: str, params=()) -> Rows:
        with self.lock:
            try:
                return Rows(self.conn.execute(sql, params))
            except sqlite3.Error as exc:
                raise _translated(self.path, exc) from None

    def executemany(self, sql: str, seq) -> Rows:
        with self.lock:
            try:
                return Rows(self.conn.executemany(sql, seq))
            except sqlite3.Error as exc:
                raise _translated(self.path, exc) from None

    def executescript(self, sql: str) -> None:
        with self.lock:
            try:
                self.conn.executescript(sql)
            except sqlite3.Error as exc:
                raise _translated(self.path, exc) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception; nests no other statement of
        another thread in between."""
        with self.lock:
            self.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                with contextlib.suppress(StateError, NoSpaceError):  # the error that brought us here says more
                    self.execute("ROLLBACK")
                raise
            try:
                self.execute("COMMIT")
            except (StateError, NoSpaceError):
                # sqlite keeps the transaction open when COMMIT fails (a full disk): end it, so
                # that the connection can be used again (the journal retries on its reserve).
                with contextlib.suppress(StateError, NoSpaceError):
                    self.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# What a damaged store's tables are worth carrying over, in order (ownership and the open
# transactions first: they are what recovery and pruning need).
SALVAGED = ("pods", "claims", "idranges", "txns", "journal", "revisions", "pins", "last_good", "meta")


def connect(path: str | os.PathLike) -> Connection:
    """The read-write store at ``path``, created (with every table) if missing. A damaged file
    is moved aside (kept for inspection), and what can still be read of it is carried over to a
    new store; the rest is rebuilt from the host, whose containers carry podplay's labels."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _open_or_release(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                raise _translated(path, exc) from None
            why = str(exc)
            aside = _move_aside(path)
        db = _open(path)
        kept = _salvage(db, aside)
        db.notice = (f"the state store was damaged ({why}); it was moved aside to {aside} and rebuilt: carried "
                     f"over {', '.join(kept) or 'nothing'}; pods are adopted from the host's labels")
        db.execute("INSERT INTO events VALUES (?, 'error', 'state', ?)", (time.time(), db.notice))
        return db
    except sqlite3.Error as exc:
        raise _translated(path, exc) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise no_space(path) from None
        raise StateError(f"state store {path}: {exc.strerror or exc}") from None


# The journal's reserve (reconciler.store.journal): blocks kept free for the journal's writes.
RESERVE_FILE = "journal.reserve"


def _open_or_release(path: Path) -> Connection:
    """Open; on a full disk (sqlite makes its -wal and -shm files as it opens) give the
    journal's reserve back and try again: a store that cannot open cannot `down` either."""
    try:
        return _open(path)
    except sqlite3.OperationalError as exc:
        reserve = path.with_name(RESERVE_FILE)
        if not isinstance(_translated(path, exc), NoSpaceError) or not os.path.exists(reserve):
            raise
        os.truncate(reserve, 0)
        return _open(path)


def _open(path: Path) -> Connection:
    db = Connection(sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False), path=path)
    try:
        private_file(path, "-wal", "-shm")  # pull secrets, sources: root's alone (-wal takes its mode)
        db.conn.execute("PRAGMA journal_mode=WAL")
        db.conn.execute("PRAGMA synchronous=NORMAL")
        db.conn.executescript(SCHEMA)
        # A garbled page shows only where it is read: check every page now (a few ms for a
        # store of this size) rather than fail halfway through an apply.
        check = db.conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({check[0] if check else 'no answer'})")
    except BaseException:
        db.conn.close()
        raise
    return db


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def _salvage(db: Connection, aside: Path) -> list[str]:
    """Copy every table of the damaged file that still reads whole; returns their names."""
    kept = []
    try:
        old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
    except sqlite3.Error:
        return kept
    try:
        for table in SALVAGED:
            try:
                rows = old.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 (names from SALVAGED)
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    db.conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)  # noqa: S608
                kept.append(table)
            except sqlite3.Error:
                continue
    finally:
        old.close()
    return kept


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
