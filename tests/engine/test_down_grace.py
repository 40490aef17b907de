"""`down --grace-period` / `--force`: the stop steps get the user's grace period instead of each
pod's terminationGracePeriodSeconds, read from the flags as kubectl delete reads them."""

from __future__ import annotations

import pytest

from reconciler.cli import build_parser
from reconciler.cli.engine import grace_period
from reconciler.converger import Converger
from reconciler.reconcile import load_or_fail, make_goal
from tests.engine.conftest import pod_yaml


def _stop_timeouts(engine, grace: int | None) -> list[int]:
    paths = [str(engine.dir)]
    goal = make_goal(paths, load_or_fail(paths, down=True), engine.paths, mode="down", grace_period=grace)
    plans = []
    result = Converger(engine.drivers, engine.state, engine.paths, on_plan=plans.append).once(goal)
    assert result.ok and not engine.running()
    return [ps.step.timeout for p in plans for t in p.txns for ps in t.steps if ps.step.verb == "StopContainers"]


@pytest.mark.parametrize(("grace", "expected"), [(None, [45]), (5, [5]), (0, [0])])
def test_down_stops_with_the_users_grace_period_or_the_pods_own(engine, grace, expected):
    engine.write("a.yaml", pod_yaml("web", extra="\n  terminationGracePeriodSeconds: 45"))
    assert engine.up().ok
    assert _stop_timeouts(engine, grace) == expected


@pytest.mark.parametrize(("flags", "expected"), [
    ([], None),  # each pod's own terminationGracePeriodSeconds
    (["--grace-period", "10"], 10),
    (["--grace-period", "0"], 1),  # kubectl: 0 without --force means 1
    (["--force"], 0),
    (["--force", "--grace-period", "3"], 3),
    (["--grace-period", "-1"], None),
])
def test_the_flags_read_as_kubectl_delete_reads_them(flags, expected):
    argv = ["down", *flags, "pods.yaml"]
    assert grace_period(build_parser(argv).parse_args(argv)) == expected
