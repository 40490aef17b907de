"""``podplay up --build``: which images of the manifests are built here, and how pods know.

As ``podman kube play --build``: an image whose last path element (without tag or digest)
names a directory beside the manifests that holds a Containerfile or Dockerfile is built from
that directory before the pods that use it. A pod (or a workload's pod template) using a built
image gets the annotation ``podplay.io/built-images`` (``image=id`` pairs): it is part of the
pod's spec, so a changed context — a new image id — replaces the pod through the normal diff
(and rolls a Deployment out), and an unchanged one (the same image id) touches nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

ANN_BUILT = "podplay.io/built-images"


def _pod_specs(obj):
    """(holder of metadata, spec) pairs with containers: a Pod itself, or a pod template."""
    spec = getattr(obj, "spec", None)
    if spec is None:
        return []
    if hasattr(spec, "containers"):
        return [(obj, spec)]
    template = getattr(spec, "template", None)
    if template is not None and hasattr(getattr(template, "spec", None), "containers"):
        return [(template, template.spec)]
    job = getattr(spec, "job_template", None)  # a CronJob's
    if job is not None:
        return _pod_specs(job)
    return []


def images_of(obj) -> list[str]:
    out = []
    for _, spec in _pod_specs(obj):
        for c in (*spec.init_containers, *spec.containers):
            if c.image and c.image not in out:
                out.append(c.image)
    return out


def _last_element(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def build_contexts(paths: Sequence[str], objects) -> dict[str, str]:
    """image → context directory, for the images the manifests use that are built here."""
    bases = []
    for p in paths:
        if p == "-":
            continue
        d = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
        bases.append(os.path.abspath(d))
    out: dict[str, str] = {}
    for loaded in objects:
        for image in images_of(loaded.obj):
            last = _last_element(image)
            if not last or image in out:
                continue
            for base in bases + [os.path.dirname(os.path.abspath(loaded.file))]:
                ctx = os.path.join(base, last)
                if any(os.path.isfile(os.path.join(ctx, n)) for n in ("Containerfile", "Dockerfile")):
                    out[image] = ctx
                    break
    return out


def annotate_built(objects, built: dict[str, str]) -> list:
    """The objects, each pod (template) that uses a built image annotated with its id."""
    out = []
    for loaded in objects:
        obj = loaded.obj
        for holder, spec in _pod_specs(obj):
            used = sorted({c.image for c in (*spec.init_containers, *spec.containers) if c.image in built})
            if not used:
                continue
            value = ",".join(f"{image}={built[image]}" for image in used)
            meta = holder.metadata
            new_holder = replace(holder, metadata=replace(meta, annotations={**meta.annotations, ANN_BUILT: value}))
            if holder is obj:
                obj = new_holder
            else:
                obj = _with_template(obj, new_holder)
        out.append(replace(loaded, obj=obj) if obj is not loaded.obj else loaded)
    return out


def _with_template(obj, template):
    spec = obj.spec
    if getattr(spec, "template", None) is not None and hasattr(spec.template, "spec"):
        return replace(obj, spec=replace(spec, template=template))
    job = spec.job_template
    return replace(obj, spec=replace(spec, job_template=_with_template(job, template)))


def build_for_manifests(store, paths: Sequence[str], manifests, log=lambda line: None):
    """Build every image the manifests name beside them (cached builds are quick), and return
    the manifests with the pods that use a built image annotated with its id."""
    from reconciler.build.builder import BuildOptions, build_image

    contexts = build_contexts(paths, manifests.objects)
    if not contexts:
        return manifests
    built = {}
    for image, context in sorted(contexts.items()):
        log(f"building {image} from {context}")
        built[image] = build_image(store, BuildOptions(context=context, tags=[image]), log).image_id
    return replace(manifests, objects=annotate_built(manifests.objects, built))
