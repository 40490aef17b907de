"""Watch and sync tests: real `podplay watch`/`sync` processes on the file-backed fake host.

The fake host persists to ``<root>/fakehost.json``; the keeper process and the test read the
same file. The test changes it (a container exits) only while holding the apply lock, as any
other podplay process would, so that it never races a pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.drivers.fake import FakeHost
from reconciler.paths import HostPaths
from reconciler.state import ApplyLock

TIMEOUT = 30.0  # generous: these wait for something to happen, they never assert how fast


def eventually(fn: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll `fn` until it returns something truthy; fail with `what` and its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def pod(name: str, *, command: str = "sleep 1000", restart: str = "", image: str = "busybox:1.36",
        namespace: str = "", extra: str = "") -> str:
    """A one-container pod; `extra` is appended to the container (indent it by four spaces)."""
    ns = f"\n  namespace: {namespace}" if namespace else ""
    rp = f"\n  restartPolicy: {restart}" if restart else ""
    args = ", ".join(json.dumps(a) for a in command.split())
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}{ns}\nspec:{rp}\n  containers:\n"
            f"  - name: app\n    image: {image}\n    command: [{args}]\n") + extra


class Keeper:
    """A running `podplay watch` or `podplay sync` process and its log."""

    def __init__(self, argv: list[str], env: dict, log: Path):
        self.log = log
        self._logf = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=self._logf,
                                     stdin=subprocess.DEVNULL)

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a traceback would show in the failure message via text()
            if name is None or e.get("event") == name:
                out.append(e)
        return out

    def text(self) -> str:
        return self.log.read_text()

    def wait_event(self, name: str, pred: Callable[[dict], bool] = lambda e: True, after: int = 0) -> dict:
        def find():
            if self.proc.poll() is not None:
                raise AssertionError(f"keeper exited with {self.proc.returncode}:\n{self.text()}")
            return next((e for e in self.events(name)[after:] if pred(e)), None)
        return eventually(find, f"log event {name}")

    def wait_then(self, first: str, first_pred: Callable[[dict], bool], then: str) -> dict:
        """The first `then` event logged after the first `first` event that matches `first_pred`."""
        def find():
            if self.proc.poll() is not None:
                raise AssertionError(f"keeper exited with {self.proc.returncode}:\n{self.text()}")
            events = self.events()
            i = next((i for i, e in enumerate(events) if e.get("event") == first and first_pred(e)), None)
            return None if i is None else next((e for e in events[i + 1:] if e.get("event") == then), None)
        return eventually(find, f"log event {then} after {first}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._logf.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._logf.close()


class Site:
    """A manifest directory, a file-backed fake host, and `podplay` processes that use them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.dir = tmp / "m"
        self.dir.mkdir()
        self.paths = HostPaths(tmp / "root", tmp / "run", tmp / "net.d")
        self.host_file = self.paths.root / "fakehost.json"
        self.env = {**os.environ, "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
                    "PODPLAY_ROOT": str(self.paths.root), "PODPLAY_RUNROOT": str(self.paths.runroot),
                    "PODPLAY_NETWORK_DIR": str(self.paths.network_dir)}
        self.env.pop("PODPLAY_FAILPOINT", None)
        self.keepers: list[Keeper] = []

    # --- manifests ---------------------------------------------------------------------------------

    def write(self, name: str, text: str) -> Path:
        """Write as an editor that saves through a temp file and a rename does."""
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.swp"
        tmp.write_text(text)
        os.replace(tmp, p)
        return p

    def remove(self, name: str) -> None:
        (self.dir / name).unlink()

    # --- the fake host ---------------------------------------------------------------------------

    def host(self) -> FakeHost:
        return FakeHost(self.host_file)

    @contextlib.contextmanager
    def mutate(self):
        """Change the fake host as another podplay process would: under the apply lock."""
        with ApplyLock(self.paths.lock_file):
            h = FakeHost(self.host_file)
            yield h
            h.save()

    def containers(self, ref: str) -> dict[str, dict]:
        """name → container record of the pod's app containers."""
        return {c["name"]: dict(c, id=cid) for cid, c in self.host().containers.items()
                if c["pod"] == ref and c["role"] == "app"}

    def pods(self) -> dict[str, str]:
        """pod ref → uid of its running instance(s), for 'was it replaced?' questions."""
        return {c["pod"]: c["pod_uid"] for c in self.host().containers.values() if c["role"] == "infra"}

    def running(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for c in self.host().containers.values():
            if c["role"] == "app" and c["state"] == "running":
                out.setdefault(c["pod"], set()).add(c["name"])
        return out

    # --- commands ------------------------------------------------------------------------------------

    def podplay(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reconciler", *args], env=env or self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def status(self) -> dict:
        res = self.podplay("status", "--output", "json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def keeper(self, *args: str, env: dict | None = None) -> Keeper:
        log = self.tmp / f"keeper-{len(self.keepers)}.log"
        k = Keeper([sys.executable, "-m", "reconciler", *args, "--log-format", "json"], env or self.env, log)
        self.keepers.append(k)
        return k

    def watch(self, *args: str, relist: float = 0.2, env: dict | None = None) -> Keeper:
        return self.keeper("watch", str(self.dir), "--relist", str(relist), *args, env=env)

    def close(self) -> None:
        for k in self.keepers:
            k.kill()


@pytest.fixture
def site(tmp_path) -> Site:
    s = Site(tmp_path)
    yield s
    s.close()
