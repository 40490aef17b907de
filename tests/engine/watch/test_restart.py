"""restartPolicy under watch: which exits are restarted, and Kubernetes' crash-loop back-off.

In-process keepers with a clock the test moves, so that minutes of back-off take no time; one
subprocess test checks the same on a real `podplay watch` and in `podplay status`.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from reconciler.drivers.fake import FakeHost, fake_drivers
from reconciler.paths import HostPaths
from reconciler.state import StateStore
from reconciler.watch.backoff import restart_at
from reconciler.watch.dirs import DirSource
from reconciler.watch.keeper import Keeper, KeeperOptions
from reconciler.watch.log import EventLog
from tests.engine.watch.conftest import eventually, pod


class Clock:
    """Real time plus an offset the test advances."""

    def __init__(self):
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def mono(self) -> float:
        return time.monotonic() + self.offset


class Rig:
    def __init__(self, tmp, restart: str = "", health=None):
        d = tmp / "m"
        d.mkdir()
        (d / "a.yaml").write_text(pod("a", restart=restart))
        self.paths = HostPaths(tmp / "root", tmp / "run", tmp / "net.d")
        self.host = FakeHost()
        self.host.registry.add("*")
        drivers = fake_drivers(self.host)
        self.state = StateStore(self.paths.state_db)
        self.clock = Clock()
        self.out = io.StringIO()
        # Relist and resync far away: only the back-off timer (or an explicit tick) acts.
        # debounce 0: the tests write a file and converge at once, with no inotify debounce before
        # (a file must otherwise have been quiet for the debounce to be read).
        self.keeper = Keeper(DirSource([str(d)], self.state, debounce=0), self.paths, self.state, lambda: drivers,
                             EventLog(self.out, "json", clock=self.clock.time), KeeperOptions(relist=3600, resync=3600),
                             clock=self.clock.time, monotonic=self.clock.mono, health=health)
        self.keeper.converge("start", refresh=True, full=True)
        [self.cid] = [cid for cid, c in self.host.containers.items() if c["role"] == "app"]

    def ctr(self) -> dict:
        return self.host.containers[self.cid]

    def exit(self, code: int, ago: float = 0.0) -> float:
        at = self.clock.time() - ago
        self.host.exit_container(self.cid, code, at=at)
        return at

    def events(self, name: str) -> list[dict]:
        return [e for e in map(json.loads, self.out.getvalue().splitlines()) if e["event"] == name]

    def close(self) -> None:
        self.keeper.waker.close()
        self.state.close()


@pytest.fixture
def make_rig(tmp_path):
    rigs = []

    def make(restart: str = "", health=None) -> Rig:
        rigs.append(Rig(tmp_path, restart, health))
        return rigs[-1]
    yield make
    for r in rigs:
        r.close()


@pytest.mark.parametrize(("policy", "code", "restarted"), [
    ("Always", 0, True), ("Always", 1, True), ("", 137, True),
    ("OnFailure", 0, False), ("OnFailure", 3, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_restart_policy_decides_which_exits_are_restarted(make_rig, policy, code, restarted):
    rig = make_rig(policy)
    rig.exit(code)
    rig.keeper.tick()
    if restarted:
        assert rig.ctr()["state"] == "running" and rig.host.restarts[rig.cid] == 1
        assert rig.events("drift")[-1]["reason"] == "exited"
    else:
        assert rig.ctr()["state"] == "exited" and rig.ctr()["exit_code"] == code
        assert rig.host.restarts[rig.cid] == 0
        assert not rig.keeper.backoff, "a container its policy leaves stopped is not 'backing off'"


def test_crash_loop_back_off_doubles_and_the_keeper_wakes_when_it_expires(make_rig):
    rig = make_rig()
    k = rig.keeper
    rig.exit(1)
    k.tick()
    assert rig.ctr()["state"] == "running", "the first crash is restarted at once"

    for restarts, delay in ((1, 10), (2, 20), (3, 40)):
        at = rig.exit(1)
        k.tick()
        assert rig.ctr()["state"] == "exited", f"restart #{restarts + 1} must wait {delay}s"
        b = k.status()["backoff"][rig.cid]
        assert b["until"] == pytest.approx(at + delay) and b["restarts"] == restarts
        assert rig.events("backoff")[-1]["restart_in_s"] == pytest.approx(delay, abs=0.5)
        assert k.backoff_at == pytest.approx(rig.clock.mono() + delay, abs=0.5)

        # The clock is real time plus the offset: leave margins a loaded machine's pauses fit in.
        rig.clock.offset += delay - 3
        k.step()  # nothing due yet: relist and resync are an hour away, the back-off 3 s
        assert rig.ctr()["state"] == "exited"
        rig.clock.offset += 3.1
        k.step()  # the back-off timer fires: restart
        assert rig.ctr()["state"] == "running" and rig.host.restarts[rig.cid] == restarts + 1
        assert not k.status()["backoff"]


def test_back_off_is_capped_at_five_minutes_and_resets_after_ten_minutes_of_running(make_rig):
    rig = make_rig()
    rig.host.restarts[rig.cid] = 9  # 10 s doubled eight times would be 2560 s
    at = rig.exit(1)
    rig.keeper.tick()
    assert rig.keeper.status()["backoff"][rig.cid]["until"] == pytest.approx(at + 300)

    rig.clock.offset += 301
    rig.keeper.tick()
    assert rig.ctr()["state"] == "running"
    rig.ctr()["started_at"] = rig.clock.time() - 601  # it has run more than ten minutes
    rig.exit(1)
    rig.keeper.tick()
    assert rig.ctr()["state"] == "running", "after 10 min of running a crash is restarted at once"


def test_restart_at_agrees_with_the_keeper_for_ps():
    from reconciler.observed import ContainerState, ObservedContainer

    c = ObservedContainer("p.app", "p", "default/p", "app", "app", ContainerState.EXITED, exit_code=1,
                          started_at=100.0, finished_at=160.0, restart_count=3)
    assert restart_at(c, "Always") == 200.0
    assert restart_at(c, "OnFailure") == 200.0
    assert restart_at(c, "Never") is None
    running = ObservedContainer("p.app", "p", "default/p", "app", "app", ContainerState.RUNNING)
    assert restart_at(running, "Always") is None


def test_watch_process_restarts_with_back_off_and_status_shows_it(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")
    cid = site.containers("default/a")["app"]["id"]

    with site.mutate() as h:
        h.exit_container(cid, 1)
    w.wait_event("restarted", lambda e: e["pod"] == "default/a")
    eventually(lambda: site.containers("default/a")["app"]["state"] == "running", "the first restart")

    # The second crash, as if it happened 3 s ago: 7 s of back-off are left.
    with site.mutate() as h:
        at = time.time() - 3
        h.exit_container(cid, 2, at=at)
    e = w.wait_event("backoff", lambda e: e["pod"] == "default/a")
    assert e["exit_code"] == 2 and e["restarts"] == 1 and 0 < e["restart_in_s"] <= 7
    st = site.status()
    [p] = st["pods"]
    assert p["state"] == "backing off"
    [c] = p["containers"]
    assert c["restarts"] == 1 and c["exit_code"] == 2 and c["backoff_until"] == pytest.approx(at + 10)
    assert "back-off" in site.podplay("status").stdout

    eventually(lambda: site.host().restarts.get(cid) == 2 and site.containers("default/a")["app"]["state"] == "running",
               "the restart after the back-off")
    assert site.containers("default/a")["app"]["started_at"] >= at + 10, "restarted before the back-off ended"
    assert w.stop() == 0


def test_the_health_hook_sees_every_tick_and_sets_when_the_next_one_comes(make_rig):
    seen = []

    def probe(desired, observed, now):
        seen.append((sorted(desired.pods), sorted(p.key for p in observed.pods.values()), now))
        return 5.0  # "probe me again in 5 s"

    rig = make_rig(health=probe)
    rig.keeper.tick()
    assert seen and seen[-1][:2] == (["default/a"], ["default/a"])
    assert rig.keeper.health_at == pytest.approx(rig.clock.mono() + 5, abs=0.5)
    rig.clock.offset += 5.1
    rig.keeper.step()  # the relist is an hour away: only the hook's own timer brings this tick
    assert len(seen) == 2


def test_a_pod_that_fails_to_start_is_retried_with_back_off_not_at_every_tick(make_rig):
    rig = make_rig()
    k = rig.keeper
    rig.host.fail_on("create_infra", "b")  # say, a port or a device the pod needs is taken
    (Path(k.source.paths[0]) / "b.yaml").write_text(pod("b"))
    k.converge("files", refresh=True)

    def attempts() -> int:
        return sum(1 for t in rig.state.journal.recent_txns(100) if t["key"] == "default/b" and t["kind"] == "create")
    assert attempts() == 1 and k.status()["retrying"]["default/b"]["count"] == 1
    for _ in range(3):
        k.tick()
    assert attempts() == 1, "a failed pod must not be retried at every relist"

    rig.clock.offset += 10.1
    k.step()  # the retry timer (10 s), not the relist (an hour away)
    assert attempts() == 2 and k.status()["retrying"]["default/b"]["count"] == 2
    rig.host.failures.clear()
    rig.clock.offset += 10
    k.tick()
    assert attempts() == 2, "the second retry waits 20 s"
    rig.clock.offset += 10.1
    k.step()
    assert attempts() == 3 and "default/b" not in k.status()["retrying"]
    assert any(c["pod"] == "default/b" and c["state"] == "running" for c in rig.host.containers.values())
