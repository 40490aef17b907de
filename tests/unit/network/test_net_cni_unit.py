"""The CNI invoker: per-plugin configuration, results, errors, and the real plugins' VERSION answers."""

from __future__ import annotations

import json

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from reconciler.network.cni import Attachment, CniInvoker, PluginError, status_from_result
from reconciler.network.config import default_conflist, parse_network_config
from reconciler.network.masq import masquerade_chain, masquerade_comment
from reconciler.observed import PortMapping
from reconciler.paths import HostPaths

PLUGINS = ("/usr/lib/cni",)  # Debian's containernetworking-plugins (scripts/setup.sh installs it)


def _net():
    return parse_network_config(json.dumps(default_conflist("n1", "br1", "10.9.0.0/24", "/run/x")), "n1.conflist")


def test_plugin_config_follows_section_3_of_the_spec():
    net = _net()
    att = Attachment("abc", "/run/netns/x", capability_args={"portMappings": [{"hostPort": 1}], "mac": "x"})
    prev = {"cniVersion": "1.0.0", "ips": []}
    portmap = CniInvoker.plugin_config(net, net.plugins[1], att, prev)
    assert portmap["name"] == "n1" and portmap["cniVersion"] == "1.0.0" and portmap["type"] == "portmap"
    assert "capabilities" not in portmap
    assert portmap["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}  # only declared capabilities
    assert portmap["prevResult"] == prev
    bridge = CniInvoker.plugin_config(net, net.plugins[0], att, None)
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge
    assert bridge["ipam"] == net.plugins[0]["ipam"]
    assert "capabilities" in net.plugins[1]  # the network itself is not modified


RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "br1", "mac": "aa:aa:aa:aa:aa:aa"},
                   {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "fd00::5/64", "interface": 2},
            {"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 2}],
}
RESULT_040 = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.9.0.6/24", "gateway": "10.9.0.1"}]}


def test_status_from_result_prefers_the_pods_ipv4_address():
    ports = (PortMapping(8080, 80),)
    s = status_from_result("n1", RESULT_100, "eth0", ports)
    assert (s.ip, s.prefix_length, s.gateway, s.mac, s.ports) == ("10.9.0.5", 24, "10.9.0.1", "cc:cc:cc:cc:cc:cc",
                                                                   ports)
    s = status_from_result("n1", RESULT_040)
    assert (s.ip, s.gateway, s.mac) == ("10.9.0.6", "10.9.0.1", "")
    assert status_from_result("n1", {"cniVersion": "1.0.0"}).ip == ""


def test_plugin_error_carries_the_spec_fields():
    err = PluginError("host-local", "ADD", 7, "Invalid Configuration", "Network too small", "n1")
    assert str(err) == ("CNI plugin 'host-local' failed ADD on network 'n1': Invalid Configuration "
                        "(Network too small) [code 7: invalid network configuration]")
    assert isinstance(err, NetworkError) and not err.temporary
    assert PluginError("x", "ADD", 11, "busy").temporary


def test_version_of_the_installed_plugins():
    cni = CniInvoker(PLUGINS)
    for plugin in ("bridge", "host-local", "portmap", "firewall", "tuning", "loopback"):
        assert {"0.4.0", "1.0.0"} <= set(cni.supported_versions(plugin))
    cni.check_versions(_net())


def test_a_plugin_error_is_parsed_from_its_output():
    cni = CniInvoker(PLUGINS)
    conf = {"cniVersion": "1.0.0", "name": "n1", "type": "host-local",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "bad"}]]}}
    with pytest.raises(PluginError) as err:
        cni.exec_plugin("host-local", "ADD", conf, Attachment("abc", "/nonexistent"), "n1")
    assert err.value.msg == "invalid CIDR address: bad"
    assert "CNI plugin 'host-local' failed ADD on network 'n1': invalid CIDR address: bad" in str(err.value)


def test_missing_plugin_names_the_file_and_field(tmp_path):
    doc = default_conflist("n1", "br1", "10.9.0.0/24", "/run/x")
    net = parse_network_config(json.dumps(doc), "/etc/podplay/net.d/n1.conflist")
    with pytest.raises(NetworkError) as err:
        CniInvoker([str(tmp_path)]).check_versions(net)
    assert str(err.value).startswith("/etc/podplay/net.d/n1.conflist: plugins[0].type: CNI plugin 'bridge' not "
                                     f"found in {tmp_path}")


def test_masquerade_names_match_the_plugins_derivation():
    # Chain and comment as the bridge plugin wrote them in a run with real plugins (see host tests).
    assert masquerade_chain("pptnet-031", "71b89e6eba76") == "CNI-4cb4808c2f4a4c792b7cabac"
    assert masquerade_comment("pptnet-031", "71b89e6eba76") == 'name: "pptnet-031" id: "71b89e6eba76"'


@pytest.mark.parametrize("uid", ["../../etc", "a/b", "", "-x", "a b"])
def test_hostile_uids_are_refused(tmp_path, uid):
    driver = CniNetwork(HostPaths(tmp_path / "r", tmp_path / "rr", tmp_path / "n"))
    with pytest.raises(NetworkError, match="invalid pod uid"):
        driver.detach(uid)
    with pytest.raises(NetworkError, match="invalid pod uid"):
        driver.check(uid)
    assert not (tmp_path / "rr").exists()


def test_nothing_attached_lists_nothing(tmp_path):
    assert CniNetwork(HostPaths(tmp_path / "r", tmp_path / "rr", tmp_path / "n")).list_attachments() == []
