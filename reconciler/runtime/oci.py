"""PURE  OCI runtime-spec config.json for a pod's app/init containers and for its infra container.

Everything host-specific (rootfs, volume paths, the infra's namespace paths, the pod IP, the
host's rlimit hard limits, the parsed default seccomp profile, the resolved user, file paths)
comes in through ``RuntimeContext``; this module reads nothing. The Kubernetes semantics follow
the kubelet and CRI-O:

* argv: ``command``/``args`` over the image's Entrypoint/Cmd (the four cases of
  ``process_args``), ``$(VAR)`` expanded by the kubelet's rules (``$$`` escapes).
* env: image env, then the container's resolved env (values known only at run time — the pod
  IP, the node name, resource defaults — filled from the context), PATH, HOSTNAME, HOME.
* security: CRI-O's default capabilities (never NET_RAW), add/drop with ``ALL``, privileged,
  no-new-privileges unless allowPrivilegeEscalation is true (podplay's default is the safe one;
  the kubelet's is to allow), podman's masked and read-only paths, seccomp (RuntimeDefault
  is the default, as in CRI-O and podman), the namespaced sysctls, rlimits clamped to the host.
* resources: the kubelet's CPU shares / quota formulas, memory limit and reservation, a pids
  limit; cgroupfs paths (this host is cgroup v1).
* namespaces: app containers join the infra's network/ipc/uts (and pid with
  shareProcessNamespace) by path; host* leave the namespace out, i.e. the host's. With
  ``hostUsers: false`` (``RuntimeContext.id_map`` set) the infra creates the pod's user namespace
  with the pod's ID range and the app containers join it (runc 1.1 wants the mappings repeated
  when it joins one); capabilities are then those of the pod's own namespace, and a privileged
  container gets no host devices (a user namespace cannot use them).

The stop signal and the labels podplay relists containers by go into ``annotations``.
"""

from __future__ import annotations

import posixpath
import signal as _signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.drivers.base import container_labels
from reconciler.errors import ContainerRuntimeError
from reconciler.model.quantity import millicores, node_resource, to_bytes
from reconciler.observed import (
    LABEL_STOP_SIGNAL,
    ImageInfo,
)
from reconciler.runtime.seccomp import convert_profile
from reconciler.runtime.users import ResolvedUser

if TYPE_CHECKING:
    from reconciler.desired import DesiredContainer, DesiredPod
    from reconciler.idmap import IdMap
    from reconciler.model.kube import Container, SeccompProfile, SecurityContext

OCI_VERSION = "1.0.2"  # what runc 1.1 implements
LABEL_IMAGE = "io.podplay.image"
LABEL_IMAGE_ID = "io.podplay.image-id"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INFRA_COMMAND = ("/catatonit", "-P")

# CRI-O's default set. NET_RAW is deliberately absent (ping spoofing, CVE-2020-14386).
DEFAULT_CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
                        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_KILL")
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # index = capability number

# podman's defaults (containers/common): kernel interfaces a container has no business reading.
MASKED_PATHS = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/fs/selinux",
                "/sys/dev/block", "/sys/devices/virtual/powercap", "/proc/interrupts")
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Requested rlimits; each is clamped to the host's hard limit (an unprivileged runc cannot raise it).
DEFAULT_RLIMITS = {"RLIMIT_NOFILE": 1048576, "RLIMIT_NPROC": 4194304}
RLIM_MAX = 2**64 - 1

# The kubelet's CPU arithmetic (pkg/kubelet/cm).
CPU_PERIOD = 100000
MIN_SHARES, MAX_SHARES, SHARES_PER_CPU = 2, 262144, 1024
MIN_QUOTA = 1000

# Namespaced sysctls allowed without extra configuration: the kubelet's safe set plus podman's.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
    "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
})
IPC_SYSCTL_PREFIXES = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
NET_SYSCTL_PREFIX = "net."

SHM_SIZE = 64 * 1024 * 1024  # Kubernetes' and podman's /dev/shm default


