"""Invoking CNI plugins by the spec's execution protocol (no libcni).

A plugin is an executable found in the plugin directories; it gets the command and the
attachment parameters as ``CNI_*`` environment variables and its configuration as JSON on
stdin, and answers with a result (ADD), nothing (DEL, CHECK) or an error object on stdout.
A network's plugins run as a chain: ADD in order, each with the previous plugin's result as
``prevResult``; CHECK in order and DEL in reverse, each with the final ADD result.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import NetworkError
from reconciler.network.config import NetworkConfig
from reconciler.observed import NetworkStatus, PortMapping

# Spec error codes a user can act on (section 5); the rest are reported by number.
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown",
    4: "invalid environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network configuration",
    11: "try again later",
}
CODE_TRY_AGAIN = 11
DEFAULT_TIMEOUT = 120.0


class PluginError(NetworkError):
    """A plugin failed: carries its ``code``, ``msg`` and ``details`` as the spec defines them."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "", network: str = ""):
        self.plugin, self.command, self.code, self.msg, self.details = plugin, command, code, msg, details
        where = f" on network {network!r}" if network else ""
        text = f"CNI plugin {plugin!r} failed {command}{where}: {msg or ERROR_CODES.get(code, 'error')}"
        if details and details != msg:
            text += f" ({details})"
        if code and code != 999:
            text += f" [code {code}: {ERROR_CODES.get(code, 'plugin-specific')}]"
        super().__init__(text)
        # Code 11 is the plugin telling us the condition is transient.
        self.temporary = code == CODE_TRY_AGAIN


