"""Which networks get podplay's forward-accept rules, and how the rules name their owner."""

from __future__ import annotations

import json

from reconciler.network.config import default_conflist, parse_network_config
from reconciler.network.forward import _comment, _rules, forward_comment, wants_forward_rules


def _net(plugins: list[dict]):
    return parse_network_config(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": plugins}), "n.conflist")


def test_a_bridge_network_without_the_firewall_plugin_gets_podplay_rules():
    default = parse_network_config(json.dumps(default_conflist("n", "br1", "10.129.7.0/24", "/run/x")), "n.conflist")
    assert wants_forward_rules(default)


def test_a_conflist_listing_the_firewall_plugin_keeps_it_alone():
    doc = default_conflist("n", "br1", "10.129.7.0/24", "/run/x")
    doc["plugins"].insert(2, {"type": "firewall"})
    assert not wants_forward_rules(parse_network_config(json.dumps(doc), "n.conflist"))


def test_a_network_the_host_does_not_route_gets_none():
    assert not wants_forward_rules(_net([{"type": "macvlan", "master": "eth0", "ipam": {}}]))


def test_rules_accept_from_the_subnet_and_replies_to_it_and_name_root_and_network():
    comment = forward_comment("pp12345678", "web")
    assert comment == "podplay pp12345678 web"
    to, out = _rules("10.129.7.0/24", comment)
    assert to.startswith("-A PODPLAY-FORWARD -d 10.129.7.0/24 -m conntrack --ctstate RELATED,ESTABLISHED ")
    assert out.startswith("-A PODPLAY-FORWARD -s 10.129.7.0/24 ")
    assert to.endswith("-j ACCEPT") and out.endswith("-j ACCEPT")
    assert _comment(to) == _comment(out) == comment


def test_long_network_names_keep_distinct_comments_within_iptables_limit():
    a, b = forward_comment("pp1", "x" * 300 + "a"), forward_comment("pp1", "x" * 300 + "b")
    assert a != b and len(a) < 256 and a.startswith("podplay pp1 ")
