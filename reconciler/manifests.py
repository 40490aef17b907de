"""Files → YAML documents (with line marks) → schema check → semantic checks → model objects.

``load_manifests(paths)`` never raises for bad input: it returns every object it could read and
every problem it found, each naming file, line, column and field path. A file that cannot be
read or parsed is listed in ``unreadable``: the engine must not prune what such a file might
describe ("hold deletes until every source was read").
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from reconciler.model.source import ANN_PORT_PER_REPLICA, Loaded
from reconciler.errors import Diagnostic, Severity
from reconciler.model import convert
from reconciler.model.kube import (
    API_VERSIONS,
    KINDS,
    ConfigMap,
    Container,
    Deployment,
    PersistentVolumeClaim,
    Pod,
    PodSpec,
    Secret,
)
from reconciler.model.quantity import parse_quantity

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
SUPPORTED = ", ".join(KINDS)

# Set by the API server, harmless in exported YAML: accepted without a warning.
SERVER_FIELDS = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds"}

Path_ = tuple  # a field path: ("spec", "containers", 0, "image")


@dataclass
class ManifestSet:
    objects: list[Loaded] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every manifest file considered
    unreadable: list[str] = field(default_factory=list)  # files whose objects are unknown

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors


# --- finding files ------------------------------------------------------------------------------

def _is_skipped(name: str) -> bool:
    """Hidden files, editor backups and swap files."""
    return (name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swo", ".swx", ".bak", ".orig", ".tmp"))
            or (name.startswith("#") and name.endswith("#")))


def find_manifest_files(paths: Sequence[str]) -> tuple[list[str], list[Diagnostic]]:
    """Files named directly are always read; directories are walked recursively in sorted order."""
    files: list[str] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if raw == "-":
            files.append("-")
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.endswith(MANIFEST_SUFFIXES) and not _is_skipped(name):
                        files.append(os.path.join(dirpath, name))
        elif p.exists():
            files.append(str(p))
        else:
            problems.append(Diagnostic(Severity.ERROR, raw, 0, 0, "", "no such file or directory"))
    seen: set[str] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, problems


# --- YAML with positions --------------------------------------------------------------------------

class Positions(dict):
    """Field path → (line, column), 1-based, for values; ``keys`` holds the mapping keys' marks."""

    def __init__(self):
        super().__init__()
        self.keys: dict[Path_, tuple[int, int]] = {}

    def find(self, path: Path_, key: bool = False) -> tuple[int, int]:
        """The position of `path` (of its key when `key`), else of its nearest ancestor."""
        p = tuple(path)
        if key and p in self.keys:
            return self.keys[p]
        while p and p not in self:
            p = p[:-1]
        return self.get(p, (0, 0))


class _DocError(Exception):
    def __init__(self, mark, message: str):
        super().__init__(message)
        self.line = mark.line + 1 if mark else 0
        self.column = mark.column + 1 if mark else 0
        self.message = message


_MAX_DEPTH = 200


