"""Networks chosen by the ``podplay.io/network`` annotation, and bad configuration refused clearly."""

from __future__ import annotations

import ipaddress
import json

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from tests.support.network import free_port


def test_hand_written_conflist_selected_by_annotation(test_network, host_paths):
    """A user's own file (another name, cniVersion 0.4.0, a narrow address range, no portmap)."""
    name = f"{test_network.name}-lab"
    path = host_paths.network_dir / "50-lab.conflist"
    path.write_text(json.dumps({
        "cniVersion": "0.4.0",
        "name": name,
        "plugins": [{
            "type": "bridge", "bridge": test_network.bridge, "isGateway": True,
            "ipam": {"type": "host-local", "dataDir": str(test_network.ipam_dir),
                     "ranges": [[{"subnet": str(test_network.subnet),
                                  "rangeStart": str(test_network.subnet.network_address + 200),
                                  "rangeEnd": str(test_network.subnet.network_address + 210)}]]},
        }],
    }))
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    pod = test_network.pod("lab", network=name)

    status = driver.attach(pod, ns)
    try:
        assert status.network == name
        assert status.ip == str(test_network.subnet.network_address + 200)
        assert test_network.allocations(name) == [f"{name}/{status.ip}"]
        driver.check(pod.uid)
        # No plugin of this network forwards ports: a hostPort is refused, not silently dropped.
        with pytest.raises(NetworkError, match=r"50-lab.conflist: plugins: .*portMappings"):
            driver.attach(test_network.pod("lab2", [(80, free_port())], network=name), test_network.make_netns())
    finally:
        driver.detach(pod.uid)
    assert test_network.allocations() == []


def test_unknown_network_names_the_file_that_would_define_it(test_network, host_paths):
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    with pytest.raises(NetworkError) as err:
        driver.attach(test_network.pod("web", network="nosuchnet"), ns)
    assert "network 'nosuchnet' is not defined" in str(err.value)
    assert str(host_paths.network_dir / "nosuchnet.conflist") in str(err.value)
    assert driver.list_attachments() == []
    assert not (host_paths.network_dir / "nosuchnet.conflist").exists()


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda d: d["plugins"][0]["ipam"]["ranges"][0][0].update(subnet="10.222.0.0/33"),
     "plugins[0].ipam.ranges[0][0].subnet", "not a subnet"),
    (lambda d: d.update(cniVersion="0.2.0"), "cniVersion", "not supported"),
    (lambda d: d["plugins"][1].update(type="no-such-plugin"), "plugins[1].type", "not found"),
    (lambda d: d["plugins"][0].update(bridge="a-name-much-too-long"), "plugins[0].bridge", "15 characters"),
])
def test_invalid_conflist_is_refused_naming_file_and_field(test_network, host_paths, mutate, field, words):
    doc = test_network.conflist_doc()
    mutate(doc)
    test_network.write_conflist(doc)
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    with pytest.raises(NetworkError) as err:
        driver.attach(test_network.pod("web"), ns)
    assert f"{test_network.conflist}: " in str(err.value)
    assert f"{field}: " in str(err.value) and words in str(err.value)
    assert driver.list_attachments() == []
    assert test_network.allocations() == []
    assert "eth0" not in test_network.exec_in(ns, ["ip", "link"]).stdout


def test_conflist_with_a_json_error_gives_its_line(test_network, host_paths):
    lines = ["{", '  "cniVersion": "1.0.0",', f'  "name": "{test_network.name}",', '  "plugins": [,]', "}"]
    test_network.conflist.write_text("\n".join(lines) + "\n")
    with pytest.raises(NetworkError, match=rf"{test_network.conflist}:4:\d+: error: not valid JSON"):
        CniNetwork(host_paths).attach(test_network.pod("web"), test_network.make_netns())


def test_fixture_network_as_the_default_network(test_network, host_paths):
    """Pods without the annotation land on ``podplay``; the fixture can stand in for it, with its
    own bridge and subnet, and still sees every rule the attachment makes."""
    test_network.use_as_default()
    driver = CniNetwork(host_paths)
    pod = test_network.pod("plain", [(80, free_port())], network="")
    assert pod.network == "podplay"
    status = driver.attach(pod, test_network.make_netns())
    try:
        assert status.network == "podplay" and ipaddress.IPv4Address(status.ip) in test_network.subnet
        rules = [rule for _, _, rule in test_network.iptables_rules()]
        assert any("-A CNI-HOSTPORT-DNAT" in r and pod.uid in r for r in rules)
        assert any("-A POSTROUTING" in r and status.ip in r for r in rules)
    finally:
        driver.detach(pod.uid)
    assert test_network.iptables_rules() == []
    # The fixture's file was used, not a fresh default with the shared podplay0 bridge.
    assert json.loads((host_paths.network_dir / "podplay.conflist").read_text())["plugins"][0]["bridge"] \
        == test_network.bridge
