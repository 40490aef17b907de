"""The Service (v1) subset podplay acts on: ClusterIP, headless, NodePort, LoadBalancer and
ExternalName, with session affinity, the traffic policies and the (IPv4-only) IP families.

Registered in ``model.kube.KINDS`` from there (one line), so the loader validates and builds a
Service like any other kind. Fields podplay does not act on (externalIPs, loadBalancerIP…)
are warned about once by the loader, as for every kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model.convert import json_name
from reconciler.model.kube import IntOrStr, ObjectMeta

HEADLESS = "None"  # spec.clusterIP of a headless Service
NODE_PORT_RANGE = (30000, 32767)  # the API server's default --service-node-port-range
DEFAULT_AFFINITY_TIMEOUT = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds' default (3 hours)


@dataclass(frozen=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"
    target_port: IntOrStr | None = None  # None: the same number as `port`
    node_port: int | None = None


@dataclass(frozen=True)
class ClientIPConfig:
    timeout_seconds: int | None = None  # None: DEFAULT_AFFINITY_TIMEOUT


@dataclass(frozen=True)
class SessionAffinityConfig:
    client_ip: ClientIPConfig = json_name("clientIP", default_factory=ClientIPConfig)


@dataclass(frozen=True)
class ServiceSpec:
    ports: tuple[ServicePort, ...] = ()
    selector: dict[str, str] = field(default_factory=dict)
    type: str = "ClusterIP"
    cluster_ip: str = json_name("clusterIP", default="")
    cluster_ips: tuple[str, ...] = json_name("clusterIPs", default=())
    publish_not_ready_addresses: bool = False
    session_affinity: str = "None"  # "None" | "ClientIP"
    session_affinity_config: SessionAffinityConfig = field(default_factory=SessionAffinityConfig)
    external_traffic_policy: str = ""  # "" (= Cluster) | "Cluster" | "Local"
    internal_traffic_policy: str = ""  # "" (= Cluster) | "Cluster" | "Local": one host, every endpoint is local
    external_name: str = ""  # type ExternalName: the DNS name the Service's names stand for
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str = ""  # "" (= SingleStack) | "SingleStack" | "PreferDualStack" | "RequireDualStack"

    @property
    def affinity_timeout(self) -> int:
        """Seconds a client sticks to its endpoint with sessionAffinity ClientIP (0: no affinity)."""
        if self.session_affinity != "ClientIP":
            return 0
        t = self.session_affinity_config.client_ip.timeout_seconds
        return DEFAULT_AFFINITY_TIMEOUT if t is None else t

    @property
    def address(self) -> str:
        """The clusterIP the manifest asks for: clusterIP, else the first of clusterIPs."""
        return self.cluster_ip or (self.cluster_ips[0] if self.cluster_ips else "")


@dataclass(frozen=True)
class Service:
    metadata: ObjectMeta
    spec: ServiceSpec = field(default_factory=ServiceSpec)
    api_version: str = "v1"
    kind: str = "Service"