def _to_data(node, constructor, path: Path_, pos: Positions, depth: int = 0) -> Any:
    """Node tree → plain data, recording the position of every value and key."""
    import yaml

    if depth > _MAX_DEPTH:
        raise _DocError(node.start_mark, "document nested too deeply (or a recursive alias)")
    pos[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # "<<: *anchor" — explicit keys win over merged ones.
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        raise _DocError(src.start_mark, "merge key (<<) needs a mapping")
                    data = _to_data(src, constructor, path, Positions(), depth + 1)
                    for k, v in data.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _DocError(key_node.start_mark, "mapping keys must be plain strings")
            key = key_node.value if key_node.tag == "tag:yaml.org,2002:str" else str(
                constructor.construct_object(key_node))
            if key in out:
                raise _DocError(key_node.start_mark, f"duplicate key {key!r}")
            pos.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _to_data(value_node, constructor, path + (key,), pos, depth + 1)
        for k, v in merged.items():
            out.setdefault(k, v)
        pos[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(n, constructor, path + (i,), pos, depth + 1) for i, n in enumerate(node.value)]
    # Scalars: the YAML 1.1 resolution that Kubernetes' decoder also uses, except that
    # timestamps and binary stay the text they were written as (the API sees strings).
    if node.tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"):
        return node.value
    try:
        value = constructor.construct_object(node, deep=True)
    except (ValueError, OverflowError, yaml.constructor.ConstructorError) as exc:
        raise _DocError(node.start_mark, f"cannot read value: {exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise _DocError(node.start_mark, f"{node.value!r} is not a number Kubernetes accepts")
    return value


def parse_documents(text: str, file: str) -> Iterator[tuple[Any, Positions] | Diagnostic]:
    """Each YAML document as (data, positions); a syntax error ends the file as a Diagnostic."""
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    constructor = yaml.constructor.SafeConstructor()
    try:
        nodes = list(yaml.compose_all(text, Loader=loader_cls))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        yield Diagnostic(Severity.ERROR, file, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                         "", f"YAML syntax error: {msg}")
        return
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        yield Diagnostic(Severity.ERROR, file, 0, 0, "", f"YAML syntax error: {exc}")
        return
    for node in nodes:
        if node is None:
            continue
        pos = Positions()
        try:
            data = _to_data(node, constructor, (), pos)
        except _DocError as exc:
            yield Diagnostic(Severity.ERROR, file, exc.line, exc.column, "", exc.message)
            continue
        except RecursionError:
            yield Diagnostic(Severity.ERROR, file, node.start_mark.line + 1, 1, "", "document nested too deeply")
            continue
        yield data, pos


# --- schema -------------------------------------------------------------------------------------

@cache
def _validator(kind: str):
    import jsonschema

    path = SCHEMA_DIR / f"{kind}.json"
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _schema_path(error) -> Path_:
    return tuple(error.absolute_path)


def _best_errors(errors) -> Iterable:
    """For anyOf/oneOf failures, report the most relevant sub-error rather than the umbrella."""
    import jsonschema

    for err in errors:
        if err.context:
            yield jsonschema.exceptions.best_match([err]) if err.validator not in ("anyOf", "oneOf") else min(
                err.context, key=lambda e: (len(e.absolute_path) * -1, e.validator != "type"))
        else:
            yield err


def _schema_message(err, data_at: Any) -> tuple[Path_, str, bool]:
    """(path, message, point-at-key) for one jsonschema error, in words a user acts on."""
    path = _schema_path(err)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in (err.instance or {}) if k not in allowed]
        key = extra[0] if extra else ""
        hint = difflib.get_close_matches(key, allowed, n=1)
        msg = f"unknown field {key!r}"
        msg += f" (did you mean {hint[0]!r}?)" if hint else ""
        return path + (key,), msg, True
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return path + (missing,), "required field is missing", False
    if v == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return path, f"must be {_article(want)}, not {_describe(err.instance)}", False
    if v == "enum":
        options = ", ".join(json.dumps(o) for o in err.validator_value)
        return path, f"{json.dumps(err.instance)} is not one of {options}", False
    if v == "const":
        return path, f"must be {json.dumps(err.validator_value)}, not {json.dumps(err.instance)}", False
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return path, f"{err.instance} is out of range ({v} {err.validator_value})", False
    return path, err.message, False


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({json.dumps(value)})"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


# --- semantic checks ------------------------------------------------------------------------------

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
SIGNALS = {
    "SIGABRT", "SIGALRM", "SIGBUS", "SIGCHLD", "SIGCLD", "SIGCONT", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT",
    "SIGIO", "SIGIOT", "SIGKILL", "SIGPIPE", "SIGPOLL", "SIGPROF", "SIGPWR", "SIGQUIT", "SIGSEGV",
    "SIGSTKFLT", "SIGSTOP", "SIGSYS", "SIGTERM", "SIGTRAP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG",
    "SIGUSR1", "SIGUSR2", "SIGVTALRM", "SIGWINCH", "SIGXCPU", "SIGXFSZ",
} | {f"SIGRTMIN+{i}" for i in range(1, 16)} | {f"SIGRTMAX-{i}" for i in range(1, 15)} | {"SIGRTMIN", "SIGRTMAX"}
SAFE_SYSCTL_PREFIXES = ("net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PODMAN_PULL_POLICIES = {"always": "Always", "missing": "IfNotPresent", "ifnotpresent": "IfNotPresent",
                        "never": "Never", "newer": "Always"}


class _Checker:
    """Collects semantic diagnostics for one object."""

    def __init__(self, file: str, pos: Positions, base: Path_, out: list[Diagnostic]):
        self.file, self.pos, self.base, self.out = file, pos, base, out

    def error(self, path: Path_, message: str, key: bool = False) -> None:
        self.report(Severity.ERROR, path, message, key)

    def warn(self, path: Path_, message: str) -> None:
        self.report(Severity.WARNING, path, message)

    def report(self, sev: Severity, path: Path_, message: str, key: bool = False) -> None:
        full = self.base + tuple(path)
        line, col = self.pos.find(full, key=key)
        self.out.append(Diagnostic(sev, self.file, line, col, convert.fmt_path(tuple(path)), message))


def _check_name(chk: _Checker, path: Path_, name: str, what: str, label: bool) -> None:
    if not name:
        chk.error(path, f"{what} does not have a name")
        return
    pattern, limit = (DNS1123_LABEL, 63) if label else (DNS1123_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        kind, chars = ("DNS-1123 label", "'-'") if label else ("DNS-1123 subdomain", "'-' and '.'")
        chk.error(path, f"{name!r} is not a valid {what}: a {kind} is lowercase letters, digits and {chars}, "
                  f"starts and ends with a letter or digit, at most {limit} characters")


def _check_meta(chk: _Checker, meta, kind: str) -> None:
    _check_name(chk, ("metadata", "name"), meta.name, f"{kind} name", label=False)
    if meta.namespace and not DNS1123_LABEL.match(meta.namespace):
        chk.error(("metadata", "namespace"), f"{meta.namespace!r} is not a valid namespace (DNS-1123 label)")


def _check_quantity(chk: _Checker, path: Path_, value) -> Any:
    try:
        return parse_quantity(value)
    except ValueError as exc:
        chk.error(path, str(exc))
        return None


def _check_container(chk: _Checker, c: Container, path: Path_, volumes: set[str], host_network: bool,
                     init: bool) -> None:
    _check_name(chk, path + ("name",), c.name, "container name", label=True)
    if not c.image.strip():
        chk.error(path + ("image",), f"container {c.name!r} is missing the required 'image' field")
    if c.image_pull_policy and c.image_pull_policy not in PULL_POLICIES:
        fix = PODMAN_PULL_POLICIES.get(c.image_pull_policy.lower())
        hint = f"; podman's {c.image_pull_policy!r} is {fix!r} in Kubernetes" if fix else ""
        chk.error(path + ("imagePullPolicy",),
                  f"{c.image_pull_policy!r} is not a pull policy: use Always, IfNotPresent or Never{hint}")
    names: set[str] = set()
    for i, e in enumerate(c.env):
        if not e.name or "=" in e.name:
            chk.error(path + ("env", i, "name"), f"{e.name!r} is not a valid environment variable name")
        if e.value is not None and e.value_from is not None:
            chk.error(path + ("env", i), "set either value or valueFrom, not both")
        if e.value_from is not None:
            vf = e.value_from
            sources = [s for s in (vf.config_map_key_ref, vf.secret_key_ref, vf.field_ref, vf.resource_field_ref) if s]
            if len(sources) != 1:
                chk.error(path + ("env", i, "valueFrom"), "needs exactly one of configMapKeyRef, secretKeyRef, "
                          "fieldRef, resourceFieldRef")
        names.add(e.name)
    for i, ef in enumerate(c.env_from):
        if bool(ef.config_map_ref) == bool(ef.secret_ref):
            chk.error(path + ("envFrom", i), "needs exactly one of configMapRef, secretRef")
    ports_seen: set[tuple[int, str]] = set()
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        pp = path + ("ports", i)
        if not 1 <= p.container_port <= 65535:
            chk.error(pp + ("containerPort",), f"{p.container_port} is not a valid port (1-65535)")
        if p.host_port is not None and not 1 <= p.host_port <= 65535:
            chk.error(pp + ("hostPort",), f"{p.host_port} is not a valid port (1-65535)")
        if host_network and p.host_port and p.host_port != p.container_port:
            chk.error(pp + ("hostPort",), "with hostNetwork, hostPort must equal containerPort")
        if p.name:
            if len(p.name) > 15 or not PORT_NAME.match(p.name):
                chk.error(pp + ("name",), f"{p.name!r} is not a valid port name (at most 15 lowercase letters, "
                          "digits and '-', with at least one letter)")
            if p.name in port_names:
                chk.error(pp + ("name",), f"duplicate port name {p.name!r}")
            port_names.add(p.name)
        if (p.container_port, p.protocol) in ports_seen:
            chk.error(pp, f"duplicate containerPort {p.container_port}/{p.protocol}")
        ports_seen.add((p.container_port, p.protocol))
    mounts_seen: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = path + ("volumeMounts", i)
        if m.name not in volumes:
            chk.error(mp + ("name",), f"volume {m.name!r} is not declared in the pod's volumes")
        if not m.mount_path.startswith("/"):
            chk.error(mp + ("mountPath",), f"{m.mount_path!r} must be an absolute path")
        norm = os.path.normpath(m.mount_path)
        if norm in mounts_seen:
            chk.error(mp + ("mountPath",), f"{m.mount_path!r} is mounted twice")
        mounts_seen.add(norm)
        if m.sub_path and (m.sub_path.startswith("/") or ".." in m.sub_path.split("/")):
            chk.error(mp + ("subPath",), f"{m.sub_path!r} must be a relative path without '..'")
    for kind in ("limits", "requests"):
        for res, value in getattr(c.resources, kind).items():
            _check_quantity(chk, path + ("resources", kind, res), value)
    for res, req in c.resources.requests.items():
        lim = c.resources.limits.get(res)
        if lim is not None:
            try:
                if parse_quantity(req) > parse_quantity(lim):
                    chk.error(path + ("resources", "requests", res), f"request {req} is more than the limit {lim}")
            except ValueError:
                pass
    for probe_name in ("liveness_probe", "readiness_probe", "startup_probe"):
        probe = getattr(c, probe_name)
        if probe is None:
            continue
        jname = {"liveness_probe": "livenessProbe", "readiness_probe": "readinessProbe",
                 "startup_probe": "startupProbe"}[probe_name]
        pp = path + (jname,)
        if init:
            chk.error(pp, "init containers cannot have probes")
        handlers = [h for h in (probe.exec, probe.http_get, probe.tcp_socket) if h is not None]
        if len(handlers) != 1:
            chk.error(pp, "needs exactly one of exec, httpGet, tcpSocket")
        for h, hname in ((probe.http_get, "httpGet"), (probe.tcp_socket, "tcpSocket")):
            if h is not None and isinstance(h.port, str) and not h.port.isdigit() and h.port not in port_names:
                chk.error(pp + (hname, "port"), f"named port {h.port!r} is not declared in this container's ports")
        if probe.success_threshold != 1 and probe_name != "readiness_probe":
            chk.error(pp + ("successThreshold",), "must be 1 for liveness and startup probes")
    if c.lifecycle is not None and c.lifecycle.stop_signal and c.lifecycle.stop_signal.upper() not in SIGNALS:
        chk.error(path + ("lifecycle", "stopSignal"), f"invalid signal: {c.lifecycle.stop_signal}")


def _check_pod_spec(chk: _Checker, spec: PodSpec, path: Path_) -> None:
    if not spec.containers:
        chk.error(path + ("containers",), "a pod needs at least one container")
    volume_names: set[str] = set()
    for i, v in enumerate(spec.volumes):
        vp = path + ("volumes", i)
        _check_name(chk, vp + ("name",), v.name, "volume name", label=True)
        if v.name in volume_names:
            chk.error(vp + ("name",), f"duplicate volume name {v.name!r}")
        volume_names.add(v.name)
        sources = [s for s in (v.empty_dir, v.host_path, v.config_map, v.secret, v.persistent_volume_claim)
                   if s is not None]
        if len(sources) != 1:
            chk.error(vp, "needs exactly one volume source that podplay supports: emptyDir, hostPath, "
                      "configMap, secret, persistentVolumeClaim")
        if v.host_path is not None and not v.host_path.path.startswith("/"):
            chk.error(vp + ("hostPath", "path"), f"{v.host_path.path!r} must be an absolute path")
        if v.empty_dir is not None and v.empty_dir.size_limit is not None:
            _check_quantity(chk, vp + ("emptyDir", "sizeLimit"), v.empty_dir.size_limit)
        for src, sname in ((v.config_map, "configMap"), (v.secret, "secret")):
            if src is None:
                continue
            for j, item in enumerate(src.items):
                if item.path.startswith("/") or ".." in item.path.split("/") or not item.path:
                    chk.error(vp + (sname, "items", j, "path"), f"{item.path!r} must be a relative path without '..'")
            mode = src.default_mode
            if mode is not None and not 0 <= mode <= 0o777:
                chk.error(vp + (sname, "defaultMode"), f"{mode} is not a file mode (0-0777)")
    container_names: set[str] = set()
    host_ports: dict[tuple[int, str], Path_] = {}
    for field_name, containers, init in (("initContainers", spec.init_containers, True),
                                         ("containers", spec.containers, False)):
        for i, c in enumerate(containers):
            cp = path + (field_name, i)
            if c.name in container_names:
                chk.error(cp + ("name",), f"duplicate container name {c.name!r}")
            container_names.add(c.name)
            _check_container(chk, c, cp, volume_names, spec.host_network, init)
            for j, p in enumerate(c.ports):
                if p.host_port:
                    k = (p.host_port, p.protocol)
                    if k in host_ports:
                        chk.error(cp + ("ports", j, "hostPort"),
                                  f"hostPort {p.host_port}/{p.protocol} is already used in this pod")
                    host_ports[k] = cp
    sc = spec.security_context
    for i, s in enumerate(sc.sysctls):
        sp = path + ("securityContext", "sysctls", i)
        if not s.name.startswith(SAFE_SYSCTL_PREFIXES):
            chk.error(sp + ("name",), f"sysctl {s.name!r} is not namespaced/safe: podplay allows "
                      + ", ".join(p + "*" for p in SAFE_SYSCTL_PREFIXES))
        elif s.name.startswith("net.") and spec.host_network:
            chk.error(sp + ("name",), f"sysctl {s.name!r} cannot be set since the network namespace is the host's "
                      "(hostNetwork: true)")
    if spec.termination_grace_period_seconds < 0:
        chk.error(path + ("terminationGracePeriodSeconds",), "must not be negative")
    if spec.hostname and not DNS1123_LABEL.match(spec.hostname):
        chk.error(path + ("hostname",), f"{spec.hostname!r} is not a valid hostname (DNS-1123 label)")


def _check_object(chk: _Checker, obj) -> None:
    if isinstance(obj, Pod):
        _check_meta(chk, obj.metadata, "pod")
        _check_pod_spec(chk, obj.spec, ("spec",))
    elif isinstance(obj, Deployment):
        _check_meta(chk, obj.metadata, "deployment")
        spec = obj.spec
        if len(obj.metadata.name) > 240:
            chk.error(("metadata", "name"), "deployment names are limited to 240 characters (replica suffixes)")
        if spec.replicas < 0:
            chk.error(("spec", "replicas"), "must not be negative")
        selector = spec.selector.match_labels
        labels = spec.template.metadata.labels
        if not selector:
            chk.error(("spec", "selector"), "a Deployment needs spec.selector.matchLabels")
        for k, v in selector.items():
            if labels.get(k) != v:
                chk.error(("spec", "template", "metadata", "labels"),
                          f"selector {k}={v} does not match the template's labels")
        _check_pod_spec(chk, spec.template.spec, ("spec", "template", "spec"))
        annotations = {**obj.metadata.annotations, **spec.template.metadata.annotations}
        per_replica = annotations.get(ANN_PORT_PER_REPLICA, "").lower() == "true"
        if spec.replicas > 1 and not per_replica and not spec.template.spec.host_network:
            for i, c in enumerate(spec.template.spec.containers):
                for j, p in enumerate(c.ports):
                    if p.host_port:
                        chk.error(("spec", "template", "spec", "containers", i, "ports", j, "hostPort"),
                                  f"hostPort {p.host_port} cannot be shared by {spec.replicas} replicas on one host; "
                                  f"use 1 replica, or the annotation {ANN_PORT_PER_REPLICA}: \"true\" to give "
                                  "replica N the port hostPort+N")
        strategy = spec.strategy
        if strategy.type == "RollingUpdate":
            ru = strategy.rolling_update
            if str(ru.max_surge) in ("0", "0%") and str(ru.max_unavailable) in ("0", "0%"):
                chk.error(("spec", "strategy", "rollingUpdate"), "maxSurge and maxUnavailable cannot both be 0")
    elif isinstance(obj, ConfigMap | Secret):
        _check_meta(chk, obj.metadata, obj.kind)
        data_fields = ("data", "binaryData") if isinstance(obj, ConfigMap) else ("data", "stringData")
        seen: set[str] = set()
        for fname in data_fields:
            table = {"data": obj.data, "binaryData": getattr(obj, "binary_data", {}),
                     "stringData": getattr(obj, "string_data", {})}[fname]
            for k in table:
                if not CONFIG_KEY.match(k) or len(k) > 253:
                    chk.error((fname, k), f"{k!r} is not a valid key (letters, digits, '-', '_', '.')", key=True)
                if isinstance(obj, ConfigMap) and k in seen:
                    chk.error((fname, k), f"key {k!r} is in both data and binaryData", key=True)
                seen.add(k)
    elif isinstance(obj, PersistentVolumeClaim):
        _check_meta(chk, obj.metadata, "PersistentVolumeClaim")
        for res, value in obj.spec.resources.requests.items():
            _check_quantity(chk, ("spec", "resources", "requests", res), value)


def _decode_b64_fields(raw: dict, fields: Sequence[str], chk: _Checker) -> bool:
    """Decode base64 maps in place (Secret.data, ConfigMap.binaryData); report bad values."""
    ok = True
    for fname in fields:
        table = raw.get(fname)
        if not isinstance(table, dict):
            continue
        for k, v in list(table.items()):
            try:
                table[k] = base64.b64decode(str(v).replace("\n", ""), validate=True)
            except (binascii.Error, ValueError):
                chk.error((fname, k), f"value of {k!r} is not valid base64 (put plain text under stringData)")
                ok = False
    return ok


# --- cross-object checks ---------------------------------------------------------------------------

def _pod_specs(item: Loaded) -> Iterator[tuple[PodSpec, Path_]]:
    o = item.obj
    if isinstance(o, Pod):
        yield o.spec, ("spec",)
    elif isinstance(o, Deployment):
        yield o.spec.template.spec, ("spec", "template", "spec")


def _check_references(items: list[tuple[Loaded, Positions]], out: list[Diagnostic]) -> None:
    by_key: dict[tuple, tuple[Loaded, Positions]] = {}
    for item, pos in items:
        k = (item.obj.kind, item.obj.metadata.namespace, item.obj.metadata.name)
        if k in by_key:
            first, fpos = by_key[k]
            where = f"{first.file}:{first.line}"
            out.append(Diagnostic(Severity.ERROR, item.file, item.line, item.column, "metadata.name",
                                  f"{k[0]} {k[2]!r} is defined twice: here and at {where}"))
            out.append(Diagnostic(Severity.ERROR, first.file, first.line, first.column, "metadata.name",
                                  f"{k[0]} {k[2]!r} is defined twice: here and at {item.file}:{item.line}"))
        else:
            by_key[k] = (item, pos)
    data: dict[tuple[str, str, str], set[str]] = {}
    for item, _ in items:
        o = item.obj
        if isinstance(o, ConfigMap | Secret):
            data[(o.kind, o.metadata.namespace, o.metadata.name)] = set(o.items())
    pods: dict[tuple[str, str], str] = {}
    for item, pos in items:
        ns = item.obj.metadata.namespace
        for spec, base in _pod_specs(item):
            chk = _Checker(item.file, pos, base, out)
            for field_name, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
                for i, c in enumerate(containers):
                    cp = (field_name, i)
                    for j, ef in enumerate(c.env_from):
                        ref, kind = (ef.config_map_ref, "ConfigMap") if ef.config_map_ref else (ef.secret_ref, "Secret")
                        if ref and not ref.optional and (kind, ns, ref.name) not in data:
                            chk.error(cp + ("envFrom", j), f"{kind} {ref.name!r} not found (mark it optional: true "
                                      "if the pod may start without it)")
                    for j, e in enumerate(c.env):
                        vf = e.value_from
                        sel = vf and (vf.config_map_key_ref or vf.secret_key_ref)
                        if not sel or sel.optional:
                            continue
                        kind = "ConfigMap" if vf.config_map_key_ref else "Secret"
                        keys = data.get((kind, ns, sel.name))
                        if keys is None:
                            chk.error(cp + ("env", j, "valueFrom"), f"{kind} {sel.name!r} not found")
                        elif sel.key not in keys:
                            chk.error(cp + ("env", j, "valueFrom"), f"key {sel.key!r} not found in {kind} {sel.name!r}")
            for i, v in enumerate(spec.volumes):
                for src, kind, name, fname in ((v.config_map, "ConfigMap", v.config_map and v.config_map.name,
                                                "configMap"),
                                               (v.secret, "Secret", v.secret and v.secret.secret_name, "secret")):
                    if src is None or src.optional:
                        continue
                    keys = data.get((kind, ns, name))
                    if keys is None:
                        chk.error(("volumes", i, fname), f"{kind} {name!r} not found (mark it optional: true if the "
                                  "pod may start without it)")
                        continue
                    for j, it in enumerate(src.items):
                        if it.key not in keys:
                            chk.error(("volumes", i, fname, "items", j, "key"),
                                      f"key {it.key!r} not found in {kind} {name!r}")
            for j, ref in enumerate(spec.image_pull_secrets):
                if ("Secret", ns, ref.name) not in data:
                    chk.warn(("imagePullSecrets", j), f"Secret {ref.name!r} not found; pulling without it")
        # Pod names, including the ones Deployments expand to, must not collide.
        o = item.obj
        names = [o.metadata.name] if isinstance(o, Pod) else (
            [f"{o.metadata.name}-{i}" for i in range(o.spec.replicas)] if isinstance(o, Deployment) else [])
        for name in names:
            k = (ns, name)
            if k in pods and pods[k] != str(item.key):
                out.append(Diagnostic(Severity.ERROR, item.file, item.line, item.column, "metadata.name",
                                      f"pod name {name!r} is also produced by {pods[k]}"))
            pods[k] = str(item.key)


# --- the loader -----------------------------------------------------------------------------------

def _unused_warnings(unused: list[Path_], seen: set[str], chk: _Checker) -> None:
    for path in unused:
        if path and path[0] in ("status",):
            continue
        if len(path) == 2 and path[0] == "metadata" and path[1] in SERVER_FIELDS:
            continue
        pattern = convert.fmt_path(tuple("[]" if isinstance(p, int) else p for p in path)).replace(".[]", "[]")
        if pattern in seen:
            continue
        seen.add(pattern)
        chk.warn(path, "podplay accepts this field but does not act on it")


def _flatten(data: Any, pos: Positions) -> Iterator[tuple[Any, Path_]]:
    """A document, or each item of a ``kind: List``."""
    if isinstance(data, dict) and data.get("kind") == "List" and isinstance(data.get("items"), list):
        for i, item in enumerate(data["items"]):
            yield item, ("items", i)
    else:
        yield data, ()


def _subtree(pos: Positions, base: Path_) -> Positions:
    """Positions re-rooted at `base` so that object paths start at the object."""
    if not base:
        return pos
    out = Positions()
    n = len(base)
    for k, v in pos.items():
        if k[:n] == base:
            out[k[n:]] = v
    for k, v in pos.keys.items():
        if k[:n] == base:
            out.keys[k[n:]] = v
    return out


def load_documents(docs: Iterable[tuple[Any, Positions]], file: str, result: ManifestSet,
                   loaded_pos: list[tuple[Loaded, Positions]], warned: set[str]) -> None:
    for doc, doc_pos in docs:
        for data, base in _flatten(doc, doc_pos):
            pos = _subtree(doc_pos, base)
            line, col = pos.get((), (0, 0))
            chk = _Checker(file, pos, (), result.diagnostics)
            if not isinstance(data, dict):
                chk.error((), f"a manifest document must be a mapping (a Kubernetes object), not {_describe(data)}")
                continue
            kind = data.get("kind")
            name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
            if not isinstance(kind, str) or not kind:
                chk.error(("kind",), "required field is missing (every object needs apiVersion and kind)")
                continue
            if kind not in KINDS:
                label = f"{kind} {name}" if name else kind
                chk.warn((), f"{label}: kind not supported, skipped (podplay supports {SUPPORTED})")
                continue
            api = data.get("apiVersion")
            if api != API_VERSIONS[kind]:
                chk.error(("apiVersion",), f"{kind} needs apiVersion {API_VERSIONS[kind]!r}, not {api!r}")
                continue
            errors_before = len(result.errors)
            validator = _validator(kind)
            for err in _best_errors(sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))):
                path, message, at_key = _schema_message(err, data)
                chk.error(path, message, key=at_key)
            if len(result.errors) > errors_before:
                continue
            raw = json.loads(json.dumps(data))  # a private copy we may decode in place
            b64 = ("data",) if kind == "Secret" else ("binaryData",) if kind == "ConfigMap" else ()
            if not _decode_b64_fields(raw, b64, chk):
                continue
            unused = convert.Unused()
            obj = convert.build(KINDS[kind], raw, unused=unused)
            if not obj.metadata.namespace:
                obj = _with_namespace(obj, "default")
            _unused_warnings(unused, warned, chk)
            errors_before = len(result.errors)
            _check_object(chk, obj)
            if len(result.errors) > errors_before:
                continue
            loaded = Loaded(obj, file, line, col)
            result.objects.append(loaded)
            loaded_pos.append((loaded, pos))