@dataclass(frozen=True)
class HostDevice:
    """A device node of the host, handed to privileged containers."""

    path: str
    type: str  # c | b
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class RuntimeContext:
    """Host facts one config needs. Paths are host paths; ``namespaces`` maps OCI namespace types
    (network, ipc, uts, pid) to the infra's ``/proc/<pid>/ns/*`` files."""

    rootfs: str
    cgroup_path: str  # "": none (rootless, unless the host delegates a cgroup v2 subtree)
    user: ResolvedUser = field(default_factory=ResolvedUser)
    volumes: Mapping[str, str] = field(default_factory=dict)
    subpaths: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (volume, subPath) → host path
    namespaces: Mapping[str, str] = field(default_factory=dict)
    hostname: str = ""  # what the pod sees: its own, or the host's with hostNetwork
    pod_ip: str = ""
    pod_ips: tuple[str, ...] = ()
    host_ip: str = ""
    node_name: str = ""
    node_cpu_millis: int = 0  # allocatable, for resourceFieldRef without a limit
    node_memory: int = 0
    hosts_file: str = ""
    resolv_conf_file: str = ""
    hostname_file: str = ""
    shm_dir: str = ""  # the pod's shared /dev/shm (a tmpfs the driver mounts)
    host_rlimits: Mapping[str, int] = field(default_factory=dict)  # hard limits; RLIM_MAX for unlimited
    seccomp_default: Mapping | None = None  # parsed /usr/share/containers/seccomp.json
    seccomp_localhost: Mapping | None = None  # parsed profile of a Localhost seccompProfile
    arch: str = "amd64"
    kernel: tuple[int, int] = (0, 0)
    cap_last_cap: int = len(ALL_CAPABILITIES) - 1
    host_capabilities: tuple[str, ...] | None = None  # the runtime's own bounding set; None: all
    pids_limit: int = 4096  # 0: no limit
    swap_accounting: bool = False
    host_devices: tuple[HostDevice, ...] = ()
    id_map: IdMap | None = None  # hostUsers: false: the pod's host ID range
    rootless: bool = False  # runc --rootless: a cgroup only where one is delegated (runtime.cgroups)
    # Rootless: the controllers delegated to the user, the only limits written (cgroup v1: runc
    # creates the container's cgroup under its own, which the driver made the pod's delegated
    # cgroup; v2: ``cgroup_path``, below the delegated subtree).
    rootless_controllers: frozenset[str] = frozenset()
    # Flags a volume's mount must keep (nosuid, nodev, noexec of its source): in a user namespace
    # they are locked, and runc's read-only remount would fail without them.
    volume_options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _fail(pod: DesiredPod, name: str, message: str) -> ContainerRuntimeError:
    return ContainerRuntimeError(f"{pod.ref}/{name}: {message}" if name else f"{pod.ref}: {message}")


# --- process --------------------------------------------------------------------------------

