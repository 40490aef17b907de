"""Network configuration files: validation messages, lookup by name, the default network."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from reconciler.errors import NetworkError
from reconciler.network.config import (
    DEFAULT_SUBNET_POOL,
    default_bridge,
    default_conflist,
    ensure_default_network,
    find_network,
    fit_chain,
    load_networks,
    parse_network_config,
    pick_subnet,
    routed_networks,
)
from reconciler.paths import HostPaths


def _good() -> dict:
    return default_conflist("net1", "br1", "10.129.7.0/24", "/run/podplay/cni/ipam")


def _error(doc, file="/etc/podplay/net.d/net1.conflist") -> str:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(NetworkError) as err:
        parse_network_config(text, file)
    return str(err.value)


def test_default_conflist_is_valid_and_complete():
    net = parse_network_config(json.dumps(_good()), "x.conflist")
    assert (net.name, net.cni_version) == ("net1", "1.0.0")
    # No firewall plugin: podplay's own per-network rules accept the traffic (network.forward).
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap", "tuning"]
    bridge = net.plugins[0]
    assert bridge["bridge"] == "br1" and bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"]["dataDir"] == "/run/podplay/cni/ipam"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.129.7.0/24", "gateway": "10.129.7.1"}]]
    assert net.capability_plugins("portMappings") == ["portmap"]
    assert net.plugins[1]["snat"] is True
    assert net.subnets() == [ipaddress.ip_network("10.129.7.0/24")]


def _set(path: str, value):
    def mutate(doc):
        target = doc
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        last = keys[-1]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return mutate


_DELETE = object()


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (_set("cniVersion", _DELETE), "cniVersion", "is required"),
    (_set("cniVersion", "0.2.0"), "cniVersion", "'0.2.0' is not supported"),
    (_set("cniVersion", "1.1.0"), "cniVersion", "is not supported; use one of 1.0.0"),
    (_set("name", "bad name"), "name", "must be a network name"),
    (_set("name", _DELETE), "name", "must be a network name"),
    (_set("plugins", []), "plugins", "non-empty list"),
    (_set("plugins", {"type": "bridge"}), "plugins", "non-empty list"),
    (_set("plugins.1", "portmap"), "plugins[1]", "must be an object"),
    (_set("plugins.1.type", _DELETE), "plugins[1].type", "must name a plugin binary"),
    (_set("plugins.1.type", "../../bin/sh"), "plugins[1].type", "must name a plugin binary"),
    (_set("plugins.1.capabilities", {"portMappings": "yes"}), "plugins[1].capabilities", "booleans"),
    (_set("plugins.0.ipMasq", "true"), "plugins[0].ipMasq", "true or false"),
    (_set("plugins.0.bridge", "bridge-name-too-long"), "plugins[0].bridge", "at most 15 characters"),
    (_set("plugins.0.ipam.type", 7), "plugins[0].ipam.type", "IPAM plugin"),
    (_set("plugins.0.ipam.dataDir", "relative/dir"), "plugins[0].ipam.dataDir", "absolute path"),
    (_set("plugins.0.ipam.ranges", []), "plugins[0].ipam.ranges", "non-empty list"),
    (_set("plugins.0.ipam.ranges.0.0.subnet", "10.129.7.0/33"), "plugins[0].ipam.ranges[0][0].subnet",
     "not a subnet in CIDR notation"),
    (_set("plugins.0.ipam.ranges.0.0.subnet", "10.129.7.0/31"), "plugins[0].ipam.ranges[0][0].subnet",
     "too small"),
    (_set("plugins.0.ipam.ranges.0.0.gateway", "10.1.1.1"), "plugins[0].ipam.ranges[0][0].gateway",
     "outside the subnet 10.129.7.0/24"),
    (_set("plugins.0.ipam.ranges.0.0.rangeStart", "nope"), "plugins[0].ipam.ranges[0][0].rangeStart",
     "not an IP address"),
    (_set("plugins.0.ipam.routes", [{"dst": "default"}]), "plugins[0].ipam.routes[0].dst", "CIDR"),
    (_set("disableCheck", "no"), "disableCheck", "true or false"),
])
def test_invalid_field_names_file_and_field(mutate, field, words):
    doc = _good()
    mutate(doc)
    message = _error(doc)
    assert f"/etc/podplay/net.d/net1.conflist: error: {field}: " in message
    assert words in message


def test_every_problem_is_reported_at_once():
    doc = _good()
    doc["cniVersion"] = "9"
    doc["plugins"][0]["bridge"] = "x" * 20
    message = _error(doc)
    assert "cniVersion" in message and "plugins[0].bridge" in message


@pytest.mark.parametrize(("text", "where"), [
    ('{"cniVersion": "1.0.0",\n "name": "x",\n "plugins": [}', ":3:"),
    ("", ":1:"),
    ("[]", ": error: must be a JSON object"),
])
def test_unparseable_file(text, where):
    message = _error(text, "/n/x.conflist")
    assert f"/n/x.conflist{where}" in message


def test_single_plugin_conf_is_read_as_a_list_of_one():
    doc = {"cniVersion": "0.4.0", "name": "old", "type": "bridge", "bridge": "br9",
           "ipam": {"type": "host-local", "subnet": "10.1.2.0/24"}}
    net = parse_network_config(json.dumps(doc), "old.conf")
    assert [p["type"] for p in net.plugins] == ["bridge"]
    assert net.plugins[0]["bridge"] == "br9" and "name" not in net.plugins[0]
    assert net.subnets() == [ipaddress.ip_network("10.1.2.0/24")]


def _write(d: Path, name: str, doc) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_networks_are_found_by_their_name_field_not_the_file_name(tmp_path):
    _write(tmp_path, "10-whatever.conflist", default_conflist("blue", "brb", "10.9.1.0/24", "/run/x"))
    _write(tmp_path, "notes.txt", "not a network")
    assert find_network(tmp_path, "blue").file == str(tmp_path / "10-whatever.conflist")


def test_unknown_network_names_the_file_that_would_define_it(tmp_path):
    _write(tmp_path, "a.conflist", default_conflist("blue", "brb", "10.9.1.0/24", "/run/x"))
    with pytest.raises(NetworkError) as err:
        find_network(tmp_path, "green")
    assert "network 'green' is not defined" in str(err.value)
    assert str(tmp_path / "green.conflist") in str(err.value)


def test_a_broken_file_for_the_wanted_network_is_what_gets_reported(tmp_path):
    _write(tmp_path, "green.conflist", '{"cniVersion": "1.0.0", "name": "green", "plugins": []}')
    with pytest.raises(NetworkError, match=r"green.conflist: error: plugins: must be a non-empty list"):
        find_network(tmp_path, "green")


def test_two_files_with_one_name_are_ambiguous(tmp_path):
    _write(tmp_path, "a.conflist", default_conflist("blue", "brb", "10.9.1.0/24", "/run/x"))
    _write(tmp_path, "b.conflist", default_conflist("blue", "brc", "10.9.2.0/24", "/run/x"))
    with pytest.raises(NetworkError, match=r"b.conflist: name: network 'blue' is already defined by .*a.conflist"):
        find_network(tmp_path, "blue")
    networks, broken = load_networks(tmp_path)
    assert list(networks) == ["blue"] and list(broken) == [tmp_path / "b.conflist"]


def _paths(tmp_path) -> HostPaths:
    return HostPaths(tmp_path / "root", tmp_path / "run", tmp_path / "net.d")


def test_default_network_is_written_once_and_then_left_to_the_user(tmp_path):
    paths = _paths(tmp_path)
    net = ensure_default_network(paths)
    target = paths.network_dir / "podplay.conflist"
    assert net.file == str(target) and net.name == "podplay"
    doc = json.loads(target.read_text())
    bridge = doc["plugins"][0]
    assert bridge["bridge"] == default_bridge(paths) == "podplay" + paths.tag[2:]
    assert len(bridge["bridge"]) <= 15
    assert bridge["ipam"]["dataDir"] == str(paths.cni / "ipam")
    subnet = ipaddress.ip_network(bridge["ipam"]["ranges"][0][0]["subnet"])
    assert subnet.subnet_of(DEFAULT_SUBNET_POOL)
    assert not subnet.overlaps(ipaddress.ip_network("10.88.0.0/16"))  # podman's default
    assert not any(subnet.overlaps(r) for r in routed_networks())

    # The user edits it: podplay keeps the edit.
    bridge["ipam"]["ranges"] = [[{"subnet": "10.200.0.0/24"}]]
    target.write_text(json.dumps(doc))
    assert ensure_default_network(paths).subnets() == [ipaddress.ip_network("10.200.0.0/24")]


def test_default_network_never_overwrites_a_broken_user_file(tmp_path):
    paths = _paths(tmp_path)
    target = _write(paths.network_dir, "podplay.conflist", '{"name": "podplay", oops')
    with pytest.raises(NetworkError, match="podplay.conflist:1:"):
        ensure_default_network(paths)
    assert target.read_text() == '{"name": "podplay", oops'


def test_default_network_avoids_subnets_of_other_networks(tmp_path):
    paths = _paths(tmp_path)
    first = ipaddress.ip_network(pick_subnet(DEFAULT_SUBNET_POOL, routed_networks()))
    _write(paths.network_dir, "other.conflist", default_conflist("other", "bro", str(first), "/run/x"))
    net = ensure_default_network(paths)
    assert not net.subnets()[0].overlaps(first)


def test_pick_subnet_skips_taken_ranges():
    pool = ipaddress.IPv4Network("10.50.0.0/22")
    taken = [ipaddress.IPv4Network("10.50.0.0/23"), ipaddress.IPv4Network("10.50.2.128/25")]
    assert pick_subnet(pool, taken) == ipaddress.IPv4Network("10.50.3.0/24")
    with pytest.raises(NetworkError, match="no free /24"):
        pick_subnet(pool, [pool])


def test_routed_networks_reads_the_kernel_route_table(tmp_path):
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "br0\t0000DE0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
    assert routed_networks(str(table)) == [ipaddress.IPv4Network("192.0.2.0/24"),
                                           ipaddress.IPv4Network("10.222.0.0/16")]


def test_two_roots_get_two_bridges(tmp_path):
    """Two storage roots on one host never share a bridge (each picks its own subnet)."""
    a, b = _paths(tmp_path / "a"), _paths(tmp_path / "b")
    bridges = {ensure_default_network(p).raw["plugins"][0]["bridge"] for p in (a, b)}
    assert len(bridges) == 2 and bridges == {default_bridge(a), default_bridge(b)}


def _types(net) -> list[str]:
    return [p["type"] for p in net.plugins]


def test_the_chain_is_fitted_to_the_pod():
    net = parse_network_config(json.dumps(_good()), "net1.conflist")
    bare = fit_chain(net, port_mappings=False)
    assert _types(bare) == ["bridge"]
    assert [p["type"] for p in bare.raw["plugins"]] == ["bridge"]
    # The recorded raw config reads back as the same fitted chain (DEL and CHECK run it).
    assert _types(parse_network_config(json.dumps(bare.raw), "net1.conflist")) == ["bridge"]
    assert _types(fit_chain(net, port_mappings=True)) == ["bridge", "portmap"]


def test_a_listed_firewall_plugin_still_runs():
    """Conflists written before podplay made its own forward rules keep the plugin, and run it."""
    doc = _good()
    doc["plugins"].insert(2, {"type": "firewall", "backend": "iptables"})
    net = parse_network_config(json.dumps(doc), "net1.conflist")
    assert _types(fit_chain(net, port_mappings=False)) == ["bridge", "firewall"]
    assert _types(fit_chain(net, port_mappings=True)) == ["bridge", "portmap", "firewall"]


def test_a_configured_tuning_and_a_single_plugin_are_kept():
    doc = _good()
    doc["plugins"][-1]["sysctl"] = {"net.core.somaxconn": "512"}
    net = parse_network_config(json.dumps(doc), "net1.conflist")
    assert _types(fit_chain(net, port_mappings=False)) == ["bridge", "tuning"]
    only = parse_network_config(json.dumps({"cniVersion": "1.0.0", "name": "p", "plugins": [{"type": "portmap"}]}),
                                "p.conflist")
    assert _types(fit_chain(only, port_mappings=False)) == ["portmap"]
