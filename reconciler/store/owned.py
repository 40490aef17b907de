"""What podplay owns: the pod instance it last applied for each pod ref, and the claims it
made. The diff reads them as ``LastApplied``; only pods and claims recorded here are deleted."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from reconciler.store.db import Connection

if TYPE_CHECKING:
    from reconciler.diff import LastApplied


class Ownership:
    def __init__(self, db: Connection):
        self.db = db

    def last_applied(self) -> LastApplied:
        from reconciler.diff import AppliedPod, LastApplied

        pods = {r[0]: AppliedPod(*r) for r in self.db.execute(
            "SELECT ref, uid, spec_hash, source, owner FROM pods")}
        claims = dict(self.db.execute("SELECT ref, source FROM claims"))
        return LastApplied(pods=pods, claims=claims)

    def record_pod(self, ref: str, uid: str, spec_hash: str, source: str, owner: str) -> None:
        """Say which instance of a pod is podplay's now (a rollout that dropped the instance
        recorded last keeps the one that stays)."""
        with self.db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO pods VALUES (?, ?, ?, ?, ?, ?)",
                       (ref, uid, spec_hash, source, owner, time.time()))

    def record_claim(self, ref: str, source: str, declared: bool) -> None:
        with self.db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (ref, source, int(declared)))

    def forget_claim(self, ref: str) -> None:
        with self.db.transaction() as db:
            db.execute("DELETE FROM claims WHERE ref = ?", (ref,))