def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """The kubelet's ``$(VAR)`` expansion: ``$$`` is a literal ``$``; an unknown or unclosed
    reference is kept as written; a ``$`` before anything else is kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:close]
            value = lookup(name)
            out.append(value if value is not None else f"$({name})")
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def process_args(spec: Container, entrypoint: tuple[str, ...], cmd: tuple[str, ...]) -> list[str]:
    """command+args over Entrypoint+Cmd: no command and no args → Entrypoint+Cmd; args only →
    Entrypoint+args; command only → command (Cmd dropped); both → command+args."""
    if spec.command:
        return list(spec.command) + list(spec.args)
    if spec.args:
        return list(entrypoint) + list(spec.args)
    return list(entrypoint) + list(cmd)


def _deferred(key: str, pod: DesiredPod, ctx: RuntimeContext) -> str:
    if key == "status.podIP":
        return ctx.pod_ip
    if key == "status.podIPs":
        return ",".join(ctx.pod_ips or ((ctx.pod_ip,) if ctx.pod_ip else ()))
    if key in ("status.hostIP", "status.hostIPs"):
        return ctx.host_ip
    if key == "metadata.uid":
        return pod.uid
    if key == "spec.nodeName":
        return ctx.node_name
    if key.startswith("resource:"):
        # No limit set: the kubelet reports the node's allocatable for limits, 0 for requests.
        _, resource, divisor = (key.split(":", 2) + ["1"])[:3]
        return node_resource(resource, divisor, ctx.node_cpu_millis, ctx.node_memory)
    return ""


def kube_env(pod: DesiredPod, container: DesiredContainer, ctx: RuntimeContext) -> dict[str, str]:
    """The container's env from the manifest, deferred values filled and ``$(VAR)`` expanded in
    literal values against the variables defined before them (envFrom first), as the kubelet does."""
    defined_in_env = {v.name for v in container.spec.env}
    resolved = {e.name: e for e in container.env}
    values: dict[str, str] = {}
    for e in container.env:  # envFrom entries first: they are visible to every env entry
        if e.name not in defined_in_env:
            values[e.name] = _deferred(e.deferred, pod, ctx) if e.deferred else e.value
    for var in container.spec.env:
        e = resolved.get(var.name)
        if e is None:
            continue  # an optional reference that is missing
        if var.value_from is None:
            values[var.name] = expand(var.value or "", values.get)
        else:
            values[var.name] = _deferred(e.deferred, pod, ctx) if e.deferred else e.value
    order = [e.name for e in container.env if e.name in values]
    return {name: values[name] for name in order}


def process_env(pod: DesiredPod, image: ImageInfo, kube: Mapping[str, str], ctx: RuntimeContext,
                tty: bool) -> list[str]:
    env: dict[str, str] = {}
    for item in image.config.env:
        name, sep, value = item.partition("=")
        if sep and name:
            env[name] = value
    env.update(kube)
    env.setdefault("PATH", DEFAULT_PATH)
    if "HOSTNAME" not in kube:
        env["HOSTNAME"] = ctx.hostname or pod.hostname
    env.setdefault("HOME", ctx.user.home or "/")
    if tty:
        env.setdefault("TERM", "xterm")
    return [f"{k}={v}" for k, v in env.items()]


def parse_signal(text: str) -> int:
    """"SIGTERM", "TERM", "term" or "15" → 15; raises ValueError for anything else."""
    value = str(text).strip()
    if value.isdigit():
        num = int(value)
        if 0 < num < 65:
            return num
        raise ValueError(f"signal number {num} is out of range")
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base = int(_signal.SIGRTMIN) if name[6] == "I" else int(_signal.SIGRTMAX)
        offset = int(name[9:]) if name[9:].isdigit() else -1
        num = base + offset if name[6] == "I" else base - offset
        if offset >= 0 and _signal.SIGRTMIN <= num <= _signal.SIGRTMAX:
            return num
        raise ValueError(f"{text!r} is not a real-time signal")
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise ValueError(f"{text!r} is not a signal name") from None


def signal_name(num: int) -> str:
    try:
        return _signal.Signals(num).name
    except ValueError:
        return str(num)


def stop_signal(pod: DesiredPod, container: DesiredContainer, image: ImageInfo) -> str:
    """lifecycle.stopSignal, else the image's STOPSIGNAL, else SIGTERM; as a name like SIGTERM."""
    lifecycle = container.spec.lifecycle
    for text, what in ((lifecycle.stop_signal if lifecycle else "", "lifecycle.stopSignal"),
                       (image.config.stop_signal, "the image's STOPSIGNAL")):
        if text:
            try:
                return signal_name(parse_signal(text))
            except ValueError as e:
                raise _fail(pod, container.name, f"{what}: {e}") from None
    return "SIGTERM"


# --- security -------------------------------------------------------------------------------

def _cap_name(pod: DesiredPod, name: str, cap: str) -> str:
    full = cap.strip().upper()
    if not full.startswith("CAP_"):
        full = "CAP_" + full
    if full not in ALL_CAPABILITIES:
        raise _fail(pod, name, f"securityContext.capabilities: unknown capability {cap!r}")
    return full


def capabilities(pod: DesiredPod, name: str, sc: SecurityContext | None, ctx: RuntimeContext) -> list[str]:
    """CRI-O's order: defaults, add ALL, drop ALL, then single adds, then single drops.

    "All" (privileged, add ALL) means all that this kernel has and podplay itself holds (a VM may
    withhold some, e.g. CAP_SYS_RESOURCE), as in podman; naming one podplay lacks is an error."""
    available = [c for c in ALL_CAPABILITIES[: ctx.cap_last_cap + 1]
                 if ctx.host_capabilities is None or c in ctx.host_capabilities]
    if sc is not None and sc.privileged:
        return available
    caps = dict.fromkeys(DEFAULT_CAPABILITIES)
    add = sc.capabilities.add if sc and sc.capabilities else ()
    drop = sc.capabilities.drop if sc and sc.capabilities else ()
    if any(c.upper() == "ALL" for c in add):
        caps = dict.fromkeys(available)
    if any(c.upper() == "ALL" for c in drop):
        caps = {}
    for c in add:
        if c.upper() != "ALL":
            cap = _cap_name(pod, name, c)
            if cap not in available:
                raise _fail(pod, name, f"securityContext.capabilities.add: {cap} is not available on this host "
                                       "(the kernel or podplay's own bounding set lacks it)")
            caps[cap] = None
    for c in drop:
        if c.upper() != "ALL":
            caps.pop(_cap_name(pod, name, c), None)
    return [c for c in caps if c in available]


