"""What the long-running processes report for the others to read: each keeper's record
(`watch`/`sync`: its source, last pass, crash-loop schedule), each container's probe results,
and events (errors and warnings `podplay status` shows)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from reconciler.store.db import Connection


def keeper_alive(pid: int) -> bool:
    """Is ``pid`` still a podplay process (not a recycled pid)? A keeper killed with -9 leaves
    its record saying "running"; only a live process makes that true."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"podplay" in cmd or b"reconciler" in cmd


class KeeperRecords:
    def __init__(self, db: Connection):
        self.db = db

    # --- keepers ----------------------------------------------------------------------------------

    def set_source(self, source_id: str, record: dict) -> None:
        """What a `watch` or `sync` keeper reports about itself, for `podplay status`."""
        self.db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?)",
                        (source_id, json.dumps(record), time.time()))

    def sources(self) -> dict[str, dict]:
        """keeper id → its last record, running or not."""
        return {i: json.loads(r) for i, r in self.db.execute("SELECT id, record FROM sources ORDER BY id")}

    def forget_source(self, source_id: str) -> None:
        self.db.execute("DELETE FROM sources WHERE id = ?", (source_id,))

    def live(self, alive=keeper_alive) -> dict[str, dict]:
        """The records of keepers that say they run and whose process is still there."""
        return {i: r for i, r in self.sources().items() if r.get("running") and alive(int(r.get("pid") or 0))}

    # --- probes -----------------------------------------------------------------------------------

    def save_probes(self, records: list[tuple[str, str, str, str, dict]]) -> None:
        """(container id, pod uid, pod ref, container name, record) rows, replacing older ones."""
        now = time.time()
        self.db.executemany("INSERT OR REPLACE INTO probes VALUES (?, ?, ?, ?, ?, ?)",
                            [(cid, uid, pod, name, json.dumps(rec), now) for cid, uid, pod, name, rec in records])

    def probe_records(self, pod_uids: Iterable[str] | None = None) -> dict[str, dict]:
        """container id → record, for some pods or all."""
        return {cid: rec for cid, _, rec in self._probes(pod_uids)}

    def probes_by_pod(self, pod_uids: Iterable[str]) -> list[tuple[str, dict]]:
        """(pod uid, record) of the containers of some pods."""
        return [(uid, rec) for _, uid, rec in self._probes(pod_uids)]

    def _probes(self, pod_uids: Iterable[str] | None) -> list[tuple[str, str, dict]]:
        if pod_uids is None:
            rows = self.db.execute("SELECT container_id, pod_uid, record FROM probes")
        else:
            uids = list(pod_uids)
            marks = ",".join("?" * len(uids))
            rows = self.db.execute(
                f"SELECT container_id, pod_uid, record FROM probes WHERE pod_uid IN ({marks})", uids)  # noqa: S608
        return [(cid, uid, json.loads(rec)) for cid, uid, rec in rows]

    def forget_probes(self, keep_pod_uids: set[str]) -> None:
        """Drop the records of pods that are gone."""
        uids = [r[0] for r in self.db.execute("SELECT DISTINCT pod_uid FROM probes")]
        gone = [u for u in uids if u not in keep_pod_uids]
        if gone:
            self.db.executemany("DELETE FROM probes WHERE pod_uid = ?", [(u,) for u in gone])

    def any_probed(self, pod_uids: Iterable[str]) -> bool:
        uids = list(pod_uids)
        if not uids:
            return False
        marks = ",".join("?" * len(uids))
        return self.db.execute(f"SELECT 1 FROM probes WHERE pod_uid IN ({marks}) LIMIT 1",  # noqa: S608
                               uids).fetchone() is not None

    # --- events -----------------------------------------------------------------------------------

    def add_event(self, level: str, key: str, message: str) -> None:
        self.db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (time.time(), level, key, message))

    def events(self, limit: int = 50) -> list[tuple[float, str, str, str]]:
        return list(self.db.execute("SELECT ts, level, key, message FROM events ORDER BY ts DESC LIMIT ?", (limit,)))
