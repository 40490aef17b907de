"""PURE  Services: addresses, endpoints, and what a tick must change to serve them.

A Service is served by rules in podplay-owned iptables chains (``reconciler.network.services``)
and by names in every pod's /etc/hosts. What those rules and names should be is decided
here, from one View: the desired Services, the pods that match their selectors and are ready
(PodHealth), and what the host serves now — each Service chain carries a hash of the entry it
was written from, so the host itself says what it serves (relist, don't trust memory).

Addresses are kept: a ClusterIP and the nodePorts, once allocated, are recorded in the state
store and reused by every later pass (and after a reboot). A fresh allocation is the first
free address probed from a hash of the Service's name, so that a crash between installing
the rules and recording them allocates the same address again. The Service range itself is
one per storage root (``service_range``), so that two roots on one host never hand out the
same ClusterIP.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from reconciler import sha
from reconciler.desired import DesiredPod, DesiredService, DesiredState
from reconciler.errors import Diagnostic, Severity
from reconciler.model.kube import ObjectKey
from reconciler.model.service import HEADLESS, NODE_PORT_RANGE
from reconciler.observed import ContainerState, ObservedHost
from reconciler.probes import PodHealth

# The range of every root's Service range, and the size of one (4093 Services). Pod subnets
# come from 10.129.0.0/16, the host tests' from 10.222-223.x.
SERVICE_RANGE_POOL = "10.64.0.0/11"  # 10.64.0.0 - 10.95.255.255: 512 ranges
SERVICE_RANGE_PREFIX = 20
LEGACY_SERVICE_CIDR = "10.43.0.0/16"  # the one range of podplay before ranges per root (k3s's default)
CLUSTER_DOMAIN = "cluster.local"
PUBLISHED_TYPES = ("NodePort", "LoadBalancer")


# --- what the host serves ------------------------------------------------------------------------

@dataclass(frozen=True)
class ServicePortEntry:
    name: str
    protocol: str  # "tcp" | "udp"
    port: int
    node_port: int = 0  # 0: not published on the host


@dataclass(frozen=True)
class Endpoint:
    uid: str  # pod instance
    pod: str  # "<namespace>/<name>"
    ip: str  # "" while the pod is being created in this tick: resolved when the rules are written
    targets: tuple[int, ...] = ()  # the target port of each Service port on this pod; 0: the pod has none


@dataclass(frozen=True)
class ServiceEntry:
    ref: str
    source: str
    type: str
    cluster_ip: str  # "" for a headless Service
    ports: tuple[ServicePortEntry, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    selected: int = 0  # pods the selector matches, ready or not (the "total" of `podplay services`)
    affinity: int = 0  # sessionAffinity ClientIP: seconds a client sticks to its endpoint (0: none)
    local: bool = False  # externalTrafficPolicy Local: nodePort traffic keeps its source address
    external_name: str = ""  # type ExternalName: the name it stands for…
    addresses: tuple[str, ...] = ()  # …and that name's IPv4 addresses when the tick looked it up

    @property
    def namespace(self) -> str:
        return self.ref.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.ref.split("/", 1)[1]

    def to_json(self) -> dict:
        out = {"ref": self.ref, "source": self.source, "type": self.type, "cluster_ip": self.cluster_ip,
               "ports": [[p.name, p.protocol, p.port, p.node_port] for p in self.ports],
               "endpoints": [[e.uid, e.pod, e.ip, list(e.targets)] for e in self.endpoints],
               "selected": self.selected}
        # Only when set: the entry hash of a Service without them stays what it was.
        for key, value in (("affinity", self.affinity), ("local", self.local),
                           ("external_name", self.external_name), ("addresses", list(self.addresses))):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, d: dict) -> ServiceEntry:
        return cls(d["ref"], d.get("source", ""), d["type"], d["cluster_ip"],
                   tuple(ServicePortEntry(*p) for p in d["ports"]),
                   tuple(Endpoint(u, p, ip, tuple(t)) for u, p, ip, t in d["endpoints"]), d.get("selected", 0),
                   d.get("affinity", 0), d.get("local", False), d.get("external_name", ""),
                   tuple(d.get("addresses", ())))

    def addresses_for_names(self) -> list[str]:
        """What the Service's names stand for in a pod: its ClusterIP, a headless Service's ready
        endpoints, an ExternalName's addresses."""
        if self.cluster_ip:
            return [self.cluster_ip]
        if self.type == "ExternalName":
            return list(self.addresses)
        return sorted({x.ip for x in self.endpoints if x.ip})


