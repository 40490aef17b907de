"""End-to-end tests: the `podplay` command on the real stack (registry, overlay, runc, conmon, CNI).

Every test gets its own storage root, run root, CNI network (bridge, /24) and a store holding
busybox as ``localhost/busybox:latest``, the name the examples and the podman corpus use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.paths import HostPaths
from tests.support.images import store_with_busybox
from tests.support.network import TestNetwork, free_port, test_network  # noqa: F401
from tests.support.registry import registry  # noqa: F401

PODPLAY = [sys.executable, "-m", "reconciler"]


def http_get(url: str, timeout: float = 5.0) -> str:
    """GET from the host side; raises on any failure (the test then shows why)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.read().decode()


@dataclass
class Stack:
    paths: HostPaths
    network: TestNetwork
    env: dict
    tmp: Path

    def run(self, *args: str, check: bool = True, timeout: float = 180, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([*PODPLAY, *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                             timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"podplay {' '.join(args)} exited {res.returncode}\nstdout:\n{res.stdout}\n"
                                 f"stderr:\n{res.stderr}")
        return res

    def write(self, name: str, text: str) -> Path:
        p = self.tmp / "manifests" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def drivers(self):
        from reconciler.reconcile import open_drivers

        return open_drivers(self.paths, "host")

    def containers(self):
        return self.drivers().runtime.list_containers()


@pytest.fixture
def stack(host_paths, test_network, registry, tmp_path) -> Stack:  # noqa: F811
    test_network.use_as_default()
    store, _ = store_with_busybox(host_paths, registry)
    store.close()
    env = {**os.environ, "PODPLAY_ROOT": str(host_paths.root), "PODPLAY_RUNROOT": str(host_paths.runroot),
           "PODPLAY_NETWORK_DIR": str(host_paths.network_dir)}
    env.pop("PODPLAY_DRIVER", None)
    s = Stack(host_paths, test_network, env, tmp_path)
    yield s
    # Whatever a failed test left running: remove it through podplay itself, as a user would.
    subprocess.run([*PODPLAY, "down", str(tmp_path / "manifests")], env=env, capture_output=True, timeout=120)
    _remove_everything(s)


def _remove_everything(s: Stack) -> None:
    d = s.drivers()
    for c in d.runtime.list_containers():
        d.runtime.remove_container(c.id) if c.role != "infra" else None
    for a in d.network.list_attachments():
        d.network.detach(a.pod_uid)
    for c in d.runtime.list_containers():
        d.runtime.remove_infra(c.pod_uid)
    for snap in d.snapshots.list_snapshots():
        d.snapshots.remove(snap.key)
    for uid in d.volumes.list_pod_volumes():
        d.volumes.remove_pod_volumes(uid)
    d.close()
