"""`podplay watch` on the real stack (runc, conmon, CNI, overlay): a real watcher process with a
short debounce and relist, driven only through files, signals and the `podplay` command.

* A manifest directory's life: a new file starts its pod, an edit replaces only that pod, a bad
  edit keeps the old pod running and shows the error in `podplay status` and the watcher's log,
  a deleted file prunes its pod, a container killed with SIGKILL is restarted as its
  restartPolicy says, SIGTERM ends the watcher with 0 and leaves the pods running, and
  `podplay down` then leaves nothing behind.
* What `ps` and `pods` show while the watcher keeps converging: READY that follows an httpGet
  readiness probe, and a crash-looping container's growing restart count and back-off.

Waits are generous and never assert a speed; the file-to-running latency is printed only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.host.e2e.conftest import PODPLAY, host_leftovers, wait_for

IMAGE = "localhost/busybox:latest"
# A shell that ends at once on its stop signal (as pid 1 it would otherwise ignore SIGTERM).
LOOP = "trap 'exit 0' TERM; while true; do sleep 0.2; done"


def pod(name: str, command: str = LOOP, *, env: str = "", extra: str = "", restart: str = "") -> str:
    policy = f"\n  restartPolicy: {restart}" if restart else ""
    env_block = f"\n    env: [{{name: VERSION, value: {json.dumps(env)}}}]" if env else ""
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 2{policy}
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", {json.dumps(command)}]{env_block}
{extra}"""


def write(path: Path, text: str) -> None:
    """Save as an editor does: a temp file renamed over the old one (the watcher never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.swp"
    tmp.write_text(text)
    os.replace(tmp, path)


class Watcher:
    """A `podplay watch` process whose log goes to a file (a pipe nobody reads could fill up)."""

    def __init__(self, stack, directory: Path, log: Path):
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*PODPLAY, "watch", str(directory), "--debounce", "0.1", "--relist", "0.5"],
                                     env=stack.env, stdout=subprocess.DEVNULL, stderr=self._out,
                                     stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"podplay watch exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
        return True

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:  # it did not stop: do not leave it behind
                self.proc.kill()
                self.proc.wait()
            self._out.close()


def ps(stack) -> dict[str, dict]:
    """pod name → its app container as `ps -a -o json` shows it (one app container per pod here)."""
    rows = json.loads(stack.run("ps", "-a", "-o", "json").stdout)
    return {r["pod"]: r for r in rows if r["role"] == "app"}


def pods(stack) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads(stack.run("pods", "-o", "json").stdout)}


def running(stack, name: str) -> dict | None:
    row = ps(stack).get(name)
    return row if row is not None and row["state"] == "running" else None


def test_watch_keeps_a_directory_converged_on_the_real_host(stack):
    d = stack.tmp / "manifests"
    write(d / "keep.yaml", pod("w-keep"))
    write(d / "gone.yaml", pod("w-gone"))
    w = Watcher(stack, d, stack.tmp / "watch.log")
    try:
        wait_for(lambda: w.alive() and running(stack, "w-keep") and running(stack, "w-gone"),
                 "the first pass to start both pods", 120)
        keep = running(stack, "w-keep")

        # A new file: its pod runs. The latency is a figure for the benchmark, not an assertion.
        t = time.monotonic()
        write(d / "new.yaml", pod("w-new", env="1"))
        first = wait_for(lambda: w.alive() and running(stack, "w-new"), "the new file's pod to run", 120)
        print(f"\nfile write → container running (real host, as seen by `podplay ps`): "
              f"{(time.monotonic() - t) * 1000:.0f} ms")
        uid1 = first["pod_uid"]

        # An edit: only that pod is replaced; the others keep their container and start time.
        write(d / "new.yaml", pod("w-new", env="2"))
        second = wait_for(lambda: w.alive() and (r := running(stack, "w-new")) and r["pod_uid"] != uid1 and r,
                          "the edited pod to be replaced", 120)
        assert stack.run("exec", "w-new", "--", "sh", "-c", "echo $VERSION").stdout.strip() == "2"
        now = ps(stack)
        assert (now["w-keep"]["id"], now["w-keep"]["started_at"], now["w-keep"]["restarts"]) == (
            keep["id"], keep["started_at"], 0), "an edit of another file touched this pod"
        assert now["w-gone"]["state"] == "running"
        assert sorted(pods(stack)) == ["w-gone", "w-keep", "w-new"], "the old instance is gone"
        wait_for(lambda: "event=replaced pod=default/w-new" in w.text(), "the replacement in the watcher's log")

        # A bad edit: the pod keeps running as it was; the error shows in `status` and in the log.
        write(d / "new.yaml", pod("w-new", env="3", restart="Sometimes"))
        wait_for(lambda: w.alive() and "event=file_invalid" in w.text(), "the watcher to log the invalid file", 60)
        status = stack.run("status").stdout
        assert str(d / "new.yaml") in status and "Sometimes" in status, status
        assert "last good version stays in use" in status, status
        log_line = next(line for line in w.text().splitlines() if "event=file_invalid" in line)
        assert "new.yaml" in log_line and "Sometimes" in log_line, log_line
        still = running(stack, "w-new")
        assert still is not None and (still["id"], still["started_at"]) == (second["id"], second["started_at"])
        assert stack.run("exec", "w-new", "--", "sh", "-c", "echo $VERSION").stdout.strip() == "2"

        # Fixed again (back to the running version: nothing to do), then a file is deleted: its pod goes.
        write(d / "new.yaml", pod("w-new", env="2"))
        wait_for(lambda: "event=file_ok" in w.text(), "the watcher to accept the fixed file", 60)
        (d / "gone.yaml").unlink()
        wait_for(lambda: w.alive() and "w-gone" not in pods(stack), "the deleted file's pod to be pruned", 120)
        assert running(stack, "w-new")["id"] == second["id"], "fixing the file must not replace the pod"

        # A container killed behind podplay's back is restarted (restartPolicy Always, the default).
        victim = running(stack, "w-new")
        os.kill(victim["pid"], signal.SIGKILL)
        back = wait_for(lambda: w.alive() and (r := running(stack, "w-new")) and r["restarts"] == 1 and r,
                        "the killed container to be restarted", 120)
        assert back["pid"] != victim["pid"] and back["pod_uid"] == victim["pod_uid"]
        assert "event=drift" in w.text() and "reason=exited" in w.text()
    finally:
        rc = w.stop()
    # SIGTERM: the watcher exits 0 and the pods stay (they belong to the host, not to the watcher).
    assert rc == 0, w.text()[-3000:]
    assert "event=stop" in w.text()
    after = ps(stack)
    assert {n for n, r in after.items() if r["state"] == "running"} == {"w-keep", "w-new"}
    assert after["w-keep"]["id"] == keep["id"]
    assert "not running" in stack.run("status").stdout

    stack.run("down", str(d))
    assert host_leftovers(stack) == []


HTTPD_READY = """    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /ready.html, port: 8080}
      periodSeconds: 1
