"""Crash recovery: die at every step boundary, then the next pass converges and leaves no leak.

In-process, the failpoint raises a BaseException that nothing in podplay catches, which is
what a kill looks like to the journal: steps marked started/done and a transaction left open.
The subprocess tests kill a real `podplay up` with SIGKILL on a file-backed fake host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from reconciler.apply import Failpoints
from reconciler.state import OPEN
from tests.engine.conftest import pod_yaml

TWO_PODS = """apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {k: v}
---
""" + pod_yaml("web", containers=("app", "sidecar"), ports="""
    ports:
    - {containerPort: 80, hostPort: 8080}""", extra="""
  initContainers:
  - name: setup
    image: busybox:1.36
  volumes:
  - name: cfg
    configMap: {name: cfg}""") + "---\n" + pod_yaml("db")


class Crash(BaseException):
    pass


def crash():
    raise Crash()


def count_steps(engine) -> int:
    return sum(len(t.steps) for t in engine.up(dry_run=True).plan.txns)


def assert_converged(engine, pods: dict[str, set[str]]) -> None:
    assert engine.running() == pods
    h = engine.host
    live = {c["pod_uid"] for c in h.containers.values()}
    assert {k.split(".")[0] for k in h.snapshots} <= live, "snapshot of a pod that does not exist"
    assert set(h.attachments) <= live and set(h.pod_volumes) <= live
    assert len(live) == len(pods), "exactly one instance per pod"
    assert not [t for t in engine.state.journal.open_txns()], "journal still has open transactions"


def scenario_create(engine):
    engine.write("a.yaml", TWO_PODS)


def scenario_replace(engine):
    engine.write("a.yaml", TWO_PODS)
    engine.up()
    engine.write("a.yaml", TWO_PODS.replace("{k: v}", "{k: changed}"))


def scenario_prune(engine):
    engine.write("a.yaml", TWO_PODS)
    engine.up()
    engine.write("a.yaml", pod_yaml("db"))


SERVICE = """---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
"""


def scenario_service(engine):
    engine.write("a.yaml", TWO_PODS.replace("name: web\n", "name: web\n  labels: {app: web}\n", 1) + SERVICE)


SCENARIOS = {
    "create": (scenario_create, {"default/web": {"app", "sidecar"}, "default/db": {"app"}}),
    "service": (scenario_service, {"default/web": {"app", "sidecar"}, "default/db": {"app"}}),
    "replace": (scenario_replace, {"default/web": {"app", "sidecar"}, "default/db": {"app"}}),
    "prune": (scenario_prune, {"default/db": {"app"}}),
}


@pytest.mark.parametrize("when", ["before", "ran", "after"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kill_at_every_step_boundary_recovers(tmp_path, scenario, when):
    from tests.engine.conftest import Engine

    setup, expected = SCENARIOS[scenario]
    probe = Engine(tmp_path / "probe")
    setup(probe)
    total = count_steps(probe)
    assert total > 5
    for n in range(1, total + 1):
        engine = Engine(tmp_path / f"{when}-{n}")
        setup(engine)
        with pytest.raises(Crash):
            engine.up(failpoints=Failpoints(f"{when}:#{n}", action=crash))
        # The process "died": drop the connection without any cleanup, as a kill would.
        engine.state.close()
        from reconciler.state import StateStore

        engine.state = StateStore(engine.paths.state_db)
        interrupted = [t for t in engine.state.journal.open_txns()]
        # One open transaction, and beside it a replace's PREPARE, held open until its create commits.
        held = [t for t in interrupted if t.kind == "prepare"]
        assert len(interrupted) - len(held) <= 1 and len(held) <= 1 and interrupted, \
            f"{when}:#{n} should leave exactly one open transaction (and a replace's held PREPARE)"
        result = engine.up()
        assert result.ok, [r.error for r in result.applied.failed]
        assert_converged(engine, expected)
        # The Services the host serves are the ones recorded, with the pods behind them.
        assert set(engine.host.services) == set(engine.state.owned.service_records())
        if scenario == "service":
            [(uid, pod, _ip, _targets)] = engine.host.services["default/web"]["entry"]["endpoints"]
            assert pod == "default/web" and uid in {c["pod_uid"] for c in engine.host.containers.values()}
        engine.down()
        assert engine.empty(), f"{when}:#{n}: down left {engine.host.containers or engine.host.snapshots}"
        assert not engine.host.services and not engine.state.owned.service_records()
        engine.state.close()


def run_podplay(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True,
                          timeout=60, **kw)


@pytest.mark.parametrize("failpoint", ["after:CreateInfra", "after:AttachNetwork", "before:StartContainer",
                                       "after:RemoveContainer"])
def test_sigkilled_podplay_process_is_recovered_by_the_next(tmp_path, failpoint):
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "a.yaml").write_text(TWO_PODS)
    env = {**os.environ, "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
           "PODPLAY_ROOT": str(tmp_path / "root"), "PODPLAY_RUNROOT": str(tmp_path / "run")}
    if failpoint.endswith("RemoveContainer"):
        assert run_podplay(["up", str(manifests)], env).returncode == 0
        (manifests / "a.yaml").write_text(TWO_PODS.replace("{k: v}", "{k: w}"))
    killed = run_podplay(["up", str(manifests)], {**env, "PODPLAY_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    from reconciler.drivers.fake import FakeHost
    from reconciler.state import StateStore

    state = StateStore(tmp_path / "root" / "state.db")
    assert state.db.execute("SELECT count(*) FROM txns WHERE status = ?", (OPEN,)).fetchone()[0] >= 1
    state.close()

    again = run_podplay(["up", str(manifests)], env)
    assert again.returncode == 0, again.stderr
    assert "recovered:" in again.stderr
    host = FakeHost(tmp_path / "root" / "fakehost.json")
    running = {(c["pod"], c["name"]) for c in host.containers.values()
               if c["role"] == "app" and c["state"] == "running"}
    assert running == {("default/web", "app"), ("default/web", "sidecar"), ("default/db", "app")}
    assert len({c["pod_uid"] for c in host.containers.values()}) == 2

    down = run_podplay(["down", str(manifests)], env)
    assert down.returncode == 0, down.stderr
    host = FakeHost(tmp_path / "root" / "fakehost.json")
    assert not (host.containers or host.snapshots or host.attachments or host.pod_volumes)
