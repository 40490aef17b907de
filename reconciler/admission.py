"""Pod Security Standards admission: what a manifest may ask of the host.

The three levels are Kubernetes' own (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
``privileged`` (anything), ``baseline`` (no known privilege escalation: no host namespaces,
privileged containers, added capabilities beyond the default set, hostPath volumes, unconfined
seccomp, unsafe sysctls…) and ``restricted`` (baseline, plus: drop ALL capabilities, run as
non-root, no privilege escalation, a RuntimeDefault or Localhost seccomp profile, only
ephemeral and API-backed volumes). Each rule below carries the level that introduces it.
A pod with ``hostUsers: false`` may run as root under restricted, as in Kubernetes: its root
is an unprivileged host user (``_user_namespaced``).

The operator sets a host-wide level (``Policy``; the CLI reads ``--pod-security``,
``$PODPLAY_POD_SECURITY`` or the config file, default ``baseline``). A ``Namespace`` object in
the manifests may only tighten it through its ``pod-security.kubernetes.io/enforce`` label;
``warn`` and ``audit`` (labels or host settings) report what a stricter level would refuse,
as warnings and as info diagnostics. Two operator lists widen baseline for one host, as the
standard allows ("or restricted to a known list"): hostPath prefixes (a serial device, one
socket) and hostPorts (by default the unprivileged ports, which any local user can bind anyway:
on one host without Services a hostPort is the way in).

Most rules are evaluated over podplay's model. Fields the model drops because podplay never
applies them (``procMount``, ``seLinuxOptions``, ``appArmorProfile``, ``windowsOptions``,
lifecycle handlers' ``host``) are judged on the raw document when it is loaded
(``unmodelled_findings``): they cannot loosen this host, but the same YAML goes to clusters,
and a manifest podplay admits should be one a cluster admits.

Pure: ``review`` turns loaded objects (with their position tables) into diagnostics. The policy
in force is process-wide, set by the command line with ``enforcing(policy)``; with none set
(library use, tests, commands that act on pods already admitted) nothing is checked.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler.errors import Diagnostic, Severity
from reconciler.model.convert import fmt_path

if TYPE_CHECKING:  # the model is loaded by the manifests that are reviewed (a no-change `up` reads none)
    from reconciler.model.kube import Container, ObjectMeta, PodSpec, SecurityContext

LEVELS = ("privileged", "baseline", "restricted")
DEFAULT_LEVEL = "baseline"
MODES = ("enforce", "warn", "audit")
LABEL_PREFIX = "pod-security.kubernetes.io/"

# Capabilities baseline lets a container add: the container runtimes' default set (minus NET_RAW).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
# Namespaced sysctls that cannot reach outside the pod (the standard's "safe" set, as of v1.33).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
DEFAULT_HOST_PORTS = ((1024, 65535),)

Path_ = tuple


def rank(level: str) -> int:
    return LEVELS.index(level)


@dataclass(frozen=True)
class Policy:
    """The host's levels per mode, and the operator's known lists that widen baseline."""

    enforce: str = DEFAULT_LEVEL
    warn: str = "privileged"
    audit: str = "privileged"
    allowed_host_paths: tuple[str, ...] = ()
    allowed_host_ports: tuple[tuple[int, int], ...] = DEFAULT_HOST_PORTS
    source: str = "the default"  # where `enforce` came from, named in refusals
    protected_paths: tuple[str, ...] = ()  # podplay's roots: never opened by allowed_host_paths

    def level(self, mode: str) -> str:
        return getattr(self, mode)


@dataclass(frozen=True)
class Violation:
    """One thing a pod asks for that a level forbids. `path` is relative to the object."""

    level: str  # the lowest level that forbids it
    control: str  # the standard's control name, e.g. "Host Namespaces"
    path: Path_
    message: str


@dataclass(frozen=True)
class NamespaceLabels(Diagnostic):
    """The pod-security labels of a Namespace object, carried with the file's diagnostics (info)
    from where the file is loaded to ``review`` (which sees every file of the pass)."""

    namespace: str = ""
    levels: tuple[tuple[str, str], ...] = ()  # (mode, level)
    where: tuple[tuple[str, int, int], ...] = ()  # (mode, line, column) of each label


# --- the rules ----------------------------------------------------------------------------------

def _containers(spec: PodSpec, base: Path_) -> Iterator[tuple[Container, Path_]]:
    for i, c in enumerate(spec.init_containers):
        yield c, base + ("initContainers", i)
    for i, c in enumerate(spec.containers):
        yield c, base + ("containers", i)


def _sc(c: Container) -> SecurityContext:
    if c.security_context is not None:
        return c.security_context
    from reconciler.model.kube import SecurityContext

    return SecurityContext()


def _host_namespaces(spec: PodSpec, base: Path_, meta: ObjectMeta, policy: Policy) -> Iterator[Violation]:
    for name, on in (("hostNetwork", spec.host_network), ("hostPID", spec.host_pid), ("hostIPC", spec.host_ipc)):
        if on:
            yield Violation("baseline", "Host Namespaces", base + (name,),
                            f"{name}: true shares the host's namespace with the pod; must be false or unset")


def _privileged(spec, base, meta, policy):
    for c, p in _containers(spec, base):
        if _sc(c).privileged:
            yield Violation("baseline", "Privileged Containers", p + ("securityContext", "privileged"),
                            f"container {c.name!r} is privileged (every device and capability of the host); "
                            "must be false or unset")


def _capabilities_baseline(spec, base, meta, policy):
    for c, p in _containers(spec, base):
        caps = _sc(c).capabilities
        for i, cap in enumerate(caps.add if caps else ()):
            if cap not in BASELINE_CAPABILITIES:
                yield Violation("baseline", "Capabilities", p + ("securityContext", "capabilities", "add", i),
                                f"container {c.name!r} adds capability {cap!r}; baseline allows only "
                                + ", ".join(sorted(BASELINE_CAPABILITIES)))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _norm(path: str) -> str:
    return "/" + posixpath.normpath(path).strip("/") if path != "/" else "/"


def _allowed_host_path(path: str, prefixes: Sequence[str], protected: Sequence[str] = ()) -> bool:
    # Compared component by component on the normalized path: "/dev/ttyUSB0" allows itself and
    # anything below it, never "/dev/ttyUSB01", and ".." cannot climb out of a prefix. podplay's
    # own roots (and what holds them) are never allowed: a pod there reads every secret and can
    # rewrite the state store, whatever prefix the operator allowed.
    if not path.startswith("/") or ".." in path.split("/"):
        return False
    norm = _norm(path)
    if any(_under(norm, _norm(p)) or _under(_norm(p), norm) for p in protected):
        return False
    return any(_under(norm, _norm(prefix)) for prefix in prefixes)


def _host_path(spec, base, meta, policy):
    for i, v in enumerate(spec.volumes):
        hp = v.host_path
        if hp is None or _allowed_host_path(hp.path, policy.allowed_host_paths, policy.protected_paths):
            continue
        mine = hp.path.startswith("/") and any(_under(_norm(hp.path), _norm(p)) or _under(_norm(p), _norm(hp.path))
                                               for p in policy.protected_paths)
        yield Violation("baseline", "HostPath Volumes", base + ("volumes", i, "hostPath"),
                        f"volume {v.name!r} mounts the host's {hp.path!r}; "
                        + ("it holds podplay's own storage or run root, which no allowed prefix opens"
                           if mine and policy.allowed_host_paths else
                           "hostPath volumes are not allowed unless the path is under an operator's allowed "
                           "prefix (allowed-host-paths)"))


def _host_ports(spec, base, meta, policy):
    for c, p in _containers(spec, base):
        for j, port in enumerate(c.ports):
            hp = port.host_port
            if hp and not any(lo <= hp <= hi for lo, hi in policy.allowed_host_ports):
                known = ", ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in policy.allowed_host_ports)
                yield Violation("baseline", "Host Ports", p + ("ports", j, "hostPort"),
                                f"container {c.name!r} binds host port {hp}; the host allows "
                                + (f"only host ports {known} (allowed-host-ports)" if known else "no host ports"))


def _apparmor(spec, base, meta, policy):
    for key, value in sorted(meta.annotations.items()):
        if key.startswith(APPARMOR_ANNOTATION) and value and value != "runtime/default" \
                and not value.startswith("localhost/"):
            yield Violation("baseline", "AppArmor", base[:-1] + ("metadata", "annotations", key),
                            f"AppArmor profile {value!r} is not allowed; use runtime/default or localhost/<profile>")


def _seccomp_baseline(spec, base, meta, policy):
    prof = spec.security_context.seccomp_profile
    if prof is not None and prof.type == "Unconfined":
        yield Violation("baseline", "Seccomp", base + ("securityContext", "seccompProfile", "type"),
                        "seccomp profile Unconfined is not allowed; use RuntimeDefault or Localhost")
    for c, p in _containers(spec, base):
        prof = _sc(c).seccomp_profile
        if prof is not None and prof.type == "Unconfined":
            yield Violation("baseline", "Seccomp", p + ("securityContext", "seccompProfile", "type"),
                            f"container {c.name!r}: seccomp profile Unconfined is not allowed; "
                            "use RuntimeDefault or Localhost")


def _sysctls(spec, base, meta, policy):
    for i, s in enumerate(spec.security_context.sysctls):
        if s.name not in SAFE_SYSCTLS:
            yield Violation("baseline", "Sysctls", base + ("securityContext", "sysctls", i, "name"),
                            f"sysctl {s.name!r} is not in the safe set ({', '.join(sorted(SAFE_SYSCTLS))})")


def _probe_hosts(spec, base, meta, policy):
    # A probe's host makes the kubelet (here: podplay, as root) connect to any address for the pod.
    for c, p in _containers(spec, base):
        for name, probe in (("livenessProbe", c.liveness_probe), ("readinessProbe", c.readiness_probe),
                            ("startupProbe", c.startup_probe)):
            if probe is None:
                continue
            for action, handler in (("httpGet", probe.http_get), ("tcpSocket", probe.tcp_socket)):
                if handler is not None and handler.host:
                    yield Violation("baseline", "Probe / Lifecycle Hooks", p + (name, action, "host"),
                                    f"container {c.name!r}: a probe's host must be unset (the pod's own IP)")


def _privilege_escalation(spec, base, meta, policy):
    for c, p in _containers(spec, base):
        if _sc(c).allow_privilege_escalation is not False:
            yield Violation("restricted", "Privilege Escalation",
                            p + ("securityContext", "allowPrivilegeEscalation"),
                            f"container {c.name!r} must set securityContext.allowPrivilegeEscalation: false")


# Root inside a pod with a user namespace of its own (hostUsers: false) is an unprivileged host
# user, so restricted's two "non-root" controls guard nothing there: Kubernetes relaxes exactly
# these two for such pods (its UserNamespacesPodSecurityStandards behaviour), and so does podplay.
# Every other control (capabilities, privilege escalation, seccomp, host namespaces…) still holds.


def _user_namespaced(spec: PodSpec) -> bool:
    return spec.host_users is False


def _run_as_non_root(spec, base, meta, policy):
    if _user_namespaced(spec):
        return
    pod = spec.security_context.run_as_non_root
    if pod is False:
        yield Violation("restricted", "Running as Non-root", base + ("securityContext", "runAsNonRoot"),
                        "runAsNonRoot: false is not allowed; set it to true")
    for c, p in _containers(spec, base):
        mine = _sc(c).run_as_non_root
        if mine is False or (mine is None and pod is not True):
            yield Violation("restricted", "Running as Non-root", p + ("securityContext", "runAsNonRoot"),
                            f"container {c.name!r} must run as non-root: set runAsNonRoot: true "
                            "(here or in the pod's securityContext)")


def _run_as_user(spec, base, meta, policy):
    if _user_namespaced(spec):
        return
    if spec.security_context.run_as_user == 0:
        yield Violation("restricted", "Running as Non-root user", base + ("securityContext", "runAsUser"),
                        "runAsUser: 0 (root) is not allowed")
    for c, p in _containers(spec, base):
        if _sc(c).run_as_user == 0:
            yield Violation("restricted", "Running as Non-root user", p + ("securityContext", "runAsUser"),
                            f"container {c.name!r}: runAsUser: 0 (root) is not allowed")


def _seccomp_restricted(spec, base, meta, policy):
    pod = spec.security_context.seccomp_profile
    pod_set = pod is not None and pod.type in ("RuntimeDefault", "Localhost")
    for c, p in _containers(spec, base):
        mine = _sc(c).seccomp_profile
        if mine is None and not pod_set:
            yield Violation("restricted", "Seccomp", p + ("securityContext", "seccompProfile"),
                            f"container {c.name!r} must set seccompProfile.type to RuntimeDefault or Localhost "
                            "(here or in the pod's securityContext)")


def _capabilities_restricted(spec, base, meta, policy):
    for c, p in _containers(spec, base):
        caps = _sc(c).capabilities
        if caps is None or "ALL" not in caps.drop:
            yield Violation("restricted", "Capabilities", p + ("securityContext", "capabilities", "drop"),
                            f"container {c.name!r} must drop ALL capabilities (capabilities.drop: [ALL])")
        for i, cap in enumerate(caps.add if caps else ()):
            if cap != "NET_BIND_SERVICE" and cap in BASELINE_CAPABILITIES:  # others: baseline says so
                yield Violation("restricted", "Capabilities", p + ("securityContext", "capabilities", "add", i),
                                f"container {c.name!r} adds capability {cap!r}; restricted allows only "
                                "NET_BIND_SERVICE")


# Every rule with the level that introduces it. Restricted's "Volume Types" adds nothing here: of
# the volume kinds podplay has (the loader refuses the rest) it forbids only hostPath, which
# baseline already does (with the same operator exceptions).
RULES = (
    ("baseline", _host_namespaces), ("baseline", _privileged), ("baseline", _capabilities_baseline),
    ("baseline", _host_path), ("baseline", _host_ports), ("baseline", _apparmor),
    ("baseline", _seccomp_baseline), ("baseline", _sysctls), ("baseline", _probe_hosts),
    ("restricted", _privilege_escalation), ("restricted", _run_as_non_root),
    ("restricted", _run_as_user), ("restricted", _seccomp_restricted), ("restricted", _capabilities_restricted),
)


def pod_specs(obj: Any) -> Iterator[tuple[ObjectMeta, PodSpec, Path_]]:
    """The pod templates of a workload object, with the path of each spec inside the object."""
    from reconciler.model.kube import Deployment, Pod

    if isinstance(obj, Pod):
        yield obj.metadata, obj.spec, ("spec",)
    elif isinstance(obj, Deployment):
        yield obj.spec.template.metadata, obj.spec.template.spec, ("spec", "template", "spec")


def check_object(obj: Any, policy: Policy, level: str = "restricted") -> list[Violation]:
    """Everything `obj` asks for that `level` forbids (privileged: nothing)."""
    out: list[Violation] = []
    for meta, spec, base in pod_specs(obj):
        for rule_level, rule in RULES:
            if rank(rule_level) <= rank(level):
                out.extend(rule(spec, base, meta, policy))
    return out


# --- fields the model drops, judged on the raw document ----------------------------------------

SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")


@dataclass(frozen=True)
class RawFinding(Diagnostic):
    """A violation found on the raw document at load time (info), carried with the file's
    diagnostics to ``review``, which judges it under the level in force for its namespace."""

    level: str = "baseline"
    control: str = ""
    namespace: str = "default"


def _raw_specs(raw: dict) -> Iterator[tuple[dict, Path_]]:
    spec = raw.get("spec")
    base: Path_ = ("spec",)
    if raw.get("kind") == "Deployment" and isinstance(spec, dict):
        tpl = spec.get("template")
        spec = tpl.get("spec") if isinstance(tpl, dict) else None
        base = ("spec", "template", "spec")
    if isinstance(spec, dict):
        yield spec, base


def _raw_contexts(spec: dict, base: Path_) -> Iterator[tuple[str, dict, Path_]]:
    """(who, securityContext, its path) of the pod and of every container."""
    sc = spec.get("securityContext")
    if isinstance(sc, dict):
        yield "the pod", sc, base + ("securityContext",)
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(group) or ()):
            if isinstance(c, dict) and isinstance(c.get("securityContext"), dict):
                yield f"container {c.get('name')!r}", c["securityContext"], base + (group, i, "securityContext")


def _raw_violations(spec: dict, base: Path_) -> Iterator[Violation]:
    for who, sc, p in _raw_contexts(spec, base):
        pm = sc.get("procMount")
        if pm not in (None, "", "Default") and who != "the pod":
            yield Violation("baseline", "/proc Mount Type", p + ("procMount",),
                            f"{who}: procMount {pm!r} unmasks /proc; must be Default or unset")
        se = sc.get("seLinuxOptions")
        if isinstance(se, dict):
            if se.get("type") not in (None, *SELINUX_TYPES):
                yield Violation("baseline", "SELinux", p + ("seLinuxOptions", "type"),
                                f"{who}: SELinux type {se['type']!r} is not allowed; use one of "
                                + ", ".join(SELINUX_TYPES[1:]))
            for k in ("user", "role"):
                if se.get(k):
                    yield Violation("baseline", "SELinux", p + ("seLinuxOptions", k),
                                    f"{who}: a custom SELinux {k} is not allowed")
        aa = sc.get("appArmorProfile")
        if isinstance(aa, dict) and aa.get("type") not in (None, "RuntimeDefault", "Localhost"):
            yield Violation("baseline", "AppArmor", p + ("appArmorProfile", "type"),
                            f"{who}: AppArmor profile {aa.get('type')!r} is not allowed; use RuntimeDefault "
                            "or Localhost")
        win = sc.get("windowsOptions")
        if isinstance(win, dict) and win.get("hostProcess") is True:
            yield Violation("baseline", "HostProcess", p + ("windowsOptions", "hostProcess"),
                            f"{who}: hostProcess containers have the host's full access; must be false or unset")
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or ()):
            life = c.get("lifecycle") if isinstance(c, dict) else None
            for hook in ("postStart", "preStop"):
                h = life.get(hook) if isinstance(life, dict) else None
                for action in ("httpGet", "tcpSocket"):
                    a = h.get(action) if isinstance(h, dict) else None
                    if isinstance(a, dict) and a.get("host"):
                        yield Violation("baseline", "Probe / Lifecycle Hooks",
                                        base + (group, i, "lifecycle", hook, action, "host"),
                                        f"container {c.get('name')!r}: a lifecycle handler's host must be unset")


def unmodelled_findings(raw: dict, file: str, at) -> list[Diagnostic]:
    """Findings (info) for what a Pod or Deployment document asks in fields the model drops.
    `at(path)` gives (line, column) of a path in the document."""
    if raw.get("kind") not in ("Pod", "Deployment"):
        return []
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) and meta.get("namespace") else "default"
    out: list[Diagnostic] = []
    for spec, base in _raw_specs(raw):
        for v in _raw_violations(spec, base):
            line, col = at(v.path)
            out.append(RawFinding(Severity.INFO, file, line, col, fmt_path(v.path),
                               f"pod-security {v.level}: {v.control}: {v.message}",
                               level=v.level, control=v.control, namespace=ns))
    return out


# --- Namespace labels ----------------------------------------------------------------------------

def namespace_findings(data: dict, file: str, at) -> list[Diagnostic]:
    """A Namespace document's pod-security labels (one NamespaceLabels, info), and an error for
    each label whose value is not a level. `at(path)` gives (line, column) of a path."""
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    out: list[Diagnostic] = []
    levels, where = [], []
    for mode in MODES:
        key = LABEL_PREFIX + mode
        if key not in labels:
            continue
        path = ("metadata", "labels", key)
        line, col = at(path)
        value = labels[key]
        if value not in LEVELS:
            out.append(Diagnostic(Severity.ERROR, file, line, col, fmt_path(path),
                                  f"{value!r} is not a pod-security level; use one of {', '.join(LEVELS)}"))
            continue
        levels.append((mode, value))
        where.append((mode, line, col))
    line, col = at(())
    summary = ", ".join(f"{m}={lv}" for m, lv in levels) or "none"
    out.insert(0, NamespaceLabels(Severity.INFO, file, line, col, "", f"Namespace {name}: pod-security labels: "
                                  f"{summary}", namespace=name, levels=tuple(levels), where=tuple(where)))
    return out


# --- review: violations → diagnostics under the policy in force ----------------------------------------

_IN_FORCE: list[Policy] = []


@contextlib.contextmanager
def enforcing(policy: Policy | None):
    """Make `policy` the one ``review`` applies while the block runs (None: check nothing)."""
    _IN_FORCE.append(policy)  # type: ignore[arg-type]
    try:
        yield
    finally:
        _IN_FORCE.pop()


def in_force() -> Policy | None:
    return _IN_FORCE[-1] if _IN_FORCE else None


@dataclass
class _Levels:
    enforce: str
    warn: str
    audit: str
    why: str  # where the enforce level came from
    notes: list[Diagnostic] = field(default_factory=list)


def _namespace_levels(policy: Policy, labels: Iterable[NamespaceLabels]) -> tuple[dict[str, _Levels], list[Diagnostic]]:
    out: dict[str, _Levels] = {}
    notes: list[Diagnostic] = []
    for nl in labels:
        lv = out.setdefault(nl.namespace, _Levels(policy.enforce, policy.warn, policy.audit, policy.source))
        where = {m: (line, col) for m, line, col in nl.where}
        for mode, level in nl.levels:
            if rank(level) > rank(getattr(lv, mode)):
                setattr(lv, mode, level)
                if mode == "enforce":
                    lv.why = f"the label on Namespace {nl.namespace} ({nl.file}:{where[mode][0]})"
            elif mode == "enforce" and rank(level) < rank(policy.enforce):
                line, col = where[mode]
                notes.append(Diagnostic(Severity.WARNING, nl.file, line, col,
                                        f"metadata.labels[{LABEL_PREFIX}enforce]",
                                        f"{level!r} is looser than this host's pod-security level "
                                        f"{policy.enforce!r} (from {policy.source}); a namespace label may only "
                                        "tighten it, so the host's level applies"))
    return out, notes


def review(entries: Iterable[Any], diagnostics: Sequence[Diagnostic], policy: Policy | None = None) -> list[Diagnostic]:
    """Diagnostics for every loaded object that the policy in force refuses (error), would
    refuse under its warn level (warning) or its audit level (info).

    `entries` have ``loaded`` (a model.source.Loaded), ``pos`` (with ``find(path, key)``) and
    ``base`` (the object's place in its document); `diagnostics` are the load's so far, where
    Namespace labels travel (see NamespaceLabels)."""
    policy = policy if policy is not None else in_force()
    if policy is None:
        return []
    from reconciler.model.kube import Deployment, Pod

    per_ns, out = _namespace_levels(policy, (d for d in diagnostics if isinstance(d, NamespaceLabels)))
    for e in entries:
        obj = e.loaded.obj
        if not isinstance(obj, Pod | Deployment):
            continue
        ns = obj.metadata.namespace or "default"
        lv = per_ns.get(ns) or _Levels(policy.enforce, policy.warn, policy.audit, policy.source)
        strictest = max(lv.enforce, lv.warn, lv.audit, key=rank)
        for v in check_object(obj, policy, strictest):
            line, col = e.pos.find(tuple(e.base) + v.path, key=True)
            if rank(v.level) <= rank(lv.enforce):
                sev, text = Severity.ERROR, (f"refused by pod-security level {lv.enforce!r} (from {lv.why}): "
                                             f"{v.control}: {v.message}")
            elif rank(v.level) <= rank(lv.warn):
                sev, text = Severity.WARNING, f"pod-security level {lv.warn!r} (warn) would refuse: " \
                                              f"{v.control}: {v.message}"
            else:
                sev, text = Severity.INFO, f"pod-security level {lv.audit!r} (audit) would refuse: " \
                                           f"{v.control}: {v.message}"
            out.append(Diagnostic(sev, e.loaded.file, line, col, fmt_path(v.path), text))
    for f in diagnostics:
        if isinstance(f, RawFinding) and f.severity == Severity.INFO:
            lv = per_ns.get(f.namespace) or _Levels(policy.enforce, policy.warn, policy.audit, policy.source)
            message = f.message.split(": ", 1)[1]
            where = (f.file, f.line, f.column, f.path)
            if rank(f.level) <= rank(lv.enforce):
                out.append(Diagnostic(Severity.ERROR, *where, f"refused by pod-security level {lv.enforce!r} "
                                      f"(from {lv.why}): {message}"))
            elif rank(f.level) <= rank(lv.warn):
                out.append(Diagnostic(Severity.WARNING, *where,
                                      f"pod-security level {lv.warn!r} (warn) would refuse: {message}"))
    return out


# --- the operator's settings ---------------------------------------------------------------------------

class PolicyError(ValueError):
    """A setting that is not a level, a port range or an absolute path (names where it was)."""


def parse_level(value: str, where: str) -> str:
    v = value.strip().lower()
    if v not in LEVELS:
        raise PolicyError(f"{where}: {value!r} is not a pod-security level; use one of {', '.join(LEVELS)}")
    return v


def parse_host_paths(values: Iterable[str], where: str) -> tuple[str, ...]:
    out = []
    for raw in values:
        for p in raw.replace(",", ":").split(":"):
            p = p.strip()
            if not p:
                continue
            if not p.startswith("/") or ".." in p.split("/") or posixpath.normpath(p) == "/":
                raise PolicyError(f"{where}: {p!r} must be an absolute path below / without '..'")
            out.append(posixpath.normpath(p))
    return tuple(out)


def parse_host_ports(values: Iterable[str], where: str) -> tuple[tuple[int, int], ...]:
    out = []
    for raw in values:
        for item in raw.replace(",", " ").split():
            lo, _, hi = item.partition("-")
            try:
                a, b = int(lo), int(hi or lo)
            except ValueError:
                raise PolicyError(f"{where}: {item!r} is not a port or a range like 1024-65535") from None
            if not 1 <= a <= b <= 65535:
                raise PolicyError(f"{where}: {item!r} is not a port range within 1-65535")
            out.append((a, b))
    return tuple(out)


CONFIG_KEYS = ("pod-security", "pod-security-warn", "pod-security-audit", "allowed-host-paths",
               "allowed-host-ports")


def parse_config(text: str, file: str) -> dict[str, str]:
    """The config file: `key = value` lines, `#` comments. Unknown keys are errors (a typo in a
    security setting must not silently mean the default)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in CONFIG_KEYS:
            raise PolicyError(f"{file}:{n}: expected one of {', '.join(CONFIG_KEYS)} as `key = value`")
        out[key] = value.strip()
    return out


def make_policy(settings: Sequence[tuple[str, dict[str, str]]], protected: Sequence[str] = ()) -> Policy:
    """The policy from settings in falling precedence: [(where, {config key: value})…], e.g. the
    command line, then the environment, then the config file. The first that sets a key wins."""
    chosen: dict[str, tuple[str, str]] = {}
    for where, values in settings:
        for k, v in values.items():
            if v is not None and k not in chosen:
                chosen[k] = (where, v)

    def get(key: str, default: str) -> tuple[str, str]:
        return chosen.get(key, ("the default", default))

    src, enforce = get("pod-security", DEFAULT_LEVEL)
    enforce = parse_level(enforce, src)
    warn = parse_level(*reversed(get("pod-security-warn", "privileged")))
    audit = parse_level(*reversed(get("pod-security-audit", "privileged")))
    where, paths = get("allowed-host-paths", "")
    host_paths = parse_host_paths([paths], where)
    where, ports = get("allowed-host-ports", "1024-65535")
    host_ports = parse_host_ports([ports], where)
    return Policy(enforce, warn, audit, host_paths, host_ports, src, tuple(protected))
