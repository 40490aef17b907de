"""The pods podplay runs, as the listing commands read them, and the names users give them.

Read through the runtime's and the network's list methods only (no manifests, no state store,
no image store), so that ``podplay ps`` starts fast; grouped into pods by
``reconciler.observed.group_pods``, the grouping ``observe_host`` uses.

Naming: a pod is ``NAME`` or ``NAMESPACE/NAME``; a bare name is looked up in every namespace
(or in ``-n NAMESPACE``) and must be unique. ``logs`` and ``exec`` take ``POD[/CONTAINER]`` (or
``NAMESPACE/POD/CONTAINER``, or ``-c CONTAINER``); a full container id from ``ps -q`` works too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.errors import EXIT_USAGE, InputError, NotFoundError

if TYPE_CHECKING:
    from reconciler.observed import ObservedAttachment, ObservedContainer, ObservedPod

# Container states. ContainerState is a StrEnum, so its members equal these strings: the CLI
# need not import reconciler.observed at import time (`--help` imports every CLI area
# to build its parser).
RUNNING, EXITED, CREATED, PAUSED, UNKNOWN = "running", "exited", "created", "paused", "unknown"


class UsageError(InputError):
    """The command line names something ambiguously (a container must be chosen, …)."""

    exit_code = EXIT_USAGE


# --- reading the host -------------------------------------------------------------------------------

def named_pods(containers: Iterable[ObservedContainer], attachments: Iterable[ObservedAttachment]) -> list[ObservedPod]:
    """Pod instances with a name, from the runtime's containers and the network's attachments,
    by namespace and name, newest instance first."""
    from reconciler.observed import group_pods

    pods = [p for p in group_pods(containers, attachments).values() if p.key]
    return sorted(pods, key=lambda p: (p.namespace, p.name, -started(p), p.uid))


def started(pod: ObservedPod) -> float:
    if pod.infra is not None and pod.infra.started_at:
        return pod.infra.started_at
    return max((c.started_at for c in pod.containers.values()), default=0.0)


@dataclass
class HostView:
    pods: list[ObservedPod]
    close: Callable[[], None]
    runtime: object = None


def read_host(ctx) -> HostView:
    """The named pod instances on this host, read through the runtime and network drivers only."""
    if os.environ.get("PODPLAY_DRIVER", "host") == "fake":
        from reconciler.host import open_drivers

        drivers = open_drivers(ctx.paths, "fake")
        runtime, network, close = drivers.runtime, drivers.network, drivers.close
    else:
        from reconciler.network.driver import CniNetwork
        from reconciler.runtime.driver import RuncRuntime

        runtime, network, close = RuncRuntime(ctx.paths), CniNetwork(ctx.paths), (lambda: None)
    return HostView(named_pods(runtime.list_containers(), network.list_attachments()), close, runtime)


# --- naming ---------------------------------------------------------------------------------------

def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def listing(items: Sequence[str], limit: int = 12) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def _in_namespace(pods: Sequence[ObservedPod], namespace: str | None) -> list[ObservedPod]:
    return [p for p in pods if namespace is None or p.namespace == namespace]


def find_pod_instances(pods: Sequence[ObservedPod], name: str, namespace: str | None = None) -> list[ObservedPod]:
    """Every instance of the pod ``name`` ("NAME" or "NAMESPACE/NAME"), newest first.

    NotFoundError (exit 6) lists what exists; a bare name that exists in several namespaces is
    a UsageError naming them."""
    if "/" in name:
        ns, _, bare = name.partition("/")
        if namespace is not None and ns != namespace:
            raise UsageError(f"{name!r} names namespace {ns!r} but --namespace is {namespace!r}")
        found = [p for p in pods if p.key == name]
    else:
        found = [p for p in _in_namespace(pods, namespace) if p.name == name]
        spaces = sorted({p.namespace for p in found})
        if len(spaces) > 1:
            raise UsageError(f"pod {name!r} exists in namespaces {', '.join(spaces)}: say which, as "
                             f"{spaces[0]}/{name} or with -n {spaces[0]}")
    if found:
        return found
    where = f" in namespace {namespace}" if namespace else ""
    scope = _in_namespace(pods, namespace)
    if not scope:
        raise NotFoundError(f"no pod {name!r}{where}: podplay runs no pods{where} on this host")
    names = {p.key for p in scope} | {p.name for p in scope}
    raise NotFoundError(f"no pod {name!r}{where}{did_you_mean(name, names)} "
                        f"(pods: {listing(sorted({p.key for p in scope}))})")


def current_instance(instances: Sequence[ObservedPod]) -> ObservedPod:
    """During a replacement two instances of a pod may exist for a moment: the one whose infra
    runs, newest first, is the pod."""
    running = [p for p in instances if p.infra is not None and p.infra.state == RUNNING]
    return max(running or instances, key=started)


def container_names(pod: ObservedPod) -> str:
    text = ", ".join(sorted(pod.containers)) or "none"
    if pod.init_containers:
        text += f" (init containers: {', '.join(sorted(pod.init_containers))})"
    return text


def pick_container(pod: ObservedPod, name: str | None) -> ObservedContainer:
    """The named container (app or init), or the pod's only app container (kubectl's default)."""
    if name is None:
        if len(pod.containers) == 1:
            return next(iter(pod.containers.values()))
        if not pod.containers:
            raise NotFoundError(f"pod {pod.key} has no app containers (init containers: "
                                f"{', '.join(sorted(pod.init_containers)) or 'none'})")
        raise UsageError(f"pod {pod.key} has {len(pod.containers)} containers; choose one as "
                         f"{pod.name}/CONTAINER or with -c: {container_names(pod)}")
    found = pod.containers.get(name) or pod.init_containers.get(name)
    if found is None:
        every = list(pod.containers) + list(pod.init_containers)
        raise NotFoundError(f"pod {pod.key} has no container {name!r}{did_you_mean(name, every)}; "
                            f"its containers: {container_names(pod)}")
    return found


def resolve_target(pods: Sequence[ObservedPod], target: str, container: str | None,
                   namespace: str | None) -> tuple[ObservedPod, ObservedContainer]:
    """POD, POD/CONTAINER, NAMESPACE/POD/CONTAINER, NAMESPACE/POD (when no pod is named like the
    namespace) or a container id, plus ``-c``."""
    for p in pods:
        for c in [*p.containers.values(), *p.init_containers.values()]:
            if c.id == target:
                return p, c
    parts = target.split("/")
    if len(parts) > 3 or not all(parts):
        raise UsageError(f"{target!r}: expected POD, POD/CONTAINER or NAMESPACE/POD/CONTAINER")
    if len(parts) == 3:
        pod_name, ctr = f"{parts[0]}/{parts[1]}", parts[2]
    elif len(parts) == 2:
        pod_name, ctr = parts
        bare = _in_namespace(pods, namespace)
        if not any(p.name == parts[0] for p in bare) and any(p.key == target for p in pods):
            pod_name, ctr = target, None  # NAMESPACE/POD
    else:
        pod_name, ctr = target, None
    if container is not None:
        if ctr is not None and ctr != container:
            raise UsageError(f"{target!r} names container {ctr!r} but -c says {container!r}")
        ctr = container
    pod = current_instance(find_pod_instances(pods, pod_name, namespace))
    return pod, pick_container(pod, ctr)


def select_pods(pods: Sequence[ObservedPod], names: Sequence[str], namespace: str | None) -> list[ObservedPod]:
    """The instances of the named pods (every pod in the namespace when none is named), in
    listing order."""
    if not names:
        return _in_namespace(pods, namespace)
    chosen: dict[str, ObservedPod] = {}
    for name in names:
        for p in find_pod_instances(pods, name, namespace):
            chosen[p.uid] = p
    return [p for p in pods if p.uid in chosen]