def _seccomp_profile(pod: DesiredPod, sc: SecurityContext | None) -> SeccompProfile:
    if sc is not None and sc.seccomp_profile is not None:
        return sc.seccomp_profile
    if pod.spec.security_context.seccomp_profile is not None:
        return pod.spec.security_context.seccomp_profile
    from reconciler.model.kube import SeccompProfile

    return SeccompProfile("RuntimeDefault")


def localhost_profile(pod: DesiredPod, container: DesiredContainer | None) -> str:
    """The relative path of the Localhost seccomp profile this container asks for, or ''."""
    sc = container.spec.security_context if container else None
    profile = _seccomp_profile(pod, sc)
    return profile.localhost_profile if profile.type == "Localhost" else ""


def seccomp(pod: DesiredPod, name: str, sc: SecurityContext | None, caps: list[str],
            ctx: RuntimeContext) -> dict | None:
    if sc is not None and sc.privileged:
        return None
    profile = _seccomp_profile(pod, sc)
    if profile.type == "Unconfined":
        return None
    if profile.type == "RuntimeDefault":
        source = ctx.seccomp_default
        if source is None:
            raise _fail(pod, name, "the default seccomp profile is not available on this host "
                                   "(/usr/share/containers/seccomp.json from golang-github-containers-common)")
    elif profile.type == "Localhost":
        source = ctx.seccomp_localhost
        if source is None:
            raise _fail(pod, name, f"seccomp profile {profile.localhost_profile!r} was not loaded")
    else:
        raise _fail(pod, name, f"seccompProfile.type {profile.type!r} is not one of RuntimeDefault, "
                               "Unconfined, Localhost")
    try:
        return convert_profile(source, capabilities=caps, arch=ctx.arch, kernel=ctx.kernel)
    except ContainerRuntimeError as e:
        raise _fail(pod, name, str(e)) from None


def normalize_sysctl(name: str) -> str:
    """The kubelet accepts net/ipv4/ip_forward as well as net.ipv4.ip_forward."""
    if "/" in name and ("." not in name or name.index("/") < name.index(".")):
        return name.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return name


def sysctls(pod: DesiredPod) -> dict[str, str]:
    """The pod's sysctls, checked: only namespaced ones, never the host's namespaces."""
    out = {}
    spec = pod.spec
    for s in spec.security_context.sysctls:
        name = normalize_sysctl(s.name)
        is_net = name.startswith(NET_SYSCTL_PREFIX)
        is_ipc = name in SAFE_SYSCTLS or name.startswith("fs.mqueue.")
        if not (is_net or is_ipc):
            raise _fail(pod, "", f"sysctl {name!r} is not allowed: only namespaced sysctls (net.*, "
                                 "kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) can be set for a pod")
        if is_net and spec.host_network:
            raise _fail(pod, "", f"sysctl {name!r} cannot be set with hostNetwork: true "
                                 "(it would change the host's network settings)")
        if is_ipc and spec.host_ipc:
            raise _fail(pod, "", f"sysctl {name!r} cannot be set with hostIPC: true "
                                 "(it would change the host's IPC settings)")
        if not s.value.strip() and s.value != "0":
            raise _fail(pod, "", f"sysctl {name!r} has an empty value")
        out[name] = s.value
    return out


def rlimits(ctx: RuntimeContext) -> list[dict]:
    out = []
    for name, want in DEFAULT_RLIMITS.items():
        hard = ctx.host_rlimits.get(name)
        value = min(want, hard) if hard is not None and hard >= 0 else want
        out.append({"type": name, "hard": value, "soft": value})
    return out


# --- resources ------------------------------------------------------------------------------

def cpu_shares(milli: int) -> int:
    if milli <= 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli * SHARES_PER_CPU // 1000))


