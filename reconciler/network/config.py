"""CNI network configurations: standard ``.conflist`` files in the network directory.

A network is whatever file in ``HostPaths.network_dir`` carries its ``"name"``: users may edit
or replace the files with their own. On first use of the default network ``podplay`` a
conflist is written (a bridge named after the storage root, ``podplay<tag>``, with a free /24,
and host-local IPAM keeping its allocations under the run root, then portmap and tuning; the
pods' traffic is accepted in FORWARD by podplay's own per-network rules, network.forward, rather
than by the firewall plugin, which a conflist may still list). Every file is validated before a
plugin sees it, so that a typo surfaces as ``file: field: what is wrong`` rather than as a
plugin's error.

hostPorts on 127.0.0.1 (Debian 12's plugins, 1.1.1): portmap DNATs locally generated packets in
OUTPUT, but a packet from 127.0.0.1 may only leave through the bridge when the bridge has
``route_localnet`` set, and the pod cannot answer 127.0.0.1 unless the source is masqueraded.
portmap does both (sets route_localnet on the bridge, marks loopback-sourced flows for its
CNI-HOSTPORT-MASQ chain) only with ``"snat": true``, so the default conflist sets it. Without
it the host's own address works and 127.0.0.1 times out; setting route_localnet alone is not
enough.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import Diagnostic, NetworkError, Severity
from reconciler.fsutil import atomic_write
from reconciler.paths import HostPaths

DEFAULT_NETWORK = "podplay"
# The bridge of conflists written before bridges were named per storage root (see default_bridge).
LEGACY_BRIDGE = "podplay0"
# Far from podman (10.88.0.0/16 and 10.89.x), docker (172.17+) and libvirt (192.168.122);
# when a host already routes it, the next free /24 of the pool is taken instead.
DEFAULT_SUBNET_POOL = ipaddress.IPv4Network("10.129.0.0/16")
DEFAULT_SUBNET_PREFIX = 24

# The result formats podplay reads: 0.3.x/0.4.0 and 1.0.0 differ only in details it ignores.
# CHECK and a prevResult on DEL exist from 0.4.0 on.
SUPPORTED_CNI_VERSIONS = ("1.0.0", "0.4.0", "0.3.1", "0.3.0")
CONFIG_SUFFIXES = (".conflist", ".conf", ".json")

# CNI spec, section 1: network names.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PLUGIN_TYPE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


@dataclass(frozen=True)
class NetworkConfig:
    """One validated network configuration list, as read from ``file``."""

    name: str
    cni_version: str
    plugins: tuple[dict, ...] = field(compare=False)
    file: str = ""
    disable_check: bool = False
    raw: dict = field(default_factory=dict, compare=False)

    def capability_plugins(self, capability: str) -> list[str]:
        """Types of the plugins that declare ``capability`` (e.g. ``portMappings``)."""
        return [p["type"] for p in self.plugins if p.get("capabilities", {}).get(capability) is True]

    def subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Subnets of every host-local IPAM section (for leak checks and conflict reports)."""
        out = []
        for p in self.plugins:
            for subnet in ipam_subnets(p.get("ipam") or {}):
                out.append(ipaddress.ip_network(subnet, strict=False))
        return out


def ipam_subnets(ipam: dict) -> list[str]:
    out = []
    if isinstance(ipam.get("subnet"), str):
        out.append(ipam["subnet"])
    for rangeset in ipam.get("ranges") or []:
        if isinstance(rangeset, list):
            out += [r["subnet"] for r in rangeset if isinstance(r, dict) and isinstance(r.get("subnet"), str)]
    return out


# --- validation -------------------------------------------------------------------------------

class _Checker:
    def __init__(self, file: str):
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: str, message: str, line: int = 0, column: int = 0) -> None:
        self.diagnostics.append(Diagnostic(Severity.ERROR, self.file, line, column, path, message))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            err = NetworkError("invalid network configuration:\n  " +
                               "\n  ".join(str(d) for d in self.diagnostics))
            err.diagnostics = list(self.diagnostics)  # type: ignore[attr-defined]
            raise err


