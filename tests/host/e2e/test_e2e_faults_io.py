"""Faults of an edge device's I/O, on the real stack: a frozen registry and half-written files.

* `up` stuck on a frozen registry (a TCP proxy that forwards nothing, as a SIGSTOPped registry
  behaves) holds no lock: a second `up` and a `down` on the same roots, with --no-block, go
  through meanwhile; the stuck `up` ends within its stall timeout with one clear message, its pod
  not created, and `down` then leaves nothing.
* `watch` and non-atomic writers: a file written in two steps 1.5 s apart (a claim, then the pod)
  and a file rewritten in place slowly (as rsync --inplace or scp do) never prune or restart the
  pod; the slow rewrite that changes the pod replaces it exactly once, with the finished content.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.host.e2e.conftest import PODPLAY, host_leftovers, wait_for
from tests.support.images import make_busybox_image
from tests.support.proxy import TcpProxy
from tests.support.registry import unique_repo

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.2; done"
CLAIM = """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pw-data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Mi}}}
"""


def pod(name: str, image: str = "localhost/busybox:latest", policy: str = "Never", version: str = "1",
        settings: int = 0) -> str:
    """A pod; ``settings`` more environment variables, one a line: every prefix of the file that
    ends after the command line is a valid pod too, with fewer of them (what a half-written file
    would start)."""
    more = "".join(f'\n    - {{name: SETTING_{i}, value: "{i}"}}' for i in range(settings))
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    imagePullPolicy: {policy}
    command: ["sh", "-c", {json.dumps(LOOP)}]
    env:
    - {{name: VERSION, value: "{version}"}}{more}
"""


def ps(stack) -> dict[str, dict]:
    rows = json.loads(stack.run("ps", "-a", "-o", "json").stdout)
    return {r["pod"]: r for r in rows if r["role"] == "app"}


def test_up_stuck_on_a_frozen_registry_blocks_no_other_up_or_down(stack, registry, request):
    repo = unique_repo(request)
    make_busybox_image(registry, repo)
    with TcpProxy(registry.port) as proxy:
        proxy.freeze()  # accepts connections, forwards nothing: a SIGSTOPped registry
        frozen = stack.tmp / "frozen"
        frozen.mkdir()
        (frozen / "pod.yaml").write_text(pod("pf", image=f"{proxy.host}/{repo}:latest", policy="IfNotPresent"))
        other = stack.tmp / "other"
        other.mkdir()
        (other / "pod.yaml").write_text(pod("po"))

        stuck = subprocess.Popen([*PODPLAY, "up", str(frozen), "--stall-timeout", "8", "--connect-timeout", "8"],
                                 env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: proxy.connections() or stuck.poll() is not None, "the first up to ask the registry", 60)
            assert stuck.poll() is None, stuck.communicate()
            up = stack.run("up", str(other), "--no-block", check=False)
            assert up.returncode == 0, f"a second up was blocked by the stuck one: {up.returncode} {up.stderr}"
            assert ps(stack)["po"]["state"] == "running"
            down = stack.run("down", str(other), "--no-block", check=False)
            assert down.returncode == 0, f"a down was blocked by the stuck up: {down.returncode} {down.stderr}"
            assert stuck.poll() is None, "the frozen registry should still hold the first up"
            started = time.monotonic()
            out, err = stuck.communicate(timeout=120)
            waited = time.monotonic() - started
        finally:
            if stuck.poll() is None:
                stuck.kill()
                stuck.communicate()
        assert stuck.returncode == 3, (stuck.returncode, out, err)
        assert "Traceback" not in err
        assert f"registry {proxy.host} sent nothing for 8s (3 times in a row)" in err, err
        assert waited < 60, f"the stuck up went on {waited:.0f}s after the others"
        assert "pf" not in ps(stack)

        # The registry answers again: the same `up` pulls (one plain progress line per layer and
        # one for the image on stderr, not a terminal) and starts the pod.
        proxy.thaw()
        again = stack.run("up", str(frozen))
        image = f"{proxy.host}/{repo}:latest"
        lines = [line for line in again.stderr.splitlines() if line.startswith(f"{image}: ")]
        assert lines and " layers downloaded " in lines[-1] and "\x1b" not in again.stderr, again.stderr
        assert ps(stack)["pf"]["state"] == "running"
    stack.run("down", str(frozen))
    assert host_leftovers(stack) == []