@dataclass(frozen=True)
class Attachment:
    """The per-attachment parameters of section 3 (the same for ADD, CHECK and DEL)."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)


class CniInvoker:
    """Finds and runs plugin binaries. Stateless apart from a cache of VERSION answers."""

    def __init__(self, plugin_dirs: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
                 version_cache: str | os.PathLike | None = None):
        self.plugin_dirs = tuple(str(d) for d in plugin_dirs)
        self.timeout = timeout
        self._versions: dict[tuple[str, float], tuple[str, ...]] = {}
        # VERSION answers kept between processes: asking every plugin on every `podplay up`
        # would cost as many process starts as the ADD itself. Keyed by binary path and mtime.
        self._version_file = Path(version_cache) if version_cache else None
        self._versions_loaded = False

    # --- single plugins --------------------------------------------------------------------

    def find_plugin(self, plugin_type: str) -> str:
        for d in self.plugin_dirs:
            path = os.path.join(d, plugin_type)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise NetworkError(f"CNI plugin {plugin_type!r} not found in {', '.join(self.plugin_dirs)} "
                           "(install containernetworking-plugins, or fix the \"type\" in the network config)")

    def _env(self, command: str, att: Attachment | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = os.pathsep.join(self.plugin_dirs)
        if att is not None:
            env["CNI_CONTAINERID"] = att.container_id
            env["CNI_NETNS"] = att.netns
            env["CNI_IFNAME"] = att.ifname
            if att.args:
                env["CNI_ARGS"] = att.cni_args()
        return env

    def exec_plugin(self, plugin_type: str, command: str, config: dict, att: Attachment | None,
                    network: str = "") -> dict | None:
        """Run one plugin; its parsed JSON answer (None when it printed nothing)."""
        path = self.find_plugin(plugin_type)
        stdin = json.dumps(config).encode()
        try:
            proc = subprocess.run([path], check=False, input=stdin, env=self._env(command, att), capture_output=True,
                                  timeout=self.timeout, cwd="/")
        except subprocess.TimeoutExpired:
            raise NetworkError(f"CNI plugin {plugin_type!r} did not finish {command} within {self.timeout:.0f}s "
                               f"on network {network!r}") from None
        except OSError as exc:
            raise NetworkError(f"cannot run CNI plugin {path}: {exc.strerror}") from None
        out = proc.stdout.decode(errors="replace").strip()
        err = proc.stderr.decode(errors="replace").strip()
        answer = None
        if out:
            try:
                answer = json.loads(out)
            except ValueError:
                answer = None
        if proc.returncode != 0:
            if isinstance(answer, dict) and ("msg" in answer or "code" in answer):
                raise PluginError(plugin_type, command, int(answer.get("code") or 0), str(answer.get("msg", "")),
                                  str(answer.get("details", "")), network)
            raise PluginError(plugin_type, command, 0,
                              f"exit status {proc.returncode}: {(err or out or 'no output')[-500:]}", "", network)
        if out and answer is None:
            raise NetworkError(f"CNI plugin {plugin_type!r} printed a {command} result that is not JSON: {out[:200]!r}")
        if answer is not None and not isinstance(answer, dict):
            raise NetworkError(f"CNI plugin {plugin_type!r} printed a {command} result that is not an object")
        return answer

    def _load_versions(self) -> None:
        self._versions_loaded = True
        if self._version_file is None:
            return
        try:
            saved = json.loads(self._version_file.read_text())
            for path, mtime, versions in saved:
                self._versions[(str(path), float(mtime))] = tuple(str(v) for v in versions)
        except (OSError, ValueError, TypeError):
            pass  # a missing or damaged cache only costs the VERSION calls

    def _save_versions(self) -> None:
        if self._version_file is None:
            return
        from reconciler.fsutil import atomic_write

        rows = [[path, mtime, list(v)] for (path, mtime), v in sorted(self._versions.items())]
        with contextlib.suppress(OSError):
            atomic_write(self._version_file, json.dumps(rows), mode=0o600)

    def supported_versions(self, plugin_type: str) -> tuple[str, ...]:
        path = self.find_plugin(plugin_type)
        key = (path, os.stat(path).st_mtime)
        if not self._versions_loaded:
            self._load_versions()
        if key not in self._versions:
            answer = self.exec_plugin(plugin_type, "VERSION", {"cniVersion": "1.0.0"}, None) or {}
            versions = answer.get("supportedVersions")
            if not isinstance(versions, list):
                # Plugins from before 0.3 answer without a list: they support only the old formats.
                versions = [answer.get("cniVersion", "0.1.0")]
            self._versions[key] = tuple(str(v) for v in versions)
            self._save_versions()
        return self._versions[key]

    def check_versions(self, net: NetworkConfig) -> None:
        """Every plugin of ``net`` exists and speaks its cniVersion; else a NetworkError naming the field."""
        for i, plugin in enumerate(net.plugins):
            try:
                versions = self.supported_versions(plugin["type"])
            except NetworkError as exc:
                raise NetworkError(f"{net.file}: plugins[{i}].type: {exc}") from None
            if net.cni_version not in versions:
                raise NetworkError(
                    f"{net.file}: plugins[{i}].type: plugin {plugin['type']!r} does not support cniVersion "
                    f"{net.cni_version} (it supports {', '.join(versions)}); change \"cniVersion\"")

    # --- chains ------------------------------------------------------------------------------

    @staticmethod
    def plugin_config(net: NetworkConfig, plugin: dict, att: Attachment, prev_result: dict | None) -> dict:
        """Section 3: the plugin's object plus name, cniVersion, runtimeConfig and prevResult,
        without ``capabilities``."""
        conf = {k: v for k, v in plugin.items() if k != "capabilities"}
        conf["cniVersion"] = net.cni_version
        conf["name"] = net.name
        runtime = {cap: att.capability_args[cap] for cap, on in plugin.get("capabilities", {}).items()
                   if on and cap in att.capability_args}
        if runtime:
            conf["runtimeConfig"] = runtime
        else:
            conf.pop("runtimeConfig", None)
        if prev_result is not None:
            conf["prevResult"] = prev_result
        else:
            conf.pop("prevResult", None)
        return conf

    def add(self, net: NetworkConfig, att: Attachment,
            progress: Callable[[dict], None] | None = None) -> dict:
        """ADD every plugin in order; the final result. ``progress`` sees each intermediate
        result so that a caller can persist it (a later DEL then knows what was made)."""
        result: dict | None = None
        for plugin in net.plugins:
            answer = self.exec_plugin(plugin["type"], "ADD", self.plugin_config(net, plugin, att, result), att,
                                      net.name)
            if answer is None:
                raise NetworkError(f"CNI plugin {plugin['type']!r} returned no result for ADD on network "
                                   f"{net.name!r}")
            result = answer
            if progress is not None:
                progress(result)
        assert result is not None  # a validated network has at least one plugin
        return result

    def check(self, net: NetworkConfig, att: Attachment, prev_result: dict) -> None:
        if net.disable_check or net.cni_version in ("0.3.0", "0.3.1"):
            return  # disabled by the admin, or CHECK does not exist before 0.4.0
        for plugin in net.plugins:
            try:
                self.exec_plugin(plugin["type"], "CHECK", self.plugin_config(net, plugin, att, prev_result), att,
                                 net.name)
            except PluginError as exc:
                if not _portmap_ipv6_check_bug(exc, prev_result):
                    raise

    def delete(self, net: NetworkConfig, att: Attachment, prev_result: dict | None) -> list[NetworkError]:
        """DEL every plugin in reverse; the errors. Unlike the spec's "halt on error", every
        plugin still runs: DEL is idempotent, and stopping early would leak what the later
        plugins hold (an IP, iptables rules). The caller keeps its cache when errors remain."""
        if net.cni_version in ("0.3.0", "0.3.1"):
            prev_result = None  # prevResult on DEL arrived with 0.4.0
        errors: list[NetworkError] = []
        for plugin in reversed(net.plugins):
            try:
                self.exec_plugin(plugin["type"], "DEL", self.plugin_config(net, plugin, att, prev_result), att,
                                 net.name)
            except NetworkError as exc:
                errors.append(exc)
        return errors

    def loopback_up(self, netns: str, container_id: str) -> None:
        """Bring ``lo`` up in the netns through the loopback plugin (outside any network's chain)."""
        att = Attachment(container_id, netns, "lo")
        conf = {"cniVersion": "1.0.0", "name": "podplay-loopback", "type": "loopback"}
        self.exec_plugin("loopback", "ADD", conf, att, "loopback")


def _portmap_ipv6_check_bug(exc: PluginError, prev_result: Mapping[str, Any]) -> bool:
    """portmap up to 1.1.1 (Debian 12's) CHECKs its IPv6 chain even for a pod without an IPv6
    address, and so always fails on IPv4-only networks; fixed upstream by "Only check ipv6 when
    an IPv6 is configured" (containernetworking/plugins fb5d195f). Its IPv4 check ran first and
    passed when this is the error."""
    if exc.plugin != "portmap" or not exc.msg.startswith("could not check ipv6 dnat"):
        return False
    return not any(":" in str(ip.get("address", "")) for ip in prev_result.get("ips") or [])


# --- results ------------------------------------------------------------------------------------

def status_from_result(network: str, result: Mapping[str, Any], ifname: str = "eth0",
                       ports: tuple[PortMapping, ...] = ()) -> NetworkStatus:
    """The pod's view of a result: the address on its own interface (an interface with a
    sandbox), preferring IPv4; falls back to the first address for results without interfaces."""
    interfaces = result.get("interfaces") or []
    pod_idx = [i for i, itf in enumerate(interfaces)
               if isinstance(itf, dict) and itf.get("sandbox") and itf.get("name") == ifname]
    mac = interfaces[pod_idx[0]].get("mac", "") if pod_idx else ""
    ips = [ip for ip in result.get("ips") or [] if isinstance(ip, dict) and ip.get("address")]
    if pod_idx:
        mine = [ip for ip in ips if ip.get("interface") in pod_idx]
        ips = mine or ips
    ips.sort(key=lambda ip: ipaddress.ip_interface(ip["address"]).version)
    if not ips:
        return NetworkStatus(network=network, interface=ifname, mac=mac, ports=ports)
    chosen = ips[0]
    iface = ipaddress.ip_interface(chosen["address"])
    return NetworkStatus(network=network, interface=ifname, ip=str(iface.ip),
                         prefix_length=iface.network.prefixlen, gateway=chosen.get("gateway", "") or "",
                         mac=mac, ports=ports)
