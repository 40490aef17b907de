"""/etc/hosts, /etc/resolv.conf and /etc/hostname of a pod."""

from __future__ import annotations

import pytest

from reconciler.runtime import pod_files
from reconciler.runtime.pod_files import ResolvConf, parse_resolv_conf, render_resolv_conf, resolv_conf_for
from tests.unit.runtime.pods import make_pod


def hosts_lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            ip, *names = line.split()
            out.setdefault(ip, []).extend(names)
    return out


def test_hosts_names_the_pod_and_every_container_on_the_pod_ip():
    pod = make_pod("web", [{"name": "app"}, {"name": "sidecar"}], init=[{"name": "setup"}], hostname="www",
                   hostAliases=[{"ip": "10.1.1.1", "hostnames": ["db", "db.local"]}])
    got = hosts_lines(pod_files.render_hosts(pod, "10.88.0.9"))
    assert got["127.0.0.1"] == ["localhost"]
    assert "localhost" in got["::1"]
    assert got["10.88.0.9"] == ["www", "web", "setup", "app", "sidecar"]
    assert got["10.1.1.1"] == ["db", "db.local"]


def test_hosts_before_the_ip_is_known_still_resolves_the_pod_to_itself():
    pod = make_pod("web", [{"name": "app"}])
    got = hosts_lines(pod_files.render_hosts(pod, ""))
    assert got[pod_files.NO_IP_ADDRESS] == ["web", "app"]


def test_host_network_hosts_is_the_hosts_own_plus_aliases():
    pod = make_pod("web", [{"name": "app"}], hostNetwork=True, hostAliases=[{"ip": "10.1.1.1", "hostnames": ["db"]}])
    text = pod_files.render_hosts(pod, "", "127.0.0.1 localhost\n192.168.1.5 box")
    assert text.startswith("127.0.0.1 localhost\n192.168.1.5 box\n")
    assert hosts_lines(text)["10.1.1.1"] == ["db"]


HOST = parse_resolv_conf("""\
# generated
nameserver 127.0.0.53
nameserver 192.168.1.1 ; comment
search lan example.com
options edns0 ndots:2
""")


def test_parse_resolv_conf():
    assert ResolvConf(("127.0.0.53", "192.168.1.1"), ("lan", "example.com"), ("edns0", "ndots:2")) == HOST


def test_loopback_nameservers_are_dropped_in_a_pod_network():
    conf = resolv_conf_for(make_pod("web", [{"name": "a"}]), HOST)
    assert conf.nameservers == ("192.168.1.1",)
    # The cluster's search path first (the Services' names), then the host's.
    assert conf.searches == ("default.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan", "example.com")


def test_only_loopback_nameservers_fall_back_to_public_ones():
    conf = resolv_conf_for(make_pod("web", [{"name": "a"}]), ResolvConf(("127.0.0.1", "::1")))
    assert conf.nameservers == pod_files.FALLBACK_NAMESERVERS


def test_host_network_keeps_loopback_nameservers():
    conf = resolv_conf_for(make_pod("web", [{"name": "a"}], hostNetwork=True), HOST)
    assert conf.nameservers == ("127.0.0.53", "192.168.1.1")


def test_dns_config_merges_into_the_hosts():
    pod = make_pod("web", [{"name": "a"}], dnsConfig={
        "nameservers": ["9.9.9.9"], "searches": ["svc.local", "lan"],
        "options": [{"name": "ndots", "value": "5"}, {"name": "rotate"}]})
    conf = resolv_conf_for(pod, HOST)
    assert conf.nameservers == ("192.168.1.1", "9.9.9.9")
    assert conf.searches[3:] == ("lan", "example.com", "svc.local")
    assert conf.options == ("ndots:5", "rotate")  # ClusterFirst: the kubelet's ndots:5, not the host's options


def test_dns_policy_none_uses_dns_config_alone():
    pod = make_pod("web", [{"name": "a"}], dnsPolicy="None",
                   dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["corp"]})
    text = render_resolv_conf(resolv_conf_for(pod, HOST))
    assert text == "search corp\nnameserver 1.1.1.1\n"


@pytest.mark.parametrize("count", [4, 6])
def test_at_most_three_nameservers(count):
    servers = tuple(f"10.0.0.{i}" for i in range(count))
    conf = resolv_conf_for(make_pod("web", [{"name": "a"}]), ResolvConf(servers))
    assert conf.nameservers == servers[:3]


def test_hostname_file():
    assert pod_files.render_hostname("www") == "www\n"


def test_cluster_first_gets_the_kubelet_search_path_and_ndots():
    conf = resolv_conf_for(make_pod("web", [{"name": "a"}]), HOST)
    assert conf.searches[:3] == ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert "ndots:5" in conf.options
    host = resolv_conf_for(make_pod("web", [{"name": "a"}], hostNetwork=True), HOST)
    assert "cluster.local" not in host.searches
