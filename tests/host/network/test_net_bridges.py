"""Two podplay roots on one host: each default network gets its own bridge and subnet, and a
bridge that belongs to another network configuration is refused before anything changes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from reconciler.network import config as netconfig
from reconciler.network.config import default_bridge, default_conflist
from reconciler.paths import HostPaths


def _other_root(tmp_path: Path) -> HostPaths:
    paths = HostPaths(tmp_path / "root2", tmp_path / "run2", tmp_path / "net2.d")
    for p in (paths.root, paths.runroot, paths.network_dir):
        p.mkdir(parents=True)
    return paths


def _state_of(paths: HostPaths) -> list[str]:
    """What a refused attach must not leave: records and host-local allocations."""
    out = []
    for d in (paths.cni / "results", paths.cni / "ipam"):
        if d.is_dir():
            out += [str(p.relative_to(paths.cni)) for p in d.rglob("*") if p.is_file()
                    and p.name not in ("lock", "last_reserved_ip.0")]  # host-local's bookkeeping
    return out


def _links(net, netns: str) -> list[str]:
    return [link["ifname"] for link in json.loads(net.exec_in(netns, ["ip", "-j", "link"]).stdout)]


def test_a_bridge_of_another_root_with_another_subnet_is_refused_cleanly(test_network, host_paths, tmp_path):
    """What two roots written by an older podplay did: the same bridge name (podplay0, here the
    test's bridge) in two conflists with two subnets. The second is refused before its ADD, naming
    the file, the bridge and both subnets; the first keeps working."""
    mine = CniNetwork(host_paths)
    pod = test_network.pod("web")
    status = mine.attach(pod, test_network.make_netns())
    other_paths = _other_root(tmp_path)
    other_subnet = ipaddress.IPv4Network(f"{test_network.subnet.network_address + 128}/25")
    other_conflist = other_paths.network_dir / f"{test_network.name}.conflist"
    other_conflist.write_text(json.dumps(default_conflist(test_network.name, test_network.bridge, str(other_subnet),
                                                          str(other_paths.cni / "ipam"))))
    other = CniNetwork(other_paths)
    ns = test_network.make_netns()
    try:
        with pytest.raises(NetworkError) as err:
            other.attach(test_network.pod("web2"), ns)
        text = str(err.value)
        assert f"{other_conflist}: plugins[0].bridge" in text
        assert f"bridge {test_network.bridge!r} already exists with address {test_network.gateway}/24" in text
        assert str(other_subnet) in text and "another network configuration" in text
        assert other.list_attachments() == [] and _state_of(other_paths) == []
        assert "eth0" not in _links(test_network, ns)
        mine.check(pod.uid)
        assert test_network.allocations() == [f"{test_network.name}/{status.ip}"]
    finally:
        mine.detach(pod.uid)


def test_an_interface_that_is_not_a_bridge_is_refused(test_network, host_paths):
    name = f"pptve{test_network.slot:03d}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"pptvp{test_network.slot:03d}"],
                   check=True, capture_output=True)
    try:
        doc = test_network.conflist_doc()
        doc["plugins"][0]["bridge"] = name
        test_network.write_conflist(doc)
        ns = test_network.make_netns()
        with pytest.raises(NetworkError, match=rf"interface '{name}' exists on this host and is not a bridge"):
            CniNetwork(host_paths).attach(test_network.pod("web"), ns)
        assert _state_of(host_paths) == [] and "eth0" not in _links(test_network, ns)
    finally:
        subprocess.run(["ip", "link", "delete", name], capture_output=True)


def test_two_roots_each_get_their_own_default_bridge_and_subnet(test_network, host_paths, tmp_path, monkeypatch):
    """The default network of each root: bridge named after the root, subnets chosen apart (from
    the test's own /24 here, so that the fixture's leak checks see every rule and address)."""
    monkeypatch.setattr(netconfig, "DEFAULT_SUBNET_POOL", test_network.subnet)
    monkeypatch.setattr(netconfig, "DEFAULT_SUBNET_PREFIX", 26)
    test_network.conflist.unlink()  # its network would take the whole /24
    roots = [host_paths, _other_root(tmp_path)]
    bridges = [default_bridge(p) for p in roots]
    assert len(set(bridges)) == 2
    drivers = [CniNetwork(p) for p in roots]
    pods = [test_network.pod("web", network=""), test_network.pod("web", network="")]  # the very same pod
    attached = []
    try:
        statuses = []
        for driver, pod in zip(drivers, pods):
            statuses.append(driver.attach(pod, test_network.make_netns()))
            attached.append((driver, pod))
        subnets = [ipaddress.IPv4Network(json.loads((p.network_dir / "podplay.conflist").read_text())
                                         ["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]) for p in roots]
        assert not subnets[0].overlaps(subnets[1])
        for status, subnet, bridge in zip(statuses, subnets, bridges):
            assert ipaddress.IPv4Address(status.ip) in subnet
            assert Path(f"/sys/class/net/{bridge}/bridge").is_dir()
        for driver, pod in attached:
            driver.check(pod.uid)
    finally:
        for driver, pod in attached:
            driver.detach(pod.uid)
        for bridge in bridges:  # the bridge plugin leaves its bridge behind
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
    assert [_state_of(p) for p in roots] == [[], []]
    assert test_network.iptables_rules() == []
