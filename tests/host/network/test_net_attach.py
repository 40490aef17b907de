"""Attaching pods to a CNI network with the real plugins: addresses, reachability, hostPorts."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from tests.support.network import free_port, host_address


def _netns_addresses(net, netns: str) -> dict[str, list[str]]:
    res = net.exec_in(netns, ["ip", "-j", "-4", "addr"])
    return {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
            for link in json.loads(res.stdout)}


def _links(net, netns: str) -> list[str]:
    return [link["ifname"] for link in json.loads(net.exec_in(netns, ["ip", "-j", "link"]).stdout)]


def _link_state(net, netns: str, ifname: str) -> str:
    res = net.exec_in(netns, ["ip", "-j", "link", "show", ifname])
    return json.loads(res.stdout)[0]["operstate"] if res.returncode == 0 else ""


def test_add_check_del_round_trip(test_network, host_paths):
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    pod = test_network.pod("web")

    status = driver.attach(pod, ns)

    assert status.network == test_network.name
    assert ipaddress.IPv4Address(status.ip) in test_network.subnet
    assert status.gateway == test_network.gateway and status.prefix_length == 24
    assert _netns_addresses(test_network, ns)["eth0"] == [f"{status.ip}/24"]
    assert _netns_addresses(test_network, ns)["lo"][0] == "127.0.0.1/8"
    assert _link_state(test_network, ns, "lo") == "UNKNOWN"  # up (loopback reports no carrier state)
    assert test_network.allocations() == [f"{test_network.name}/{status.ip}"]
    record = json.loads((host_paths.cni / "results" / f"{pod.uid}.json").read_text())
    assert record["netns"] == ns and record["network"] == test_network.name
    # The chain fitted to the pod: no portmap without hostPorts, no tuning with nothing to set
    # (each a process start for nothing); DEL and CHECK run the recorded chain.
    conflist = json.loads(test_network.conflist.read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "tuning"]
    assert record["config"] == {**conflist, "plugins": [p for p in conflist["plugins"] if p["type"] == "bridge"]}
    assert [a.pod_uid for a in driver.list_attachments()] == [pod.uid]
    assert driver.list_attachments()[0].status == status

    driver.check(pod.uid)
    # Attaching again is a CHECK, not a second address.
    assert driver.attach(pod, ns) == status
    assert test_network.allocations() == [f"{test_network.name}/{status.ip}"]

    driver.detach(pod.uid)

    assert "eth0" not in _links(test_network, ns)
    assert test_network.allocations() == []
    assert test_network.iptables_rules() == []
    assert driver.list_attachments() == []
    driver.detach(pod.uid)  # idempotent
    with pytest.raises(NetworkError, match="no network attachment"):
        driver.check(pod.uid)


def test_pod_reachable_from_host_by_ip_and_host_port(test_network, host_paths, tmp_path):
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    port = free_port()
    pod = test_network.pod("web", [(80, port)])
    status = driver.attach(pod, ns)
    record = json.loads((host_paths.cni / "results" / f"{pod.uid}.json").read_text())
    assert [p["type"] for p in record["config"]["plugins"]] == ["bridge", "portmap"]
    (tmp_path / "index.html").write_text("hello from the pod\n")
    test_network.serve_http(ns, tmp_path)
    try:
        assert test_network.http_get(f"http://{status.ip}/") == "hello from the pod\n"
        # 127.0.0.1 works because portmap's snat marks loopback-sourced packets for masquerade
        # and sets route_localnet on the bridge.
        assert test_network.http_get(f"http://127.0.0.1:{port}/") == "hello from the pod\n"
        assert test_network.http_get(f"http://{host_address()}:{port}/") == "hello from the pod\n"
        assert status.ports[0].host_port == port and status.ports[0].container_port == 80
        driver.check(pod.uid)
    finally:
        driver.detach(pod.uid)
    assert test_network.iptables_rules() == []
    with pytest.raises(OSError):
        test_network.http_get(f"http://127.0.0.1:{port}/")


def test_udp_host_port(test_network, host_paths):
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    port = free_port("udp")
    pod = test_network.pod("dns", [(5353, port, "UDP")])
    driver.attach(pod, ns)
    test_network.serve_udp_echo(ns, 5353)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            reply = b""
            for attempt in range(10):  # UDP: a datagram may be lost; the server answers each one
                s.sendto(f"ping {attempt}".encode(), ("127.0.0.1", port))
                try:
                    reply = s.recv(2048)
                    break
                except TimeoutError:
                    continue
        assert reply.startswith(b"echo:ping ")
    finally:
        driver.detach(pod.uid)


def test_two_pods_on_one_network_talk(test_network, host_paths, tmp_path):
    driver = CniNetwork(host_paths)
    ns_a, ns_b = test_network.make_netns(), test_network.make_netns()
    a = driver.attach(test_network.pod("a"), ns_a)
    b = driver.attach(test_network.pod("b"), ns_b)
    try:
        assert a.ip != b.ip
        (tmp_path / "index.html").write_text("from a\n")
        test_network.serve_http(ns_a, tmp_path)
        assert test_network.http_get(f"http://{a.ip}/", netns=ns_b) == "from a\n"
        assert sorted(test_network.allocations()) == sorted(f"{test_network.name}/{ip}" for ip in (a.ip, b.ip))
    finally:
        driver.detach(test_network.pod("a").uid)
        driver.detach(test_network.pod("b").uid)


def test_attach_to_a_new_netns_replaces_the_old_attachment(test_network, host_paths):
    driver = CniNetwork(host_paths)
    pod = test_network.pod("web")
    first, second = test_network.make_netns(), test_network.make_netns()
    driver.attach(pod, first)
    status = driver.attach(pod, second)  # e.g. the infra container was recreated
    try:
        assert "eth0" not in _links(test_network, first)
        assert _netns_addresses(test_network, second)["eth0"] == [f"{status.ip}/24"]
        assert test_network.allocations() == [f"{test_network.name}/{status.ip}"]
        assert [a.netns for a in driver.list_attachments()] == [second]
    finally:
        driver.detach(pod.uid)


def test_attach_repairs_a_broken_attachment(test_network, host_paths):
    driver = CniNetwork(host_paths)
    pod = test_network.pod("web")
    ns = test_network.make_netns()
    driver.attach(pod, ns)
    test_network.exec_in(ns, ["ip", "link", "delete", "eth0"])
    with pytest.raises(NetworkError, match="bridge"):
        driver.check(pod.uid)
    status = driver.attach(pod, ns)
    try:
        driver.check(pod.uid)
        assert _netns_addresses(test_network, ns)["eth0"] == [f"{status.ip}/24"]
        assert len(test_network.allocations()) == 1
    finally:
        driver.detach(pod.uid)


def test_failed_add_is_undone(test_network, host_paths):
    doc = test_network.conflist_doc()
    # tuning runs after bridge has leased an address and portmap has written rules.
    doc["plugins"][-1]["sysctl"] = {"net.ipv4.conf.eth0.no_such_setting": "1"}
    test_network.write_conflist(doc)
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    pod = test_network.pod("web", [(80, free_port())])

    with pytest.raises(NetworkError, match=r"CNI plugin 'tuning' failed ADD on network 'pptnet-\d+'"):
        driver.attach(pod, ns)

    assert test_network.allocations() == []
    assert test_network.iptables_rules() == []
    assert driver.list_attachments() == []
    assert "eth0" not in _links(test_network, ns)


def test_host_network_pod_is_not_attached(test_network, host_paths):
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    with pytest.raises(NetworkError, match="host network"):
        driver.attach(test_network.pod("h", host_network=True), ns)
    assert driver.list_attachments() == []


@pytest.mark.parametrize("netns", ["/proc/self/ns/net", "/nonexistent/netns", "/etc/hostname"])
def test_refuses_a_path_that_is_not_a_pod_netns(test_network, host_paths, netns):
    driver = CniNetwork(host_paths)
    with pytest.raises(NetworkError, match="host's own|does not exist|not a network namespace"):
        driver.attach(test_network.pod("web"), netns)
    assert driver.list_attachments() == []


def test_pods_attach_and_detach_in_parallel_and_a_contested_port_goes_to_one(test_network, host_paths):
    """apply runs independent pods in threads: attaches of different pods proceed side by side,
    and of two pods claiming one hostPort exactly one gets it."""
    from concurrent.futures import ThreadPoolExecutor

    driver = CniNetwork(host_paths)
    port = free_port()
    pods = [test_network.pod(f"p{i}") for i in range(4)] + [test_network.pod(f"c{i}", [(80, port)]) for i in range(2)]
    netns = [test_network.make_netns() for _ in pods]

    def attach(args):
        pod, ns = args
        try:
            return driver.attach(pod, ns).ip
        except NetworkError as exc:
            return exc

    with ThreadPoolExecutor(len(pods)) as pool:
        results = list(pool.map(attach, zip(pods, netns)))
    ips = results[:4]
    assert all(isinstance(ip, str) for ip in ips) and len(set(ips)) == 4
    contested = results[4:]
    assert sum(isinstance(r, str) for r in contested) == 1, contested
    assert any(isinstance(r, NetworkError) and str(port) in str(r) for r in contested)
    with ThreadPoolExecutor(len(pods)) as pool:
        list(pool.map(driver.detach, [p.uid for p in pods]))
    assert driver.list_attachments() == []
    assert test_network.allocations() == [] and test_network.iptables_rules() == []
    assert not list((host_paths.cni / "locks").glob("*.lock"))
    for ns in netns:
        test_network.delete_netns(ns)
