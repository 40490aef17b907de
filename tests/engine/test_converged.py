"""The no-change check agrees with the full pass: it says "unchanged" only when a full `up`
would plan nothing, and steps aside on every kind of change a user or the host can make."""

from __future__ import annotations

import pytest

from reconciler import converged
from tests.engine.conftest import pod_yaml


@pytest.fixture
def settled(engine):
    engine.write("a.yaml", pod_yaml("web", containers=("app", "sidecar")))
    engine.write("b.yaml", pod_yaml("db", extra="\n  nodeSelector: {disk: ssd}"))
    assert engine.up().ok
    return engine


def unchanged(engine):
    return converged.unchanged(engine.state, [str(engine.dir)], engine.drivers)


def full_pass_is_empty(engine) -> bool:
    return engine.up(dry_run=True).plan.empty


def test_a_converged_host_is_recognised_and_warnings_come_back(settled):
    warnings = unchanged(settled)
    assert warnings is not None and full_pass_is_empty(settled)
    assert any("nodeSelector" in w for w in warnings), warnings


@pytest.mark.parametrize("change", [
    "edit a file", "add a file", "remove a file", "touch without change",
    "container exited", "pod removed behind podplay's back", "stale instance", "open transaction", "pin",
    "probe records",
])
def test_every_change_takes_the_full_pass(settled, change):
    e = settled
    h = e.host
    web = e.state.owned.last_applied().pods["default/web"].uid
    if change == "edit a file":
        e.write("a.yaml", pod_yaml("web", image="busybox:1.37", containers=("app", "sidecar")))
    elif change == "add a file":
        e.write("c.yaml", pod_yaml("cache"))
    elif change == "remove a file":
        e.remove("b.yaml")
    elif change == "touch without change":
        (e.dir / "a.yaml").write_text((e.dir / "a.yaml").read_text())
        assert unchanged(e) is not None, "same bytes: still converged"
        return
    elif change == "container exited":
        h.exit_container(f"{web}.sidecar", 1)
    elif change == "pod removed behind podplay's back":
        for cid in [c for c in h.containers if h.containers[c]["pod_uid"] == web]:
            del h.containers[cid]
    elif change == "stale instance":
        h.containers["0123456789ab"] = {**h.containers[web], "pod_uid": "0123456789ab"}
    elif change == "open transaction":
        from reconciler.steps import RemoveInfra

        e.state.journal.begin_txn("delete", "default/web", web, [RemoveInfra("default/web", web)])
    elif change == "pin":
        e.state.rollouts.set_pin("default/web", 1, "x", "test")
    elif change == "probe records":
        e.state.keepers.save_probes([(f"{web}.app", web, "default/web", "app", {"ready": True})])
    assert unchanged(e) is None
    if change not in ("pin", "probe records", "open transaction"):
        assert not full_pass_is_empty(e), "the full pass has something to do, so the check must not say no"


def test_a_failed_or_partial_pass_records_nothing(engine):
    engine.write("a.yaml", pod_yaml("web"))
    engine.host.fail_on("start_container", "app")
    assert not engine.up().ok
    assert unchanged(engine) is None
    engine.host.failures.clear()
    assert engine.up().ok
    assert unchanged(engine) is not None


def test_up_of_other_paths_has_its_own_fingerprint(settled, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(pod_yaml("solo"))
    assert converged.unchanged(settled.state, [str(other)], settled.drivers) is None
    settled.up(other)
    assert converged.unchanged(settled.state, [str(other)], settled.drivers) is not None
    # 'solo' belongs to another scope: the directory's full pass would leave it alone, and so does the check.
    assert unchanged(settled) is not None and full_pass_is_empty(settled)


def test_up_wait_runs_the_probes_of_pods_that_have_them(engine):
    probe = "\n    readinessProbe: {exec: {command: [cat, /ready]}}"
    engine.write("a.yaml", pod_yaml("probed", ports=probe))
    engine.write("b.yaml", pod_yaml("plain"))
    assert engine.up().ok
    paths = [str(engine.dir)]
    assert converged.unchanged(engine.state, paths, engine.drivers) is not None
    assert converged.unchanged(engine.state, paths, engine.drivers, wait=True) is None
    only_plain = [str(engine.dir / "b.yaml")]
    engine.up(*only_plain)
    assert converged.unchanged(engine.state, only_plain, engine.drivers, wait=True) is not None
