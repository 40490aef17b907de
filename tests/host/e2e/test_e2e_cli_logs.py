"""`podplay logs` on the real stack: default container, streams, --tail, --since, --timestamps, -f."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading

from tests.host.e2e.conftest import PODPLAY, wait_for

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def test_logs_streams_tail_since_and_timestamps(stack):
    # stderr first, then ten stdout lines a little apart (distinct timestamps), then it idles.
    script = "echo oops >&2; for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.05; done; " + LOOP
    m = stack.write("talk.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: talk}}
spec:
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sh", "-c", "{script}"]}}
""")
    stack.run("up", "--wait", str(m))
    wait_for(lambda: "line 10" in stack.run("logs", "talk").stdout, "the tenth line")

    # The only container is the default; its stdout and stderr stay apart.
    res = stack.run("logs", "talk")
    assert res.stdout.splitlines() == [f"line {i}" for i in range(1, 11)]
    assert res.stderr == "oops\n"
    assert stack.run("logs", "talk/c").stdout == res.stdout

    assert stack.run("logs", "--tail", "3", "talk").stdout.splitlines() == ["line 8", "line 9", "line 10"]
    assert stack.run("logs", "--tail", "0", "talk").stdout == ""

    stamped = stack.run("logs", "--timestamps", "talk").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == res.stdout.splitlines()
    fifth = stamped[4].split(" ", 1)[0]
    assert fifth.endswith("Z") and "T" in fifth
    since = stack.run("logs", "--since", fifth, "talk")
    assert since.stdout.splitlines() == [f"line {i}" for i in range(5, 11)]
    assert since.stderr == ""  # the stderr line came before
    assert stack.run("logs", "--since", "1h", "talk").stdout == res.stdout

    bad = stack.run("logs", "--since", "yesterday", "talk", check=False)
    assert bad.returncode == 1 and "10s" in bad.stderr
    prev = stack.run("logs", "-p", "talk", check=False)
    assert prev.returncode == 1 and "previous" in prev.stderr
    stack.run("down", str(m))


class Lines:
    """A process's stdout lines as they come (a reader thread; the deadlines are only there so
    that a broken follower fails the test instead of hanging it)."""

    def __init__(self, proc: subprocess.Popen):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def next(self, timeout: float = 60.0) -> str | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line within the safety deadline") from None

    def until(self, wanted: str) -> list[str]:
        lines: list[str] = []
        while True:
            line = self.next()
            if line is None:
                raise AssertionError(f"stream ended before {wanted!r}: {lines}")
            lines.append(line)
            if line == wanted:
                return lines


def test_logs_follow_until_exit_and_until_ctrl_c(stack):
    # Ticks until /tmp/stop appears, then says bye and exits (restartPolicy Never: it stays exited).
    script = "i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo tick $i; sleep 0.2; done; echo bye"
    m = stack.write("ticker.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: ticker}}
spec:
  restartPolicy: Never
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sh", "-c", "{script}"]}}
""")
    stack.run("up", "--wait", str(m))

    # Ctrl-C ends a follow with 130, like any interrupted podplay command.
    proc = subprocess.Popen([*PODPLAY, "logs", "-f", "ticker"], env=stack.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        Lines(proc).until("tick 2")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    # A follow that starts mid-stream sees new lines as they come, and ends when the container does.
    proc = subprocess.Popen([*PODPLAY, "logs", "-f", "--tail", "1", "ticker"], env=stack.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc)
        start = lines.next()  # --tail 1: the newest tick when it started
        # Later ticks arrive while it runs: a follower, not a one-shot read.
        first = [start] + lines.until(f"tick {int(start.split()[1]) + 3}")
        stack.run("exec", "ticker", "--", "touch", "/tmp/stop")
        rest = lines.until("bye")
        assert lines.next() is None  # nothing after the container's last line: the follower ended
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    ticks = [int(line.split()[1]) for line in first + rest[:-1]]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # no line lost or repeated
    stack.run("down", str(m))

