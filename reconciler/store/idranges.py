"""Host ID ranges held by pods with ``hostUsers: false``.

Each such pod holds one range of 65536 user IDs and one of group IDs, cut from podplay's entry
in /etc/subuid and /etc/subgid. The row is written (in its own sqlite transaction) by the
runtime's CreateInfra step before the infra container exists, and deleted by RemoveInfra, the
step that undoes it: a create killed half-way is undone by recovery, a teardown rolled forward,
so a range is held exactly while some step may still use it. Allocation is idempotent per pod
(a retried CreateInfra gets the range it already holds) and never hands out a range that
overlaps one still held, even when the subuid entry changed in between.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from reconciler.errors import EnvironmentProblem
from reconciler.idmap import RANGE_SIZE, IdMap
from reconciler.store.db import Connection


class IdRanges:
    def __init__(self, db: Connection):
        self.db = db

    def held(self) -> dict[str, IdMap]:
        """pod uid → the range it holds."""
        return {pod: IdMap(u, g, n) for pod, u, g, n in
                self.db.execute("SELECT pod_uid, uid, gid, size FROM idranges ORDER BY uid")}

    def lookup(self, pod_uid: str) -> IdMap | None:
        row = self.db.execute("SELECT uid, gid, size FROM idranges WHERE pod_uid = ?", (pod_uid,)).fetchone()
        return IdMap(*row) if row else None

    def allocate(self, pod_uid: str, uids: tuple[int, int], gids: tuple[int, int], size: int = RANGE_SIZE) -> IdMap:
        """The range ``pod_uid`` holds, or the lowest free one of ``uids``/``gids`` ((start, count)
        each) made its own."""
        with self.db.transaction():
            row = self.db.execute("SELECT uid, gid, size FROM idranges WHERE pod_uid = ?", (pod_uid,)).fetchone()
            if row:
                return IdMap(*row)
            held = self.db.execute("SELECT uid, gid, size FROM idranges").fetchall()
            slots = min(uids[1], gids[1]) // size
            for i in range(slots):
                u, g = uids[0] + i * size, gids[0] + i * size
                if any(u < hu + hn and hu < u + size for hu, _, hn in held):
                    continue
                if any(g < hg + hn and hg < g + size for _, hg, hn in held):
                    continue
                self.db.execute("INSERT INTO idranges VALUES (?, ?, ?, ?, ?)", (pod_uid, u, g, size, time.time()))
                return IdMap(u, g, size)
        raise EnvironmentProblem(f"every one of the {slots} ID ranges of podplay's /etc/subuid and /etc/subgid entries "
                                 "is held by a pod with hostUsers: false; remove pods or give the podplay entries "
                                 "more IDs")

    def release(self, pod_uid: str) -> None:
        self.db.execute("DELETE FROM idranges WHERE pod_uid = ?", (pod_uid,))


class PodIdAllocator:
    """What the runtime driver is given to allocate and free pods' ranges: the store table
    beside podplay's subuid/subgid entries (made on first use). Opens the store on first use."""

    def __init__(self, state_db: str | os.PathLike, subuid: str | None = None, subgid: str | None = None):
        from reconciler import subids

        self.state_db = Path(state_db)
        self.subuid = subuid or os.environ.get("PODPLAY_SUBUID_FILE") or subids.SUBUID
        self.subgid = subgid or os.environ.get("PODPLAY_SUBGID_FILE") or subids.SUBGID
        self._ranges: IdRanges | None = None
        self._lock = threading.Lock()

    def _table(self) -> IdRanges:
        with self._lock:
            if self._ranges is None:
                from reconciler.store.db import connect

                self._ranges = IdRanges(connect(self.state_db))
            return self._ranges

    def allocate(self, pod_uid: str) -> IdMap:
        from reconciler import subids

        uids = subids.ensure_entry(self.subuid)
        gids = subids.ensure_entry(self.subgid)
        return self._table().allocate(pod_uid, (uids.start, uids.count), (gids.start, gids.count))

    def lookup(self, pod_uid: str) -> IdMap | None:
        if self._ranges is None and not self.state_db.exists():
            return None
        return self._table().lookup(pod_uid)

    def release(self, pod_uid: str) -> None:
        if self._ranges is None and not self.state_db.exists():
            return
        self._table().release(pod_uid)

    def close(self) -> None:
        with self._lock:
            if self._ranges is not None:
                self._ranges.db.close()
                self._ranges = None
