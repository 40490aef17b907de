"""hostPorts → port mappings, /proc/net parsing and overlap rules (pure parts of the port check)."""

from __future__ import annotations

import pytest

from reconciler.desired import Loaded, build_desired
from reconciler.errors import NetworkError
from reconciler.model.kube import Container, ContainerPort, ObjectMeta, Pod, PodSpec
from reconciler.network.ports import (
    HostSocket,
    declared_ports,
    host_conflicts,
    overlaps,
    parse_proc_net,
    port_mappings,
    runtime_port_mappings,
)
from reconciler.observed import PortMapping


def _pod(*containers: tuple[str, tuple[ContainerPort, ...]], host_network: bool = False):
    spec = PodSpec(containers=tuple(Container(n, "busybox:1", ports=p) for n, p in containers),
                   host_network=host_network)
    return build_desired([Loaded(Pod(ObjectMeta("web"), spec), "web.yaml")]).pods["default/web"]


def test_only_host_ports_are_mapped_and_protocols_lower_cased():
    pod = _pod(("a", (ContainerPort(80, 8080), ContainerPort(9090))),
               ("b", (ContainerPort(53, 5353, "UDP", "127.0.0.1"), ContainerPort(7, 7007, "SCTP"))))
    assert port_mappings(pod) == (
        PortMapping(8080, 80, "tcp"), PortMapping(5353, 53, "udp", "127.0.0.1"), PortMapping(7007, 7, "sctp"))
    assert [d.container for d in declared_ports(pod)] == ["a", "b", "b"]
    assert runtime_port_mappings(port_mappings(pod)) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
        {"hostPort": 7007, "containerPort": 7, "protocol": "sctp"},
    ]


def test_host_network_container_ports_are_host_ports():
    pod = _pod(("a", (ContainerPort(8080), ContainerPort(53, protocol="UDP"))), host_network=True)
    assert port_mappings(pod) == (PortMapping(8080, 8080, "tcp"), PortMapping(53, 53, "udp"))


@pytest.mark.parametrize(("port", "words"), [
    (ContainerPort(80, 8080, "ICMP"), "protocol 'ICMP' is not TCP, UDP or SCTP"),
    (ContainerPort(80, 70000), "hostPort 70000 is not between 1 and 65535"),
    (ContainerPort(80, 8080, host_ip="localhost"), "hostIP 'localhost' is not an IP address"),
])
def test_bad_ports_are_refused_with_the_container_named(port, words):
    with pytest.raises(NetworkError) as err:
        declared_ports(_pod(("app", (port,))))
    assert "pod default/web: container 'app': port 80: " in str(err.value) and words in str(err.value)


@pytest.mark.parametrize(("a", "b", "expected"), [
    (PortMapping(80, 1), PortMapping(80, 2), True),
    (PortMapping(80, 1), PortMapping(81, 1), False),
    (PortMapping(80, 1, "tcp"), PortMapping(80, 1, "udp"), False),
    (PortMapping(80, 1, host_ip="127.0.0.1"), PortMapping(80, 1), True),
    (PortMapping(80, 1, host_ip="127.0.0.1"), PortMapping(80, 1, host_ip="10.0.0.1"), False),
    (PortMapping(80, 1, host_ip="0.0.0.0"), PortMapping(80, 1, host_ip="10.0.0.1"), True),
    (PortMapping(80, 1, host_ip="::ffff:10.0.0.1"), PortMapping(80, 1, host_ip="10.0.0.1"), True),
])
def test_overlap_rules(a, b, expected):
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue ...
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 4444 1 0
   1: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 5555 1 0
"""
UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6666 2 0 0
  101: 0202000A:9C40 0101000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 7777 2 0 0
"""


def test_parse_proc_net_keeps_listeners_and_unconnected_udp():
    assert parse_proc_net(TCP, "tcp") == [HostSocket("tcp", "127.0.0.1", 8080, 1111),
                                          HostSocket("tcp", "0.0.0.0", 22, 2222)]
    assert parse_proc_net(TCP6, "tcp") == [HostSocket("tcp", "::", 80, 4444), HostSocket("tcp", "::1", 443, 5555)]
    assert parse_proc_net(UDP, "udp") == [HostSocket("udp", "0.0.0.0", 5353, 6666)]


def test_host_conflicts_describe_the_holder():
    sockets = parse_proc_net(TCP, "tcp") + parse_proc_net(TCP6, "tcp") + parse_proc_net(UDP, "udp")
    sockets = [HostSocket(s.protocol, s.ip, s.port, 0) for s in sockets]  # no process lookup
    assert host_conflicts([PortMapping(8080, 80)], sockets) == [
        "hostPort 8080/tcp is already in use by a host process listening on 127.0.0.1:8080"]
    assert host_conflicts([PortMapping(80, 80, host_ip="192.0.2.7")], sockets) == [
        "hostPort 192.0.2.7:80/tcp is already in use by a host process listening on [::]:80"]
    assert host_conflicts([PortMapping(5353, 53, "udp")], sockets) == [
        "hostPort 5353/udp is already in use by a host process bound on 0.0.0.0:5353"]
    assert host_conflicts([PortMapping(8080, 80, host_ip="10.0.0.5"), PortMapping(5353, 53, "tcp"),
                           PortMapping(443, 443, host_ip="127.0.0.1")], sockets) == []
