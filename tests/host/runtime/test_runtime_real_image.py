"""The runtime on what the other drivers really produce: an image built by buildah, pushed to a
local docker-registry, pulled by podplay's image store and mounted as an overlay snapshot."""

from __future__ import annotations

from reconciler.observed import ContainerState
from reconciler.storage.snapshots import OverlaySnapshotter
from tests.support.images import store_with_busybox
from tests.support.registry import registry  # noqa: F401 - fixture
from tests.unit.runtime.pods import make_pod


def run_pod(runtime, host_paths, registry, config, containers):  # noqa: F811
    store, info = store_with_busybox(host_paths, registry, config=config)
    snapshots = OverlaySnapshotter(host_paths, store)
    pod = make_pod("real", containers)
    try:
        runtime.create_infra(pod)
        for c in pod.containers:
            rootfs = snapshots.prepare(c.id, info)
            runtime.create_container(pod, c, rootfs=rootfs, image=info, volumes={}, network=None)
            runtime.start_container(c.id)
        out = {}
        for c in pod.containers:
            code = runtime.wait_container(c.id, 30)
            out[c.name] = (code, [(s, t.decode()) for _, s, t in runtime.read_logs(c.id)])
        return info, out, {c.name: c for c in runtime.list_containers()}
    finally:
        runtime.remove_infra(pod.uid)
        for c in pod.containers:
            snapshots.remove(c.id)


def test_an_image_from_a_registry_runs_with_its_config(registry, runtime, host_paths):  # noqa: F811
    info, out, listed = run_pod(runtime, host_paths, registry, {
        "entrypoint": ["/bin/sh", "-c"], "cmd": ["echo default"], "workingdir": "/var/www",
        "env": {"GREETING": "from-image", "KEEP": "kept"}, "stop_signal": "SIGUSR1"}, [
        {"name": "args", "args": ["pwd; echo $GREETING $KEEP; echo $(GREETING)"],
         "env": [{"name": "GREETING", "value": "from-pod"}]},
        {"name": "default"},
    ])
    assert out["args"] == (0, [("stdout", "/var/www"), ("stdout", "from-pod kept"), ("stdout", "from-pod")])
    assert out["default"] == (0, [("stdout", "default")])
    assert listed["args"].image_id == info.id and listed["args"].state == ContainerState.EXITED
    assert listed["args"].labels["io.podplay.stop-signal"] == "SIGUSR1"


def test_an_image_user_runs_as_that_user(registry, runtime, host_paths):  # noqa: F811
    config = {"user": "app", "cmd": ["sh", "-c", "id -un; cat /etc/hostname"]}
    _, out, _ = run_pod(runtime, host_paths, registry, config, [{"name": "user"}])
    assert out["user"] == (0, [("stdout", "app"), ("stdout", "real")])
