"""The state store by concern: one connection shared by the concern objects, ownership written
only by the journal's commits, and the read-only view `ps` uses."""

from __future__ import annotations

import sqlite3

import pytest

from reconciler.errors import NoSpaceError, StateError
from reconciler.plan import TxnKind
from reconciler.state import COMMITTED, ROLLED_BACK, StateStore
from reconciler.steps import StopContainers
from reconciler.store import journal
from reconciler.store.keepers import keeper_alive
from reconciler.store.view import open_view


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


def test_the_kinds_the_journal_reads_back_are_txn_kinds():
    # The store imports nothing of the engine (ps stays light), so it spells the kinds it
    # branches on; they must stay TxnKind's values.
    assert {journal.CREATE, journal.DELETE, journal.START, journal.STOP, journal.PREPARE} == {
        TxnKind.CREATE, TxnKind.DELETE, TxnKind.START, TxnKind.STOP, TxnKind.PREPARE}


def test_concerns_share_one_connection(store):
    assert store.journal.db is store.owned.db is store.keepers.db is store.rollouts.db is store.meta.db is store.db


def test_a_committed_create_records_ownership_and_a_delete_drops_it(store):
    step = StopContainers("default/web", "u1", container_ids=("u1.app",), timeout=3)
    t = store.journal.begin_txn(TxnKind.CREATE, "default/web", "u1", [step],
                                {"spec_hash": "h", "source": "/m/web.yaml", "owner": "Pod/default/web"})
    assert [o.kind for o in store.journal.open_txns()] == ["create"]
    assert store.journal.has_open_txns()
    store.journal.finish_txn(t, COMMITTED)
    assert not store.journal.has_open_txns()
    assert store.owned.last_applied().pods["default/web"].uid == "u1"
    t = store.journal.begin_txn(TxnKind.DELETE, "default/web", "u1", [])
    store.journal.finish_txn(t, COMMITTED)
    assert store.owned.last_applied().pods == {}
    assert [r["kind"] for r in store.journal.recent_txns()] == ["delete", "create"]


def test_ownership_comes_only_from_committed_transaction_records(store):
    from reconciler.plan import Owns

    def commit(kind, key, uid, owns, status=COMMITTED):
        t = store.journal.begin_txn(kind, key, uid, [], owns.to_json())
        store.journal.finish_txn(t, status)

    commit(TxnKind.SHARED, "default/data", "", Owns(claims=(("default/data", "/m/db.yaml", True),)))
    commit(TxnKind.CREATE, "default/web-0", "new", Owns(pod=("default/web-0", "new", "h2", "/m/web.yaml",
                                                            "Deployment/default/web")), status=ROLLED_BACK)
    last = store.owned.last_applied()
    assert last.claims == {"default/data": "/m/db.yaml"} and last.pods == {}, "a rolled-back create owns nothing"
    commit(TxnKind.CREATE, "default/web-0", "old", Owns(pod=("default/web-0", "old", "h1", "/m/web.yaml",
                                                            "Deployment/default/web")))
    # A rollout drops the old instance; its delete records the instance that stays.
    commit(TxnKind.DELETE, "default/web-0", "old", Owns(pod=("default/web-0", "new", "h2", "/m/web.yaml",
                                                            "Deployment/default/web")))
    assert store.owned.last_applied().pods["default/web-0"].uid == "new"
    commit(TxnKind.SHARED, "default/data", "", Owns(forget_claims=("default/data",)))
    assert store.owned.last_applied().claims == {}


