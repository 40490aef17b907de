"""RuncRuntime is a RuntimeDriver: same methods, same signatures (the engine calls it by keyword)."""

from __future__ import annotations

import inspect
from pathlib import Path

from reconciler.drivers.base import RuntimeDriver
from reconciler.paths import HostPaths
from reconciler.runtime.driver import RuncRuntime


def test_runc_runtime_implements_the_protocol_exactly():
    rt = RuncRuntime(HostPaths(Path("/nonexistent/root"), Path("/nonexistent/run"), Path("/nonexistent/net")))
    assert isinstance(rt, RuntimeDriver)
    for name, member in inspect.getmembers(RuntimeDriver, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert inspect.signature(getattr(RuncRuntime, name)) == inspect.signature(member), name


def test_constructing_the_driver_touches_nothing():
    paths = HostPaths(Path("/nonexistent/root"), Path("/nonexistent/run"), Path("/nonexistent/net"))
    rt = RuncRuntime(paths)
    assert rt.list_containers() == []
    assert rt.infra_info("abc123") is None
    rt.remove_container("abc123.web")  # nothing there: not an error
    assert not Path("/nonexistent").exists()
