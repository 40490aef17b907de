"""hostPort conflicts: with another pod's attachment and with a host process, refused before any change."""

from __future__ import annotations

import os
import socket

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from tests.support.network import free_port


def test_conflict_with_another_pod_is_refused_before_any_change(test_network, host_paths):
    driver = CniNetwork(host_paths)
    port = free_port()
    first = test_network.pod("first", [(80, port)])
    second = test_network.pod("second", [(8080, port)])
    ns1, ns2 = test_network.make_netns(), test_network.make_netns()
    status = driver.attach(first, ns1)
    rules_before = test_network.iptables_rules()
    try:
        [conflict] = driver.port_conflicts(second)
        assert f"hostPort {port}/tcp" in conflict and "pod default/first" in conflict and first.uid in conflict

        with pytest.raises(NetworkError, match=f"pod default/second cannot start: hostPort {port}/tcp"):
            driver.attach(second, ns2)

        assert [a.pod_uid for a in driver.list_attachments()] == [first.uid]
        assert test_network.allocations() == [f"{test_network.name}/{status.ip}"]
        assert test_network.iptables_rules() == rules_before
        assert "eth0" not in test_network.exec_in(ns2, ["ip", "link"]).stdout
        # The pod's own attachment is not a conflict with itself.
        assert driver.port_conflicts(first) == []
        # Another protocol on the same number is free.
        assert driver.port_conflicts(test_network.pod("udp", [(53, port, "UDP")])) == []
    finally:
        driver.detach(first.uid)
    assert driver.port_conflicts(second) == []


def test_conflict_with_a_host_process_names_it(test_network, host_paths):
    driver = CniNetwork(host_paths)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        pod = test_network.pod("web", [(80, port)])
        [conflict] = driver.port_conflicts(pod)
        assert f"hostPort {port}/tcp is already in use by a host process listening on 127.0.0.1:{port}" in conflict
        assert f"pid {os.getpid()}" in conflict

        ns = test_network.make_netns()
        with pytest.raises(NetworkError, match=f"hostPort {port}/tcp"):
            driver.attach(pod, ns)
        assert driver.list_attachments() == []
        assert test_network.allocations() == []
        assert test_network.iptables_rules() == []

        # A hostIP elsewhere does not collide with a listener on 127.0.0.1 only.
        other = test_network.pod("other", [(80, port, "TCP", "192.0.2.123")])
        assert driver.port_conflicts(other) == []


def test_udp_conflict_with_a_bound_host_socket(test_network, host_paths):
    driver = CniNetwork(host_paths)
    port = free_port("udp")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as bound:
        bound.bind(("::", port))
        [conflict] = driver.port_conflicts(test_network.pod("dns", [(53, port, "UDP")]))
        assert f"hostPort {port}/udp is already in use by a host process bound on [::]:{port}" in conflict
        assert driver.port_conflicts(test_network.pod("web", [(53, port, "TCP")])) == []


def test_host_network_pod_ports_are_host_ports(test_network, host_paths):
    driver = CniNetwork(host_paths)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", port))
        listener.listen()
        pod = test_network.pod("h", [(port, None)], host_network=True)
        [conflict] = driver.port_conflicts(pod)
        assert f"hostPort {port}/tcp" in conflict and "0.0.0.0" in conflict


def test_duplicate_host_port_within_a_pod(test_network, host_paths):
    driver = CniNetwork(host_paths)
    port = free_port()
    pod = test_network.pod("web", [(80, port), (81, port)])
    [conflict] = driver.port_conflicts(pod)
    assert f"hostPort {port}/tcp is declared twice in pod default/web" in conflict
