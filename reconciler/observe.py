"""Read-only relist of the host through the drivers (kubelet's PLEG idea: trust the host, not memory).

Everything that carries a pod uid — containers, network attachments, snapshots, pod volumes —
is grouped into one ObservedPod, so that leftovers of a crash (a snapshot without a container,
an attachment without an infra) show up as pods to clean up rather than as silent leaks.
"""

from __future__ import annotations

from reconciler.drivers.base import Drivers
from reconciler.observed import (
    LABEL_GRACE,
    LABEL_OWNER,
    LABEL_SOURCE,
    ObservedContainer,
    ObservedHost,
    ObservedPod,
)


def snapshot_uid(key: str) -> str:
    """Snapshot keys are container ids, "<pod uid>.<container name>"."""
    return key.split(".", 1)[0]


def observe_host(drivers: Drivers) -> ObservedHost:
    containers = drivers.runtime.list_containers()
    attachments = {a.pod_uid: a for a in drivers.network.list_attachments()}
    snapshots = [s.key for s in drivers.snapshots.list_snapshots()]
    pod_volumes = set(drivers.volumes.list_pod_volumes())
    claims = tuple(sorted(drivers.volumes.list_claims()))

    infra: dict[str, ObservedContainer] = {}
    apps: dict[str, dict[str, ObservedContainer]] = {}
    inits: dict[str, dict[str, ObservedContainer]] = {}
    keys: dict[str, str] = {}
    for c in containers:
        keys.setdefault(c.pod_uid, c.pod)
        if c.role == "infra":
            infra[c.pod_uid] = c
        elif c.role == "init":
            inits.setdefault(c.pod_uid, {})[c.name] = c
        else:
            apps.setdefault(c.pod_uid, {})[c.name] = c

    by_uid: dict[str, list[str]] = {}
    for key in snapshots:
        by_uid.setdefault(snapshot_uid(key), []).append(key)

    uids = set(keys) | set(attachments) | set(by_uid) | pod_volumes
    pods = {}
    for uid in sorted(uids):
        labels = (infra.get(uid) or next(iter({**apps.get(uid, {}), **inits.get(uid, {})}.values()), None))
        labels = labels.labels if labels is not None else {}
        first = infra.get(uid) or next(iter(apps.get(uid, {}).values()), None)
        try:
            grace = int(labels.get(LABEL_GRACE, "30"))
        except ValueError:
            grace = 30
        pods[uid] = ObservedPod(
            uid=uid,
            key=keys.get(uid, ""),
            spec_hash=first.spec_hash if first else "",
            owner=labels.get(LABEL_OWNER, ""),
            source=labels.get(LABEL_SOURCE, ""),
            infra=infra.get(uid),
            containers=apps.get(uid, {}),
            init_containers=inits.get(uid, {}),
            network=attachments.get(uid),
            snapshots=tuple(sorted(by_uid.get(uid, ()))),
            has_volumes=uid in pod_volumes,
            grace_period=grace,
        )
    return ObservedHost(pods=pods, claims=claims)