"""


def test_ps_shows_readiness_and_crash_loop_back_off_under_watch(stack):
    d = stack.tmp / "manifests"
    # busybox httpd serves /www: GET /ready.html is 404 until the test writes the page.
    write(d / "web.yaml", pod("w-web", "mkdir -p /www && exec httpd -f -p 8080 -h /www", extra=HTTPD_READY))
    write(d / "crash.yaml", pod("w-crash", "exit 1", restart="Always"))
    w = Watcher(stack, d, stack.tmp / "watch.log")
    try:
        def pods_line(name: str) -> list[str]:
            return next(line.split() for line in stack.run("pods").stdout.splitlines() if line.split()[0] == name)

        # Running, not ready: the probe gets 404.
        wait_for(lambda: w.alive() and running(stack, "w-web") and pods_line("w-web")[1:3] == ["0/1", "Running"],
                 "w-web running but not ready", 120)
        assert ps(stack)["w-web"]["ready"] is False
        ps_web = next(line.split() for line in stack.run("ps").stdout.splitlines() if line.startswith("w-web "))
        assert ps_web[3:5] == ["running", "false"], ps_web
        stack.run("exec", "w-web", "--", "sh", "-c", "echo ok > /www/ready.html")
        wait_for(lambda: pods_line("w-web")[1] == "1/1", "w-web to become ready once the page exists", 60)
        assert ps(stack)["w-web"]["ready"] is True and pods(stack)["w-web"]["ready"] == 1

        # The crash loop: the first restart comes at once, then 10 s, 20 s… of back-off.
        def backing_off(restarts: int):
            row = ps(stack).get("w-crash")
            if row is None or row["state"] != "exited" or row["restarts"] != restarts or not row["restart_at"]:
                return None
            return row, pods(stack)["w-crash"], stack.run("ps", "-a", "w-crash").stdout
        row, p, table = wait_for(lambda: w.alive() and backing_off(1), "w-crash to wait in back-off", 120)
        assert row["exit_code"] == 1 and p["status"] == "CrashLoopBackOff" and p["restarts"] == 1
        assert "exited (1), back-off " in table, table
        assert "CrashLoopBackOff" in stack.run("pods", "w-crash").stdout
        row2, p2, table2 = wait_for(lambda: w.alive() and backing_off(2), "the restart count to grow", 120)
        assert p2["status"] == "CrashLoopBackOff" and p2["restarts"] == 2
        assert row2["restart_at"] > row["restart_at"]  # RFC 3339 UTC strings sort as times do
        assert "exited (1), back-off " in table2, table2
        assert "event=backoff pod=default/w-crash" in w.text()
    finally:
        rc = w.stop()
    assert rc == 0, w.text()[-3000:]
    # No watcher, no pending restart: the loop shows as what it is, an exited container.
    assert pods(stack)["w-crash"]["status"] == "Restarting"
    assert ps(stack)["w-crash"]["restart_at"] is None
    stack.run("down", str(d))
    assert host_leftovers(stack) == []
