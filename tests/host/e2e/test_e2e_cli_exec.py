"""`podplay exec` on the real stack: exit codes passed through, stdin, env, a terminal, and
podman's 125/126/127 for what is not the command's own failure."""

from __future__ import annotations

import os
import select
import subprocess

from tests.host.e2e.conftest import PODPLAY, wait_exited

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _pods(stack, box: str = "box"):
    # Each test names its pods apart: pods with the same name and spec get the same uid, and so
    # the same iptables chains, which parallel tests on one host must not share.
    m = stack.write("box.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: {box}}}
spec:
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sh", "-c", "{LOOP}"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {box}-done}}
spec:
  restartPolicy: Never
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["true"]}}
""")
    stack.run("up", str(m))
    wait_exited(stack, f"{box}-done", "c")
    return m


def test_exec_exit_codes_stdin_env_and_streams(stack):
    m = _pods(stack)
    assert stack.run("exec", "box", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    killed = stack.run("exec", "box", "--", "sh", "-c", "kill -9 $$", check=False)
    assert killed.returncode == 128 + 9

    # -i passes stdin; without it the command reads nothing (and does not hang).
    res = stack.run("exec", "-i", "box", "--", "sh", "-c", "cat; echo done", input="hello\n")
    assert res.stdout == "hello\ndone\n"
    assert stack.run("exec", "box", "--", "cat", input="ignored\n").stdout == ""

    # The command's stdout and stderr stay apart.
    res = stack.run("exec", "box/c", "--", "sh", "-c", "echo out; echo err >&2")
    assert (res.stdout, res.stderr) == ("out\n", "err\n")

    # -e KEY=VALUE, and -e KEY takes the value from podplay's environment.
    res = stack.run("exec", "-e", "FOO=bar baz", "-e", "FROM_HOST", "box", "--", "sh", "-c",
                    'echo "$FOO|$FROM_HOST"', env={"FROM_HOST": "xyz"})
    assert res.stdout == "bar baz|xyz\n"

    # 127: no such command; 126: not executable. Nothing of the command ran.
    res = stack.run("exec", "box", "--", "no-such-command", "x", check=False)
    assert res.returncode == 127 and "no-such-command: executable file not found in $PATH" in res.stderr
    res = stack.run("exec", "box", "--", "/etc/passwd", check=False)
    assert res.returncode == 126 and "not executable" in res.stderr
    res = stack.run("exec", "box", "--", "/etc", check=False)
    assert res.returncode == 126 and "is a directory" in res.stderr

    # 125: podplay's own failures, including names it does not know (never 6: that could be the
    # command's own exit code).
    res = stack.run("exec", "box-done", "--", "true", check=False)
    assert res.returncode == 125 and "not running (exited (0))" in res.stderr
    res = stack.run("exec", "bxo", "--", "true", check=False)
    assert res.returncode == 125 and "did you mean box?" in res.stderr
    res = stack.run("exec", "box/nope", "--", "true", check=False)
    assert res.returncode == 125 and "its containers: c" in res.stderr
    res = stack.run("exec", "-t", "box", "--", "true", check=False)  # stdin is a pipe here
    assert res.returncode == 125 and "terminal" in res.stderr
    stack.run("down", str(m))


def _run_in_pty(argv: list[str], env: dict, send: bytes = b"") -> tuple[int, bytes]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr, as from an interactive shell."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    try:
        if send:
            os.write(master, send)
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no output within the safety deadline: {out!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every holder of the terminal is gone
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=60), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_exec_with_a_terminal(stack):
    m = _pods(stack, "term")
    code, out = _run_in_pty([*PODPLAY, "exec", "-it", "term", "--", "sh", "-c",
                             "tty; read line; echo got $line; exit 3"], stack.env, b"hello\n")
    assert code == 3
    text = out.decode(errors="replace").replace("\r\n", "\n")
    assert "/dev/pts/" in text and "got hello\n" in text
    # Without -t the command has no terminal, even when podplay has one.
    code, out = _run_in_pty([*PODPLAY, "exec", "term", "--", "sh", "-c", "tty; true"], stack.env)
    assert code == 0 and b"not a tty" in out
    stack.run("down", str(m))
