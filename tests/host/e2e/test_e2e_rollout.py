"""Deployment rollouts on the real stack: a 3-replica web service (one host port per replica)
updated badly (an image that cannot be had, a readiness probe that never passes) is rolled back
and never goes fully down; a good update completes within maxUnavailable. A poller on the host
side hits every replica's port on 127.0.0.1 throughout, as a user's clients would."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from tests.host.e2e.conftest import free_port_block

IMAGE = "localhost/busybox:latest"


def manifest(version: str, port: int, *, image: str = IMAGE, ready_path: str = "/index.html",
             deadline: int = 20) -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: page}}
data: {{index.html: "{version}\\n"}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {{podplay.io/host-port-per-replica: "true"}}
spec:
  replicas: 3
  progressDeadlineSeconds: {deadline}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {image}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
        ports: [{{containerPort: 8080, hostPort: {port}}}]
        volumeMounts: [{{name: page, mountPath: /www}}]
        readinessProbe:
          httpGet: {{path: "{ready_path}", port: 8080}}
          periodSeconds: 1
      volumes:
      - name: page
        configMap: {{name: page}}
"""


class Poller:
    """Every replica's port, over and over, from the host; what answered in each round."""

    def __init__(self, port: int, replicas: int = 3, limit: float = 600):
        self.urls = [f"http://127.0.0.1:{port + i}/index.html" for i in range(replicas)]
        self.rounds: list[list[str | None]] = []
        self.stop = threading.Event()
        self.limit = limit
        self.thread = threading.Thread(target=self.run, daemon=True)

    def get(self, url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
                return r.read().decode().strip()
        except OSError:
            return None

    def run(self) -> None:
        end = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < end:
            self.rounds.append([self.get(u) for u in self.urls])
            self.stop.wait(0.05)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def answering(self) -> list[int]:
        return [sum(1 for b in r if b is not None) for r in self.rounds]


@pytest.fixture
def web(stack):
    port = free_port_block(3)
    m = stack.write("web.yaml", manifest("v1", port))
    stack.run("up", "--wait", "--timeout", "120", str(m))
    with Poller(port) as p:
        p.stop.wait(0.5)
    assert p.rounds and all(r == ["v1"] * 3 for r in p.rounds), p.rounds[:3]
    yield m, port
    stack.run("down", str(m))


def test_update_with_an_image_that_cannot_be_had_is_rolled_back_without_downtime(stack, web):
    m, port = web
    m.write_text(manifest("v1", port, image="localhost/busybox:no-such-tag", deadline=6))
    with Poller(port) as poller:
        res = stack.run("up", str(m), check=False)
    assert res.returncode == 3, res
    assert "rollout of deployment default/web to revision 2 failed" in res.stderr
    assert "rolled back to revision 1" in res.stderr
    assert "no-such-tag" in res.stderr, res.stderr
    assert poller.rounds and min(poller.answering()) >= 1, poller.answering()
    # The pull failed before any old instance was touched: all three answered throughout.
    assert min(poller.answering()) == 3
    hist = stack.run("rollout", "history", "web").stdout
    assert "failed" in hist and "(pinned)" in hist
    again = stack.run("up", str(m))
    assert "No changes" in again.stdout and "pinned to revision 1" in again.stdout


def test_update_whose_readiness_never_passes_is_rolled_back_and_the_service_stays_up(stack, web):
    m, port = web
    m.write_text(manifest("v1", port, ready_path="/missing.html", deadline=8))
    with Poller(port) as poller:
        res = stack.run("up", str(m), check=False, timeout=300)
    assert res.returncode == 3, res
    assert "rolled back to revision 1" in res.stderr and "404" in res.stderr, res.stderr
    answering = poller.answering()
    assert answering and min(answering) >= 1, answering
    # hostPorts force surge 0 and maxUnavailable 25% of 3 rounds to 0, raised to 1: at most one
    # replica is ever down, so two always answer.
    assert min(answering) >= 2, answering
    assert any(a < 3 for a in answering), "the bad revision replaced one replica before it was rolled back"
    with Poller(port) as after:
        after.stop.wait(0.3)
    assert all(r == ["v1"] * 3 for r in after.rounds), after.rounds[:3]


def test_good_update_completes_pod_by_pod_within_max_unavailable(stack, web):
    m, port = web
    m.write_text(manifest("v2", port))
    with Poller(port) as poller:
        res = stack.run("up", str(m), timeout=300)
    assert "revision 2 (complete)" in res.stdout, res.stdout
    answering = poller.answering()
    assert min(answering) >= 2, answering
    seen = {tuple(r) for r in poller.rounds}
    assert any("v1" in r and "v2" in r for r in seen), "old and new revisions served side by side"
    with Poller(port) as after:
        after.stop.wait(0.3)
    assert all(r == ["v2"] * 3 for r in after.rounds), after.rounds[:3]
    hist = stack.run("rollout", "history", "web").stdout
    assert [line.split()[:2] for line in hist.splitlines()[2:]] == [["1", "complete"], ["2", "complete"]]