def _check_ipam(c: _Checker, where: str, ipam: object) -> None:
    if not isinstance(ipam, dict):
        c.error(where, f"must be an object, not {type(ipam).__name__}")
        return
    if not ipam:
        return  # an empty ipam section means "no IPAM" to the plugins
    if not isinstance(ipam.get("type"), str) or not _PLUGIN_TYPE.match(ipam["type"]):
        c.error(f"{where}.type", "must name the IPAM plugin, e.g. \"host-local\"")
    if "dataDir" in ipam and (not isinstance(ipam["dataDir"], str) or not ipam["dataDir"].startswith("/")):
        c.error(f"{where}.dataDir", "must be an absolute path")
    entries: list[tuple[str, dict]] = []
    if "subnet" in ipam:
        entries.append((where, ipam))
    if "ranges" in ipam:
        ranges = ipam["ranges"]
        if not isinstance(ranges, list) or not ranges:
            c.error(f"{where}.ranges", "must be a non-empty list of range sets (lists of {\"subnet\": …})")
            ranges = []
        for i, rangeset in enumerate(ranges):
            if not isinstance(rangeset, list) or not rangeset:
                c.error(f"{where}.ranges[{i}]", "must be a non-empty list of ranges")
                continue
            for j, r in enumerate(rangeset):
                if not isinstance(r, dict):
                    c.error(f"{where}.ranges[{i}][{j}]", "must be an object with a \"subnet\"")
                    continue
                entries.append((f"{where}.ranges[{i}][{j}]", r))
    for path, r in entries:
        subnet = r.get("subnet")
        try:
            net = ipaddress.ip_network(subnet, strict=False)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            c.error(f"{path}.subnet", f"{subnet!r} is not a subnet in CIDR notation (e.g. \"10.129.0.0/24\")")
            continue
        if net.num_addresses < 4:
            c.error(f"{path}.subnet", f"{subnet} is too small to hold a gateway and a pod")
        for key in ("rangeStart", "rangeEnd", "gateway"):
            if key not in r:
                continue
            try:
                addr = ipaddress.ip_address(r[key])
            except (ValueError, TypeError):
                c.error(f"{path}.{key}", f"{r[key]!r} is not an IP address")
                continue
            if addr not in net:
                c.error(f"{path}.{key}", f"{addr} is outside the subnet {net}")
    routes = ipam.get("routes", [])
    if not isinstance(routes, list):
        c.error(f"{where}.routes", "must be a list of {\"dst\": CIDR}")
        routes = []
    for i, route in enumerate(routes):
        try:
            ipaddress.ip_network(route["dst"], strict=False)
        except (ValueError, TypeError, KeyError):
            c.error(f"{where}.routes[{i}].dst", "must be a destination in CIDR notation (e.g. \"0.0.0.0/0\")")


def _check_plugin(c: _Checker, where: str, plugin: object) -> None:
    if not isinstance(plugin, dict):
        c.error(where, f"must be an object with a \"type\", not {type(plugin).__name__}")
        return
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not _PLUGIN_TYPE.match(ptype):
        c.error(f"{where}.type", f"must name a plugin binary (e.g. \"bridge\"), got {ptype!r}")
    caps = plugin.get("capabilities", {})
    if not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values()):
        c.error(f"{where}.capabilities", "must be an object of booleans, e.g. {\"portMappings\": true}")
    if "ipam" in plugin:
        _check_ipam(c, f"{where}.ipam", plugin["ipam"])
    if ptype == "bridge" and "bridge" in plugin and (
            not isinstance(plugin["bridge"], str) or not _IFNAME.match(plugin["bridge"])):
        c.error(f"{where}.bridge", f"{plugin['bridge']!r} is not an interface name "
                "(at most 15 characters, no spaces, '/' or ':')")
    for key in ("isGateway", "ipMasq", "hairpinMode", "isDefaultGateway", "snat"):
        if key in plugin and not isinstance(plugin[key], bool):
            c.error(f"{where}.{key}", f"must be true or false, not {plugin[key]!r}")


