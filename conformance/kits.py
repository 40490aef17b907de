"""Driver kits: one per implementation, each giving the conformance suite a host to test.

A kit owns a set of drivers over one host, knows how to get an image the drivers can fetch,
builds desired pods (from YAML, through the real loader), and can `reopen` the drivers (fresh
objects over the same host, as a new podplay process would see it).
"""

from __future__ import annotations

import textwrap

from reconciler.desired import DesiredPod, build_desired
from reconciler.drivers.base import Drivers
from reconciler.manifests import load_objects


def pod_from_yaml(text: str, name: str) -> DesiredPod:
    import yaml

    docs = [d for d in yaml.safe_load_all(textwrap.dedent(text)) if d]
    loaded = load_objects(docs, source="/conformance/pod.yaml")
    assert loaded.ok, "\n".join(map(str, loaded.errors))
    return build_desired(loaded.objects).pods[f"default/{name}"]


class Kit:
    name = "abstract"
    drivers: Drivers

    def image(self) -> str:
        raise NotImplementedError

    def reopen(self) -> Drivers:
        raise NotImplementedError

    def pod(self, name: str, *, command: str = "sleep 600", exit_code: int | None = None, host_port: int = 0,
            volumes: list | None = None, mounts: list | None = None) -> DesiredPod:
        """A one-container pod running `command` (or exiting with `exit_code`)."""
        import yaml

        if exit_code is not None:
            command = f"exit {exit_code}"
        main = {"name": "main", "image": self.image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", command]}
        if host_port:
            main["ports"] = [{"containerPort": 80, "hostPort": host_port}]
        if mounts:
            main["volumeMounts"] = mounts
        spec = {"terminationGracePeriodSeconds": 2, "containers": [main]}
        if volumes:
            spec["volumes"] = volumes
        doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        return pod_from_yaml(yaml.safe_dump(doc), name)

    def close(self) -> None:
        pass


class FakeKit(Kit):
    name = "fake"

    def __init__(self, tmp_path):
        from reconciler.drivers.fake import FakeHost, fake_drivers

        self._path = tmp_path / "fakehost.json"
        self.host = FakeHost(self._path)
        self.host.registry.add(self.image())
        self.host.save()
        self.drivers = fake_drivers(self.host)

    def image(self) -> str:
        return "registry.test/busybox:1.36"

    def pod(self, name: str, *, exit_code: int | None = None, **kw) -> DesiredPod:
        p = super().pod(name, exit_code=exit_code, **kw)
        if exit_code is not None:
            self.host.exit_codes[p.containers[0].id] = exit_code
            self.host.save()
        return p

    def reopen(self) -> Drivers:
        from reconciler.drivers.fake import FakeHost, fake_drivers

        self.host = FakeHost(self._path)
        self.drivers = fake_drivers(self.host)
        return self.drivers