def cpu_quota(milli: int, period: int = CPU_PERIOD) -> int:
    if milli <= 0:
        return 0
    return max(MIN_QUOTA, milli * period // 1000)


def _quantity(pod: DesiredPod, name: str, section: str, resource: str, value, parse) -> int:
    try:
        result = parse(value)
    except ValueError as e:
        raise _fail(pod, name, f"resources.{section}.{resource}: {e}") from None
    if result < 0:
        raise _fail(pod, name, f"resources.{section}.{resource} must not be negative")
    return result


def resources(pod: DesiredPod, container: DesiredContainer, ctx: RuntimeContext, privileged: bool) -> dict:
    spec = container.spec.resources
    name = container.name
    # Requests default to limits, as the API server defaults them.
    requests = {**spec.limits, **spec.requests}
    out: dict = {"devices": [{"allow": privileged, "access": "rwm"}]}
    memory: dict = {}
    if "memory" in spec.limits:
        limit = _quantity(pod, name, "limits", "memory", spec.limits["memory"], to_bytes)
        if 0 < limit < 6 * 1024 * 1024:
            raise _fail(pod, name, f"resources.limits.memory {spec.limits['memory']} is below the 6Mi "
                                   "a container needs to start")
        if limit:
            memory["limit"] = limit
            if ctx.swap_accounting:
                memory["swap"] = limit  # memory+swap = memory: no swap, as the kubelet does
    if "memory" in requests:
        reservation = _quantity(pod, name, "requests", "memory", requests["memory"], to_bytes)
        if reservation:
            memory["reservation"] = reservation
    if memory:
        out["memory"] = memory
    cpu: dict = {}
    request_milli = _quantity(pod, name, "requests", "cpu", requests["cpu"], millicores) if "cpu" in requests \
        else 0
    cpu["shares"] = cpu_shares(request_milli)
    if "cpu" in spec.limits:
        limit_milli = _quantity(pod, name, "limits", "cpu", spec.limits["cpu"], millicores)
        if limit_milli:
            cpu["quota"] = cpu_quota(limit_milli)
            cpu["period"] = CPU_PERIOD
    out["cpu"] = cpu
    if ctx.pids_limit > 0:
        out["pids"] = {"limit": ctx.pids_limit}
    return out


def _delegated(limits: dict, ctx: RuntimeContext) -> dict:
    """The limits a rootless container can have: those of the delegated controllers (runc
    --rootless fails on a limit whose cgroup it cannot write; device rules need real root)."""
    return {k: v for k, v in limits.items() if k in ctx.rootless_controllers}


# --- mounts ---------------------------------------------------------------------------------

def _abs_path(pod: DesiredPod, name: str, path: str, what: str) -> str:
    if not path or "\0" in path:
        raise _fail(pod, name, f"{what} {path!r} is not a path")
    clean = posixpath.normpath(posixpath.join("/", path))
    if clean == "/":
        raise _fail(pod, name, f"{what} {path!r} would cover the container's root")
    return clean


def check_subpath(pod: DesiredPod, name: str, sub_path: str) -> None:
    """Kubernetes' rule: relative, and no '..' component (symlinks are resolved by the driver)."""
    if sub_path.startswith("/") or "\0" in sub_path:
        raise _fail(pod, name, f"volumeMounts.subPath {sub_path!r} must be a relative path")
    if ".." in sub_path.split("/"):
        raise _fail(pod, name, f"volumeMounts.subPath {sub_path!r} must not contain '..'")


def _bind(dest: str, source: str, options: list[str]) -> dict:
    return {"destination": dest, "type": "bind", "source": source, "options": options}


def base_mounts(pod: DesiredPod, ctx: RuntimeContext, privileged: bool, readonly_root: bool,
                pod_files: bool = True) -> list[dict]:
    spec = pod.spec
    ro_sys = [] if privileged else ["ro"]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    ]
    if spec.host_ipc:
        mounts.append(_bind("/dev/shm", "/dev/shm", ["rbind", "nosuid", "noexec", "nodev"]))
    elif ctx.shm_dir:
        mounts.append(_bind("/dev/shm", ctx.shm_dir, ["bind", "nosuid", "noexec", "nodev"]))
    else:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE}"]})
    # An mqueue mount shows the queues of the IPC namespace it is mounted in: the pod's, or the
    # host's with hostIPC (which need not have /dev/mqueue mounted itself).
    mounts.append({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                   "options": ["nosuid", "noexec", "nodev"]})
    mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", *ro_sys]})
    mounts.append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "relatime", *ro_sys]})
    if pod_files:
        file_opts = ["bind", "nosuid", "nodev", "noexec"] + (["ro"] if readonly_root else [])
        for dest, source in (("/etc/hosts", ctx.hosts_file), ("/etc/resolv.conf", ctx.resolv_conf_file),
                             ("/etc/hostname", ctx.hostname_file)):
            if source:
                mounts.append(_bind(dest, source, list(file_opts)))
    return mounts


