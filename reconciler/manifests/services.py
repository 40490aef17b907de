"""The checks of a Service that its schema cannot say (the API server's validation, and what
podplay cannot serve on one host)."""

from __future__ import annotations

import ipaddress

from reconciler.manifests.checker import Checker
from reconciler.manifests.fields import DNS1123_SUBDOMAIN, check_meta
from reconciler.model.service import HEADLESS, NODE_PORT_RANGE, Service

SERVED_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
IPV4_ONLY = "podplay's pod networks and Service range are IPv4 only"


def check_service(chk: Checker, svc: Service) -> None:
    check_meta(chk, svc.metadata, "Service")
    spec = svc.spec
    if len(svc.metadata.name) > 63:
        chk.error(("metadata", "name"), "a Service name is a DNS label: at most 63 characters")
    if spec.type not in SERVED_TYPES:
        chk.error(("spec", "type"), f"type {spec.type!r} is not served by podplay (use one of "
                  f"{', '.join(SERVED_TYPES)})")
    if spec.cluster_ip and spec.cluster_ip != HEADLESS:
        _check_address(chk, ("spec", "clusterIP"), spec.cluster_ip)
    for i, ip in enumerate(spec.cluster_ips):
        if i == 0 and spec.cluster_ip and ip != spec.cluster_ip:
            chk.error(("spec", "clusterIPs", 0), f"{ip!r} must be the same as clusterIP ({spec.cluster_ip!r})")
        elif i == 0 and ip == HEADLESS:
            continue
        elif not (i and spec.ip_family_policy == "PreferDualStack" and ":" in ip):  # the IPv6 one is not served
            _check_address(chk, ("spec", "clusterIPs", i), ip)
    _check_families(chk, svc)
    if spec.type == "ExternalName":
        _check_external_name(chk, svc)
        return
    if spec.external_name:
        chk.error(("spec", "externalName"), f"only a Service of type ExternalName has an externalName, not a "
                  f"{spec.type}")
    if spec.session_affinity not in ("None", "ClientIP"):
        chk.error(("spec", "sessionAffinity"), f"{spec.session_affinity!r} is not a session affinity (None or "
                  "ClientIP)")
    t = spec.session_affinity_config.client_ip.timeout_seconds
    if t is not None and spec.session_affinity != "ClientIP":
        chk.error(("spec", "sessionAffinityConfig"), "only with sessionAffinity: ClientIP (leave it out, or set "
                  "sessionAffinity: ClientIP)")
    elif t is not None and not 0 < t <= 86400:
        chk.error(("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"),
                  f"{t} is not between 1 and 86400 seconds")
    for name in ("externalTrafficPolicy", "internalTrafficPolicy"):
        value = spec.external_traffic_policy if name.startswith("ext") else spec.internal_traffic_policy
        if value and value not in ("Cluster", "Local"):
            chk.error(("spec", name), f"{value!r} is not a traffic policy (Cluster or Local)")
    if spec.external_traffic_policy and spec.type not in ("NodePort", "LoadBalancer"):
        chk.error(("spec", "externalTrafficPolicy"), f"only a NodePort or LoadBalancer Service has an external "
                  f"traffic policy, not a {spec.type}")
    if spec.address == HEADLESS and spec.type != "ClusterIP":
        chk.error(("spec", "clusterIP"), f"a headless Service (clusterIP: None) cannot be of type {spec.type}")
    if not spec.ports and spec.address != HEADLESS:
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


def _check_address(chk: Checker, path, ip: str) -> None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        chk.error(path, f"{ip!r} is not an IPv4 address (or \"None\" for a headless Service)")
        return
    if addr.version != 4:
        chk.error(path, f"{ip} is an IPv6 address: {IPV4_ONLY}")


def _check_families(chk: Checker, svc: Service) -> None:
    """IPv4 is what podplay serves: a Service that needs IPv6 is refused, one that would take
    dual-stack if the cluster had it gets IPv4 and a warning."""
    spec = svc.spec
    policy = spec.ip_family_policy
    if policy and policy not in FAMILY_POLICIES:
        chk.error(("spec", "ipFamilyPolicy"), f"{policy!r} is not an IP family policy ({', '.join(FAMILY_POLICIES)})")
        return
    for i, fam in enumerate(spec.ip_families):
        if fam not in ("IPv4", "IPv6"):
            chk.error(("spec", "ipFamilies", i), f"{fam!r} is not an IP family (IPv4 or IPv6)")
            return
    if len(set(spec.ip_families)) != len(spec.ip_families):
        chk.error(("spec", "ipFamilies"), "an IP family is listed twice")
        return
    if len(spec.ip_families) > 2:
        chk.error(("spec", "ipFamilies"), "at most two IP families (IPv4 and IPv6)")
        return
    if policy == "RequireDualStack":
        chk.error(("spec", "ipFamilyPolicy"), f"RequireDualStack needs IPv4 and IPv6 addresses: {IPV4_ONLY} "
                  "(use SingleStack, or PreferDualStack to get IPv4 here and both on a dual-stack cluster)")
        return
    if len(spec.ip_families) == 2 and policy != "PreferDualStack":
        chk.error(("spec", "ipFamilies"), f"two IP families need ipFamilyPolicy PreferDualStack or "
                  f"RequireDualStack, not {policy or 'SingleStack (the default)'}")
        return
    if policy == "PreferDualStack":
        chk.warn(("spec", "ipFamilyPolicy"), f"PreferDualStack: served as IPv4 only ({IPV4_ONLY})")
        return
    if spec.ip_families == ("IPv6",):
        chk.error(("spec", "ipFamilies", 0), f"an IPv6 single-stack Service cannot be served: {IPV4_ONLY} "
                  "(use [IPv4], or leave ipFamilies out)")


def _check_external_name(chk: Checker, svc: Service) -> None:
    spec = svc.spec
    name = spec.external_name.rstrip(".")
    if not name:
        chk.error(("spec", "externalName"), "an ExternalName Service needs the DNS name it stands for")
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name.lower()):
        chk.error(("spec", "externalName"), f"{spec.external_name!r} is not a DNS name (lowercase letters, "
                  "digits, '-' and '.')")
    if spec.cluster_ip or spec.cluster_ips:
        chk.error(("spec", "clusterIP"), "an ExternalName Service has no clusterIP (it is a name for another name)")
    if spec.selector:
        chk.warn(("spec", "selector"), "an ExternalName Service has no endpoints: its selector is not used")
    for i, p in enumerate(spec.ports):
        if p.node_port is not None:
            chk.error(("spec", "ports", i, "nodePort"), "an ExternalName Service has no nodePort")
