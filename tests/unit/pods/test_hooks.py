"""Lifecycle hooks: the preStop handler travels with the container (a label), the stop step
carries it, and apply spends the grace period the kubelet's way."""

from __future__ import annotations

import json
import time

from reconciler.apply import _PreStop
from reconciler.drivers.base import container_labels
from reconciler.observed import LABEL_PRE_STOP, ContainerState, ObservedContainer
from reconciler.plan import stop_step
from reconciler.steps import StopContainers
from tests.unit.test_desired import desired_from, pod


def test_the_pre_stop_hook_is_a_label_and_the_stop_step_carries_it():
    d = desired_from(pod(name="a", container="lifecycle: {preStop: {sleep: {seconds: 3}}}"))
    p = d.pods["default/a"]
    labels = container_labels(p, p.containers[0])
    assert json.loads(labels[LABEL_PRE_STOP]) == {"sleep": {"seconds": 3}}
    c = ObservedContainer("c1", p.uid, p.ref, "app", "app", ContainerState.RUNNING, labels=labels)
    step = stop_step(p.ref, p.uid, [c], 30, "10.0.0.5")
    assert step.pre_stop == (("c1", labels[LABEL_PRE_STOP]),) and step.pod_ip == "10.0.0.5"
    no_hook = ObservedContainer("c2", p.uid, p.ref, "app", "app", ContainerState.RUNNING, labels={})
    assert stop_step(p.ref, p.uid, [no_hook], 30, "10.0.0.5").pre_stop == ()


class _Runtime:
    def __init__(self):
        self.stops: list[tuple[str, int, float]] = []

    def stop_container(self, cid, timeout, signal=None):
        self.stops.append((cid, timeout, time.monotonic()))

    def infra_info(self, uid):
        return None


class _Drivers:
    def __init__(self):
        self.runtime = _Runtime()


def _stop(seconds: int, grace: int) -> tuple[int, float]:
    d = _Drivers()
    step = StopContainers("default/a", "u", container_ids=("c1",), timeout=grace,
                          pre_stop=(("c1", json.dumps({"sleep": {"seconds": seconds}})),))
    started = time.monotonic()
    _PreStop(d, step).stop("c1", grace)
    [(_, timeout, at)] = d.runtime.stops
    return timeout, at - started


def test_the_hook_runs_first_and_the_signal_gets_what_is_left_of_the_grace_period():
    timeout, after = _stop(1, 10)
    assert after >= 1 and timeout == 9


def test_a_hook_that_outlasts_the_grace_period_is_cut_and_two_seconds_are_added():
    timeout, after = _stop(30, 1)
    assert 1 <= after < 2 and timeout == 2


def test_an_immediate_stop_runs_no_hook():
    timeout, after = _stop(30, 0)
    assert timeout == 0 and after < 0.5
