"""Small facts kept between runs (the no-change fingerprint of `up`), and the last good version
of each manifest file `watch` reads (it stands in while the file is invalid)."""

from __future__ import annotations

import time

from reconciler.store.db import Connection


class Meta:
    def __init__(self, db: Connection):
        self.db = db

    def get(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def forget(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def last_good(self) -> dict[str, tuple[str, str]]:
        """manifest path → (digest, content) of its last valid version, as `watch` saved it."""
        return {p: (d, c) for p, d, c in self.db.execute("SELECT path, digest, content FROM last_good")}

    def save_last_good(self, path: str, digest: str, content: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO last_good VALUES (?, ?, ?, ?)", (path, digest, content, time.time()))

    def forget_last_good(self, path: str) -> None:
        self.db.execute("DELETE FROM last_good WHERE path = ?", (path,))