class Watcher:
    def __init__(self, stack, directory: Path, log: Path):
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*PODPLAY, "watch", str(directory), "--debounce", "0.3", "--relist", "0.5"],
                                     env=stack.env, stdout=subprocess.DEVNULL, stderr=self._out,
                                     stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"podplay watch exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
        return True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()


def _events(log: str, pod_name: str) -> list[str]:
    return [line for line in log.splitlines() if f"pod=default/{pod_name}" in line and "event=" in line]


def test_watch_never_prunes_or_restarts_a_pod_for_a_file_written_in_steps(stack):
    d = stack.tmp / "manifests"
    d.mkdir()
    path = d / "app.yaml"
    path.write_text(CLAIM + "---\n" + pod("pw"))
    w = Watcher(stack, d, stack.tmp / "watch.log")
    try:
        first = wait_for(lambda: w.alive() and (r := ps(stack).get("pw")) and r["state"] == "running" and r,
                         "the pod to run", 120)
        before = len(_events(w.text(), "pw"))

        # A writer that writes the claim, then the pod 1.5 s later, in place (no rename).
        with open(path, "w") as f:
            f.write(CLAIM + "---\n")
            f.flush()
            time.sleep(1.5)
            f.write(pod("pw"))
        time.sleep(5)  # past the hold (3 s) and several relists
        w.alive()
        now = ps(stack)["pw"]
        assert (now["id"], now["started_at"], now["restarts"], now["state"]) == (
            first["id"], first["started_at"], 0, "running"), "the pod was touched by a half-written file"
        assert _events(w.text(), "pw")[before:] == [], w.text()[-3000:]

        # A slow in-place rewrite (rsync --inplace over a slow link): a line every 0.1 s over the
        # old bytes, then the file cut to its new length; 4 s in all, past the debounce's 2 s
        # ceiling. Midway the file is a valid pod with only some of its settings.
        new = CLAIM + "---\n" + pod("pw", version="2", settings=30)
        with open(path, "r+b") as f:
            for line in new.encode().splitlines(keepends=True):
                f.write(line)
                f.flush()
                time.sleep(0.1)
            f.truncate(f.tell())
        replaced = wait_for(lambda: w.alive() and (r := ps(stack).get("pw")) and r["state"] == "running"
                            and r["id"] != first["id"] and r, "the finished rewrite to replace the pod", 120)
        time.sleep(3)
        events = _events(w.text(), "pw")[before:]
        assert [e for e in events if "event=replaced" in e and "pod=default/pw" in e], events
        assert len([e for e in events if "event=replaced" in e]) == 1, f"replaced more than once: {events}"
        assert not [e for e in events if "event=deleted" in e or "orphaned" in e], events
        assert stack.run("exec", "pw", "--", "sh", "-c", "echo $VERSION $SETTING_29").stdout.strip() == "2 29"
        assert ps(stack)["pw"]["id"] == replaced["id"]
    finally:
        rc = w.stop()
    assert rc == 0, w.text()[-3000:]
    stack.run("down", "--volumes", str(d))
    assert host_leftovers(stack) == []


def test_watch_applies_an_atomic_save_at_once_and_a_pod_removed_by_it_goes(stack):
    d = stack.tmp / "manifests"
    d.mkdir()
    path = d / "app.yaml"
    path.write_text(pod("pa") + "---\n" + pod("pb"))
    w = Watcher(stack, d, stack.tmp / "watch.log")
    try:
        wait_for(lambda: w.alive() and {"pa", "pb"} <= {n for n, r in ps(stack).items() if r["state"] == "running"},
                 "both pods to run", 120)
        tmp = d / ".app.yaml.tmp"
        tmp.write_text(pod("pa"))
        os.replace(tmp, path)  # an editor's save: pb is really gone, no hold
        wait_for(lambda: w.alive() and "pb" not in ps(stack), "pb to be pruned", 60)
        assert ps(stack)["pa"]["state"] == "running"
    finally:
        rc = w.stop()
    assert rc == 0, w.text()[-3000:]
    stack.run("down", str(d))
    assert host_leftovers(stack) == []
