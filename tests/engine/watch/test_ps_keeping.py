"""`podplay ps` and `podplay pods` beside a running `podplay watch` (file-backed fake host): they
show what the keeper decided (crash-loop back-off, readiness from its probes), and stop showing
a pending restart once no keeper is left to do it. The real-host version is
tests/host/e2e/test_e2e_watch.py."""

from __future__ import annotations

import json
import time

import pytest

from reconciler.cli.pods import rfc3339
from tests.engine.watch.conftest import eventually, pod


def ps(site, *args: str) -> list[dict]:
    res = site.podplay("ps", "-a", "-o", "json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def pods(site) -> dict[str, dict]:
    res = site.podplay("pods", "-o", "json")
    assert res.returncode == 0, res.stderr
    return {p["name"]: p for p in json.loads(res.stdout)}


def test_crash_loop_back_off_shows_in_ps_and_pods_while_the_keeper_runs(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")
    cid = site.containers("default/a")["app"]["id"]
    with site.mutate() as h:
        h.exit_container(cid, 1)
    eventually(lambda: site.host().restarts.get(cid) == 1 and site.running() == {"default/a": {"app"}},
               "the first restart (at once)")

    # The second crash 3 s ago: the keeper holds the restart until 10 s after it.
    with site.mutate() as h:
        at = time.time() - 3
        h.exit_container(cid, 1, at=at)
    w.wait_event("backoff", lambda e: e["pod"] == "default/a")
    [row] = ps(site)
    assert (row["state"], row["exit_code"], row["restarts"]) == ("exited", 1, 1)
    assert row["restart_at"] == rfc3339(at + 10)
    table = site.podplay("ps", "-a").stdout
    line = next(line for line in table.splitlines() if line.startswith("a "))
    assert "exited (1), back-off " in line, table
    assert pods(site)["a"]["status"] == "CrashLoopBackOff"
    assert "CrashLoopBackOff" in site.podplay("pods").stdout

    eventually(lambda: site.host().restarts.get(cid) == 2, "the restart after the back-off")
    eventually(lambda: pods(site)["a"]["status"] == "Running", "the pod to run again")
    assert ps(site)[0]["restart_at"] is None

    # A third crash, then the keeper stops: nobody will restart it, so nothing is pending.
    with site.mutate() as h:
        h.exit_container(cid, 1)
    w.wait_event("backoff", lambda e: e["pod"] == "default/a" and e["restarts"] == 2)
    assert pods(site)["a"]["status"] == "CrashLoopBackOff"
    assert w.stop() == 0
    [row] = ps(site)
    assert row["state"] == "exited" and row["restart_at"] is None
    assert pods(site)["a"]["status"] == "Restarting"
    assert "back-off" not in site.podplay("ps", "-a").stdout


@pytest.mark.parametrize("kind", ["readinessProbe", "startupProbe"])
def test_ready_follows_the_keepers_probes(site, kind):
    probe = f"    {kind}:\n      exec: {{command: [\"true\"]}}\n      periodSeconds: 1\n"
    site.write("r.yaml", pod("r", extra=probe))
    with site.mutate() as h:
        h.set_probe("app", False)
    w = site.watch()
    eventually(lambda: site.running() == {"default/r": {"app"}}, "pod r to run")
    eventually(lambda: w.events("pass"), "the first pass")
    # Running, but the probe fails: not ready.
    eventually(lambda: site.podplay("pods").stdout.splitlines()[1].split()[1:3] == ["0/1", "Running"],
               "READY 0/1 while the probe fails")
    [row] = ps(site)
    assert row["state"] == "running" and row["ready"] is False
    with site.mutate() as h:
        h.set_probe("app", True)
    eventually(lambda: site.podplay("pods").stdout.splitlines()[1].split()[1] == "1/1", "READY 1/1")
    assert ps(site)[0]["ready"] is True and pods(site)["r"]["ready"] == 1
    line = site.podplay("ps").stdout.splitlines()[1].split()
    assert line[3:5] == ["running", "true"]
    assert w.stop() == 0
