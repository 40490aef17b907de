"""Deployments' revisions (the pod templates they ran, for `rollout history` and `undo`) and
pins (run an older revision while the manifest's template is unchanged)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from reconciler.store.db import Connection


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


def _revision(r) -> Revision:
    return Revision(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11])


class Rollouts:
    def __init__(self, db: Connection):
        self.db = db

    def revisions(self, deployment: str) -> list[Revision]:
        rows = self.db.execute("SELECT * FROM revisions WHERE deployment = ? ORDER BY revision", (deployment,))
        return [_revision(r) for r in rows]

    def revision_deployments(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT deployment FROM revisions ORDER BY deployment")]

    def add_revision(self, deployment: str, template_hash: str, template: dict, context: dict, source: str,
                     outcome: str, keep: int) -> int:
        """A new newest revision; an older revision with the same template is renumbered (as
        Kubernetes does). Keeps `keep` old revisions besides the newest."""
        with self.db.transaction() as db:
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
        with self.db.transaction() as db:
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