def entry_hash(entry: ServiceEntry) -> str:
    """What a Service chain is labelled with: every field the rules depend on (not the source)."""
    data = entry.to_json()
    data.pop("source")
    data["endpoints"] = sorted(data["endpoints"])
    return sha.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServiceSync:
    """The whole set of Services the host should serve after a tick, and the pods whose
    /etc/hosts carry their names (uid, namespace). Written wholesale, so writing it twice, or
    after a crash half-way, is harmless."""

    entries: tuple[ServiceEntry, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()

    def dumps(self) -> str:
        return json.dumps({"entries": [e.to_json() for e in self.entries], "hosts": [list(h) for h in self.hosts]},
                          sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> ServiceSync:
        d = json.loads(text)
        return cls(tuple(ServiceEntry.from_json(e) for e in d["entries"]), tuple(tuple(h) for h in d["hosts"]))


def hosts_hash(entries: Iterable[ServiceEntry], uids: Iterable[str]) -> str:
    """What the pods' /etc/hosts sections depend on: the names and addresses, and which pods."""
    names = []
    for e in entries:
        item = [e.ref, e.cluster_ip, sorted(x.ip for x in e.endpoints)]
        if e.addresses:  # only when set: the hash of the names of other Services stays what it was
            item.append(list(e.addresses))
        names.append(item)
    names.sort()
    return sha.sha256(json.dumps([names, sorted(set(uids))]).encode()).hexdigest()[:16]


def names_of(ref: str) -> list[str]:
    ns, name = ref.split("/", 1)
    return [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"]


def render_hosts_section(entries: Iterable[ServiceEntry], namespace: str) -> str:
    """The lines a pod in `namespace` gets: every Service's names, the short name only for its
    own namespace (as the cluster DNS answers with the pod's search path). A headless Service
    names each ready endpoint's IP."""
    lines = []
    for e in sorted(entries, key=lambda e: e.ref):
        names = ([e.name] if e.namespace == namespace else []) + names_of(e.ref)
        lines += [f"{a}\t{' '.join(names)}" for a in e.addresses_for_names()]
    return "".join(line + "\n" for line in lines)


def search_path(namespace: str) -> tuple[str, ...]:
    """The kubelet's ClusterFirst search path for a pod in `namespace`."""
    return (f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN)


def _env_name(text: str) -> str:
    return text.upper().replace("-", "_")


def service_env(entries: Iterable[ServiceEntry], namespace: str) -> list[tuple[str, str]]:
    """The kubelet's service links (a pod's enableServiceLinks, true by default) for the Services
    of the pod's namespace that have a ClusterIP (not headless, not ExternalName), each as

        FOO_SERVICE_HOST=10.43.0.7  FOO_SERVICE_PORT=80  FOO_SERVICE_PORT_<PORTNAME>=80
        FOO_PORT=tcp://10.43.0.7:80 (the first port), and for each port the Docker-link style
        FOO_PORT_80_TCP=tcp://10.43.0.7:80 _PROTO=tcp _PORT=80 _ADDR=10.43.0.7"""
    out = []
    for e in sorted(entries, key=lambda e: e.ref):
        if e.namespace != namespace or not e.cluster_ip or not e.ports:
            continue
        base = _env_name(e.name)
        out += [(f"{base}_SERVICE_HOST", e.cluster_ip), (f"{base}_SERVICE_PORT", str(e.ports[0].port))]
        for p in e.ports:
            if p.name:
                out.append((f"{base}_SERVICE_PORT_{_env_name(p.name)}", str(p.port)))
        for i, p in enumerate(e.ports):
            url = f"{p.protocol.lower()}://{e.cluster_ip}:{p.port}"
            if i == 0:
                out.append((f"{base}_PORT", url))
            link = f"{base}_PORT_{p.port}_{p.protocol.upper()}"
            out += [(link, url), (f"{link}_PROTO", p.protocol.lower()), (f"{link}_PORT", str(p.port)),
                    (f"{link}_ADDR", e.cluster_ip)]
    return out


def status_rows(entries: Iterable[ServiceEntry], serving: Mapping[str, str], host_addresses: Iterable[str]
                ) -> list[dict]:
    """`podplay services`: one row per Service the host was last told to serve. `serving` is what
    the host serves (ref → entry hash): a Service whose rules are gone or out of date says so."""
    rows = []
    for e in sorted(entries, key=lambda e: e.ref):
        ports = []
        for p in e.ports:
            text = f"{p.port}:{p.node_port}/{p.protocol.upper()}" if p.node_port else f"{p.port}/{p.protocol.upper()}"
            ports.append({"name": p.name, "protocol": p.protocol.upper(), "port": p.port,
                          "nodePort": p.node_port or None, "text": text})
        ready = len(e.endpoints)
        external = list(host_addresses) if e.type == "LoadBalancer" else [e.external_name] if e.external_name else []
        rows.append({
            "namespace": e.namespace, "name": e.name, "type": e.type,
            "clusterIP": e.cluster_ip or ("" if e.type == "ExternalName" else "None"),
            "externalIPs": external, "addresses": list(e.addresses),
            "ports": ports, "endpoints": [{"pod": x.pod, "ip": x.ip} for x in e.endpoints],
            "ready": ready, "total": max(e.selected, ready), "source": e.source,
            "serving": e.ref in serving and (serving[e.ref] == entry_hash(e) or any(not x.ip for x in e.endpoints)),
        })
    return rows


# --- addresses ------------------------------------------------------------------------------------

def service_range(tag: str, taken: Iterable[str] = (), legacy: bool = False) -> str:
    """The Service range of a storage root that has none recorded yet: a /20 of
    SERVICE_RANGE_POOL picked from a hash of the root's tag (the name of its iptables chains),
    skipping those that overlap `taken` (networks the host routes, ClusterIPs other roots serve).
    `legacy`: the root recorded ClusterIPs before ranges were per root — it keeps the old range,
    so its Services keep their addresses."""
    if legacy:
        return LEGACY_SERVICE_CIDR
    pool = ipaddress.ip_network(SERVICE_RANGE_POOL)
    blocks = list(pool.subnets(new_prefix=SERVICE_RANGE_PREFIX))
    busy = []
    for t in taken:
        try:
            busy.append(ipaddress.ip_network(t, strict=False))
        except ValueError:
            continue
    first = int(sha.sha256(tag.encode()).hexdigest()[:8], 16) % len(blocks)
    for i in range(len(blocks)):
        block = blocks[(first + i) % len(blocks)]
        if not any(block.overlaps(b) for b in busy if b.version == 4):
            return str(block)
    return str(blocks[first])  # everything overlaps something: the tag's own block, as before


def has_address(svc: DesiredService) -> bool:
    """Whether a Service gets a ClusterIP (not headless, not ExternalName)."""
    return svc.spec.cluster_ip != HEADLESS and svc.spec.type != "ExternalName"


@dataclass
class Allocation:
    cluster_ip: str = ""  # "" for headless
    node_ports: dict[tuple[str, int], int] = field(default_factory=dict)  # (protocol, port) → nodePort


def _probe(start: str, size: int, taken) -> int | None:
    first = int(sha.sha256(start.encode()).hexdigest()[:8], 16) % size
    for i in range(size):
        n = (first + i) % size
        if n not in taken:
            return n
    return None


def _diag(svc: DesiredService, path: str, message: str) -> Diagnostic:
    return Diagnostic(Severity.ERROR, svc.source, svc.line, 0, path, message)


def allocate(services: Mapping[str, DesiredService], recorded: Mapping[str, ServiceEntry],
             cidr: str, busy: Iterable[tuple[str, int]] = ()) -> tuple[dict[str, Allocation], list[Diagnostic]]:
    """ClusterIPs and nodePorts for every Service: what the manifest asks for, else what was
    recorded, else a fresh one. Conflicts are errors that name the file and field."""
    net = ipaddress.ip_network(cidr)
    out: dict[str, Allocation] = {}
    errors: list[Diagnostic] = []
    # The network, broadcast and first addresses are not handed out (Kubernetes keeps .1 for
    # the API server's own Service).
    ips: dict[str, str] = {}
    nodeports: dict[tuple[str, int], str] = {}

    def want_ip(svc: DesiredService) -> str:
        if svc.spec.cluster_ip and svc.spec.cluster_ip != HEADLESS:
            return svc.spec.cluster_ip
        old = recorded.get(svc.ref)
        return old.cluster_ip if old is not None and old.cluster_ip else ""

    ordered = sorted(services.values(), key=lambda s: (not s.spec.cluster_ip, s.ref not in recorded, s.ref))
    for svc in ordered:
        alloc = out[svc.ref] = Allocation()
        if not has_address(svc):
            continue
        ip = want_ip(svc)
        if ip:
            try:
                inside = ipaddress.ip_address(ip) in net
            except ValueError:
                inside = False
            if not inside:
                if svc.spec.cluster_ip:
                    errors.append(_diag(svc, "spec.clusterIP", f"{ip} is not in podplay's Service range {cidr} "
                                        "(leave clusterIP out to have one allocated)"))
                    continue
                ip = ""  # recorded under another range: allocate afresh
            elif ip in ips:
                if svc.spec.cluster_ip:
                    errors.append(_diag(svc, "spec.clusterIP", f"{ip} is already the address of Service {ips[ip]}"))
                    continue
                ip = ""
        if not ip:
            taken = {int(ipaddress.ip_address(a)) - int(net.network_address) for a in ips}
            taken |= {0, 1, net.num_addresses - 1}
            n = _probe(svc.ref, net.num_addresses, taken)
            if n is None:
                errors.append(_diag(svc, "spec.clusterIP", f"podplay's Service range {cidr} is full"))
                continue
            ip = str(net.network_address + n)
        ips[ip] = svc.ref
        alloc.cluster_ip = ip
    for svc in ordered:
        if svc.spec.type not in PUBLISHED_TYPES:
            continue
        alloc = out[svc.ref]
        old = recorded.get(svc.ref)
        kept = {(p.protocol, p.port): p.node_port for p in old.ports if p.node_port} if old else {}
        for i, p in enumerate(svc.spec.ports):
            proto = p.protocol.lower()
            n = p.node_port or kept.get((proto, p.port), 0)
            lo, hi = NODE_PORT_RANGE
            if p.node_port and not lo <= p.node_port <= hi:
                errors.append(_diag(svc, f"spec.ports[{i}].nodePort",
                                    f"{p.node_port} is outside the nodePort range {lo}-{hi}"))
                continue
            if n and (proto, n) in nodeports:
                if p.node_port:
                    errors.append(_diag(svc, f"spec.ports[{i}].nodePort",
                                        f"{proto} nodePort {n} is already used by Service {nodeports[(proto, n)]}"))
                    continue
                n = 0
            if not n:
                # A fresh nodePort avoids ports host processes listen on (a given one is checked later).
                taken = {x - lo for (pr, x) in list(nodeports) + list(busy) if pr == proto and lo <= x <= hi}
                k = _probe(f"{svc.ref}/{proto}/{p.port}", hi - lo + 1, taken)
                if k is None:
                    errors.append(_diag(svc, f"spec.ports[{i}].nodePort", "no free nodePort is left"))
                    continue
                n = lo + k
            nodeports[(proto, n)] = svc.ref
            alloc.node_ports[(proto, p.port)] = n
    return out, errors


def published(entry: ServiceEntry) -> list[tuple[int, str, int]]:
    """(index of the Service port, protocol, port on the host) the entry answers on: nodePorts, and a
    LoadBalancer's own ports (k3s's service load balancer)."""
    out = []
    for i, p in enumerate(entry.ports):
        if p.node_port:
            out.append((i, p.protocol, p.node_port))
            if entry.type == "LoadBalancer":
                out.append((i, p.protocol, p.port))
    return out


def port_conflicts(services: Mapping[str, DesiredService], entries: Iterable[ServiceEntry],
                   desired: DesiredState, sockets: Iterable[tuple[str, int]] = ()) -> list[Diagnostic]:
    """Host ports the Services would answer on that something else holds: a pod's hostPort, another
    Service, or a host process listening (`sockets`: (protocol, port) of listeners on any address)."""
    held: dict[tuple[str, int], str] = {}
    for pod in desired.pods.values():
        for c in pod.spec.containers:
            for cp in c.ports:
                port = cp.host_port or (cp.container_port if pod.spec.host_network else 0)
                if port:
                    held[(cp.protocol.lower(), port)] = f"hostPort of pod {pod.ref}"
    listening = set(sockets)
    out = []
    for e in sorted(entries, key=lambda e: e.ref):
        svc = services.get(e.ref)
        if svc is None:
            continue
        for i, proto, port in published(e):
            field_ = "nodePort" if port == e.ports[i].node_port else "port"
            what = f"{proto} port {port} on the host"
            if (proto, port) in held:
                out.append(_diag(svc, f"spec.ports[{i}].{field_}", f"{what} is already the {held[(proto, port)]}"))
            elif (proto, port) in listening:
                out.append(_diag(svc, f"spec.ports[{i}].{field_}", f"{what} is held by a process on this host"))
            held[(proto, port)] = f"{field_} of Service {e.ref}"
    return out


# --- endpoints ------------------------------------------------------------------------------------

def selects(selector: Mapping[str, str], pod: DesiredPod) -> bool:
    """A Service without a selector has no endpoints podplay manages (as in Kubernetes)."""
    return bool(selector) and all(pod.meta.labels.get(k) == v for k, v in selector.items())


def target_ports(svc: DesiredService, pod: DesiredPod) -> tuple[int, ...]:
    """Each Service port's targetPort on `pod`: a number, or the named port of one of its containers."""
    out = []
    for p in svc.spec.ports:
        t = p.target_port if p.target_port is not None else p.port
        if isinstance(t, str) and not t.isdigit():
            found = [cp.container_port for c in pod.containers for cp in c.spec.ports
                     if cp.name == t and cp.protocol.upper() == p.protocol.upper()]
            out.append(found[0] if found else 0)
        else:
            out.append(int(t))
    return tuple(out)


def _has_readiness(pod: DesiredPod) -> bool:
    return any(c.spec.readiness_probe or c.spec.startup_probe for c in pod.containers)


def backs(svc: DesiredService, pod: DesiredPod, node_ip: str) -> bool:
    """Whether `pod` may be an endpoint of `svc`: selected, and with an address — its own, or
    the host's (`node_ip`) for a hostNetwork pod, as kube-proxy uses the node's IP."""
    return svc.spec.type != "ExternalName" and bool(pod.network or node_ip) and selects(svc.spec.selector, pod)


def endpoints(svc: DesiredService, desired: DesiredState, observed: ObservedHost,
              health: Mapping[str, PodHealth], creating: set[str], leaving: set[str],
              node_ip: str = "") -> list[Endpoint]:
    """The ready pods behind `svc`: those observed running whose readiness passes (a pod without
    a readiness probe is ready once it runs), and those this tick creates that will be ready once
    running (no readiness probe): their IP is known only when the rules are written (but for a
    hostNetwork pod's: the host's, `node_ip`)."""
    out = []
    for pod in sorted(desired.pods.values(), key=lambda p: p.ref):
        if not backs(svc, pod, node_ip):
            continue
        targets = target_ports(svc, pod)
        o = observed.pods.get(pod.uid)
        own_ip = "" if pod.network else node_ip
        if pod.uid in creating:
            if not _has_readiness(pod) or svc.spec.publish_not_ready_addresses:
                out.append(Endpoint(pod.uid, pod.ref, own_ip, targets))
            continue
        if o is None or pod.uid in leaving:
            continue
        if pod.network and (o.network is None or not o.network.status.ip):
            continue
        h = health.get(pod.uid)
        running = o.infra is not None and o.infra.state == ContainerState.RUNNING
        ready = h.ready if h is not None else running and all(
            c.state == ContainerState.RUNNING for c in o.containers.values())
        if ready or (running and svc.spec.publish_not_ready_addresses):
            out.append(Endpoint(pod.uid, pod.ref, o.network.status.ip if pod.network else own_ip, targets))
    return out


# --- the tick's decision --------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceDecision:
    changes: list  # [Change] for the Services
    sync: ServiceSync | None  # None: nothing to write
    errors: list[Diagnostic] = field(default_factory=list)
    env: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # namespace → service links


def external_addresses(svc: DesiredService, entries: Mapping[str, ServiceEntry],
                       resolved: Mapping[str, tuple[str, ...]], old: ServiceEntry | None) -> tuple[str, ...]:
    """The IPv4 addresses an ExternalName Service's names stand for: another Service's, when it
    names one (`web.shop.svc.cluster.local`), else what the host resolved the name to in this
    tick, else what it resolved to last time (a lookup that failed keeps the names working)."""
    name = svc.spec.external_name.rstrip(".").lower()
    for ref, e in entries.items():
        if e.type != "ExternalName" and name in names_of(ref):
            return tuple(e.addresses_for_names())
    got = resolved.get(name, ())
    if got:
        return tuple(sorted(got))
    return old.addresses if old is not None and old.external_name.lower() == name else ()


def _record_differs(e: ServiceEntry, old: ServiceEntry | None) -> bool:
    """Whether the store's record of a Service is not the entry served (a kill after the rules
    were written and before they were recorded): addresses, ports and which pods are behind it."""
    if old is None:
        return True

    def shape(x: ServiceEntry):
        return (x.type, x.cluster_ip, x.ports, sorted(ep.uid for ep in x.endpoints), x.affinity, x.local,
                x.external_name, x.addresses, x.selected)

    return shape(e) != shape(old)


def decide_services(desired: DesiredState, observed: ObservedHost, health: Mapping[str, PodHealth],
                    pod_changes: Iterable, recorded: Mapping[str, ServiceEntry], cidr: str, *,
                    prune: bool, covers, down: bool = False, sockets: Iterable[tuple[str, int]] = (),
                    node_ip: str = "", resolved: Mapping[str, tuple[str, ...]] | None = None
                    ) -> ServiceDecision:
    """The Service changes of a tick (create/replace/delete/noop, one per Service) and, when any
    is not a noop, the whole set the host should serve after the tick. `node_ip` is the host's
    address (the endpoint of hostNetwork pods); `resolved` the IPv4 addresses of the external
    names of ExternalName Services, as the host resolved them in this tick."""
    from reconciler.diff import Action, Change, Reason

    creating, leaving = set(), set()
    for c in pod_changes:
        if c.action in (Action.CREATE, Action.REPLACE) and c.after:
            creating.add(c.after)
        if c.action in (Action.DELETE, Action.REPLACE) and c.before:
            leaving.add(c.before)
    wanted: dict[str, ServiceEntry] = {}
    errors: list[Diagnostic] = []
    if not down:
        sockets = list(sockets)
        allocs, errors = allocate(desired.services, recorded, cidr, sockets)
        named = []
        for ref, svc in desired.services.items():
            a = allocs[ref]
            if has_address(svc) and not a.cluster_ip:
                continue  # its error is reported; the other Services go on
            if svc.spec.type == "ExternalName":
                named.append(svc)
                continue
            ports = tuple(ServicePortEntry(p.name, p.protocol.lower(), p.port,
                                           a.node_ports.get((p.protocol.lower(), p.port), 0))
                          for p in svc.spec.ports)
            eps = endpoints(svc, desired, observed, health, creating, leaving, node_ip)
            selected = sum(1 for p in desired.pods.values() if backs(svc, p, node_ip))
            wanted[ref] = ServiceEntry(ref, svc.source, svc.spec.type, a.cluster_ip, ports, tuple(eps), selected,
                                       svc.spec.affinity_timeout, svc.spec.external_traffic_policy == "Local")
        others = dict(wanted)
        for svc in named:  # after the others: an ExternalName may name one of them
            wanted[svc.ref] = ServiceEntry(
                svc.ref, svc.source, "ExternalName", "", tuple(ServicePortEntry(p.name, p.protocol.lower(), p.port)
                                                             for p in svc.spec.ports),
                external_name=svc.spec.external_name.rstrip("."),
                addresses=external_addresses(svc, others, resolved or {}, recorded.get(svc.ref)))
        errors += port_conflicts(desired.services, wanted.values(), desired, sockets)
    changes = []
    serving = dict(observed.services)
    keep: dict[str, ServiceEntry] = {}
    for ref in sorted(set(wanted) | set(recorded) | set(serving)):
        ns, name = ref.split("/", 1)
        key = ObjectKey("Service", ns, name)
        if ref in wanted:
            e = wanted[ref]
            keep[ref] = e
            pending = any(not x.ip for x in e.endpoints)
            if ref not in serving:
                changes.append(Change(key, Action.CREATE, Reason.NEW if ref not in recorded else Reason.MISSING))
            elif pending or serving[ref] != entry_hash(e):
                changes.append(Change(key, Action.REPLACE, Reason.SPEC_CHANGED, detail="endpoints or ports"))
            elif _record_differs(e, recorded.get(ref)):
                changes.append(Change(key, Action.REPLACE, Reason.SPEC_CHANGED, detail="record"))
            else:
                changes.append(Change(key, Action.NOOP, Reason.UNCHANGED))
            continue
        old = recorded.get(ref)
        mine = old is None or down or (prune and covers(old.source))
        if down and old is not None and not covers(old.source):
            mine = False
        if mine:
            changes.append(Change(key, Action.DELETE, Reason.REQUESTED if down else Reason.ORPHANED))
        elif old is not None:
            keep[ref] = old  # another manifest set's Service: served as recorded
            changes.append(Change(key, Action.NOOP, Reason.UNCHANGED))
    hosts = tuple(sorted((p.uid, p.key.split("/", 1)[0]) for p in observed.pods.values()
                         if p.uid not in leaving and p.network is not None and p.infra is not None
                         and p.infra.state == ContainerState.RUNNING))
    created = tuple(sorted((d.uid, d.namespace) for d in desired.pods.values() if d.uid in creating and d.network))
    everyone = tuple(sorted(set(hosts) | set(created)))
    entries = tuple(keep[r] for r in sorted(keep))
    stale_hosts = bool(entries or observed.service_hosts) and (
        bool(created) or observed.service_hosts != hosts_hash(entries, [u for u, _ in hosts]))
    work = any(c.action != Action.NOOP for c in changes)
    if stale_hosts and not work and changes:
        # The names in some pod's /etc/hosts are out of date (a new pod, a pod gone): rewrite them.
        i = next(i for i, c in enumerate(changes) if c.action == Action.NOOP)
        changes[i] = replace(changes[i], action=Action.REPLACE, reason=Reason.SPEC_CHANGED, detail="pod names")
        work = True
    env = {ns: tuple(service_env(entries, ns)) for ns in sorted({e.namespace for e in entries})}
    return ServiceDecision(changes, ServiceSync(entries, everyone) if work else None, errors, env)
