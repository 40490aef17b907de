"""Readiness and crash-loop back-off in `podplay ps` and `podplay pods`: what the state store adds
to the runtime's view (probe verdicts, a keeper's restart schedule) and how it is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli.pods import (
    Keeping,
    container_json,
    pending_restarts,
    pod_json,
    pod_status,
    pods_table,
    probe_readiness,
    ps_table,
    rfc3339,
    state_text,
)
from reconciler.observed import LABEL_PROBE_GATED, ContainerState, ObservedContainer, ObservedPod

RUNNING, EXITED = ContainerState.RUNNING, ContainerState.EXITED
REPO = Path(__file__).resolve().parents[3]
NOW = 1_000_000.0


def ctr(name: str, state=RUNNING, *, uid="u1", role="app", restarts=0, exit_code=None, started=NOW - 50,
        finished=0.0, labels=None) -> ObservedContainer:
    return ObservedContainer(id=f"{uid}.{name}" if name else uid, pod_uid=uid, pod="default/p", name=name, role=role,
                             state=state, restart_count=restarts, exit_code=exit_code, started_at=started,
                             finished_at=finished, image="localhost/busybox:latest", labels=labels or {})


def pod(*apps: ObservedContainer, uid="u1", init=()) -> ObservedPod:
    return ObservedPod(uid=uid, key="default/p", infra=ctr("", role="infra", uid=uid),
                       containers={c.name: c for c in apps}, init_containers={c.name: c for c in init})


# --- formatting ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("until", "text"), [
    (None, "exited (1)"),
    (NOW + 40, "exited (1), back-off 40s"),
    (NOW + 39.2, "exited (1), back-off 40s"),  # rounded up: never "0s" while the wait runs
    (NOW + 0.1, "exited (1), back-off 1s"),
    (NOW + 300, "exited (1), back-off 5m"),
    (NOW - 1, "exited (1)"),  # the keeper is about to restart it: no back-off left
])
def test_state_shows_the_back_off_left(until, text):
    c = ctr("app", EXITED, exit_code=1, restarts=2)
    assert state_text(c, until, NOW) == text


def test_ps_has_a_ready_column_for_app_containers_only():
    web = ctr("web")
    side = ctr("side")
    init = ctr("setup", EXITED, role="init", exit_code=0)
    p = pod(web, side, init=(init,))
    keeping = Keeping(probes={"u1": {"web": False}})
    rows = [(p, p.infra), (p, init), (p, side), (p, web)]
    lines = [line.split() for line in ps_table(rows, NOW, keeping=keeping).splitlines()]
    assert lines[0] == ["POD", "CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS", "PORTS", "IP", "AGE"]
    ready = {r[1]: r[-5] for r in lines[1:]}  # READY is the fifth column from the end
    assert ready == {"(infra)": "-", "setup": "-", "side": "true", "web": "false"}


def test_a_container_with_probes_is_not_ready_before_a_probe_says_so():
    gated = {LABEL_PROBE_GATED: "true"}
    waiting = ctr("waiting", labels=gated)  # no probe has run yet (or no keeper runs them)
    passed = ctr("passed", labels=gated)
    plain = ctr("plain")  # no probes: running is ready
    keeping = Keeping(probes={"u1": {"passed": True}})
    assert [keeping.ready(c) for c in (waiting, passed, plain)] == [False, True, True]
    assert Keeping().ready(waiting) is False


def test_ps_json_has_ready_and_restart_at():
    crashed = ctr("app", EXITED, exit_code=1, restarts=2, finished=NOW - 5)
    p = pod(crashed)
    keeping = Keeping(restarts={crashed.id: NOW + 35.5})
    data = container_json(p, crashed, keeping)
    assert data["ready"] is False and data["restart_at"] == rfc3339(NOW + 35.5)
    assert data["restart_at"].endswith("Z")
    infra = container_json(p, p.infra, keeping)
    assert infra["ready"] is None and infra["restart_at"] is None
    assert container_json(pod(ctr("app")), ctr("app"))["ready"] is True  # no store: running is ready


def test_pods_ready_counts_running_and_ready_containers():
    p = pod(ctr("a"), ctr("b"), ctr("c", EXITED, exit_code=0))
    none = pods_table([p], {"u1": "Running"}, NOW).splitlines()[1].split()
    assert none[1] == "2/3"  # without probe records running means ready
    keeping = Keeping(probes={"u1": {"a": False, "c": True}})
    line = pods_table([p], {"u1": "Running"}, NOW, keeping=keeping).splitlines()[1].split()
    assert line[1] == "1/3"  # a: its probe says no; c: a stale "ready" record of an exited container
    data = pod_json(p, "Running", keeping)
    assert data["ready"] == 1
    assert [(c["name"], c["ready"]) for c in data["containers"]] == [("a", False), ("b", True), ("c", False)]
    assert all(c["restart_at"] is None for c in data["containers"])


def test_crash_loop_back_off_is_a_pod_status():
    looping = ctr("app", EXITED, exit_code=1, restarts=3)
    waiting = {looping.id: NOW + 40}
    assert pod_status(pod(looping), restarts=waiting, now=NOW) == "CrashLoopBackOff"
    assert pod_status(pod(looping, ctr("side")), restarts=waiting, now=NOW) == "CrashLoopBackOff"
    # Without a pending restart it is what it was before.
    assert pod_status(pod(looping), now=NOW) == "Restarting"
    assert pod_status(pod(looping), restarts={looping.id: NOW - 1}, now=NOW) == "Restarting"
    # A first crash is restarted at once, never held back: no crash loop yet.
    first = ctr("app", EXITED, exit_code=1, restarts=0)
    assert pod_status(pod(first), restarts={first.id: NOW + 5}, now=NOW) == "Failed"
    # The pod's namespaces are gone: that says more than the loop.
    broken = ObservedPod(uid="u1", key="default/p", infra=None, containers={"app": looping})
    assert pod_status(broken, restarts=waiting, now=NOW) == "Unknown"


# --- what the state store says -----------------------------------------------------------------------

def keeper_record(backoff: dict, pid: int = 4242, running: bool = True) -> dict:
    return {"kind": "watch", "pid": pid, "running": running, "backoff": backoff}


def test_pending_restarts_come_from_a_live_keepers_schedule():
    c = ctr("app", EXITED, exit_code=1, restarts=2, finished=NOW - 5)
    p = pod(c)
    entry = {c.id: {"pod": "default/p", "container": "app", "until": NOW + 35, "restarts": 2, "exit_code": 1}}
    alive = {4242}.__contains__
    assert pending_restarts([keeper_record(entry)], [p], NOW, alive) == {c.id: NOW + 35}
    # A keeper that stopped (or died, or whose pid now belongs to something else) restarts nothing.
    assert pending_restarts([keeper_record(entry, running=False)], [p], NOW, alive) == {}
    assert pending_restarts([keeper_record(entry, pid=99)], [p], NOW, alive) == {}
    # The schedule was made for an earlier run (restarted and crashed again since): not this one's.
    stale = {c.id: dict(entry[c.id], restarts=1)}
    assert pending_restarts([keeper_record(stale)], [p], NOW, alive) == {}
    # Expired: the restart is due now, nothing is waited for.
    past = {c.id: dict(entry[c.id], until=NOW - 0.5)}
    assert pending_restarts([keeper_record(past)], [p], NOW, alive) == {}
    # A running container is not waiting for anything.
    again = pod(ctr("app", RUNNING, restarts=2))
    assert pending_restarts([keeper_record(entry)], [again], NOW, alive) == {}


def test_the_schedule_ps_reads_is_the_one_restart_at_computes():
    # What a keeper publishes is watch.backoff.restart_at of the observed container; ps shows it
    # as is, so the two agree by construction. Pin the arithmetic both rely on.
    from reconciler.watch.backoff import restart_at

    c = ctr("app", EXITED, exit_code=1, restarts=3, started=NOW - 20, finished=NOW - 10)
    until = restart_at(c, "Always")
    assert until == NOW - 10 + 40
    entry = {c.id: {"until": until, "restarts": c.restart_count}}
    waiting = pending_restarts([keeper_record(entry)], [pod(c)], NOW, lambda pid: True)
    assert state_text(c, waiting.get(c.id), NOW) == "exited (1), back-off 30s"


@pytest.fixture
def store(tmp_path):
    from reconciler.state import StateStore

    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


def test_probe_readiness_answers_as_health_readiness_does(store):
    from reconciler.health import readiness

    web, side, old, gone = ctr("web"), ctr("side"), ctr("old", started=NOW - 5), ctr("gone")
    p = pod(web, side, old)
    records = [
        (web.id, {"name": "web", "started_at": web.started_at, "ready": True}),
        (side.id, {"name": "side", "started_at": side.started_at}),  # "ready" left out: its default, False
        (old.id, {"name": "old", "started_at": NOW - 60, "ready": True}),  # restarted since it was probed
        (gone.id, {"name": "gone", "started_at": gone.started_at, "ready": True}),  # not observed any more
    ]
    store.keepers.save_probes([(cid, "u1", "default/p", rec["name"], dict(rec, container_id=cid, pod_uid="u1",
                                                                    pod="default/p")) for cid, rec in records])
    rows = [("u1", json.loads(json.dumps(rec))) for rec in store.keepers.probe_records(["u1"]).values()]
    mine = probe_readiness(rows, [p])["u1"]
    assert mine == readiness(store, "u1", p.containers.values())
    assert mine == {"web": True, "side": False, "old": False, "gone": True}


# --- `ps` stays light ----------------------------------------------------------------------------------

HEAVY = ("yaml", "jsonschema", "requests", "reconciler.model.kube", "reconciler.desired", "reconciler.diff",
         "reconciler.health", "reconciler.probes", "reconciler.state", "reconciler.watch")


@pytest.mark.parametrize("command", [["ps", "-a"], ["pods"], ["ps", "-o", "json"], ["pods", "-o", "json"]])
def test_ps_and_pods_import_nothing_heavy_even_with_a_state_store(tmp_path, command):
    from reconciler.state import StateStore

    root = tmp_path / "root"
    StateStore(root / "state.db").close()  # a store with every table, as after `podplay up`
    code = ("import sys; from reconciler.cli import main; rc = main(sys.argv[1:]); "
            f"heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r})); "
            "print(heavy); sys.exit(rc)")
    env = {**os.environ, "PODPLAY_ROOT": str(root), "PODPLAY_RUNROOT": str(tmp_path / "run"),
           "PODPLAY_NETWORK_DIR": str(tmp_path / "net.d"), "PYTHONPATH": str(REPO)}
    env.pop("PODPLAY_DRIVER", None)
    res = subprocess.run([sys.executable, "-c", code, *command], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_pods_names_each_pods_owner_as_kind_and_name():
    import dataclasses

    job = dataclasses.replace(pod(ctr("a")), owner="Job/default/backup")
    other_ns = dataclasses.replace(pod(ctr("a"), uid="u2"), owner="StatefulSet/db/pg")
    bare = pod(ctr("a"), uid="u3")
    lines = pods_table([job, other_ns, bare], {"u1": "Running", "u2": "Running", "u3": "Running"},
                       NOW, namespace="default").splitlines()
    assert lines[0].split()[:8] == ["NAME", "READY", "STATUS", "RESTARTS", "IP", "AGE", "OWNER", "SOURCE"]
    assert [line.split()[6] for line in lines[1:]] == ["Job/backup", "StatefulSet/db/pg", "-"]
    data = pod_json(job, "Running")
    assert (data["owner"], data["owner_kind"], data["owner_name"]) == ("Job/default/backup", "Job", "backup")
