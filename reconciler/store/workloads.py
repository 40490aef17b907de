"""What the workload controllers remember between passes that the host cannot show: a Job's
run (its template, start, outcome, the pods it saw finish) — so that a finished Job is not run
again by the next pass, after its pods were removed (ttlSecondsAfterFinished) or the host
rebooted. Records are JSON (the controllers' own dataclasses), one per object key."""

from __future__ import annotations

import json
import time

from reconciler.store.db import Connection

TABLE = """CREATE TABLE IF NOT EXISTS workloads (
    key TEXT PRIMARY KEY, record TEXT NOT NULL, updated REAL NOT NULL)"""


class WorkloadRecords:
    def __init__(self, db: Connection):
        self.db = db
        self.db.execute(TABLE)  # its own table, created where it is used (no change to the shared schema)

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT record FROM workloads WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def all(self, prefix: str = "") -> dict[str, dict]:
        rows = self.db.execute("SELECT key, record FROM workloads WHERE key LIKE ? ORDER BY key",
                               (prefix.replace("%", r"\%") + "%",))
        return {k: json.loads(r) for k, r in rows}

    def put(self, key: str, record: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO workloads VALUES (?, ?, ?)",
                        (key, json.dumps(record, sort_keys=True), time.time()))

    def job_statuses(self) -> list[dict]:
        """Each Job's status as the last look saw it (reconciler.jobs.JobStatus.to_json)."""
        return [r["status"] for r in self.all("Job/").values() if "status" in r]

    def cron_statuses(self) -> list[dict]:
        """Each CronJob's schedule, last and next run, as the last look saw it."""
        return [r["status"] for r in self.all("CronJob/").values() if "status" in r]

    def forget(self, key: str) -> None:
        self.db.execute("DELETE FROM workloads WHERE key = ?", (key,))
