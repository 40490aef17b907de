"""Engine tests: the whole reconcile pass against the in-memory fake host."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.converger import run_pass
from reconciler.drivers.fake import FakeHost, fake_drivers
from reconciler.paths import HostPaths
from reconciler.state import StateStore


class Engine:
    """A manifest directory, a fake host and a state store, with helpers to drive passes."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "manifests"
        self.dir.mkdir(parents=True)
        self.paths = HostPaths(tmp / "root", tmp / "run", tmp / "net.d")
        self.host = FakeHost()
        self.host.registry.add("*")
        self.drivers = fake_drivers(self.host)
        self.state = StateStore(self.paths.state_db)

    def write(self, name: str, text: str) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def remove(self, name: str) -> None:
        (self.dir / name).unlink()

    def up(self, *paths, **kw):
        return run_pass([str(p) for p in paths] or [str(self.dir)], self.drivers, self.state, self.paths, **kw)

    def down(self, *paths, **kw):
        return run_pass([str(p) for p in paths] or [str(self.dir)], self.drivers, self.state, self.paths,
                        mode="down", **kw)

    def running(self) -> dict[str, set[str]]:
        """pod ref → names of its running app containers."""
        out: dict[str, set[str]] = {}
        for c in self.drivers.runtime.list_containers():
            if c.role == "app" and c.state == "running":
                out.setdefault(c.pod, set()).add(c.name)
        return out

    def empty(self) -> bool:
        h = self.host
        return not (h.containers or h.snapshots or h.attachments or h.pod_volumes)


@pytest.fixture
def engine(tmp_path) -> Engine:
    e = Engine(tmp_path)
    yield e
    e.state.close()


def pod_yaml(name: str, image: str = "busybox:1.36", *, containers=("app",), extra: str = "", ports: str = "",
             namespace: str = "") -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    ctrs = "".join(
        f"""
  - name: {c}
    image: {image}
    command: ["sleep", "1000"]{ports if i == 0 else ""}"""
        for i, c in enumerate(containers))
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}{ns}
spec:{extra}
  containers:{ctrs}
"""
