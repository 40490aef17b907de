"""The Service (v1) subset podplay acts on: ClusterIP, headless, NodePort and LoadBalancer.

Registered in ``model.kube.KINDS`` from there (one line), so the loader validates and builds a
Service like any other kind. Fields podplay does not act on (sessionAffinity, externalIPs…)
are warned about once by the loader, as for every kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model.convert import json_name
from reconciler.model.kube import IntOrStr, ObjectMeta

HEADLESS = "None"  # spec.clusterIP of a headless Service
NODE_PORT_RANGE = (30000, 32767)  # the API server's default --service-node-port-range


@dataclass(frozen=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"
    target_port: IntOrStr | None = None  # None: the same number as `port`
    node_port: int | None = None


@dataclass(frozen=True)
class ServiceSpec:
    ports: tuple[ServicePort, ...] = ()
    selector: dict[str, str] = field(default_factory=dict)
    type: str = "ClusterIP"
    cluster_ip: str = json_name("clusterIP", default="")
    publish_not_ready_addresses: bool = False


@dataclass(frozen=True)
class Service:
    metadata: ObjectMeta
    spec: ServiceSpec = field(default_factory=ServiceSpec)
    api_version: str = "v1"
    kind: str = "Service"
