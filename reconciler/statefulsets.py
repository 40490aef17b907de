"""PURE  a StatefulSet's order on one host: which of its pods the host should have at this look.

`desired` has every ordinal `<name>-0 … <name>-(N-1)` with the manifest's template. With
``podManagementPolicy: OrderedReady`` (the default):

* a missing pod is created only when every lower ordinal runs and is ready, one per look;
* pods beyond N (scaled away) go one at a time, the highest first, each only when the lower
  ordinals run and are ready; their claims stay (a scale back up finds its data again);

With ``Parallel`` pods come and go at once. Either way a changed template is rolled out from the
highest ordinal down, ``maxUnavailable`` pods at a time (1 by default): a pod is replaced only
while fewer than that many of the other pods are not ready; until its turn a pod keeps its old
instance (held as it is). Ordinals below ``partition`` are not updated, and with ``updateStrategy:
OnDelete`` none is: a pod on the old revision stays until it is deleted (``podplay rm``, or it
disappears), and then comes back from the new template. ``held_old`` does the same for a
DaemonSet with OnDelete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.desired import DesiredPod
from reconciler.model.kube import ObjectMeta
from reconciler.observed import ContainerState, ObservedPod
from reconciler.rollout import scaled


@dataclass(frozen=True)
class SetDecision:
    pods: tuple[DesiredPod, ...]  # the pods the host should have now (held ones included)
    pending: str = ""  # what the set still waits for ("" when it has all it should)
    outdated: tuple[str, ...] = ()  # pods kept on an old revision by OnDelete or the partition


def outdated_note(kind: str, ref: str, outdated: Sequence[str], why: str) -> str:
    n = len(outdated)
    return (f"{kind} {ref}: {n} pod{'s' if n != 1 else ''} on an old revision ({', '.join(outdated)}), {why}")


def whole(o: ObservedPod) -> bool:
    """The instance still has its pod: its infra runs (not gone, nor lost with the run root after
    a reboot). A pod kept on an old revision that is no longer whole has disappeared: it comes
    back from the current template."""
    return o.infra is not None and o.infra.state == ContainerState.RUNNING


def held_old(pods: Sequence[DesiredPod], instances: Mapping[str, list[ObservedPod]]
             ) -> tuple[list[DesiredPod], list[str]]:
    """OnDelete: each pod that runs an old revision only is kept as it runs; a pod with no
    instance (or none whole) is created from the template. Returns the pods and the names of
    the held ones."""
    out, held = [], []
    for d in pods:
        found = sorted(instances.get(d.ref, []), key=lambda o: o.uid)
        if found and all(whole(o) for o in found) and not any(o.uid == d.uid for o in found):
            out.append(hold_instance(d, found[0]))
            held.append(d.name)
        else:
            out.append(d)
    return out, held


def hold_instance(d: DesiredPod, o: ObservedPod) -> DesiredPod:
    """`d`'s pod as the host runs it now (another revision, or an ordinal being scaled away): kept as it is."""
    name = o.key.split("/", 1)[1]
    return replace(d, key=replace(d.key, name=name), meta=ObjectMeta(name, d.meta.namespace, d.meta.labels,
                                                                    d.meta.annotations),
                   uid=o.uid, spec_hash=o.spec_hash, hold=True, ordinal=None)


