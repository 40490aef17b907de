"""Crash safety on the real stack, at random times: `podplay up`, a replace and `podplay down`
killed with SIGKILL after a delay drawn uniformly over the command's measured duration (not only
at step boundaries, which test_e2e_crash.py covers: here a kill lands inside a driver call, a
pull of the journal, a CNI plugin or runc mid-way). A recovery pass must then converge, and
`down` must leave nothing (tests.host.e2e.conftest.host_leftovers).

3 trials of each in the default suite; ``PODPLAY_SLOW=1`` runs 50 of each (the slow sweep,
about half an hour). ``PODPLAY_CRASH_SEED`` replays a sweep (each trial prints its delay).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time

import pytest

from tests.host.e2e.conftest import PODPLAY, Stack
from tests.host.e2e.test_e2e_crash import Crash, setup_create, setup_down, setup_replace

TRIALS = 50 if os.environ.get("PODPLAY_SLOW") == "1" else 3


def children(pid: int) -> set[int]:
    """The direct children of a process (runc, a CNI plugin, mount… that a kill leaves running)."""
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out |= {int(p) for p in f.read().split()}
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_and_kill(stack: Stack, command: str, path: str, delay: float) -> bool:
    """Run `podplay <command> <path>` and SIGKILL it after `delay` s, as `kill -9` would (its
    children are left to finish, as they would be). True when it was killed, False when it
    had already finished."""
    proc = subprocess.Popen([*PODPLAY, command, path], env=stack.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        left = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 60
        while any(alive(p) and not _conmon(p) for p in left):
            assert time.monotonic() < deadline, f"children of the killed podplay still run: {left}"
            time.sleep(0.05)
        return True
    err = proc.communicate()[1]
    assert proc.returncode == 0, f"podplay {command} failed before the kill:\n{err}"
    return False


def _conmon(pid: int) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
        return f.read().strip() == "conmon"
    return False


def measure(stack: Stack, c: Crash, command: str, setup) -> float:
    c.write("version 1")
    setup(c)
    started = time.monotonic()
    stack.run(command, str(c.m))
    took = time.monotonic() - started
    if command == "up":
        stack.run("down", str(c.m))
    return took


SCENARIOS = {"create": ("up", setup_create), "replace": ("up", setup_replace), "down": ("down", setup_down)}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_killed_at_a_random_time_then_a_recovery_pass_converges_and_down_leaves_nothing(stack, scenario):
    command, setup = SCENARIOS[scenario]
    c = Crash(stack)
    duration = measure(stack, c, command, setup)
    seed = int(os.environ.get("PODPLAY_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    killed = 0
    started = time.monotonic()
    for n in range(1, TRIALS + 1):
        c.write("version 1")
        page = setup(c)
        delay = rng.uniform(0, duration)
        context = f"{scenario} (seed {seed}) trial {n}: killed after {delay:.3f}s of {duration:.2f}s"
        killed += run_and_kill(stack, command, str(c.m), delay)
        if command == "up":
            c.assert_converged(page, context)  # `up --wait` recovers and converges; a second `up` changes nothing
        c.assert_clean(context)  # `down` (for a killed `down`: the recovery pass itself) leaves nothing
    print(f"\n{scenario}: {TRIALS} trials ({killed} killed mid-way, seed {seed}, command {duration:.2f}s) "
          f"in {time.monotonic() - started:.0f}s")