def parse_network_config(text: str, file: str) -> NetworkConfig:
    """Parse and validate one configuration file's text. A ``.conf`` (a single plugin object,
    recognised by a top-level ``type``) is read as a list of one, as libcni does."""
    c = _Checker(file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        c.error("", f"not valid JSON: {exc.msg}", exc.lineno, exc.colno)
        c.raise_if_any()
    if not isinstance(doc, dict):
        c.error("", "must be a JSON object with \"cniVersion\", \"name\" and \"plugins\"")
        c.raise_if_any()
    single = "plugins" not in doc and "type" in doc
    version = doc.get("cniVersion")
    if not isinstance(version, str) or not version:
        c.error("cniVersion", f"is required; use one of {', '.join(SUPPORTED_CNI_VERSIONS)}")
    elif version not in SUPPORTED_CNI_VERSIONS:
        c.error("cniVersion", f"{version!r} is not supported; use one of {', '.join(SUPPORTED_CNI_VERSIONS)}")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        c.error("name", f"must be a network name (letters, digits, '_', '.', '-'), got {name!r}")
    disable_check = doc.get("disableCheck", False)
    if not isinstance(disable_check, bool):
        c.error("disableCheck", f"must be true or false, not {disable_check!r}")
    if single:
        plugin = {k: v for k, v in doc.items() if k not in ("cniVersion", "name")}
        _check_plugin(c, "", plugin)
        plugins = [plugin]
    else:
        plugins = doc.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            c.error("plugins", "must be a non-empty list of plugin objects (e.g. [{\"type\": \"bridge\", …}])")
            plugins = []
        for i, plugin in enumerate(plugins):
            _check_plugin(c, f"plugins[{i}]", plugin)
    c.raise_if_any()
    return NetworkConfig(name=name, cni_version=version, plugins=tuple(plugins), file=file,
                         disable_check=disable_check, raw=doc)


def fit_chain(net: NetworkConfig, *, port_mappings: bool) -> NetworkConfig:
    """The chain one pod needs of ``net``: the plugins that would do nothing for it are left out
    (each is a process start, and portmap and firewall run iptables several times each).

    - ``portmap`` without port mappings: its ADD only passes the previous result on;
    - ``tuning`` with nothing to set (``{"type": "tuning"}``, the default conflist's hook).

    Every other plugin runs as configured (``firewall`` included, where a conflist lists it: then
    it, not podplay's network.forward rules, lets the pod's traffic through a FORWARD policy of
    DROP). The attachment records the fitted list, so DEL and CHECK run exactly the plugins its
    ADD ran; a single-plugin configuration is kept whole.
    """
    if len(net.plugins) < 2 or "plugins" not in net.raw:
        return net

    def idle(plugin: dict) -> bool:
        if plugin.get("type") == "portmap":
            return not port_mappings
        return plugin.get("type") == "tuning" and not (set(plugin) - {"type"})

    kept = tuple(p for p in net.plugins if not idle(p))
    if len(kept) == len(net.plugins) or not kept:
        return net
    raw = {**net.raw, "plugins": [p for p in net.raw["plugins"] if not idle(p)]}
    return NetworkConfig(name=net.name, cni_version=net.cni_version, plugins=kept, file=net.file,
                         disable_check=net.disable_check, raw=raw)


# --- lookup -----------------------------------------------------------------------------------

def _config_files(network_dir: Path) -> list[Path]:
    try:
        entries = sorted(network_dir.iterdir())
    except FileNotFoundError:
        return []
    return [p for p in entries if p.suffix in CONFIG_SUFFIXES and p.is_file() and not p.name.startswith(".")]


def load_networks(network_dir: Path) -> tuple[dict[str, NetworkConfig], dict[Path, NetworkError]]:
    """Every valid network in the directory by name, and the files that failed to parse."""
    networks: dict[str, NetworkConfig] = {}
    broken: dict[Path, NetworkError] = {}
    for path in _config_files(network_dir):
        try:
            net = parse_network_config(path.read_text(errors="replace"), str(path))
        except NetworkError as exc:
            broken[path] = exc
            continue
        except OSError as exc:
            broken[path] = NetworkError(f"{path}: cannot read: {exc.strerror}")
            continue
        if net.name in networks:
            broken[path] = NetworkError(
                f"{path}: name: network {net.name!r} is already defined by {networks[net.name].file}; "
                "give each network a unique name")
            continue
        networks[net.name] = net
    return networks, broken


def find_network(network_dir: Path, name: str) -> NetworkConfig:
    """The network called ``name``; a NetworkError naming the file that would define it."""
    networks, broken = load_networks(network_dir)
    if name in networks:
        # A second file claiming the same name makes the choice ambiguous: say so.
        for exc in broken.values():
            if f"network {name!r} is already defined" in str(exc):
                raise exc
        return networks[name]
    # A broken file that would define this network is the likely culprit: report it first.
    for path, exc in broken.items():
        if path.stem == name or f'"{name}"' in _read_quietly(path):
            raise exc
    hint = f"; unreadable files: {', '.join(str(p) for p in broken)}" if broken else ""
    raise NetworkError(
        f"network {name!r} is not defined: no configuration in {network_dir} has \"name\": {name!r} "
        f"(create {network_dir / (name + '.conflist')} or fix the pod's podplay.io/network annotation){hint}")


def _read_quietly(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --- the default network -----------------------------------------------------------------------

def default_conflist(name: str, bridge: str, subnet: str, ipam_dir: str, cni_version: str = "1.0.0") -> dict:
    """The conflist podplay writes for a network it creates: a bridge with NAT to the outside,
    host-local addresses, hostPort forwarding and an empty tuning hook. No firewall plugin (a
    process and several iptables runs per pod, on ADD and on DEL): podplay accepts the network's
    traffic in FORWARD itself, with two rules per network (network.forward)."""
    net = ipaddress.IPv4Network(subnet)
    return {
        "cniVersion": cni_version,
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    # Under the run root: allocations vanish with a reboot, like the pods.
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": str(net), "gateway": str(net.network_address + 1)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            # snat: host processes reach hostPorts on 127.0.0.1 (portmap sets route_localnet).
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "tuning"},
        ],
    }


