"""Host ports: a pod's hostPorts as CNI port mappings, and who else holds a port.

portmap forwards a hostPort with DNAT rules, not with a socket, so a port taken by another pod
shows only in podplay's attachment cache; a port taken by a host process shows in
``/proc/net/{tcp,tcp6,udp,udp6}`` (read directly: no dependency on ``ss``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.errors import NetworkError
from reconciler.observed import PortMapping

if TYPE_CHECKING:
    from reconciler.desired import DesiredPod

PROTOCOLS = ("tcp", "udp", "sctp")
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


@dataclass(frozen=True)
class DeclaredPort:
    mapping: PortMapping
    container: str


def declared_ports(pod: DesiredPod) -> list[DeclaredPort]:
    """The host ports the pod asks for. With hostNetwork every containerPort is a host port."""
    out = []
    for c in pod.spec.containers:
        for p in c.ports:
            host_port = p.host_port or (p.container_port if pod.spec.host_network else 0)
            if not host_port:
                continue
            protocol = (p.protocol or "TCP").lower()
            where = f"pod {pod.ref}: container {c.name!r}: port {p.container_port}"
            if protocol not in PROTOCOLS:
                raise NetworkError(f"{where}: protocol {p.protocol!r} is not TCP, UDP or SCTP")
            if not 0 < host_port < 65536 or not 0 < p.container_port < 65536:
                raise NetworkError(f"{where}: hostPort {host_port} is not between 1 and 65535")
            if p.host_ip:
                try:
                    ipaddress.ip_address(p.host_ip)
                except ValueError:
                    raise NetworkError(f"{where}: hostIP {p.host_ip!r} is not an IP address") from None
            out.append(DeclaredPort(PortMapping(host_port, p.container_port, protocol, p.host_ip), c.name))
    return out


def port_mappings(pod: DesiredPod) -> tuple[PortMapping, ...]:
    return tuple(d.mapping for d in declared_ports(pod))


def runtime_port_mappings(ports: Iterable[PortMapping]) -> list[dict]:
    """The ``portMappings`` capability argument (CNI conventions)."""
    out = []
    for p in ports:
        entry: dict = {"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol}
        if p.host_ip:
            entry["hostIP"] = p.host_ip
        out.append(entry)
    return out


def _wildcard(ip: str) -> bool:
    return ip in ("", "0.0.0.0", "::")


def _same_ip(a: str, b: str) -> bool:
    """Whether two bind addresses overlap: a wildcard overlaps everything; an IPv4-mapped IPv6
    address is its IPv4 address."""
    if _wildcard(a) or _wildcard(b):
        return True

    def norm(x: str):
        addr = ipaddress.ip_address(x)
        return addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr

    return norm(a) == norm(b)


def overlaps(a: PortMapping, b: PortMapping) -> bool:
    return a.host_port == b.host_port and a.protocol == b.protocol and _same_ip(a.host_ip, b.host_ip)


def describe(p: PortMapping) -> str:
    where = f"{p.host_ip}:" if p.host_ip else ""
    return f"hostPort {where}{p.host_port}/{p.protocol}"


# --- host sockets ------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostSocket:
    protocol: str
    ip: str
    port: int
    inode: int


def _decode_address(hex_addr: str) -> str:
    """/proc/net address: the IPv4 word, or the four IPv6 words, each in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def parse_proc_net(text: str, protocol: str) -> list[HostSocket]:
    """Bound sockets from one /proc/net/{tcp,udp}[6] table: TCP listeners, unconnected UDP."""
    wanted = _TCP_LISTEN if protocol == "tcp" else _UDP_UNCONNECTED
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != wanted:
            continue
        addr, _, port = cols[1].partition(":")
        out.append(HostSocket(protocol, _decode_address(addr), int(port, 16), int(cols[9])))
    return out


def host_sockets(proc_net: str = "/proc/net") -> list[HostSocket]:
    out = []
    for name, protocol in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            with open(os.path.join(proc_net, name)) as f:
                out += parse_proc_net(f.read(), protocol)
        except OSError:
            continue
    out += _sctp_sockets(os.path.join(proc_net, "sctp", "eps"))
    return out


def _sctp_sockets(path: str) -> list[HostSocket]:
    # Present only with the sctp module loaded: ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines:
        cols = line.split()
        if len(cols) >= 9:
            out.append(HostSocket("sctp", cols[8] if len(cols) == 9 else "", int(cols[5]), int(cols[7])))
    return out


def socket_owner(inode: int, proc: str = "/proc") -> str:
    """"pid 123 (nc)" for the first process holding the socket, "" when none is visible."""
    target = f"socket:[{inode}]"
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) == target:
                    try:
                        with open(os.path.join(proc, pid, "comm")) as f:
                            return f"pid {pid} ({f.read().strip()})"
                    except OSError:
                        return f"pid {pid}"
            except OSError:
                continue
    return ""


def host_conflicts(wanted: Iterable[PortMapping], sockets: list[HostSocket]) -> list[str]:
    out = []
    for p in wanted:
        for s in sockets:
            if s.port == p.host_port and s.protocol == p.protocol and _same_ip(p.host_ip, s.ip):
                owner = socket_owner(s.inode) if s.inode else ""
                what = "listening" if p.protocol == "tcp" else "bound"
                addr = f"[{s.ip}]" if ":" in s.ip else s.ip
                holder = f"a host process {what} on {addr}:{s.port}" + (f" ({owner})" if owner else "")
                out.append(f"{describe(p)} is already in use by {holder}")
                break
    return out
