"""Read-only relist of the host through the drivers (kubelet's PLEG idea: trust the host, not memory).

Everything that carries a pod uid — containers, network attachments, snapshots, pod volumes —
is grouped into one ObservedPod, so that leftovers of a crash (a snapshot without a container,
an attachment without an infra) show up as pods to clean up rather than as silent leaks.
"""

from __future__ import annotations

from reconciler.drivers.base import Drivers
from reconciler.observed import ObservedHost, group_pods, lost_snapshots, snapshot_uid

__all__ = ["observe_host", "snapshot_uid"]


def observe_host(drivers: Drivers) -> ObservedHost:
    containers = drivers.runtime.list_containers()
    snapshots = drivers.snapshots.list_snapshots()
    pods = group_pods(containers, drivers.network.list_attachments(), [s.key for s in snapshots],
                      drivers.volumes.list_pod_volumes(), lost=lost_snapshots(containers, snapshots))
    services, service_hosts, elsewhere = {}, "", ()
    if drivers.services is not None:
        services, service_hosts = drivers.services.observe()
        elsewhere = tuple(drivers.services.addresses_elsewhere())
    return ObservedHost(pods=pods, claims=tuple(sorted(drivers.volumes.list_claims())), services=services,
                        service_hosts=service_hosts, cluster_ips_elsewhere=elsewhere)
