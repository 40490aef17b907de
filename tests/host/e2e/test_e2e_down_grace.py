"""`down` waits each pod's grace period for containers that ignore their stop signal (sleep as
PID 1 ignores SIGTERM), like the kubelet; `--grace-period N` and `--force` shorten it as with
`kubectl delete`; on a terminal a countdown says what it waits for."""

from __future__ import annotations

import os
import pty
import subprocess
import time

from tests.host.e2e.conftest import PODPLAY, host_leftovers


def _stubborn(stack, name: str, grace: int):
    return stack.write(f"{name}.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: {grace}
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sleep", "100000"]}}
""")


def _timed_down(stack, m, *flags: str) -> float:
    started = time.monotonic()
    res = stack.run("down", *flags, str(m))
    assert f"- deleted pod default/{m.stem}" in res.stdout
    return time.monotonic() - started


def test_down_waits_the_pods_grace_period_then_kills(stack):
    m = _stubborn(stack, "slow", 4)
    stack.run("up", "--wait", str(m))
    assert _timed_down(stack, m) >= 4
    assert host_leftovers(stack) == []


def test_grace_period_and_force_shorten_the_wait(stack):
    m = _stubborn(stack, "stuck", 60)
    stack.run("up", "--wait", str(m))
    waited = _timed_down(stack, m, "--grace-period", "2")
    assert 2 <= waited < 30
    assert host_leftovers(stack) == []

    stack.run("up", "--wait", str(m))
    assert _timed_down(stack, m, "--force") < 30
    assert host_leftovers(stack) == []

    # 0 without --force means 1 (kubectl's guard): the container still gets a moment.
    stack.run("up", "--wait", str(m))
    assert 1 <= _timed_down(stack, m, "--grace-period", "0") < 30
    assert host_leftovers(stack) == []


def test_a_countdown_on_a_terminal(stack):
    m = _stubborn(stack, "counted", 4)
    stack.run("up", "--wait", str(m))
    main, tty = pty.openpty()
    try:
        proc = subprocess.Popen([*PODPLAY, "down", str(m)], env=stack.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=tty, text=True)
        os.close(tty)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(main)
    assert proc.returncode == 0 and "- deleted pod default/counted" in out
    text = seen.decode(errors="replace")
    assert "waiting for default/counted to stop: " in text
    assert "s before the containers are killed (`down --force` kills at once)" in text
    assert text.endswith("\r\x1b[K")  # the status line is cleared once the pod is gone
    assert host_leftovers(stack) == []
