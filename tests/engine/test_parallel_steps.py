"""A pod's creation runs its independent steps side by side (apply's step runner), keeps the
containers' start order, and undoes everything touched when one of them fails."""

from __future__ import annotations

import threading
import time

from tests.engine.conftest import pod_yaml


def _meet(parties: int):
    """A wrapper factory: the first `parties` wrapped calls wait (up to 5 s) until all of them are
    inside at once, which only happens when they run side by side."""
    barrier = threading.Barrier(parties, timeout=5)
    calls = iter(range(1_000_000))

    def wrap(fn):
        def call(*a, **kw):
            if next(calls) < parties:
                barrier.wait()
            return fn(*a, **kw)
        return call
    return wrap


def test_the_containers_of_a_pod_are_created_together(engine, monkeypatch):
    engine.write("a.yaml", pod_yaml("web", containers=("app", "sidecar", "logger")))
    meet = _meet(3)
    monkeypatch.setattr(engine.drivers.runtime, "create_container", meet(engine.drivers.runtime.create_container))
    result = engine.up()
    assert result.ok, [r.error for r in result.applied.failed]
    assert engine.running() == {"default/web": {"app", "sidecar", "logger"}}


def test_the_snapshot_is_prepared_while_the_sandbox_is_made(engine, monkeypatch):
    engine.write("a.yaml", pod_yaml("web"))
    meet = _meet(2)
    monkeypatch.setattr(engine.drivers.runtime, "create_infra", meet(engine.drivers.runtime.create_infra))
    monkeypatch.setattr(engine.drivers.snapshots, "prepare", meet(engine.drivers.snapshots.prepare))
    result = engine.up()
    assert result.ok, [r.error for r in result.applied.failed]
    assert engine.running() == {"default/web": {"app"}}


def test_containers_start_in_their_declared_order(engine, monkeypatch):
    engine.write("a.yaml", pod_yaml("web", containers=("first", "second", "third")))
    create = engine.drivers.runtime.create_container

    def slow_first(pod, container, **kw):
        if container.name == "first":
            time.sleep(0.3)  # created last, still started first
        return create(pod, container, **kw)

    monkeypatch.setattr(engine.drivers.runtime, "create_container", slow_first)
    assert engine.up().ok
    names = {c.id: c.name for c in engine.drivers.runtime.list_containers()}
    started = [names[line.split()[1]] for line in engine.host.log if line.startswith("start_container ")]
    assert started == ["first", "second", "third"]


def test_a_failure_undoes_the_steps_that_ran_beside_it(engine, monkeypatch):
    engine.write("a.yaml", pod_yaml("web", containers=("app", "sidecar")))
    create = engine.drivers.runtime.create_container
    app_created = threading.Event()

    def create_then_fail(pod, container, **kw):
        if container.name == "sidecar":
            assert app_created.wait(5)  # the app container is made while this one fails
            raise __import__("reconciler.errors").errors.ContainerRuntimeError("no room for the sidecar")
        create(pod, container, **kw)
        app_created.set()

    monkeypatch.setattr(engine.drivers.runtime, "create_container", create_then_fail)
    result = engine.up()
    assert not result.ok and "no room for the sidecar" in result.applied.failed[0].error
    assert engine.empty() and not engine.running()
    assert not engine.state.journal.open_txns()
    monkeypatch.setattr(engine.drivers.runtime, "create_container", create)
    assert engine.up().ok and engine.running() == {"default/web": {"app", "sidecar"}}


def test_a_pod_with_a_secret_volume_creates_its_containers_in_order(engine, monkeypatch):
    # The first container that needs a secret's owner-only files is given them: never a race.
    engine.write("a.yaml", """apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {token: t0k3n}
---
""" + pod_yaml("web", containers=("first", "second", "third"), extra="""
  volumes:
  - name: token
    secret: {secretName: token}"""))
    create = engine.drivers.runtime.create_container

    def slow_first(pod, container, **kw):
        if container.name == "first":
            time.sleep(0.3)
        return create(pod, container, **kw)

    monkeypatch.setattr(engine.drivers.runtime, "create_container", slow_first)
    assert engine.up().ok
    names = {c.id: c.name for c in engine.drivers.runtime.list_containers()}
    created = [names[line.split()[1]] for line in engine.host.log if line.startswith("create_container ")]
    assert created == ["first", "second", "third"]
