"""A replace is make-before-break: everything the new instance needs is made while the old one
still runs, and a failure before the switch leaves the old instance running and the host as
it was (tests/host/e2e/test_e2e_faults.py does the same on the real stack and a full disk)."""

from __future__ import annotations

import pytest

from reconciler.errors import EXIT_NO_SPACE, NoSpaceError
from reconciler.store import journal
from tests.engine.conftest import pod_yaml


def old_and_new(engine):
    """A running pod of two containers, and its manifest changed (a new image)."""
    engine.write("a.yaml", pod_yaml("web", containers=("app", "side")))
    assert engine.up().ok
    old = {c.pod_uid for c in engine.drivers.runtime.list_containers()}
    engine.write("a.yaml", pod_yaml("web", image="busybox:1.37", containers=("app", "side")))
    return old


def assert_old_untouched(engine, old: set[str]) -> None:
    assert engine.running() == {"default/web": {"app", "side"}}
    assert {c.pod_uid for c in engine.drivers.runtime.list_containers()} == old
    assert {k.split(".")[0] for k in engine.host.snapshots} == old, "no snapshot of the new instance is left"
    assert not engine.state.journal.open_txns()


def test_a_new_instance_that_cannot_be_prepared_leaves_the_old_one_running(engine):
    old = old_and_new(engine)
    engine.host.fail_on("prepare_snapshot", next(iter(engine.up(dry_run=True).plan.pods)) + ".side")
    mark = len(engine.host.log)
    result = engine.up()
    assert [(r.txn.kind, r.status) for r in result.applied.results] == [
        ("shared", "ok"), ("prepare", "failed"), ("delete", "skipped"), ("create", "skipped")]
    assert "injected failure" in result.applied.results[1].error
    # Only the new instance's first snapshot was made, and removed again: the old pod saw nothing.
    new_ops = engine.host.log[mark:]
    assert all(op.split()[0] in ("pull_image", "prepare_snapshot", "remove_snapshot") for op in new_ops), new_ops
    assert_old_untouched(engine, old)


def test_too_little_free_space_refuses_the_replace_before_the_old_instance_is_touched(engine, monkeypatch):
    old = old_and_new(engine)
    monkeypatch.setattr(journal, "HEADROOM", 1 << 60)  # the storage root "has" far less than that
    mark = len(engine.host.log)
    with pytest.raises(NoSpaceError) as err:
        engine.up()
    assert err.value.exit_code == EXIT_NO_SPACE
    assert "no space left on the file system of" in str(err.value) and "MB free, need" in str(err.value)
    assert [op for op in engine.host.log[mark:] if not op.startswith("pull_image")] == []
    assert_old_untouched(engine, old)
    monkeypatch.undo()
    assert engine.up().ok
    assert engine.running() == {"default/web": {"app", "side"}}
    assert {c.pod_uid for c in engine.drivers.runtime.list_containers()}.isdisjoint(old)


def test_a_new_instance_that_fails_after_the_switch_leaves_no_prepared_snapshot(engine):
    old_and_new(engine)
    engine.host.fail_on("create_infra")
    result = engine.up()
    assert [r.txn.kind for r in result.applied.failed] == ["create"]
    assert engine.host.snapshots == {}, "the create's undo and the PREPARE's removed every new snapshot"
    assert not engine.state.journal.open_txns()
    kinds = {t["kind"]: t["status"] for t in engine.state.journal.recent_txns(4)}
    assert kinds["prepare"] == "rolled_back" and kinds["create"] == "rolled_back"


def test_a_failed_teardown_undoes_the_prepared_new_instance(engine):
    old_and_new(engine)
    engine.host.fail_on("remove_infra")
    result = engine.up()
    assert [(r.txn.kind, r.status) for r in result.applied.failed] == [("delete", "failed"), ("create", "skipped")]
    desired_uid = next(iter(engine.up(dry_run=True).plan.pods))
    assert not [k for k in engine.host.snapshots if k.startswith(desired_uid)], "the PREPARE was undone"
    assert not [t for t in engine.state.journal.open_txns() if t.kind == "prepare"]


def test_a_committed_create_closes_its_prepare_and_recovery_never_undoes_it(engine):
    old_and_new(engine)
    assert engine.up().ok
    kinds = [t["kind"] for t in engine.state.journal.recent_txns(4)]
    assert "prepare" in kinds
    assert all(t["status"] == "committed" for t in engine.state.journal.recent_txns(4))
    assert not engine.state.journal.open_txns()
    again = engine.up()
    assert again.ok and not again.plan.txns


def test_the_journal_keeps_a_reserve_beside_the_store(engine):
    engine.write("a.yaml", pod_yaml("web"))
    assert engine.up().ok
    reserve = engine.paths.state_db.with_name(journal.RESERVE_FILE)
    assert reserve.stat().st_blocks * 512 >= journal.RESERVE
    assert reserve.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("failure", [
    lambda: OSError(28, "No space left on device", "/var/lib/podplay/containers/x/config.json"),
    lambda: RuntimeError("runc create failed: write /run/x: no space left on device"),
])
def test_a_full_disk_met_half_way_through_a_new_pod_is_the_one_no_space_error(engine, monkeypatch, failure):
    """No space check precedes a plain create: the step that meets the full disk (the driver's
    own OSError, or a tool's "no space left on device") fails as the one no-space error, and
    the half-made pod is undone."""
    from reconciler.drivers.fake import FakeRuntime
    from reconciler.errors import ContainerRuntimeError

    def create_container(self, *a, **kw):
        try:
            raise failure()
        except Exception as exc:
            raise ContainerRuntimeError(f"create container: {exc}") from exc

    monkeypatch.setattr(FakeRuntime, "create_container", create_container)
    engine.write("a.yaml", pod_yaml("web"))
    with pytest.raises(NoSpaceError) as err:
        engine.up()
    assert err.value.exit_code == EXIT_NO_SPACE
    assert "no space left on the file system of" in str(err.value)
    assert engine.running() == {} and not engine.host.snapshots and not engine.host.containers
    assert not engine.state.journal.open_txns()
