"""PURE  the text of a pod's /etc/hosts, /etc/resolv.conf and /etc/hostname.

Every container of a pod bind-mounts the same three files (under ``HostPaths.pods_run/<uid>/``),
as the kubelet does, so the driver renders them once per pod and rewrites them in place once
the pod's IP is known.

* hosts: the kubelet's managed file — localhost lines, the pod IP with the hostname, the pod
  name and every container name of the pod (they share the network namespace, so a name of
  the pod means the pod), then hostAliases. With hostNetwork: the host's own /etc/hosts plus
  hostAliases, as the kubelet does.
* resolv.conf: there is no cluster DNS on a single host, so ClusterFirst falls back to the
  host's resolver configuration (the kubelet does the same without a cluster DNS), dnsConfig
  merged in, dnsPolicy None uses dnsConfig alone. Loopback nameservers (systemd-resolved's
  127.0.0.53, dnsmasq on 127.0.0.1) cannot be reached from a pod's own network namespace, so
  they are dropped there and, if none is left, public resolvers are used — podman's fallback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.desired import DesiredPod


# Kubernetes' limits (pkg/apis/core/validation): more would be silently ignored by the resolver.
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")

_LOCALHOST = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""

# Where a pod's own names point before (or without) a pod IP: any 127/8 address is the pod's
# loopback, shared by all its containers. Debian's convention for the host name.
NO_IP_ADDRESS = "127.0.1.1"


CLUSTER_DOMAIN = "cluster.local"


def pod_names(pod: DesiredPod) -> list[str]:
    # With a subdomain (a StatefulSet's serviceName) the kubelet puts the pod's FQDN first.
    fqdn = [f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.{CLUSTER_DOMAIN}"] if pod.subdomain else []
    names = fqdn + [pod.hostname, pod.name] + [c.name for c in pod.init_containers + pod.containers]
    return list(dict.fromkeys(n for n in names if n))


def _aliases(pod: DesiredPod) -> str:
    lines = [f"{a.ip}\t{' '.join(a.hostnames)}" for a in pod.spec.host_aliases if a.hostnames]
    return ("\n# Entries added by HostAliases.\n" + "\n".join(lines) + "\n") if lines else ""


def render_hosts(pod: DesiredPod, pod_ip: str = "", host_hosts: str = "") -> str:
    if pod.spec.host_network:
        text = host_hosts if host_hosts.endswith("\n") or not host_hosts else host_hosts + "\n"
        return text + _aliases(pod)
    out = "# Kubernetes-managed hosts file (podplay).\n" + _LOCALHOST
    out += f"{pod_ip or NO_IP_ADDRESS}\t{' '.join(pod_names(pod))}\n"
    return out + _aliases(pod)


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> ResolvConf:
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        key, *values = line.split()
        if key == "nameserver" and values:
            nameservers.append(values[0])
        elif key in ("search", "domain"):
            searches = list(values)  # the last search/domain line wins, as in glibc
        elif key == "options":
            options += values
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _merge_options(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    merged: dict[str, str] = {}
    for opt in list(base) + list(extra):
        merged[opt.split(":", 1)[0]] = opt
    return list(merged.values())


def _cluster_search(namespace: str) -> tuple[str, ...]:
    return (f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local")


def resolv_conf_for(pod: DesiredPod, host: ResolvConf) -> ResolvConf:
    spec = pod.spec
    cfg = spec.dns_config
    extra_ns = list(cfg.nameservers) if cfg else []
    extra_search = list(cfg.searches) if cfg else []
    extra_opts = [o.name if o.value is None else f"{o.name}:{o.value}" for o in (cfg.options if cfg else ())]
    if spec.dns_policy == "None":
        nameservers, searches, options = extra_ns, extra_search, extra_opts
    else:
        nameservers = list(host.nameservers)
        if not spec.host_network:
            nameservers = [n for n in nameservers if not _is_loopback(n)]
            if not nameservers and not extra_ns:
                nameservers = list(FALLBACK_NAMESERVERS)
        nameservers += extra_ns
        searches = list(host.searches) + extra_search
        options = _merge_options(host.options, extra_opts)
        if spec.dns_policy in ("ClusterFirst", "ClusterFirstWithHostNet", "") and not spec.host_network:
            # The kubelet's search path and ndots for a cluster's names: `svc`, `svc.ns`,
            # `svc.ns.svc` all resolve (from the Services' entries in /etc/hosts).
            searches = list(_cluster_search(pod.namespace)) + searches
            # As the kubelet's ClusterFirst: ndots:5, not the host's options, then dnsConfig's.
            options = _merge_options(["ndots:5"], extra_opts)
    nameservers = list(dict.fromkeys(nameservers))[:MAX_NAMESERVERS]
    searches = list(dict.fromkeys(searches))[:MAX_SEARCHES]
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def render_resolv_conf(conf: ResolvConf) -> str:
    lines = []
    if conf.searches:
        lines.append("search " + " ".join(conf.searches))
    lines += [f"nameserver {n}" for n in conf.nameservers]
    if conf.options:
        lines.append("options " + " ".join(conf.options))
    return "\n".join(lines) + "\n" if lines else ""


def render_hostname(hostname: str) -> str:
    return hostname + "\n"
