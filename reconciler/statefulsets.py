"""PURE  a StatefulSet's order on one host: which of its pods the host should have at this look.

`desired` has every ordinal `<name>-0 … <name>-(N-1)` with the manifest's template. With
``podManagementPolicy: OrderedReady`` (the default):

* a missing pod is created only when every lower ordinal runs and is ready, one per look;
* pods beyond N (scaled away) go one at a time, the highest first, each only when the lower
  ordinals run and are ready; their claims stay (a scale back up finds its data again);

With ``Parallel`` pods come and go at once. Either way a changed template is rolled out one pod
at a time from the highest ordinal down: a pod is replaced only when every other pod runs and is
ready on some revision; until its turn a pod keeps its old instance (held as it is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.desired import DesiredPod
from reconciler.model.kube import ObjectMeta
from reconciler.observed import ObservedPod


@dataclass(frozen=True)
class SetDecision:
    pods: tuple[DesiredPod, ...]  # the pods the host should have now (held ones included)
    pending: str = ""  # what the set still waits for ("" when it has all it should)


def hold_instance(d: DesiredPod, o: ObservedPod) -> DesiredPod:
    """`d`'s pod as the host runs it now (another revision, or an ordinal being scaled away): kept as it is."""
    name = o.key.split("/", 1)[1]
    return replace(d, key=replace(d.key, name=name), meta=ObjectMeta(name, d.meta.namespace, d.meta.labels,
                                                                    d.meta.annotations),
                   uid=o.uid, spec_hash=o.spec_hash, hold=True, ordinal=None)


def order_set(spec, pods: Sequence[DesiredPod], instances: Mapping[str, list[ObservedPod]],
              extras: Sequence[tuple[int, ObservedPod]], ready: Callable[[ObservedPod], bool]) -> SetDecision:
    """`spec` is the StatefulSetSpec; `pods` its desired pods in ordinal order; `instances` the
    host's instances by pod ref; `extras` (ordinal, instance) of its pods beyond the replica count."""
    ordered = spec.pod_management_policy != "Parallel"
    keep: list[DesiredPod] = []
    pending = ""
    all_ready = True  # every pod so far runs and is ready (on any revision)
    stale: list[tuple[DesiredPod, ObservedPod]] = []
    for d in pods:
        found = instances.get(d.ref, [])
        current = next((o for o in found if o.uid == d.uid), None)
        if not found:
            if ordered and not all_ready:
                pending = pending or f"{d.name} waits for the pods before it to be ready"
                all_ready = False
                continue
            keep.append(d)  # created now
            all_ready = False
            continue
        if current is None:
            stale.append((d, found[0]))
        else:
            keep.append(d)
        if not any(ready(o) for o in found):
            all_ready = False
    # One update at a time, the highest ordinal first, while everything else is ready.
    if stale:
        stale.sort(key=lambda x: x[0].ordinal or 0, reverse=True)
        others_ready = all(any(ready(o) for o in instances.get(d.ref, [])) for d in pods if d is not stale[0][0])
        turn, rest = (stale[0], stale[1:]) if others_ready else (None, stale)
        if turn is not None:
            keep.append(turn[0])
        keep += [hold_instance(d, o) for d, o in rest]
        pending = pending or f"{len(stale)} pod(s) to update, from the highest ordinal down"
    # Scaled away: the highest goes first, once the rest are ready; the others wait, held.
    if extras:
        by_ordinal = sorted(extras, key=lambda x: x[0], reverse=True)
        # Scaled to 0 there is no pod to hold the others by: they all go at once.
        if ordered and pods:
            going = by_ordinal[0][0] if all_ready and not stale else None
            keep += [hold_instance(pods[0], o) for n, o in by_ordinal if n != going]
            if going is None or len({n for n, _ in by_ordinal}) > 1:
                pending = pending or f"{len(by_ordinal)} pod(s) to remove, from the highest ordinal down"
    return SetDecision(tuple(keep), pending)
