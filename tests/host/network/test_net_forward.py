"""podplay's own forward-accept rules (network.forward) in place of the CNI firewall plugin: two
rules per network while it has pods, none once its last pod is gone, none for a conflist that
lists the firewall plugin, and none left after the run root was wiped."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from reconciler.network.config import default_conflist
from reconciler.network.forward import CHAIN
from tests.support.network import free_port, host_address


def _forward_rules(subnet) -> list[str]:
    """podplay's rules for ``subnet`` in its chain, as ``iptables -S`` prints them."""
    res = subprocess.run(["iptables", "-w", "-S", CHAIN], capture_output=True, text=True)
    return [r for r in res.stdout.splitlines() if r.startswith(f"-A {CHAIN} ") and f" {subnet} " in r]


def _jumps() -> list[str]:
    res = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True)
    return [r for r in res.stdout.splitlines() if r.endswith(f"-j {CHAIN}")]


def _ipt(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)


def test_a_pod_gets_out_through_a_forward_drop_and_is_reached_through_its_host_port(
        test_network, host_paths, tmp_path):
    """FORWARD dropping everything of the test's subnet (as a policy of DROP would, e.g. with
    Docker, but for this test's addresses only): the pod still reaches a server outside its
    network, routed by the host (podplay's rules accept its packets and the replies), and is
    reached through its hostPort."""
    slot = test_network.subnet
    pods_net = ipaddress.IPv4Network(f"{slot.network_address}/25")  # the pods' half of the slot
    outside_host, outside_peer = slot.network_address + 129, slot.network_address + 130
    test_network.write_conflist(default_conflist(test_network.name, test_network.bridge, str(pods_net),
                                                 str(test_network.ipam_dir)))
    # A "server outside": a netns on a routed point-to-point link, not on the pods' bridge.
    outside = test_network.make_netns()
    veth = f"pptv{test_network.slot:03d}"
    for argv in (["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", outside],
                 ["ip", "addr", "add", f"{outside_host}/30", "dev", veth], ["ip", "link", "set", veth, "up"]):
        subprocess.run(argv, check=True, capture_output=True)
    for argv in (["ip", "addr", "add", f"{outside_peer}/30", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                 ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", str(outside_host)]):
        assert test_network.exec_in(outside, argv).returncode == 0, argv
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("from outside\n")
    test_network.serve_http(outside, tmp_path / "out")

    drops = [["FORWARD", "-s", str(slot), "-j", "DROP"], ["FORWARD", "-d", str(slot), "-j", "DROP"]]
    driver = CniNetwork(host_paths)
    port = free_port()
    pod = test_network.pod("web", [(80, port)])
    ns = test_network.make_netns()
    try:
        for rule in drops:
            _ipt("-A", *rule)
        status = driver.attach(pod, ns)
        assert ipaddress.IPv4Address(status.ip) in pods_net
        record = json.loads((host_paths.cni / "results" / f"{pod.uid}.json").read_text())
        assert "firewall" not in [p["type"] for p in record["config"]["plugins"]]
        assert len(_forward_rules(pods_net)) == 2 and len(_jumps()) == 1

        assert test_network.http_get(f"http://{outside_peer}/", netns=ns) == "from outside\n"

        (tmp_path / "pod").mkdir()
        (tmp_path / "pod" / "index.html").write_text("from the pod\n")
        test_network.serve_http(ns, tmp_path / "pod")
        assert test_network.http_get(f"http://127.0.0.1:{port}/") == "from the pod\n"
        assert test_network.http_get(f"http://{host_address()}:{port}/") == "from the pod\n"
        driver.check(pod.uid)
    finally:
        driver.detach(pod.uid)
        for rule in drops:
            subprocess.run(["iptables", "-w", "-D", *rule], capture_output=True)
        test_network.delete_netns(outside)  # takes the veth pair and its route along
    assert _forward_rules(pods_net) == []


def test_two_pods_share_one_pair_of_rules_which_goes_with_the_last(test_network, host_paths):
    driver = CniNetwork(host_paths)
    a, b = test_network.pod("a"), test_network.pod("b", [(80, free_port())])
    driver.attach(a, test_network.make_netns())
    driver.attach(b, test_network.make_netns())
    rules = _forward_rules(test_network.subnet)
    assert len(rules) == 2 and any("RELATED,ESTABLISHED" in r for r in rules)
    assert all(f'"podplay {host_paths.tag} {test_network.name}"' in r for r in rules)
    assert len(_jumps()) == 1

    driver.detach(a.uid)
    assert _forward_rules(test_network.subnet) == rules

    driver.detach(b.uid)
    assert _forward_rules(test_network.subnet) == []
    assert test_network.iptables_rules() == []


def test_pods_detaching_at_the_same_time_leave_no_rule(test_network, host_paths, monkeypatch):
    """`down` detaches a network's pods side by side: the last record and the rules go together,
    so no detach can see another's record that is about to go and keep the rules for it. Here
    each detach waits (up to 2 s) for the other at its record's deletion: were that outside the
    network lock, both would have decided to keep the rules by then."""
    pods = [test_network.pod(f"p{i}") for i in range(2)]
    drivers = [CniNetwork(host_paths) for _ in pods]  # one per thread, as separate processes would be
    for d, p in zip(drivers, pods):
        d.attach(p, test_network.make_netns())
    assert len(_forward_rules(test_network.subnet)) == 2
    meet = threading.Barrier(len(pods))
    real = CniNetwork._cache_path

    class Record(type(real(drivers[0], pods[0].uid))):
        def unlink(self, missing_ok=False):
            with contextlib.suppress(threading.BrokenBarrierError):
                meet.wait(timeout=2)
            return super().unlink(missing_ok)

    monkeypatch.setattr(CniNetwork, "_cache_path", lambda self, uid: Record(real(self, uid)))
    with ThreadPoolExecutor(len(pods)) as pool:
        list(pool.map(lambda dp: dp[0].detach(dp[1].uid), zip(drivers, pods)))
    assert _forward_rules(test_network.subnet) == []
    assert test_network.iptables_rules() == []


def test_rules_made_before_a_crash_are_not_doubled_and_still_go(test_network, host_paths):
    """podplay killed after making the rules, before noting it: the next pod's attach finds
    them (no second pair), and the last detach removes them."""
    driver = CniNetwork(host_paths)
    a, b = test_network.pod("a"), test_network.pod("b")
    driver.attach(a, test_network.make_netns())
    shutil.rmtree(host_paths.cni / "forward")  # the note of the rules, as if never written
    driver.attach(b, test_network.make_netns())
    assert len(_forward_rules(test_network.subnet)) == 2
    for pod in (a, b):
        CniNetwork(host_paths).detach(pod.uid)
    assert _forward_rules(test_network.subnet) == []


def test_check_notices_removed_rules_and_attach_puts_them_back(test_network, host_paths):
    driver = CniNetwork(host_paths)
    pod, other = test_network.pod("web"), test_network.pod("other")
    ns = test_network.make_netns()
    driver.attach(pod, ns)
    driver.attach(other, test_network.make_netns())
    try:
        # e.g. a firewall reload lost one (removing both would leave the shared chain empty)
        [accept_out] = [r for r in _forward_rules(test_network.subnet) if " -s " in r]
        _ipt("-D", *shlex.split(accept_out)[1:])
        assert len(_forward_rules(test_network.subnet)) == 1
        with pytest.raises(NetworkError, match="forward-accept rules"):
            driver.check(pod.uid)
        driver.attach(pod, ns)
        assert len(_forward_rules(test_network.subnet)) == 2
        driver.check(pod.uid)
    finally:
        driver.detach(pod.uid)
        driver.detach(other.uid)
    assert _forward_rules(test_network.subnet) == []


def test_a_conflist_with_the_firewall_plugin_gets_no_podplay_rules(test_network, host_paths):
    """A conflist written before podplay made its own rules keeps the firewall plugin, which
    runs as before (its per-pod rules in CNI-FORWARD) and podplay adds nothing."""
    doc = test_network.conflist_doc()
    doc["plugins"].insert(2, {"type": "firewall", "backend": "iptables"})
    test_network.write_conflist(doc)
    driver = CniNetwork(host_paths)
    pod = test_network.pod("web")
    status = driver.attach(pod, test_network.make_netns())
    try:
        assert _forward_rules(test_network.subnet) == []
        plugin_rules = [r for _, table, r in test_network.iptables_rules() if table == "filter"]
        assert any(r.startswith("-A CNI-FORWARD ") and f"{status.ip}/32" in r for r in plugin_rules)
        driver.check(pod.uid)
    finally:
        driver.detach(pod.uid)
    assert test_network.iptables_rules() == []


@pytest.mark.parametrize("after", ["down", "next up"])
def test_a_wiped_run_root_leaves_no_rule_behind(test_network, host_paths, after):
    """The run root lost (wiped by hand, tmpfs remounted) while the pods' rules survive: the
    next detach (a `down`) or attach (an `up`) of the root sweeps them, the forward rules and the
    plugins' hostPort and masquerade rules alike."""
    port = free_port()
    pod = test_network.pod("web", [(80, port)])
    ns = test_network.make_netns()
    CniNetwork(host_paths).attach(pod, ns)
    assert len(_forward_rules(test_network.subnet)) == 2
    test_network.delete_netns(ns)
    shutil.rmtree(host_paths.runroot)
    host_paths.runroot.mkdir()

    fresh = CniNetwork(host_paths)
    if after == "down":
        fresh.detach(pod.uid)
        assert test_network.iptables_rules() == []
    else:
        other = test_network.pod("other")
        fresh.attach(other, test_network.make_netns())
        assert len(_forward_rules(test_network.subnet)) == 2  # the new pod's network in use
        assert not [r for _, _, r in test_network.iptables_rules() if str(port) in r]
        fresh.detach(other.uid)
    assert test_network.iptables_rules() == []
    assert _forward_rules(test_network.subnet) == []
