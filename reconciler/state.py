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

import fcntl
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import LockedError
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

if TYPE_CHECKING:
    from reconciler.diff import LastApplied
    from reconciler.steps import Step

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

    def close(self) -> None:
        self.db.close()

    # Every method below is a delegation kept while callers move to the concern objects above
    # (apply, reconcile, health, revisions, converged, watch and their tests call these names).

    # --- owned ---
    def last_applied(self) -> LastApplied:  # delegation kept while callers move
        return self.owned.last_applied()

    def record_pod(self, ref: str, uid: str, spec_hash: str, source: str,  # delegation kept while callers move
                   owner: str) -> None:
        self.owned.record_pod(ref, uid, spec_hash, source, owner)

    def record_claim(self, ref: str, source: str, declared: bool) -> None:  # delegation kept while callers move
        self.owned.record_claim(ref, source, declared)

    def forget_claim(self, ref: str) -> None:  # delegation kept while callers move
        self.owned.forget_claim(ref)

    # --- journal ---
    def begin_txn(self, kind: str, key: str, uid: str, steps: list[Step],  # delegation kept while callers move
                  record: dict | None = None) -> int:
        return self.journal.begin_txn(kind, key, uid, steps, record)

    def mark(self, txn: int, seq: int, status: str, error: str = "") -> None:  # delegation kept while callers move
        self.journal.mark(txn, seq, status, error)

    def finish_txn(self, txn: int, status: str, error: str = "") -> None:  # delegation kept while callers move
        self.journal.finish_txn(txn, status, error)

    def open_txns(self) -> list[OpenTxn]:  # delegation kept while callers move
        return self.journal.open_txns()

    def prune_history(self) -> None:  # delegation kept while callers move
        self.journal.prune_history()

    def recent_txns(self, limit: int = 20) -> list[dict]:  # delegation kept while callers move
        return self.journal.recent_txns(limit)

    # --- meta ---
    def get_meta(self, key: str, default: str = "") -> str:  # delegation kept while callers move
        return self.meta.get(key, default)

    def set_meta(self, key: str, value: str) -> None:  # delegation kept while callers move
        self.meta.set(key, value)

    def last_good(self) -> dict[str, tuple[str, str]]:  # delegation kept while callers move
        return self.meta.last_good()

    def save_last_good(self, path: str, digest: str, content: str) -> None:  # delegation kept while callers move
        self.meta.save_last_good(path, digest, content)

    def forget_last_good(self, path: str) -> None:  # delegation kept while callers move
        self.meta.forget_last_good(path)

    # --- keepers, probes, events ---
    def add_event(self, level: str, key: str, message: str) -> None:  # delegation kept while callers move
        self.keepers.add_event(level, key, message)

    def events(self, limit: int = 50) -> list[tuple[float, str, str, str]]:  # delegation kept while callers move
        return self.keepers.events(limit)

    def set_source(self, source_id: str, record: dict) -> None:  # delegation kept while callers move
        self.keepers.set_source(source_id, record)

    def sources(self) -> dict[str, dict]:  # delegation kept while callers move
        return self.keepers.sources()

    def forget_source(self, source_id: str) -> None:  # delegation kept while callers move
        self.keepers.forget_source(source_id)

    def save_probes(self, records: list[tuple[str, str, str, str, dict]]) -> None:  # delegation kept while callers move
        self.keepers.save_probes(records)

    def probe_records(self, pod_uids: list[str] | None = None) -> dict[str, dict]:  # delegation kept while callers move
        return self.keepers.probe_records(pod_uids)

    def forget_probes(self, keep_pod_uids: set[str]) -> None:  # delegation kept while callers move
        self.keepers.forget_probes(keep_pod_uids)

    # --- rollouts ---
    def revisions(self, deployment: str) -> list[Revision]:  # delegation kept while callers move
        return self.rollouts.revisions(deployment)

    def revision_deployments(self) -> list[str]:  # delegation kept while callers move
        return self.rollouts.revision_deployments()

    def add_revision(self, deployment: str, template_hash: str, template: dict,  # delegation kept while callers move
                     context: dict, source: str, outcome: str, keep: int) -> int:
        return self.rollouts.add_revision(deployment, template_hash, template, context, source, outcome, keep)

    def update_revision(self, deployment: str, revision: int, **values) -> None:  # delegation kept while callers move
        self.rollouts.update_revision(deployment, revision, **values)

    def forget_revisions(self, deployment: str) -> None:  # delegation kept while callers move
        self.rollouts.forget_revisions(deployment)

    def pin(self, deployment: str) -> Pin | None:  # delegation kept while callers move
        return self.rollouts.pin(deployment)

    def pins(self) -> dict[str, Pin]:  # delegation kept while callers move
        return self.rollouts.pins()

    def set_pin(self, deployment: str, revision: int, manifest_hash: str,  # delegation kept while callers move
                reason: str) -> None:
        self.rollouts.set_pin(deployment, revision, manifest_hash, reason)

    def clear_pin(self, deployment: str) -> None:  # delegation kept while callers move
        self.rollouts.clear_pin(deployment)


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