def _with_namespace(obj, namespace: str):
    from dataclasses import replace

    return replace(obj, metadata=replace(obj.metadata, namespace=namespace))


def load_manifests(paths: Sequence[str], *, stdin_text: str | None = None) -> ManifestSet:
    """Read every manifest under `paths`; never raises for bad input."""
    import sys

    files, problems = find_manifest_files(paths)
    result = ManifestSet(files=files, diagnostics=list(problems))
    result.unreadable.extend(d.file for d in problems)
    loaded_pos: list[tuple[Loaded, Positions]] = []
    warned: set[str] = set()
    for file in files:
        try:
            if file == "-":
                text = stdin_text if stdin_text is not None else sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as f:
                    text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.diagnostics.append(Diagnostic(Severity.ERROR, file, 0, 0, "", f"cannot read file: {reason}"))
            result.unreadable.append(file)
            continue
        docs = []
        for item in parse_documents(text, file):
            if isinstance(item, Diagnostic):
                result.diagnostics.append(item)
                result.unreadable.append(file)
            else:
                docs.append(item)
        load_documents(docs, file, result, loaded_pos, warned)
    _check_references(loaded_pos, result.diagnostics)
    if files and not result.objects and not result.errors:
        result.diagnostics.append(Diagnostic(Severity.ERROR, files[0] if len(files) == 1 else ", ".join(paths), 0, 0,
                                             "", f"no supported object ({SUPPORTED}) found"))
    return result


def load_objects(items: Iterable[Any], source: str = "<python>") -> ManifestSet:
    """Library entry: plain dicts or kubernetes client models (V1Pod, V1Deployment…).

    The ``kubernetes`` package is imported only when such a model object is passed
    (install ``podplay[kube]``); plain dicts never need it.
    """
    docs = []
    for item in items:
        if not isinstance(item, dict):
            if not hasattr(item, "openapi_types"):
                raise TypeError(f"expected a dict or a kubernetes client model, got {type(item).__name__}")
            from kubernetes.client import ApiClient

            item = ApiClient().sanitize_for_serialization(item)
        pos = Positions()
        pos[()] = (0, 0)
        docs.append((item, pos))
    result = ManifestSet(files=[source])
    loaded_pos: list[tuple[Loaded, Positions]] = []
    load_documents(docs, source, result, loaded_pos, set())
    _check_references(loaded_pos, result.diagnostics)
    return result
