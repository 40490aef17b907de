"""PURE  the plans of `podplay stop`, `start` and `rm`: the observed host (and, for start, the
desired pods) in, a Plan out, or an InputError that refuses and touches nothing.

These are planners beside ``make_plan``: the command line resolves the names the user gave into
pod instances, runs a planner under the apply lock on the host as it is then
(``reconcile.apply_request``) and renders what happened. Pods that need nothing are not
transactions; they come back as notes for the user.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.desired import DesiredPod, DesiredState
from reconciler.diff import Action, Change, Reason
from reconciler.errors import EXIT_INVALID, InputError, NotFoundError
from reconciler.model.kube import ObjectKey
from reconciler.observed import ContainerState, ObservedHost, ObservedPod
from reconciler.plan import Plan, PlannedStep, Txn, TxnKind, make_plan, stop_step

RUNNING, PAUSED, CREATED = ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.CREATED


class RefusedError(InputError):
    """The request is valid but would need a flag the user did not give (rm of a running pod)."""

    exit_code = EXIT_INVALID


@dataclass(frozen=True)
class PodRequest:
    plan: Plan
    notes: tuple[str, ...] = ()  # pods that needed nothing ("web is not running"), for the user


def _by_key(observed: ObservedHost, uids: Iterable[str]) -> list[ObservedPod]:
    return sorted((observed.pods[u] for u in dict.fromkeys(uids) if u in observed.pods),
                  key=lambda p: (p.key, p.uid))


def _all_containers(pod: ObservedPod):
    return sorted([*pod.containers.values(), *pod.init_containers.values()], key=lambda c: c.name)


def plan_stop(observed: ObservedHost, uids: Iterable[str], *, timeout: int | None = None) -> PodRequest:
    """Stop the containers of each pod instance that are running (or paused, or created: runc
    would start those later); they stay, exited, as does the pod's infra with its IP and ports.
    ``timeout``: seconds before SIGKILL, instead of the pod's terminationGracePeriodSeconds."""
    txns: list[Txn] = []
    notes: list[str] = []
    for pod in _by_key(observed, uids):
        running = [c for c in _all_containers(pod) if c.state in (RUNNING, PAUSED, CREATED)]
        step = stop_step(pod.key, pod.uid, running, pod.grace_period if timeout is None else timeout,
                         pod.network.status.ip if pod.network is not None else "")
        if step is None:
            notes.append(f"{pod.key} is not running")
            continue
        n = len(txns) + 1
        txns.append(Txn(f"t{n}", TxnKind.STOP, pod.key, pod.uid, (PlannedStep(f"s{n}", step),)))
    return PodRequest(Plan(txns=tuple(txns)), tuple(notes))


def plan_rm(observed: ObservedHost, uids: Iterable[str], *, force: bool = False,
            timeout: int | None = None) -> PodRequest:
    """Remove each pod instance entirely (a DELETE of make_plan: containers, infra, network,
    snapshots, pod volumes; claims stay). A pod with running containers is refused without
    ``force``; with it they are stopped first, ``timeout`` seconds before SIGKILL."""
    pods = _by_key(observed, uids)
    running = [p for p in pods if any(c.state in (RUNNING, PAUSED) for c in _all_containers(p))]
    if running and not force:
        one = len(running) == 1
        raise RefusedError(f"{', '.join(sorted({p.key for p in running}))} {'is' if one else 'are'} running: "
                           f"`podplay stop` {'it' if one else 'them'} first, or remove with -f")
    if timeout is not None:
        # The user's timeout stands in for the grace period the teardown would wait.
        observed = replace(observed, pods={**observed.pods, **{p.uid: replace(p, grace_period=timeout)
                                                              for p in pods}})
    changes = [Change(ObjectKey("Pod", p.namespace, p.name), Action.DELETE, Reason.REQUESTED, before=p.uid)
               for p in pods]
    return PodRequest(make_plan(changes, DesiredState(), observed))


def needs_start(pod: ObservedPod) -> bool:
    """Some app container is not running, or the pod's infra (its namespaces) is gone."""
    if pod.infra is None or pod.infra.state != RUNNING:
        return True
    return not pod.containers or any(c.state != RUNNING for c in pod.containers.values())


def _stored_images_only(pod: DesiredPod) -> DesiredPod:
    """`start` runs the image the pod was made from, as stored here: it never asks a registry."""
    def local(containers):
        return tuple(replace(c, pull_policy="IfNotPresent") if c.pull_policy == "Always" else c for c in containers)

    return replace(pod, containers=local(pod.containers), init_containers=local(pod.init_containers))


def plan_start(observed: ObservedHost, wanted: Sequence[ObservedPod],
               desired: Mapping[str, DesiredPod]) -> PodRequest:
    """Start again the containers of ``wanted`` pod instances (as named before the lock) that
    are not running, from their ``desired`` pods (by uid, rebuilt from their manifests): a START
    of those containers, or a REPLACE of the same instance when its infra is gone. A wanted
    instance that disappeared meanwhile is NotFoundError."""
    changes: list[Change] = []
    pods: dict[str, DesiredPod] = {}
    notes: list[str] = []
    for inst in wanted:
        now = observed.pods.get(inst.uid)
        if now is None:
            raise NotFoundError(f"pod {inst.key} was removed meanwhile")
        if inst.uid not in desired or not needs_start(now):
            notes.append(f"{inst.key} is already running")
            continue
        d = _stored_images_only(desired[inst.uid])
        pods[d.ref] = d
        key = ObjectKey("Pod", d.namespace, d.name)
        if now.infra is None or now.infra.state != RUNNING:
            changes.append(Change(key, Action.REPLACE, Reason.INCOMPLETE, before=now.uid, after=now.uid,
                                  detail="infra container is gone"))
        else:
            names = tuple(c.name for c in d.containers
                          if c.name not in now.containers or now.containers[c.name].state != RUNNING)
            changes.append(Change(key, Action.START, Reason.REQUESTED, before=now.uid, after=now.uid,
                                  containers=names, detail="podplay start"))
    return PodRequest(make_plan(changes, DesiredState(pods=pods), observed), tuple(notes))
