"""The checks of a Service that its schema cannot say (the API server's validation, and what
podplay cannot serve on one host)."""

from __future__ import annotations

import ipaddress

from reconciler.manifests.checker import Checker
from reconciler.manifests.fields import check_meta
from reconciler.model.service import HEADLESS, NODE_PORT_RANGE, Service

SERVED_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


def check_service(chk: Checker, svc: Service) -> None:
    check_meta(chk, svc.metadata, "Service")
    spec = svc.spec
    if len(svc.metadata.name) > 63:
        chk.error(("metadata", "name"), "a Service name is a DNS label: at most 63 characters")
    if spec.type not in SERVED_TYPES:
        chk.error(("spec", "type"), f"type {spec.type!r} is not served by podplay (use one of "
                  f"{', '.join(SERVED_TYPES)})")
    if spec.cluster_ip and spec.cluster_ip != HEADLESS:
        try:
            ipaddress.IPv4Address(spec.cluster_ip)
        except ValueError:
            chk.error(("spec", "clusterIP"), f"{spec.cluster_ip!r} is not an IPv4 address (or \"None\" for "
                      "a headless Service)")
    if spec.cluster_ip == HEADLESS and spec.type != "ClusterIP":
        chk.error(("spec", "clusterIP"), f"a headless Service (clusterIP: None) cannot be of type {spec.type}")
    if not spec.ports and spec.cluster_ip != HEADLESS:
        chk.error(("spec", "ports"), "a Service needs at least one port (or clusterIP: None)")
    names: set[str] = set()
    seen: set[tuple[str, int]] = set()
    lo, hi = NODE_PORT_RANGE
    for i, p in enumerate(spec.ports):
        at = ("spec", "ports", i)
        if len(spec.ports) > 1 and not p.name:
            chk.error(at + ("name",), "required when a Service has more than one port")
        if p.name in names and p.name:
            chk.error(at + ("name",), f"port name {p.name!r} is used twice")
        names.add(p.name)
        if p.protocol not in ("TCP", "UDP"):
            chk.error(at + ("protocol",), f"protocol {p.protocol!r} is not served by podplay (TCP or UDP)")
        if (p.protocol, p.port) in seen:
            chk.error(at + ("port",), f"{p.protocol} port {p.port} is declared twice")
        seen.add((p.protocol, p.port))
        if p.node_port is not None:
            if spec.type not in ("NodePort", "LoadBalancer"):
                chk.error(at + ("nodePort",), f"only a NodePort or LoadBalancer Service has a nodePort, not a "
                          f"{spec.type}")
            elif not lo <= p.node_port <= hi:
                chk.error(at + ("nodePort",), f"{p.node_port} is outside the nodePort range {lo}-{hi}")
        if isinstance(p.target_port, int) and not 1 <= p.target_port <= 65535:
            chk.error(at + ("targetPort",), f"{p.target_port} is not a port number (1-65535)")
        if isinstance(p.target_port, str) and not p.target_port.isdigit() and len(p.target_port) > 15:
            chk.error(at + ("targetPort",), "a named port has at most 15 characters")
