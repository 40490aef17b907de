"""Services, pure parts: the kubelet's service links, the manifest checks of Service fields
(IPv4 only, ExternalName, affinity, traffic policies) and the Service range of a storage root."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from reconciler.errors import Severity
from reconciler.manifests import load_manifests
from reconciler.services import (
    LEGACY_SERVICE_CIDR,
    SERVICE_RANGE_POOL,
    Endpoint,
    ServiceEntry,
    ServicePortEntry,
    render_hosts_section,
    service_env,
    service_range,
)

HTTP = (ServicePortEntry("", "tcp", 80),)


def entry(ref: str, ip: str = "10.64.0.9", ports=HTTP, **kw) -> ServiceEntry:
    return ServiceEntry(ref, "", kw.pop("type", "ClusterIP"), ip, tuple(ports), **kw)


def test_service_links_are_the_kubelets_variable_set_for_the_pods_namespace_only():
    db = entry("default/my-db", "10.64.0.5",
               (ServicePortEntry("pg", "tcp", 5432), ServicePortEntry("dns-x", "udp", 53)))
    env = service_env([db, entry("other/web"), entry("default/headless", ""),
                       entry("default/ext", "", type="ExternalName", external_name="example.org")], "default")
    assert env == [
        ("MY_DB_SERVICE_HOST", "10.64.0.5"), ("MY_DB_SERVICE_PORT", "5432"),
        ("MY_DB_SERVICE_PORT_PG", "5432"), ("MY_DB_SERVICE_PORT_DNS_X", "53"),
        ("MY_DB_PORT", "tcp://10.64.0.5:5432"),
        ("MY_DB_PORT_5432_TCP", "tcp://10.64.0.5:5432"), ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
        ("MY_DB_PORT_5432_TCP_PORT", "5432"), ("MY_DB_PORT_5432_TCP_ADDR", "10.64.0.5"),
        ("MY_DB_PORT_53_UDP", "udp://10.64.0.5:53"), ("MY_DB_PORT_53_UDP_PROTO", "udp"),
        ("MY_DB_PORT_53_UDP_PORT", "53"), ("MY_DB_PORT_53_UDP_ADDR", "10.64.0.5"),
    ]


def test_hosts_names_an_external_name_by_its_addresses_and_headless_by_its_endpoints():
    ext = entry("default/ext", "", type="ExternalName", external_name="db.example", addresses=("192.0.2.7",))
    head = entry("default/h", "", endpoints=(Endpoint("u1", "default/h-0", "10.129.0.4", (80,)),))
    text = render_hosts_section([ext, head], "default")
    assert "192.0.2.7\text ext.default ext.default.svc ext.default.svc.cluster.local\n" in text
    assert "10.129.0.4\th h.default" in text
    assert render_hosts_section([entry("default/ext", "", type="ExternalName", external_name="x")], "default") == ""


def test_entries_without_the_new_fields_keep_their_json_and_hash():
    from reconciler.services import entry_hash

    e = entry("default/web")
    assert set(e.to_json()) == {"ref", "source", "type", "cluster_ip", "ports", "endpoints", "selected"}
    full = entry("default/web", affinity=60, local=True)
    assert ServiceEntry.from_json(full.to_json()) == full and entry_hash(full) != entry_hash(e)


def test_each_root_gets_its_own_range_clear_of_routes_and_other_roots():
    pool = ipaddress.ip_network(SERVICE_RANGE_POOL)
    ranges = {service_range(f"pp{i:08x}") for i in range(40)}
    assert len(ranges) > 30 and all(ipaddress.ip_network(r).subnet_of(pool) for r in ranges)
    mine = service_range("pp12345678")
    assert service_range("pp12345678") == mine  # the same root, the same range
    other = service_range("pp12345678", [mine])  # routed, or another root serves from it
    assert other != mine and not ipaddress.ip_network(other).overlaps(ipaddress.ip_network(mine))
    near = str(next(ipaddress.ip_network(mine).hosts()))
    assert service_range("pp12345678", ["192.168.0.0/16", near]) == other
    assert service_range("pp12345678", legacy=True) == LEGACY_SERVICE_CIDR


# --- manifest checks ------------------------------------------------------------------------------

def load(tmp_path, spec: str):
    f = tmp_path / "svc.yaml"
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n" + textwrap.indent(
        textwrap.dedent(spec), "  "))
    m = load_manifests([str(f)])
    return [d for d in m.diagnostics if d.severity == Severity.ERROR], \
        [d for d in m.diagnostics if d.severity == Severity.WARNING], m


@pytest.mark.parametrize("spec, path, words", [
    ("ipFamilies: [IPv6]\nports: [{port: 80}]\n", "spec.ipFamilies[0]", "IPv4 only"),
    ("ipFamilyPolicy: RequireDualStack\nports: [{port: 80}]\n", "spec.ipFamilyPolicy", "IPv4 only"),
    ("ipFamilies: [IPv4, IPv6]\nports: [{port: 80}]\n", "spec.ipFamilies", "PreferDualStack"),
    ("clusterIP: fd00::10\nports: [{port: 80}]\n", "spec.clusterIP", "IPv6"),
    ("clusterIP: 10.64.0.7\nclusterIPs: [10.64.0.8]\nports: [{port: 80}]\n", "spec.clusterIPs[0]", "same as"),
    ("type: ExternalName\n", "spec.externalName", "needs the DNS name"),
    ("type: ExternalName\nexternalName: 'not a name!'\n", "spec.externalName", "not a DNS name"),
    ("type: ExternalName\nexternalName: db.example\nclusterIP: 10.64.0.9\n", "spec.clusterIP", "no clusterIP"),
    ("externalName: db.example\nports: [{port: 80}]\n", "spec.externalName", "only a Service of type"),
    ("sessionAffinity: Sticky\nports: [{port: 80}]\n", "spec.sessionAffinity", "ClientIP"),
    ("sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\nports: [{port: 80}]\n",
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "86400"),
    ("externalTrafficPolicy: Local\nports: [{port: 80}]\n", "spec.externalTrafficPolicy", "NodePort or LoadBalancer"),
    ("sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\nports: [{port: 80}]\n", "spec.sessionAffinityConfig",
     "sessionAffinity: ClientIP"),
])
def test_service_fields_podplay_cannot_serve_are_errors_naming_file_line_and_field(tmp_path, spec, path, words):
    errors, _, _ = load(tmp_path, spec)
    assert errors, f"no error for {spec!r}"
    d = errors[0]
    assert d.path == path and words in d.message, (d.path, d.message)
    assert d.file.endswith("svc.yaml") and d.line >= 5


def test_prefer_dual_stack_is_served_as_ipv4_with_a_warning(tmp_path):
    errors, warnings, m = load(tmp_path, """\
        ipFamilyPolicy: PreferDualStack
        ipFamilies: [IPv4, IPv6]
        clusterIPs: [10.64.0.7, "fd00::7"]
        ports: [{port: 80}]
        """)
    assert not errors, errors
    assert [w.path for w in warnings] == ["spec.ipFamilyPolicy"] and "IPv4 only" in warnings[0].message
    assert m.objects[0].obj.spec.address == "10.64.0.7"


def test_supported_fields_are_accepted_without_a_not_acted_on_warning(tmp_path):
    errors, warnings, _ = load(tmp_path, """\
        type: NodePort
        sessionAffinity: ClientIP
        sessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}
        externalTrafficPolicy: Local
        internalTrafficPolicy: Local
        ipFamilyPolicy: SingleStack
        ipFamilies: [IPv4]
        ports: [{port: 80}]
        """)
    assert not errors and not warnings, errors + warnings
    errors, warnings, m = load(tmp_path, "type: ExternalName\nexternalName: db.example.\nports: [{port: 5432}]\n")
    assert not errors and not warnings, errors + warnings
