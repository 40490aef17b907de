"""A read-only view of the store for the commands that list (`ps`, `pods`): it never creates,
migrates or locks the database, and a store that cannot be read is an empty one to them."""

from __future__ import annotations

import os

from reconciler.store.db import connect_readonly
from reconciler.store.journal import Journal
from reconciler.store.keepers import KeeperRecords


class StoreView:
    def __init__(self, db):
        self.db = db
        self.journal = Journal(db)
        self.keepers = KeeperRecords(db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> StoreView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_view(path: str | os.PathLike) -> StoreView | None:
    """The store at ``path``, read-only; None when there is none yet (nothing was applied).
    Reads raise StateError on a store they cannot read (an older schema, a damaged file)."""
    db = connect_readonly(path)
    return StoreView(db) if db is not None else None
