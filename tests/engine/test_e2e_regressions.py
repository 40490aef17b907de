"""Bugs the e2e suite (tests/host/e2e/) found, pinned on the fake host where they are quick to show.

* A container that failed under restartPolicy Never made `up --wait` wait out its whole
  timeout, though nothing would ever start it again (test_e2e_pods).
* The crash-loop back-off overflowed a float after 1025 restarts (found while testing the above).
"""

from __future__ import annotations

import pytest

from reconciler.converger import failed_for_good, settle
from reconciler.diff import BACKOFF_MAX, restart_delay
from reconciler.observe import observe_host
from tests.engine.conftest import pod_yaml
from tests.engine.health.test_rollout_engine import Clock


def _settle(engine, clock):
    return settle(engine.up(now=clock()), [str(engine.dir)], engine.drivers, engine.state, engine.paths, wait=True,
                  timeout=600, clock=clock, sleep=clock.sleep)


def test_a_container_failed_under_restart_policy_never_ends_the_wait_at_once(engine):
    clock = Clock()
    engine.write("p.yaml", pod_yaml("job", containers=("app", "ok"), extra="\n  restartPolicy: Never"))
    engine.host.exit_codes.update({"app": 7, "ok": 0})
    done = _settle(engine, clock)
    assert not done.timed_out and clock.offset < 5, "nothing will restart it: no point in waiting"
    assert done.problems == ["default/job/app: exited with code 7"]


@pytest.mark.parametrize("policy", ["Always", "OnFailure"])
def test_a_container_its_policy_restarts_is_not_given_up_on(engine, policy):
    engine.write("p.yaml", pod_yaml("svc", extra=f"\n  restartPolicy: {policy}"))
    engine.host.exit_codes["app"] = 7
    result = engine.up()
    assert [c.exit_code for c in engine.drivers.runtime.list_containers() if c.role == "app"] == [7]
    assert failed_for_good(result.desired, observe_host(engine.drivers)) == []


def test_back_off_stays_at_its_cap_however_many_restarts():
    assert restart_delay(1) == 10.0
    assert [restart_delay(n) for n in (10, 1025, 10**6)] == [BACKOFF_MAX] * 3