def volume_mounts(pod: DesiredPod, container: DesiredContainer, ctx: RuntimeContext) -> list[dict]:
    by_name = {v.name: v for v in pod.volumes}
    out = []
    seen: set[str] = set()
    for i, vm in enumerate(container.spec.volume_mounts):
        where = f"volumeMounts[{i}]"
        dest = _abs_path(pod, container.name, vm.mount_path, f"{where}.mountPath")
        if dest in seen:
            raise _fail(pod, container.name, f"{where}.mountPath {vm.mount_path!r} is mounted twice")
        seen.add(dest)
        source = ctx.volumes.get(vm.name)
        if source is None:
            raise _fail(pod, container.name, f"{where}: volume {vm.name!r} has no host path "
                                             "(is it declared in spec.volumes?)")
        if vm.sub_path:
            check_subpath(pod, container.name, vm.sub_path)
            source = ctx.subpaths.get((vm.name, vm.sub_path))
            if source is None:
                raise _fail(pod, container.name, f"{where}.subPath {vm.sub_path!r} was not resolved")
        volume = by_name.get(vm.name)
        read_only = vm.read_only or (volume is not None and volume.read_only)
        kept = list(ctx.volume_options.get(vm.name, ()))
        out.append(_bind(dest, source, ["rbind", "rprivate"] + kept + (["ro"] if read_only else [])))
    return out


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def merge_mounts(base: list[dict], user: list[dict]) -> list[dict]:
    """A user's volume replaces a default mount at the same place (an emptyDir at /dev/shm, a
    ConfigMap at /etc/resolv.conf); parents are mounted before children."""
    taken = {m["destination"] for m in user}
    merged = [m for m in base if m["destination"] not in taken] + user
    return sorted(merged, key=lambda m: _depth(m["destination"]))


# --- namespaces -----------------------------------------------------------------------------

def infra_namespaces(pod: DesiredPod) -> list[str]:
    """The namespaces the infra container creates and holds for the pod (OCI type names)."""
    spec = pod.spec
    out = []
    if not spec.host_network:
        out += ["network", "uts"]
    if not spec.host_ipc:
        out.append("ipc")
    if spec.share_process_namespace and not spec.host_pid:
        out.append("pid")
    return out


def _check_userns(pod: DesiredPod, ctx: RuntimeContext) -> None:
    spec = pod.spec
    if ctx.id_map is not None and (spec.host_network or spec.host_pid or spec.host_ipc):
        raise _fail(pod, "", "hostUsers: false cannot be combined with hostNetwork, hostPID or hostIPC")


def container_namespaces(pod: DesiredPod, ctx: RuntimeContext) -> list[dict]:
    spec = pod.spec
    _check_userns(pod, ctx)
    out: list[dict] = [{"type": "mount"}]
    shared = infra_namespaces(pod) + (["user"] if ctx.id_map is not None else [])
    for ns in shared:
        path = ctx.namespaces.get(ns)
        if not path:
            raise _fail(pod, "", f"the infra container does not hold a {ns} namespace to join")
        out.append({"type": ns, "path": path})
    if "pid" not in shared and not spec.host_pid:
        out.append({"type": "pid"})
    return out


# --- documents ------------------------------------------------------------------------------


def _linux_common(ctx: RuntimeContext, privileged: bool) -> dict:
    linux: dict = {"cgroupsPath": ctx.cgroup_path} if ctx.cgroup_path else {}
    linux["rootfsPropagation"] = "private"
    if ctx.id_map is not None:
        linux["uidMappings"], linux["gidMappings"] = ctx.id_map.oci()
    if privileged and ctx.id_map is None:
        linux["devices"] = [
            {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor, "fileMode": d.file_mode,
             "uid": d.uid, "gid": d.gid}
            for d in ctx.host_devices
        ]
    if not privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    return linux


