"""The probe state machine: Kubernetes' thresholds, delays, startup gating; a pod's summary."""

from __future__ import annotations

import pytest

from reconciler.model.kube import Container, ExecAction, Probe
from reconciler.observed import ContainerState, ObservedContainer, ObservedPod
from reconciler.probes import due, fresh, next_due, pod_health, record

EXEC = ExecAction(("true",))
T0 = 1000.0


def ctr(**probes) -> Container:
    return Container("app", "img", **probes)


def run(spec: Container, kind: str, results: str, start: float = T0):
    """Feed results ('s'/'f') of one probe kind, each when it is due; the record after each."""
    h = fresh(ObservedContainer("c1", "u1", "ns/p", "app", "app", ContainerState.RUNNING, started_at=start), spec)
    out = []
    for r in results:
        h = record(h, spec, kind, r == "s", "" if r == "s" else "boom", due(h, spec, kind))
        out.append(h)
    return out


@pytest.mark.parametrize(("success", "failure", "results", "ready"), [
    (1, 3, "s", [True]),
    (1, 3, "sfff", [True, True, True, False]),
    (1, 3, "sffsfff", [True, True, True, True, True, True, False]),
    (2, 1, "ssfss", [False, True, False, False, True]),
    (3, 2, "sssf", [False, False, True, True]),
    (1, 1, "fs", [False, True]),
])
def test_readiness_thresholds(success, failure, results, ready):
    spec = ctr(readiness_probe=Probe(exec=EXEC, success_threshold=success, failure_threshold=failure))
    assert [h.ready for h in run(spec, "readiness", results)] == ready


def test_a_container_with_a_readiness_probe_starts_unready_and_one_without_starts_ready():
    c = ObservedContainer("c1", "u1", "ns/p", "app", "app", ContainerState.RUNNING, started_at=T0)
    assert not fresh(c, ctr(readiness_probe=Probe(exec=EXEC))).ready
    assert fresh(c, ctr()).ready
    assert not fresh(c, ctr(startup_probe=Probe(exec=EXEC))).ready


@pytest.mark.parametrize(("failure", "results", "failed_after"), [(3, "ffsfff", 6), (1, "sf", 2), (2, "fsfsff", 6)])
def test_liveness_failures_in_a_row_ask_for_a_restart(failure, results, failed_after):
    spec = ctr(liveness_probe=Probe(exec=EXEC, failure_threshold=failure))
    states = run(spec, "liveness", results)
    assert [bool(h.failed) for h in states] == [i + 1 >= failed_after for i in range(len(results))]
    assert states[-1].failed == "liveness" and "liveness probe failed" in states[-1].message


def test_initial_delay_and_period_decide_when_a_probe_is_due():
    spec = ctr(liveness_probe=Probe(exec=EXEC, initial_delay_seconds=15, period_seconds=7))
    h = fresh(ObservedContainer("c1", "u1", "ns/p", "app", "app", ContainerState.RUNNING, started_at=T0), spec)
    assert due(h, spec, "liveness") == T0 + 15
    h = record(h, spec, "liveness", True, "", T0 + 15.2)
    assert due(h, spec, "liveness") == T0 + 22.2
    assert next_due(h, spec) == T0 + 22.2


def test_startup_probe_gates_liveness_and_readiness():
    spec = ctr(startup_probe=Probe(exec=EXEC, failure_threshold=2), readiness_probe=Probe(exec=EXEC),
               liveness_probe=Probe(exec=EXEC))
    from reconciler.probes import active

    h = fresh(ObservedContainer("c1", "u1", "ns/p", "app", "app", ContainerState.RUNNING, started_at=T0), spec)
    assert active(h, spec) == ["startup"]
    h = record(h, spec, "startup", True, "", T0 + 1)
    assert h.started and not h.ready
    assert active(h, spec) == ["liveness", "readiness"]
    h = record(h, spec, "readiness", True, "", T0 + 2)
    assert h.ready


def test_startup_failures_restart_like_liveness():
    spec = ctr(startup_probe=Probe(exec=EXEC, failure_threshold=2))
    states = run(spec, "startup", "ff")
    assert [h.failed for h in states] == ["", "startup"]
    assert next_due(states[-1], spec) is None, "a failed container waits for its restart, unprobed"


def pod(state=ContainerState.RUNNING, started=T0) -> ObservedPod:
    infra = ObservedContainer("u1", "u1", "ns/p", "", "infra", ContainerState.RUNNING)
    app = ObservedContainer("u1.app", "u1", "ns/p", "app", "app", state, started_at=started)
    return ObservedPod("u1", "ns/p", infra=infra, containers={"app": app})


def test_pod_health_min_ready_seconds_and_restart_requests():
    spec = ctr(readiness_probe=Probe(exec=EXEC), liveness_probe=Probe(exec=EXEC, failure_threshold=1))
    o = pod()
    h = fresh(o.containers["app"], spec)
    assert not pod_health(o, {"app": spec}, {}, T0 + 5).ready
    h = record(h, spec, "readiness", True, "", T0 + 1)
    assert pod_health(o, {"app": spec}, {"u1.app": h}, T0 + 5, min_ready_seconds=10).available is False
    assert pod_health(o, {"app": spec}, {"u1.app": h}, T0 + 11, min_ready_seconds=10).available is True
    h = record(h, spec, "liveness", False, "down", T0 + 12)
    got = pod_health(o, {"app": spec}, {"u1.app": h}, T0 + 12)
    assert got.restart == {"app": "liveness probe failed 1 time: down"} and got.ready
    # A record of an earlier run does not count for a restarted container.
    assert not pod_health(pod(started=T0 + 50), {"app": spec}, {"u1.app": h}, T0 + 60).ready
    assert not pod_health(pod(ContainerState.EXITED), {"app": spec}, {"u1.app": h}, T0 + 60).ready
