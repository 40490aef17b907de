"""Host ID ranges held by pods with ``hostUsers: false``.

Each such pod holds one range of 65536 user IDs and one of group IDs, cut from podplay's entry
in /etc/subuid and /etc/subgid. The row is written (in its own sqlite transaction) by the
runtime's CreateInfra step before the infra container exists, and deleted by RemoveInfra, the
step that undoes it: a create killed half-way is undone by recovery, a teardown rolled forward,
so a range is held exactly while some step may still use it. Allocation is idempotent per pod
(a retried CreateInfra gets the range it already holds) and never hands out a range that
overlaps one still held, even when the subuid entry changed in between.

The table is per storage root, the subuid entry host-wide: two roots on one host would each
hand out the entry's first range. So every range is also claimed in a host-wide registry,
``/var/lib/podplay-ids`` (``$PODPLAY_IDS_DIR``): one owner-only file per held range,
``<root tag>-<pod uid>.json`` naming the root, the pod and the range, written under the
registry's lock (``.lock``, flock) before the store row, and removed after it. An allocation
skips every range another root claims. Under the lock a claim of this root without a row is a
kill's leftover (claim and row are made under it together) and is dropped, as is a claim of a
root whose state store no longer exists.

``sweep`` frees the rows (and claims) of pods no longer on the host: a pass calls it, under the
apply lock and after crash recovery, with every pod uid the host still has a trace of.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
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

    def allocate(self, pod_uid: str, uids: tuple[int, int], gids: tuple[int, int], size: int = RANGE_SIZE, *,
                 taken: Iterable[IdMap] = (), claim=None) -> IdMap:
        """The range ``pod_uid`` holds, or the lowest free one of ``uids``/``gids`` ((start, count)
        each) made its own. ``taken``: ranges held elsewhere (other roots); ``claim(range)`` runs
        before the row is written (the host-wide registry's claim)."""
        with self.db.transaction():
            row = self.db.execute("SELECT uid, gid, size FROM idranges WHERE pod_uid = ?", (pod_uid,)).fetchone()
            if row:
                return IdMap(*row)
            held = self.db.execute("SELECT uid, gid, size FROM idranges").fetchall()
            held += [(t.uid, t.gid, t.size) for t in taken]
            slots = min(uids[1], gids[1]) // size
            for i in range(slots):
                u, g = uids[0] + i * size, gids[0] + i * size
                if any(u < hu + hn and hu < u + size for hu, _, hn in held):
                    continue
                if any(g < hg + hn and hg < g + size for _, hg, hn in held):
                    continue
                if claim is not None:
                    claim(IdMap(u, g, size))
                self.db.execute("INSERT INTO idranges VALUES (?, ?, ?, ?, ?)", (pod_uid, u, g, size, time.time()))
                return IdMap(u, g, size)
        raise EnvironmentProblem(f"every one of the {slots} ID ranges of podplay's /etc/subuid and /etc/subgid entries "
                                 "is held by a pod with hostUsers: false; remove pods or give the podplay entries "
                                 "more IDs")

    def insert(self, pod_uid: str, ids: IdMap) -> None:
        self.db.execute("INSERT OR REPLACE INTO idranges VALUES (?, ?, ?, ?, ?)",
                        (pod_uid, ids.uid, ids.gid, ids.size, time.time()))

    def release(self, pod_uid: str) -> None:
        self.db.execute("DELETE FROM idranges WHERE pod_uid = ?", (pod_uid,))


REGISTRY = "/var/lib/podplay-ids"


class HostClaims:
    """The host-wide registry of held ranges (see the module's docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def name(root: str, pod_uid: str) -> str:
        from reconciler import sha

        return f"{sha.sha256(os.fsencode(root)).hexdigest()[:12]}-{pod_uid}.json"

    def read(self) -> dict[str, dict]:
        """file name → claim ({"root", "pod", "uid", "gid", "size"}). Claims are written whole
        (temp file and rename); a file that is not one is ignored and left alone."""
        out: dict[str, dict] = {}
        try:
            names = [n for n in os.listdir(self.dir) if n.endswith(".json")]
        except FileNotFoundError:
            return out
        for n in names:
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads((self.dir / n).read_text())
                if isinstance(doc, dict) and all(isinstance(doc.get(k), int) for k in ("uid", "gid", "size")):
                    out[n] = doc
        return out

    def write(self, root: str, pod_uid: str, ids: IdMap) -> None:
        from reconciler.fsutil import atomic_write

        doc = {"root": root, "pod": pod_uid, "uid": ids.uid, "gid": ids.gid, "size": ids.size}
        atomic_write(self.dir / self.name(root, pod_uid), json.dumps(doc), 0o600)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / name)


class PodIdAllocator:
    """What the runtime driver is given to allocate and free pods' ranges: the store table
    beside podplay's subuid/subgid entries (made on first use). Opens the store on first use."""

    def __init__(self, state_db: str | os.PathLike, subuid: str | None = None, subgid: str | None = None,
                 registry: str | os.PathLike | None = None):
        from reconciler import subids

        self.state_db = Path(state_db)
        self.root = os.path.realpath(self.state_db.parent)
        self.subuid = subuid or os.environ.get("PODPLAY_SUBUID_FILE") or subids.SUBUID
        self.subgid = subgid or os.environ.get("PODPLAY_SUBGID_FILE") or subids.SUBGID
        self.claims = HostClaims(registry or os.environ.get("PODPLAY_IDS_DIR") or REGISTRY)
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
        table = self._table()
        with self.claims.locked():
            claims = self._tidy(table)
            own = table.lookup(pod_uid)
            mine = self.claims.name(self.root, pod_uid)
            if own is not None:
                if mine not in claims:  # a claim lost (the registry wiped): make it again
                    self.claims.write(self.root, pod_uid, own)
                return own
            taken = [IdMap(c["uid"], c["gid"], c["size"]) for n, c in claims.items() if n != mine]
            return table.allocate(pod_uid, (uids.start, uids.count), (gids.start, gids.count), taken=taken,
                                  claim=lambda ids: self.claims.write(self.root, pod_uid, ids))

    def _tidy(self, table: IdRanges) -> dict[str, dict]:
        """The registry's claims, less (and with the files removed) the claims of this root that
        have no row, and of roots whose state store is gone. Under the registry's lock."""
        held = set(table.held())
        out = {}
        for name, claim in self.claims.read().items():
            root = str(claim.get("root", ""))
            if root == self.root:
                stale = claim.get("pod") not in held
            else:
                stale = bool(root) and not os.path.exists(os.path.join(root, "state.db"))
            if stale:
                self.claims.remove(name)
            else:
                out[name] = claim
        return out

    def claims_held(self) -> list[IdMap]:
        """The ranges the host-wide registry says are held, by any root."""
        with self.claims.locked():
            return [IdMap(c["uid"], c["gid"], c["size"]) for c in self.claims.read().values()]

    def sweep(self, present: Iterable[str], table: IdRanges | None = None) -> list[str]:
        """Free the ranges of pods that left no trace on the host (``present``: every pod uid that
        has a container, a snapshot, a network attachment, a volume or a runtime directory).
        Returns the freed pods' uids. Only under the apply lock, after crash recovery, and only
        with a complete relist: a pod missing from ``present`` loses its range. ``table``: the
        store's table through a connection the caller has open."""
        if table is None:
            if self._ranges is None and not self.state_db.exists():
                return []
            table = self._table()
        keep = set(present)
        with self.claims.locked():
            gone = sorted(uid for uid in table.held() if uid not in keep)
            for uid in gone:
                table.release(uid)
                self.claims.remove(self.claims.name(self.root, uid))
            self._tidy(table)
        return gone

    def lookup(self, pod_uid: str) -> IdMap | None:
        if self._ranges is None and not self.state_db.exists():
            return None
        return self._table().lookup(pod_uid)

    def release(self, pod_uid: str) -> None:
        if self._ranges is None and not self.state_db.exists():
            return
        self._table().release(pod_uid)
        # After the row: a kill in between leaves a claim without a row, which the next
        # allocation or sweep of this root drops.
        self.claims.remove(self.claims.name(self.root, pod_uid))

    def close(self) -> None:
        with self._lock:
            if self._ranges is not None:
                self._ranges.db.close()
                self._ranges = None


def sweep_vanished(db: Connection, runtime, observed: Iterable[str]) -> list[str]:
    """A pass's sweep (under the apply lock, after recovery): the ranges held by pods that
    vanished without podplay are freed. ``runtime`` is the pass's runtime driver (its
    ``id_ranges`` allocator and ``pod_traces``); ``observed`` the relisted pods' uids. With no
    range held — nearly always — this is one query on the store the pass has open."""
    table = IdRanges(db)
    if not table.held():
        return []
    allocator, traces = getattr(runtime, "id_ranges", None), getattr(runtime, "pod_traces", None)
    if allocator is None or traces is None or not hasattr(allocator, "sweep"):
        return []
    present = traces(observed)
    if present is None:
        return []
    return allocator.sweep(present, table)
