"""``CniNetwork``: the NetworkDriver over CNI plugins, with a result cache per pod.

Networks without the CNI firewall plugin get podplay's forward-accept rules (network.forward),
made with a network's first attachment and removed with its last; ``<runroot>/cni/forward/<network>``
notes that they were made.

Each attachment is a file ``<runroot>/cni/results/<uid>.json`` holding everything a later DEL
needs even in a new process after a crash: the exact network configuration used, the netns
path and its identity, the CNI_ARGS, the port mappings and the ADD result (updated after every
plugin of the chain, so a crash half-way still leaves what was made on record). The file is
written before the first plugin runs and removed only after a DEL succeeded, so no IP is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import NetworkError
from reconciler.fsutil import atomic_write
from reconciler.model.names import DEFAULT_NETWORK
from reconciler.network.cni import Attachment, CniInvoker, status_from_result
from reconciler.network.config import (
    NetworkConfig,
    ensure_default_network,
    find_network,
    fit_chain,
    interface_addresses,
    ipam_subnets,
    parse_network_config,
)
from reconciler.network.forward import (
    ensure_forward_rules,
    forward_rules_present,
    remove_forward_rules,
    wants_forward_rules,
)
from reconciler.network.masq import rules_by_container, sweep_masquerade, sweep_rules_of
from reconciler.network.ports import (
    declared_ports,
    describe,
    host_conflicts,
    host_sockets,
    overlaps,
    runtime_port_mappings,
)
from reconciler.observed import NetworkStatus, ObservedAttachment, PortMapping
from reconciler.paths import HostPaths

if TYPE_CHECKING:
    from reconciler.desired import DesiredPod

CACHE_FORMAT = 1
IFNAME = "eth0"
# The spec's container id rule; pod uids always match it. Anything else is refused before it
# can become a path or an environment variable.
_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PROC_NETNS = re.compile(r"^/proc/(\d+)/ns/net$")
_ARG_VALUE = re.compile(r"^[^;=\s]*$")


def _check_uid(uid: str) -> None:
    if not isinstance(uid, str) or not _CONTAINER_ID.match(uid) or len(uid) > 128:
        raise NetworkError(f"invalid pod uid {uid!r}: expected letters, digits, '_', '.' or '-'")


def _proc_start_time(pid: str) -> str:
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        return f.read().rpartition(")")[2].split()[19]


def netns_identity(path: str) -> dict | None:
    """What makes a netns path mean the same namespace later: the nsfs inode, and for a
    /proc/<pid>/ns/net path also the process start time (pids and nsfs inodes are reused)."""
    try:
        st = os.stat(path)
        ident: dict = {"dev": st.st_dev, "ino": st.st_ino}
        m = _PROC_NETNS.match(path)
        if m:
            ident["start"] = _proc_start_time(m.group(1))
    except (OSError, IndexError):
        return None
    return ident


def _is_bridge(name: str) -> bool:
    """Whether the interface is a Linux bridge. Read from its uevent's DEVTYPE, which the kernel
    sets before the device appears in sysfs: the ``bridge/`` attribute directory is added a moment
    after the device, so a bridge another pod's plugin is making right now would look like some
    other interface there."""
    try:
        uevent = Path(f"/sys/class/net/{name}/uevent").read_text()
    except FileNotFoundError:
        return True  # gone again: the plugin makes it
    return "DEVTYPE=bridge" in uevent.split()


def _cache_ports(entry: dict) -> tuple[PortMapping, ...]:
    return tuple(PortMapping(int(p["host_port"]), int(p["container_port"]), p.get("protocol", "tcp"),
                             p.get("host_ip", "")) for p in entry.get("ports", ()))


class CniNetwork:
    """NetworkDriver: attach/detach/check pods on CNI networks defined in ``paths.network_dir``.

    Mutations take an exclusive lock (``<runroot>/cni/lock``) so that the port check and the
    ADD that claims the port cannot interleave with another podplay process.
    """

    def __init__(self, paths: HostPaths, *, plugin_dirs: tuple[str, ...] = ("/usr/lib/cni", "/opt/cni/bin")):
        self.paths = paths
        self.cni = CniInvoker(plugin_dirs, version_cache=paths.cni / "versions.json")
        self.results_dir = paths.cni / "results"
        # <network>: the subnets whose forward-accept rules (network.forward) this root made.
        self.forward_dir = paths.cni / "forward"
        # The CNI container id must be unique on the host, not only within this storage root:
        # plugins name their iptables chains after it, and two roots may run the very same pod.
        self.id_prefix = paths.tag
        self._bridges_checked: set[tuple] = set()  # (bridge, ifindex, subnets) found consistent

    # --- cache ------------------------------------------------------------------------------

    def _cache_path(self, uid: str) -> Path:
        return self.results_dir / f"{uid}.json"

    def _read_cache(self, uid: str) -> dict | None:
        path = self._cache_path(uid)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise NetworkError(f"{path}: unreadable network attachment record: {exc}") from None
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
            raise NetworkError(f"{path}: not a podplay network attachment record (format {CACHE_FORMAT})")
        return entry

    def _write_cache(self, entry: dict) -> None:
        atomic_write(self._cache_path(entry["uid"]), json.dumps(entry, indent=1, sort_keys=True), mode=0o600)

    def _cached_entries(self) -> Iterator[dict]:
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                entry = self._read_cache(name[:-5])
            except NetworkError:
                continue  # a hand-damaged record must not hide every other pod's network
            if entry is not None:
                yield entry

    @contextlib.contextmanager
    def _locked(self, uid: str | None = None, *, remove: bool = False) -> Iterator[None]:
        """The network-wide lock (host-port reservations, reading records to decide), or with
        `uid` one pod's lock, held around that pod's plugin calls: different pods attach and
        detach in parallel (the plugins lock what they share themselves, as under containerd).
        A pod's lock file goes with its detach (`remove`); a waiter that then holds a deleted
        file's lock notices and locks the path anew."""
        d = self.paths.cni if uid is None else self.paths.cni / "locks"
        d.mkdir(parents=True, exist_ok=True)
        path = d / ("lock" if uid is None else f"{uid}.lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            os.close(fd)

    # --- helpers ----------------------------------------------------------------------------

    def _network(self, name: str) -> NetworkConfig:
        if name == DEFAULT_NETWORK:
            net = ensure_default_network(self.paths)
        else:
            net = find_network(self.paths.network_dir, name)
        self.cni.check_versions(net)
        self._check_bridges(net)
        return net

    def _check_bridges(self, net: NetworkConfig) -> None:
        """Refuse, before anything is made, a network whose bridge exists already with addresses
        of another subnet: it belongs to another network configuration (another podplay root on
        this host, an older podplay's ``podplay0``, another tool). The bridge plugin would fail
        on it only after the veth and the address were made, and every pod would fail there."""
        for i, plugin in enumerate(net.plugins):
            if plugin.get("type") != "bridge":
                continue
            bridge = plugin.get("bridge") or "cni0"  # the plugin's own default
            subnets = [ipaddress.ip_network(s, strict=False) for s in ipam_subnets(plugin.get("ipam") or {})]
            try:
                ifindex = Path(f"/sys/class/net/{bridge}/ifindex").read_text().strip()
            except FileNotFoundError:
                continue  # not there yet: the plugin makes it
            except OSError as exc:
                raise NetworkError(f"cannot look at interface {bridge!r}: {exc.strerror}") from None
            where = f"{net.file}: plugins[{i}].bridge" if net.file else f"network {net.name!r}: bridge"
            if not _is_bridge(bridge):
                raise NetworkError(f"{where}: interface {bridge!r} exists on this host and is not a bridge; "
                                   "give the network another bridge name")
            key = (bridge, ifindex, tuple(map(str, subnets)))
            if key in self._bridges_checked:
                continue
            addresses = interface_addresses(bridge).get(bridge, [])
            for version in sorted({s.version for s in subnets}):
                theirs = [a for a in addresses if a.version == version and not a.is_link_local]
                ours = [s for s in subnets if s.version == version]
                if theirs and not any(a.ip in s for a in theirs for s in ours):
                    raise NetworkError(
                        f"{where}: bridge {bridge!r} already exists with address "
                        f"{', '.join(map(str, theirs))}, outside this network's subnet "
                        f"{', '.join(map(str, ours))}: it belongs to another network configuration (another "
                        "podplay root on this host, or another tool); give this network its own bridge name, "
                        "or the subnet that bridge has")
            self._bridges_checked.add(key)

    @staticmethod
    def _attachment(entry: dict, netns: str) -> Attachment:
        return Attachment(_cni_id(entry), netns, entry.get("ifname", IFNAME),
                          tuple((k, v) for k, v in entry.get("cni_args", [])),
                          entry.get("capability_args", {}))

    @staticmethod
    def _config(entry: dict) -> NetworkConfig:
        # Re-validated: DEL must use exactly this config, and a damaged record must fail clearly.
        return parse_network_config(json.dumps(entry["config"]), entry.get("config_file", ""))

    @staticmethod
    def _status(entry: dict) -> NetworkStatus:
        ports = _cache_ports(entry)
        if entry.get("state") == "attached" and isinstance(entry.get("result"), dict):
            return status_from_result(entry["network"], entry["result"], entry.get("ifname", IFNAME), ports)
        return NetworkStatus(network=entry["network"], interface=entry.get("ifname", IFNAME), ports=ports)

    @staticmethod
    def _live_netns(entry: dict) -> str:
        """The recorded netns path if it still names the same namespace, else "" (DEL then
        touches nothing inside a namespace that may now belong to someone else)."""
        path = entry.get("netns", "")
        if path and entry.get("netns_id") and netns_identity(path) == entry["netns_id"]:
            return path
        return ""

    @staticmethod
    def _validate_netns(netns: str) -> dict:
        ident = netns_identity(netns)
        if ident is None:
            raise NetworkError(f"network namespace {netns!r} does not exist")
        own = os.stat("/proc/self/ns/net")
        if ident["dev"] != own.st_dev:
            raise NetworkError(f"{netns!r} is not a network namespace")
        if ident["ino"] == own.st_ino:
            raise NetworkError(f"{netns!r} is the host's own network namespace; a pod needs its own")
        return ident

    # --- NetworkDriver ----------------------------------------------------------------------

    def attach(self, pod: DesiredPod, netns: str) -> NetworkStatus:
        _check_uid(pod.uid)
        if not pod.network:
            raise NetworkError(f"pod {pod.ref} uses the host network; it has no CNI attachment")
        with self._locked(pod.uid):
            ident = self._validate_netns(netns)
            entry = self._read_cache(pod.uid)
            if entry is not None:
                if entry.get("state") == "attached" and entry.get("netns") == netns \
                        and entry.get("netns_id") == ident:
                    try:
                        self._check_entry(entry)
                        return self._status(entry)
                    except NetworkError:
                        pass  # broken attachment: undo it and attach afresh below
                self._detach_entry(entry)
            return self._add(pod, netns, ident)

    def _add(self, pod: DesiredPod, netns: str, ident: dict) -> NetworkStatus:
        failed: NetworkError | None = None
        with self._locked():
            self._sweep_stale_rules()
            # Checking the host ports and writing the record that claims them is one step.
            net, entry = self._reserve(pod, netns, ident)
            try:
                # After the record (a detach of the network's last other pod, which removes the
                # rules under this lock, then sees this pod), before the pod can send anything.
                self._ensure_forward(net)
            except NetworkError as exc:
                failed = exc
        if failed is not None:
            self._undo(entry, failed)
        # loopback holds nothing on the host, so it needs no record and no DEL; it touches only
        # `lo` inside the pod's netns, so it runs beside the chain (each is a process start).
        lo = _Background(self.cni.loopback_up, netns, entry["container_id"])
        att = self._attachment(entry, netns)

        def progress(result: dict) -> None:
            entry["result"] = result
            self._write_cache(entry)

        try:
            result = self.cni.add(net, att, progress)
            lo.result()
        except NetworkError as exc:
            lo.wait()
            self._undo(entry, exc)
        entry["result"] = result
        entry["state"] = "attached"
        self._write_cache(entry)
        return self._status(entry)

    def _undo(self, entry: dict, exc: NetworkError) -> None:
        """Detach a failed attachment and raise ``exc``."""
        try:
            self._detach_entry(entry)
        except NetworkError as cleanup:
            raise NetworkError(f"{exc}; cleaning up also failed: {cleanup} "
                               "(the next detach of this pod retries)") from exc
        raise exc

    def _ensure_forward(self, net: NetworkConfig) -> None:
        """The network's forward-accept rules, made on its first attachment (under the network
        lock). The marker is written after the rules: without it they are made again (which
        finds them and adds nothing), so a crash between the two leaves nothing unaccounted.
        It names the boot too: a run root kept on disk across a reboot still has its markers,
        the kernel no longer has the rules."""
        if not wants_forward_rules(net):
            return
        subnets = {str(s) for s in net.subnets()}
        marker = self.forward_dir / net.name
        boot = _boot_id()
        try:
            noted = json.loads(marker.read_text())
            made = set(noted["subnets"]) if noted.get("boot") == boot else set()
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            made = set()
        if not subnets or subnets <= made:
            return
        ensure_forward_rules(self.id_prefix, net.name, sorted(subnets))
        atomic_write(marker, json.dumps({"boot": boot, "subnets": sorted(made | subnets)}), mode=0o600)

    def _forget(self, net: NetworkConfig, uid: str) -> None:
        """Delete ``uid``'s record; with the network's last one, its forward-accept rules too.
        Both under the network-wide lock: two pods detaching at once would otherwise each see
        the other's record and both keep the rules. The rules go before the record, so that a
        crash half-way leaves the record, whose next detach removes them again; the marker goes
        first (no marker: the next attach makes the rules, idempotently)."""
        if not wants_forward_rules(net):
            with contextlib.suppress(FileNotFoundError):
                self._cache_path(uid).unlink()
            return
        with self._locked():
            if not any(e.get("network") == net.name and e["uid"] != uid for e in self._cached_entries()):
                with contextlib.suppress(FileNotFoundError):
                    (self.forward_dir / net.name).unlink()
                versions = tuple(sorted({s.version for s in net.subnets()})) or (4,)
                try:
                    remove_forward_rules(self.id_prefix, net.name, versions=versions)
                except NetworkError as exc:
                    raise NetworkError(f"detaching pod uid {uid} from network {net.name!r} failed (its record "
                                       f"is kept so that the next detach retries): {exc}") from None
            with contextlib.suppress(FileNotFoundError):
                self._cache_path(uid).unlink()

    def _reserve(self, pod: DesiredPod, netns: str, ident: dict) -> tuple[NetworkConfig, dict]:
        net = self._network(pod.network)
        conflicts = self._conflicts(pod)
        if conflicts:
            raise NetworkError(f"pod {pod.ref} cannot start: " + "; ".join(conflicts))
        ports = tuple(d.mapping for d in declared_ports(pod))
        if ports and not net.capability_plugins("portMappings"):
            raise NetworkError(
                f"{net.file}: plugins: network {net.name!r} has no plugin with \"capabilities\": "
                f"{{\"portMappings\": true}} (e.g. portmap), so {describe(ports[0])} of pod {pod.ref} "
                "cannot be forwarded")
        for key, value in (("namespace", pod.namespace), ("name", pod.name)):
            if not _ARG_VALUE.match(value):
                raise NetworkError(f"pod {pod.ref}: {key} {value!r} cannot be passed in CNI_ARGS")
        net = fit_chain(net, port_mappings=bool(ports))
        entry = {
            "format": CACHE_FORMAT,
            "uid": pod.uid,
            "container_id": f"{self.id_prefix}-{pod.uid}",
            "pod": pod.ref,
            "network": net.name,
            "config_file": net.file,
            "config": net.raw,
            "netns": netns,
            "netns_id": ident,
            "ifname": IFNAME,
            # IgnoreUnknown: plugins refuse CNI_ARGS keys they do not know without it.
            "cni_args": [["IgnoreUnknown", "1"], ["K8S_POD_NAMESPACE", pod.namespace],
                         ["K8S_POD_NAME", pod.name], ["K8S_POD_INFRA_CONTAINER_ID", pod.infra_id]],
            "capability_args": {"portMappings": runtime_port_mappings(ports)} if ports else {},
            "ports": [{"host_port": p.host_port, "container_port": p.container_port, "protocol": p.protocol,
                       "host_ip": p.host_ip} for p in ports],
            "state": "adding",
            "result": None,
        }
        self._write_cache(entry)
        return net, entry

    def _sweep_stale_rules(self) -> None:
        """Once per run root (so once per boot, or after the run root was wiped on its own):
        remove the iptables rules of attachments this root no longer records. Container ids are
        the same across boots, so a DNAT rule that outlived its record would otherwise stay
        first in its chain and send a hostPort to whatever pod now has its old address."""
        marker = self.paths.cni / "swept"
        if marker.exists():
            return
        known = {_cni_id(e) for e in self._cached_entries()}
        for cid, (network, ips) in sorted(rules_by_container(f"{self.id_prefix}-").items()):
            if cid in known:
                continue
            try:
                net = self._network(network)
            except NetworkError:
                continue  # a network whose config is gone: nothing to DEL with
            # DEL with the addresses the rules match, so that every plugin finds what is its own.
            prev = {"cniVersion": net.cni_version, "interfaces": [],
                    "ips": [{"address": f"{ip}/32" if ":" not in ip else f"{ip}/128"} for ip in sorted(ips)]}
            self.cni.delete(net, Attachment(cid, "", IFNAME, (("IgnoreUnknown", "1"),)), prev)
            with contextlib.suppress(NetworkError):
                sweep_rules_of(cid, tuple(sorted({s.version for s in net.subnets()})) or (4,))
        # Forward-accept rules of networks none of whose attachments this root still records.
        in_use = {e.get("network", "") for e in self._cached_entries()}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.forward_dir):
                if name not in in_use:
                    (self.forward_dir / name).unlink()
        remove_forward_rules(self.id_prefix, keep=in_use)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def detach(self, uid: str) -> None:
        _check_uid(uid)
        with self._locked(uid, remove=True):
            entry = self._read_cache(uid)
            if entry is not None:
                self._detach_entry(entry)
            else:
                # Nothing recorded: perhaps the run root was wiped (a `down` after it): what
                # the lost records held on the host is swept, once per run root, as on attach.
                with self._locked():
                    self._sweep_stale_rules()

    def _detach_entry(self, entry: dict) -> None:
        net = self._config(entry)
        netns = self._live_netns(entry)
        errors = self.cni.delete(net, self._attachment(entry, netns), entry.get("result"))
        if not errors:
            versions = tuple(sorted({s.version for s in net.subnets()})) or (4,)
            for p in net.plugins:
                if p.get("type") == "bridge" and p.get("ipMasq"):
                    try:
                        sweep_masquerade(net.name, _cni_id(entry), versions)
                    except NetworkError as exc:
                        errors.append(exc)
                    break
        if errors:
            raise NetworkError(f"detaching pod {entry.get('pod', entry['uid'])} from network {net.name!r} failed "
                               "(its record is kept so that the next detach retries): "
                               + "; ".join(str(e) for e in errors))
        self._forget(net, entry["uid"])

    def check(self, uid: str) -> None:
        _check_uid(uid)
        with self._locked(uid):
            entry = self._read_cache(uid)
            if entry is None:
                raise NetworkError(f"pod uid {uid} has no network attachment")
            self._check_entry(entry)

    def _check_entry(self, entry: dict) -> None:
        who = f"pod {entry.get('pod', entry['uid'])} on network {entry['network']!r}"
        if entry.get("state") != "attached" or not isinstance(entry.get("result"), dict):
            raise NetworkError(f"{who}: the attachment was never completed")
        netns = self._live_netns(entry)
        if not netns:
            raise NetworkError(f"{who}: its network namespace {entry.get('netns')!r} is gone")
        net = self._config(entry)
        self.cni.check(net, self._attachment(entry, netns), entry["result"])
        # What the firewall plugin's CHECK would have verified: the pod's traffic is accepted.
        if wants_forward_rules(net) and not forward_rules_present(
                self.id_prefix, net.name, [str(s) for s in net.subnets()]):
            with contextlib.suppress(FileNotFoundError):
                (self.forward_dir / net.name).unlink()  # so that the next attach makes them again
            raise NetworkError(f"{who}: the network's forward-accept rules (chain PODPLAY-FORWARD) are missing")

    def list_attachments(self) -> list[ObservedAttachment]:
        return [ObservedAttachment(e["uid"], self._status(e), e.get("netns", "")) for e in self._cached_entries()]

    def port_conflicts(self, pod: DesiredPod) -> list[str]:
        _check_uid(pod.uid)
        return self._conflicts(pod)

    def _conflicts(self, pod: DesiredPod) -> list[str]:
        declared = declared_ports(pod)
        out: list[str] = []
        seen: dict[PortMapping, str] = {}
        for d in declared:
            twin = next((c for p, c in seen.items() if overlaps(p, d.mapping)), None)
            if twin is not None:
                out.append(f"{describe(d.mapping)} is declared twice in pod {pod.ref} "
                           f"(containers {twin!r} and {d.container!r})")
            seen.setdefault(d.mapping, d.container)
        wanted = list(seen)
        if not wanted:
            return out
        taken: list[PortMapping] = []
        for entry in self._cached_entries():
            if entry["uid"] == pod.uid:
                continue
            for theirs in _cache_ports(entry):
                for mine in wanted:
                    if overlaps(mine, theirs) and mine not in taken:
                        taken.append(mine)
                        out.append(f"{describe(mine)} is already used by pod {entry.get('pod', '?')} "
                                   f"(uid {entry['uid']}) on network {entry['network']!r}")
        out += host_conflicts([p for p in wanted if p not in taken], host_sockets())
        return out


class _Background:
    """A call run in a thread of its own; ``result()`` waits and raises what it raised."""

    def __init__(self, fn, *args):
        self._error: BaseException | None = None

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="cni-loopback", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self.wait()
        if self._error is not None:
            raise self._error


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _cni_id(entry: dict) -> str:
    """The CNI container id an attachment was made with (records written before ids carried the
    root's tag used the bare uid)."""
    return entry.get("container_id") or entry["uid"]
