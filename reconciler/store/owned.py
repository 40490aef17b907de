"""What podplay owns: the pod instance it last applied for each pod ref, and the claims it
made. The diff reads them as ``LastApplied``; only pods and claims recorded here are deleted."""

from __future__ import annotations

import json
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

    def service_records(self) -> dict:
        """Service ref → the ServiceEntry last served (its ClusterIP and nodePorts are kept)."""
        from reconciler.services import ServiceEntry

        return {ref: ServiceEntry.from_json(json.loads(entry)) for ref, entry in self.db.execute(
            "SELECT ref, entry FROM services")}


def commit_ownership(db: Connection, kind: str, key: str, uid: str, record: dict) -> None:
    """What a committed transaction changes in what podplay owns, from the transaction's own
    record (plan.Owns), inside the database transaction that marks the commit: the one place
    ownership is written."""
    if kind == "delete":
        db.execute("DELETE FROM pods WHERE ref = ? AND uid = ?", (key, uid))
    pod = record.get("pod")
    if pod is None and kind == "create" and "spec_hash" in record:
        pod = {"ref": key, "uid": uid, **record}  # a journal written before records named the pod
    if pod is not None:
        db.execute("INSERT OR REPLACE INTO pods VALUES (?, ?, ?, ?, ?, ?)",
                   (pod["ref"], pod["uid"], pod.get("spec_hash", ""), pod.get("source", ""), pod.get("owner", ""),
                    time.time()))
    for claim in record.get("claims", ()):
        db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                   (claim["ref"], claim["source"], int(claim["declared"])))
    for ref in record.get("forget_claims", ()):
        db.execute("DELETE FROM claims WHERE ref = ?", (ref,))
    if "services" in record:
        # A Services' sync serves exactly its entries: they replace every record.
        db.execute("DELETE FROM services")
        db.executemany("INSERT INTO services VALUES (?, ?, ?)",
                       [(e["ref"], e.get("source", ""), json.dumps(e)) for e in record["services"]])