def order_set(spec, pods: Sequence[DesiredPod], instances: Mapping[str, list[ObservedPod]],
              extras: Sequence[tuple[int, ObservedPod]], ready: Callable[[ObservedPod], bool],
              old: Callable[[DesiredPod, ObservedPod], DesiredPod | None] = lambda d, o: None,
              previous: Mapping[str, DesiredPod] | None = None) -> SetDecision:
    """`spec` is the StatefulSetSpec; `pods` its desired pods in ordinal order; `instances` the
    host's instances by pod ref; `extras` (ordinal, instance) of its pods beyond the replica count.
    `old(d, o)` is pod `d` as the earlier template instance `o` runs (None if that template is
    not known: the instance is then held as it is); `previous` the set's pods on its current
    revision (the one every pod ran last), by ref: a pod below the partition that is deleted
    comes back as that, as Kubernetes restores it."""
    previous = previous or {}
    ordered = spec.pod_management_policy != "Parallel"
    strategy = spec.update_strategy
    on_delete = strategy.type == "OnDelete"
    partition = strategy.rolling_update.partition
    keep: list[DesiredPod] = []
    pending = ""
    all_ready = True  # every pod so far runs and is ready (on any revision)
    stale: list[tuple[DesiredPod, ObservedPod]] = []
    outdated: list[str] = []
    unready: set[str] = set()
    for d in pods:
        found = sorted(instances.get(d.ref, []), key=lambda o: o.uid)
        current = next((o for o in found if o.uid == d.uid), None)
        below = not on_delete and (d.ordinal or 0) < partition
        restored = previous.get(d.ref) if below and previous.get(d.ref, d).uid != d.uid else None
        if not found:
            unready.add(d.ref)
            if ordered and not all_ready:
                pending = pending or f"{d.name} waits for the pods before it to be ready"
                all_ready = False
                continue
            keep.append(restored or d)  # created now
            if restored is not None:
                outdated.append(d.name)
            all_ready = False
            continue
        if current is not None:
            keep.append(d)
        elif (on_delete or below) and all(whole(o) for o in found):
            keep.append(old(d, found[0]) or hold_instance(d, found[0]))  # stays on its revision
            outdated.append(d.name)
        elif restored is not None:  # below the partition and gone: back on the set's current revision
            keep.append(restored)
            outdated.append(d.name)
        else:
            stale.append((d, found[0]))
        if not any(ready(o) for o in found):
            all_ready = False
            unready.add(d.ref)
    # The highest ordinal first, while fewer than maxUnavailable of the other pods are not ready.
    if stale:
        stale.sort(key=lambda x: x[0].ordinal or 0, reverse=True)
        budget = max(scaled(strategy.rolling_update.max_unavailable, spec.replicas, round_up=False), 1)
        down = set(unready)
        turns = 0
        for d, _ in stale:
            if len(down - {d.ref}) >= budget:
                break
            down.add(d.ref)
            turns += 1
        keep += [d for d, _ in stale[:turns]]
        keep += [old(d, o) or hold_instance(d, o) if whole(o) else hold_instance(d, o) for d, o in stale[turns:]]
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
    return SetDecision(tuple(keep), pending, tuple(outdated))


# --- persistentVolumeClaimRetentionPolicy ------------------------------------------------------------

@dataclass(frozen=True)
class ClaimOwner:
    """What decides the fate of a StatefulSet's claims: its claim templates and retention policy,
    and whether the set is still declared (``replicas`` pods wanted) or gone (deleted, or `down`)."""

    ref: str  # "<namespace>/<name>"
    templates: tuple[str, ...]
    when_deleted: str = "Retain"
    when_scaled: str = "Retain"
    replicas: int | None = None  # None: the set is deleted

    def to_json(self) -> dict:
        return {"templates": list(self.templates), "when_deleted": self.when_deleted,
                "when_scaled": self.when_scaled}

    @classmethod
    def from_record(cls, ref: str, rec: dict) -> ClaimOwner:
        claims = rec.get("claims") or {}
        return cls(ref, tuple(claims.get("templates", ())), claims.get("when_deleted", "Retain"),
                   claims.get("when_scaled", "Retain"))


def claim_ordinal(claim: str, template: str, set_name: str) -> int | None:
    """The ordinal of claim `<template>-<set>-<i>`, or None if it is not one of the set's."""
    head = f"{template}-{set_name}-"
    rest = claim[len(head):] if claim.startswith(head) else ""
    return int(rest) if rest.isdigit() and str(int(rest)) == rest else None


def claims_to_delete(owner: ClaimOwner, claims: Iterable[str], gone: Callable[[str], bool]) -> list[str]:
    """The claims (refs) the retention policy removes now: with whenScaled Delete those of the
    ordinals beyond the replica count, with whenDeleted Delete (the set is gone) all of them — each
    once its pod has no instance left after this tick (`gone(pod ref)`), as Kubernetes removes a
    claim only after the pod that uses it."""
    if owner.replicas is None:
        first = 0 if owner.when_deleted == "Delete" else None
    else:
        first = owner.replicas if owner.when_scaled == "Delete" else None
    if first is None:
        return []
    ns, name = owner.ref.split("/", 1)
    out = []
    for ref in claims:
        claim_ns, _, claim = ref.partition("/")
        if claim_ns != ns:
            continue
        for t in owner.templates:
            i = claim_ordinal(claim, t, name)
            if i is not None and i >= first and gone(f"{ns}/{name}-{i}"):
                out.append(ref)
                break
    return sorted(out)