def container_config(pod: DesiredPod, container: DesiredContainer, image: ImageInfo,
                     ctx: RuntimeContext) -> dict:
    """The config.json of an app or init container of ``pod``."""
    spec = container.spec
    sc = spec.security_context
    privileged = bool(sc and sc.privileged)
    name = container.name
    if not ctx.rootfs.startswith("/"):
        raise _fail(pod, name, f"rootfs {ctx.rootfs!r} is not an absolute path")

    env_map = kube_env(pod, container, ctx)
    argv = [expand(a, env_map.get) for a in process_args(spec, image.config.entrypoint, image.config.cmd)]
    if not argv or not argv[0]:
        raise _fail(pod, name, f"no command: the image {spec.image} has no Entrypoint or Cmd and the "
                               "container sets no command")
    cwd = spec.working_dir or image.config.working_dir or "/"
    cwd = posixpath.normpath(posixpath.join("/", cwd))

    caps = capabilities(pod, name, sc, ctx)
    allow_escalation = bool(sc and sc.allow_privilege_escalation)
    if sc and sc.allow_privilege_escalation is False and privileged:
        raise _fail(pod, name, "securityContext: privileged: true contradicts allowPrivilegeEscalation: false")
    no_new_privs = not privileged and not allow_escalation
    readonly_root = bool(sc and sc.read_only_root_filesystem)
    user = ctx.user
    process = {
        "terminal": spec.tty,
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": list(user.additional_gids)}
                                                      if user.additional_gids else {})},
        "args": argv,
        "env": process_env(pod, image, env_map, ctx, spec.tty),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(ctx),
        "noNewPrivileges": no_new_privs,
    }

    annotations = container_labels(pod, container)
    annotations[LABEL_STOP_SIGNAL] = stop_signal(pod, container, image)
    annotations[LABEL_IMAGE] = spec.image
    annotations[LABEL_IMAGE_ID] = image.id

    linux = _linux_common(ctx, privileged)
    limits = resources(pod, container, ctx, privileged)  # checked all the same: bad input is refused
    if not ctx.rootless:
        linux["resources"] = limits
    elif delegated := _delegated(limits, ctx):
        linux["resources"] = delegated
    linux["namespaces"] = container_namespaces(pod, ctx)
    profile = seccomp(pod, name, sc, caps, ctx)
    if profile is not None:
        linux["seccomp"] = profile

    mounts = merge_mounts(base_mounts(pod, ctx, privileged, readonly_root), volume_mounts(pod, container, ctx))
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": ctx.rootfs, "readonly": readonly_root},
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    }


def infra_config(pod: DesiredPod, ctx: RuntimeContext) -> dict:
    """The config.json of the pod's infra container: catatonit holding the pod's namespaces,
    with no capabilities at all, and the pod's sysctls applied in them."""
    shared = infra_namespaces(pod)
    _check_userns(pod, ctx)
    namespaces: list[dict] = [{"type": "mount"}] + [{"type": ns} for ns in shared]
    if ctx.id_map is not None:
        namespaces.insert(0, {"type": "user"})
    if "pid" not in shared and not pod.spec.host_pid:
        namespaces.append({"type": "pid"})
    linux = _linux_common(ctx, False)
    linux["namespaces"] = namespaces
    limits = {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": MIN_SHARES},
              **({"pids": {"limit": 16}} if ctx.pids_limit > 0 else {})}
    if not ctx.rootless:
        linux["resources"] = limits
    elif delegated := _delegated(limits, ctx):
        linux["resources"] = delegated
    wanted = sysctls(pod)
    if wanted:
        linux["sysctl"] = wanted
    if ctx.seccomp_default is not None:
        profile = convert_profile(ctx.seccomp_default, capabilities=(), arch=ctx.arch, kernel=ctx.kernel)
        if profile is not None:
            linux["seccomp"] = profile
    config = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(INFRA_COMMAND),
            "env": [f"PATH={DEFAULT_PATH}"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "rlimits": rlimits(ctx),
            "noNewPrivileges": True,
        },
        "root": {"path": ctx.rootfs, "readonly": True},
        "mounts": base_mounts(pod, ctx, False, True, pod_files=False),
        "annotations": container_labels(pod, None),
        "linux": linux,
    }
    if "uts" in shared:
        config["hostname"] = ctx.hostname or pod.hostname
    return config