@pytest.mark.parametrize("history,stopped", [
    ([("create", COMMITTED), ("stop", COMMITTED)], True),
    ([("create", COMMITTED), ("stop", COMMITTED), ("start", COMMITTED)], False),
    ([("create", COMMITTED), ("stop", COMMITTED), ("start", ROLLED_BACK)], True),  # only committed ones count
    ([("stop", COMMITTED), ("create", COMMITTED)], False),
    ([("stop", COMMITTED), ("delete", COMMITTED)], True),  # a delete says nothing about being stopped
    ([("create", COMMITTED)], False),
    ([], False),
])
def test_stopped_pods_are_those_whose_last_lifecycle_txn_was_a_stop(store, history, stopped):
    for kind, status in history:
        store.journal.finish_txn(store.journal.begin_txn(kind, "default/web", "u1", []), status)
    store.journal.finish_txn(store.journal.begin_txn("stop", "default/db", "u2", []), COMMITTED)
    assert store.journal.stopped_pods(["u1"]) == ({"u1"} if stopped else set())
    assert store.journal.stopped_pods([]) == set()


def test_live_keepers_are_running_records_of_live_processes(store):
    store.keepers.set_source("a", {"running": True, "pid": 11})
    store.keepers.set_source("b", {"running": False, "pid": 12})
    store.keepers.set_source("c", {"running": True, "pid": 13})
    assert list(store.keepers.live(alive=lambda pid: pid != 13)) == ["a"]
    assert keeper_alive(0) is False and keeper_alive(-1) is False


def test_the_read_only_view_reads_without_creating_or_writing(tmp_path, store):
    assert open_view(tmp_path / "none" / "state.db") is None
    assert not (tmp_path / "none").exists()
    store.keepers.save_probes([("u1.app", "u1", "default/web", "app", {"ready": True}),
                               ("u2.app", "u2", "default/db", "app", {"ready": False})])
    store.journal.finish_txn(store.journal.begin_txn("stop", "default/web", "u1", []), COMMITTED)
    with open_view(store.path) as view:
        assert view.keepers.probes_by_pod(["u1"]) == [("u1", {"ready": True})]
        assert view.journal.stopped_pods(["u1", "u2"]) == {"u1"}
        with pytest.raises(StateError):
            view.db.execute("INSERT INTO meta VALUES ('k', 'v')")
    assert store.meta.get("k") == ""


def test_a_store_without_the_tables_is_a_state_error_to_the_view(tmp_path):
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    with open_view(path) as view, pytest.raises(StateError):
        view.keepers.sources()


def _full_until_released(store, monkeypatch):
    """The store's file system is full while the journal's reserve is held."""
    real = store.db.execute

    def execute(sql, params=()):
        if store.journal.held() and not sql.startswith(("SELECT", "ROLLBACK")):
            raise NoSpaceError("no space left (simulated)")
        return real(sql, params)

    monkeypatch.setattr(store.db, "execute", execute)


def test_on_a_full_disk_the_journal_releases_its_reserve_to_undo_and_tear_down(store, monkeypatch):
    step = StopContainers("default/web", "u1", container_ids=("u1.app",), timeout=3)
    t = store.journal.begin_txn(TxnKind.CREATE, "default/web", "u1", [step])
    assert store.journal.hold_reserve() == journal.RESERVE
    _full_until_released(store, monkeypatch)
    with pytest.raises(NoSpaceError):  # new work never eats into the reserve
        store.journal.begin_txn(TxnKind.CREATE, "default/api", "u2", [step])
    assert store.journal.held() == journal.RESERVE
    store.journal.mark(t, 0, journal.UNDONE)  # an undo's bookkeeping: the reserve goes
    assert store.journal.held() == 0
    store.journal.finish_txn(t, ROLLED_BACK)
    assert not store.journal.open_txns()
    store.journal.hold_reserve()
    store.journal.begin_txn(TxnKind.DELETE, "default/web", "u1", [step])  # a teardown frees space: it may
    assert store.journal.held() == 0


def test_the_free_space_check_counts_the_missing_reserve(store, monkeypatch):
    import os

    class Vfs:
        f_frsize = 4096
        f_bavail = (journal.HEADROOM + journal.RESERVE + (1 << 20)) // 4096 - 1

    monkeypatch.setattr(os, "statvfs", lambda path: Vfs)
    store.journal.hold_reserve()
    store.journal.check_space(1 << 20)
    store.journal.release_reserve()
    with pytest.raises(NoSpaceError, match=r"MB free, need 2\.\d MB"):
        store.journal.check_space(1 << 20)