def routed_networks(route_table: str = "/proc/net/route") -> list[ipaddress.IPv4Network]:
    """IPv4 destinations the host already routes (connected subnets included), default excluded."""
    out = []
    try:
        with open(route_table) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        cols = line.split()
        if len(cols) < 8:
            continue
        dest, mask = int(cols[1], 16), int(cols[7], 16)
        if mask == 0:
            continue
        # The kernel prints these in host byte order (little-endian here).
        d = ipaddress.IPv4Address(int.from_bytes(dest.to_bytes(4, "little"), "big"))
        m = ipaddress.IPv4Address(int.from_bytes(mask.to_bytes(4, "little"), "big"))
        out.append(ipaddress.IPv4Network(f"{d}/{m}", strict=False))
    return out


def pick_subnet(pool: ipaddress.IPv4Network, taken: list, prefix: int = 24) -> ipaddress.IPv4Network:
    """The first /``prefix`` of ``pool`` that overlaps none of ``taken``."""
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise NetworkError(f"no free /{prefix} subnet left in {pool} for the default network; "
                       f"write {DEFAULT_NETWORK}.conflist yourself")


def default_bridge(paths: HostPaths) -> str:
    """The bridge of this storage root's default network: ``podplay`` + the root's tag, 15
    characters (the longest interface name Linux takes), so that two roots on one host never
    share a bridge (each writes its own conflist with its own subnet)."""
    return ("podplay" + paths.tag[2:])[:15]


def interface_addresses(name: str | None = None) -> dict[str, list]:
    """IP addresses (``ipaddress.ip_interface``) of the host's interfaces by name, or of the one
    called ``name`` (``{}`` when it does not exist), from ``ip -j addr``."""
    import subprocess

    argv = ["ip", "-j", "addr", "show"] + (["dev", name] if name else [])
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NetworkError(f"cannot list the host's addresses with `{' '.join(argv)}`: {exc}") from None
    if res.returncode != 0:
        if name and "does not exist" in res.stderr:
            return {}
        raise NetworkError(f"`{' '.join(argv)}` failed: {res.stderr.strip()[-300:]}")
    out: dict[str, list] = {}
    try:
        for link in json.loads(res.stdout or "[]"):
            addrs = out.setdefault(link["ifname"], [])
            for a in link.get("addr_info", []):
                addrs.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
    except (ValueError, KeyError, TypeError) as exc:
        raise NetworkError(f"cannot read the output of `{' '.join(argv)}`: {exc}") from None
    return out


def ensure_default_network(paths: HostPaths) -> NetworkConfig:
    """The default network, writing ``<network_dir>/podplay.conflist`` on first use.

    Its bridge and subnet are chosen together: the bridge is named after the storage root
    (``default_bridge``); if that bridge exists already (its conflist was removed, the bridge
    stayed) its subnet is kept, else the first free /24 of the pool is taken, free meaning not
    routed, not on any interface and not in another network of the directory. A conflist written
    by an older podplay (bridge ``podplay0``) is read as it is: the bridge check of the driver
    refuses it clearly if another root took that bridge with another subnet."""
    networks, _ = load_networks(paths.network_dir)
    if DEFAULT_NETWORK in networks:
        return networks[DEFAULT_NETWORK]
    target = paths.network_dir / f"{DEFAULT_NETWORK}.conflist"
    if target.exists():
        # Never overwrite a user's file, even one that is broken or defines another name.
        return find_network(paths.network_dir, DEFAULT_NETWORK)
    bridge = default_bridge(paths)
    addresses = interface_addresses()
    mine = [a.network for a in addresses.get(bridge, []) if a.version == 4]
    if mine:
        subnet = mine[0]
    else:
        taken = routed_networks() + [n for net in networks.values() for n in net.subnets() if n.version == 4]
        taken += [a.network for addrs in addresses.values() for a in addrs if a.version == 4]
        subnet = pick_subnet(DEFAULT_SUBNET_POOL, taken, DEFAULT_SUBNET_PREFIX)
    doc = default_conflist(DEFAULT_NETWORK, bridge, str(subnet), str(paths.cni / "ipam"))
    paths.network_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(target, json.dumps(doc, indent=2) + "\n")
    return parse_network_config(target.read_text(), str(target))
