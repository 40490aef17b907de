"""Building DesiredPods for runtime tests the way users write them: a manifest dict, loaded and
checked by the real loader, expanded by the real ``build_desired``."""

from __future__ import annotations

import copy
import dataclasses

from reconciler.desired import DesiredPod, build_desired
from reconciler.manifests import load_objects
from reconciler.observed import ImageConfig, ImageInfo


def make_pod(name: str, containers: list[dict], *, init: list[dict] | None = None, namespace: str = "default",
             **spec) -> DesiredPod:
    """A DesiredPod from a Pod manifest; container dicts default their image to busybox."""
    def with_image(cs: list[dict]) -> list[dict]:
        out = copy.deepcopy(cs)
        for c in out:
            c.setdefault("image", "localhost/busybox:1")
        return out

    body = {"containers": with_image(containers), **spec}
    if init:
        body["initContainers"] = with_image(init)
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                "spec": body}
    loaded = load_objects([manifest], source="test.yaml")
    assert loaded.ok, [str(d) for d in loaded.errors]
    (pod,) = build_desired(loaded.objects).pods.values()
    return pod


def image(*, entrypoint=(), cmd=("sh",), env=("PATH=/usr/sbin:/usr/bin:/sbin:/bin",), user="", working_dir="",
          stop_signal="", ref="localhost/busybox:1") -> ImageInfo:
    return ImageInfo(id="sha256:" + "ab" * 32, manifest_digest="sha256:" + "cd" * 32, names=(ref,),
                     config=ImageConfig(entrypoint=tuple(entrypoint), cmd=tuple(cmd), env=tuple(env), user=user,
                                        working_dir=working_dir, stop_signal=stop_signal),
                     layers=())


def bypass_loader(pod: DesiredPod, **spec_changes) -> DesiredPod:
    """The pod with spec fields the loader would have refused: library callers can build any
    DesiredPod, so the runtime checks what it depends on again."""
    return dataclasses.replace(pod, spec=dataclasses.replace(pod.spec, **spec_changes))


def with_container_spec(pod: DesiredPod, index: int = 0, **changes) -> DesiredPod:
    c = pod.containers[index]
    new = dataclasses.replace(c, spec=dataclasses.replace(c.spec, **changes))
    containers = pod.containers[:index] + (new,) + pod.containers[index + 1:]
    return dataclasses.replace(pod, containers=containers)
