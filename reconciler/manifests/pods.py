"""Checks of a pod's spec, its containers, and a Deployment's own fields.

The Kubernetes API server's validation, for the subset podplay runs, plus what one host cannot
do (a hostPort shared by replicas). Paths are relative to the object: a Pod's spec is at
``spec``, a Deployment's at ``spec.template.spec``.
"""

from __future__ import annotations

import ipaddress
import os
import re

from reconciler.manifests.checker import Checker, close, did_you_mean
from reconciler.manifests.dialect import PULL_POLICIES
from reconciler.manifests.fields import (
    DNS1123_LABEL,
    check_labels,
    check_meta,
    check_name,
    check_quantity,
    volume_sources_text,
)
from reconciler.manifests.hostfacts import HostFacts
from reconciler.manifests.positions import Path_
from reconciler.model import convert
from reconciler.model.kube import Container, Deployment, PodSpec
from reconciler.model.quantity import parse_quantity
from reconciler.model.source import ANN_PORT_PER_REPLICA
from reconciler.model.workloads import selector_of

MAX_REPLICAS = 1000  # one host: a bigger number is a typo, and expanding it would hang
DISK_LIMIT_MESSAGE = ("podplay bounds only a medium: Memory emptyDir (its tmpfs); on disk this limit is not "
                      "enforced (the kubelet evicts the pod, podplay has no quota to apply)")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The API server's sysctl names: dot- or slash-separated segments (net.ipv4.conf.eth0/1.rp_filter).
SYSCTL_NAME = re.compile(r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$")
MAX_ID = 2**32 - 2  # user and group IDs: 2^32-1 is the kernel's "no ID" ((uid_t)-1)
SIGNALS = {
    "SIGABRT", "SIGALRM", "SIGBUS", "SIGCHLD", "SIGCLD", "SIGCONT", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT",
    "SIGIO", "SIGIOT", "SIGKILL", "SIGPIPE", "SIGPOLL", "SIGPROF", "SIGPWR", "SIGQUIT", "SIGSEGV",
    "SIGSTKFLT", "SIGSTOP", "SIGSYS", "SIGTERM", "SIGTRAP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG",
    "SIGUSR1", "SIGUSR2", "SIGVTALRM", "SIGWINCH", "SIGXCPU", "SIGXFSZ",
} | {f"SIGRTMIN+{i}" for i in range(1, 16)} | {f"SIGRTMAX-{i}" for i in range(1, 15)} | {"SIGRTMIN", "SIGRTMAX"}
SAFE_SYSCTL_PREFIXES = ("net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
# fieldRef paths the API server accepts for env (labels/annotations with a key are matched apart).
ENV_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                   "metadata.annotations", "spec.nodeName", "spec.serviceAccountName", "status.hostIP",
                   "status.hostIPs", "status.podIP", "status.podIPs")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
ENV_RESOURCES = tuple(f"{s}.{r}" for s in ("limits", "requests") for r in CONTAINER_RESOURCES)
CPU_DIVISORS = ("1m", "1")
MEMORY_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")


def _check_probe(chk: Checker, probe, pp: Path_, kind: str, init: bool, port_names: set[str]) -> None:
    if init:
        chk.error(pp, "init containers cannot have probes (they run to completion first); a sidecar "
                  "(restartPolicy: Always) can")
    handlers = [h for h in ("exec", "http_get", "tcp_socket", "grpc") if getattr(probe, h) is not None]
    if not handlers:
        chk.error(pp, "needs one of exec, httpGet, tcpSocket, grpc")
    elif len(handlers) > 1:
        chk.error(pp, "has more than one handler: keep exactly one of exec, httpGet, tcpSocket, grpc")
    if probe.grpc is not None and not 1 <= probe.grpc.port <= 65535:
        # The API server takes only a number here (no named port), as for the kubelet's gRPC client.
        chk.error(pp + ("grpc", "port"), f"{probe.grpc.port} is not a valid port (1-65535)")
    for h, hname in ((probe.http_get, "httpGet"), (probe.tcp_socket, "tcpSocket")):
        if h is None:
            continue
        port = h.port
        if isinstance(port, int):
            if not 1 <= port <= 65535:
                chk.error(pp + (hname, "port"), f"{port} is not a valid port (1-65535)")
        elif port.isdigit():
            chk.error(pp + (hname, "port"), f"{port!r} is text: write the number without quotes, or name a port "
                      "declared in this container's ports")
        elif port not in port_names:
            known = f" (declared: {', '.join(sorted(port_names))})" if port_names else ""
            chk.error(pp + (hname, "port"), f"named port {port!r} is not declared in this container's ports{known}")
    if probe.success_threshold != 1 and kind != "readinessProbe":
        chk.error(pp + ("successThreshold",), f"must be 1 for a {kind}")
    for fname in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        value = getattr(probe, re.sub(r"([A-Z])", r"_\1", fname).lower())
        least = 0 if fname == "initialDelaySeconds" else 1
        if value < least:
            chk.error(pp + (fname,), f"{value} is too small (the least is {least})")


def _check_port(chk: Checker, port, where: Path_, port_names: set[str]) -> None:
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            chk.error(where, f"{port} is not a valid port (1-65535)")
    elif port.isdigit():
        chk.error(where, f"{port!r} is text: write the number without quotes, or name a port declared in this "
                  "container's ports")
    elif port not in port_names:
        known = f" (declared: {', '.join(sorted(port_names))})" if port_names else ""
        chk.error(where, f"named port {port!r} is not declared in this container's ports{known}")


def _check_hook(chk: Checker, hook, hp: Path_, init: bool, port_names: set[str]) -> None:
    """A postStart or preStop handler: exactly one of exec, httpGet, sleep (what the kubelet runs)."""
    if init:
        chk.error(hp, "init containers cannot have lifecycle hooks (they run to completion first); a sidecar "
                  "(restartPolicy: Always) can")
    if hook.tcp_socket is not None:
        chk.error(hp + ("tcpSocket",), "the kubelet never runs a tcpSocket hook (the API keeps it only for old "
                  "manifests): use exec, httpGet or sleep")
        return
    handlers = [h for h in (hook.exec, hook.http_get, hook.sleep) if h is not None]
    if len(handlers) != 1:
        chk.error(hp, "needs exactly one of exec, httpGet, sleep")
    if hook.sleep is not None and hook.sleep.seconds < 0:
        chk.error(hp + ("sleep", "seconds"), f"{hook.sleep.seconds} must not be negative")
    if hook.http_get is not None:
        _check_port(chk, hook.http_get.port, hp + ("httpGet", "port"), port_names)


def _check_env_source(chk: Checker, c: Container, vf, ep: Path_) -> None:
    """One env var's valueFrom: exactly one source, and that source well formed."""
    sources = [s for s in (vf.config_map_key_ref, vf.secret_key_ref, vf.field_ref, vf.resource_field_ref) if s]
    if len(sources) != 1:
        chk.error(ep + ("valueFrom",), "needs exactly one of configMapKeyRef, secretKeyRef, fieldRef, "
                  "resourceFieldRef")
        return
    for sel, sname in ((vf.config_map_key_ref, "configMapKeyRef"), (vf.secret_key_ref, "secretKeyRef")):
        if sel is not None and not sel.name:
            chk.error(ep + ("valueFrom", sname, "name"), "names no ConfigMap/Secret")
        if sel is not None and not sel.key:
            chk.error(ep + ("valueFrom", sname, "key"), "names no key")
    if vf.field_ref is not None:
        fp = vf.field_ref.field_path
        if fp not in ENV_FIELD_PATHS and not _FIELD_KEY.match(fp):
            hint = close(fp, ENV_FIELD_PATHS)
            chk.error(ep + ("valueFrom", "fieldRef", "fieldPath"), f"{fp!r} is not a field a container can read"
                      + (f" (did you mean {hint!r}?)" if hint else f"; use one of {', '.join(ENV_FIELD_PATHS)}"))
    rf = vf.resource_field_ref
    if rf is None:
        return
    rp = ep + ("valueFrom", "resourceFieldRef")
    if rf.resource not in ENV_RESOURCES:
        chk.error(rp + ("resource",), f"{rf.resource!r} is not one of {', '.join(ENV_RESOURCES)}")
    elif not rf.container_name or rf.container_name == c.name:  # another container's: checked in the pod
        allowed = CPU_DIVISORS if rf.resource.endswith("cpu") else MEMORY_DIVISORS
        try:
            ok = any(parse_quantity(rf.divisor) == parse_quantity(d) for d in allowed)
        except ValueError:
            ok = False
        if not ok:
            chk.error(rp + ("divisor",), f"{rf.divisor!r} is not a divisor for {rf.resource}: use one of "
                      + ", ".join(allowed))


def _check_env(chk: Checker, c: Container, path: Path_) -> None:
    for i, e in enumerate(c.env):
        ep = path + ("env", i)
        if not e.name or "=" in e.name:
            chk.error(ep + ("name",), f"{e.name!r} is not a valid environment variable name (non-empty, no '=')")
        if e.value is not None and e.value_from is not None:
            chk.error(ep, "set either value or valueFrom, not both")
        if e.value_from is not None:
            _check_env_source(chk, c, e.value_from, ep)
    for i, ef in enumerate(c.env_from):
        if bool(ef.config_map_ref) == bool(ef.secret_ref):
            chk.error(path + ("envFrom", i), "needs exactly one of configMapRef, secretRef")


def _check_ports(chk: Checker, c: Container, path: Path_, host_network: bool) -> set[str]:
    """The container's ports; returns their names (probes may refer to them)."""
    ports_seen: set[tuple[int, str]] = set()
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        pp = path + ("ports", i)
        if not 1 <= p.container_port <= 65535:
            chk.error(pp + ("containerPort",), f"{p.container_port} is not a valid port (1-65535)")
        # hostPort 0 means "not published", as in the API.
        if p.host_port and not 1 <= p.host_port <= 65535:
            chk.error(pp + ("hostPort",), f"{p.host_port} is not a valid port (1-65535)")
        if host_network and p.host_port and p.host_port != p.container_port:
            chk.error(pp + ("hostPort",), f"with hostNetwork, hostPort must equal containerPort ({p.container_port})")
        if p.name:
            if len(p.name) > 15 or not PORT_NAME.match(p.name):
                chk.error(pp + ("name",), f"{p.name!r} is not a valid port name (at most 15 lowercase letters, "
                          "digits and '-', with at least one letter)")
            if p.name in port_names:
                chk.error(pp + ("name",), f"duplicate port name {p.name!r}")
            port_names.add(p.name)
        if (p.container_port, p.protocol) in ports_seen:
            chk.error(pp + ("containerPort",), f"duplicate containerPort {p.container_port}/{p.protocol}")
        ports_seen.add((p.container_port, p.protocol))
    return port_names


def _check_mounts(chk: Checker, c: Container, path: Path_, volumes: set[str]) -> None:
    mounts_seen: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = path + ("volumeMounts", i)
        if m.name not in volumes:
            chk.error(mp + ("name",), f"volume {m.name!r} is not declared in the pod's volumes"
                      + did_you_mean(m.name, volumes))
        if not m.mount_path.startswith("/"):
            chk.error(mp + ("mountPath",), f"{m.mount_path!r} must be an absolute path")
        norm = os.path.normpath(m.mount_path)
        if norm in mounts_seen:
            chk.error(mp + ("mountPath",), f"{m.mount_path!r} is mounted twice in this container")
        mounts_seen.add(norm)
        if m.sub_path and (m.sub_path.startswith("/") or ".." in m.sub_path.split("/")):
            chk.error(mp + ("subPath",), f"{m.sub_path!r} must be a relative path without '..'")


def _check_resources(chk: Checker, c: Container, path: Path_) -> None:
    for kind in ("limits", "requests"):
        for res, value in getattr(c.resources, kind).items():
            rp = path + ("resources", kind, res)
            if res not in CONTAINER_RESOURCES and not res.startswith("hugepages-") and "/" not in res:
                hint = close(res, CONTAINER_RESOURCES)
                chk.error(rp, f"{res!r} is not a resource" + (f" (did you mean {hint!r}?)" if hint else
                                                              f"; use {', '.join(CONTAINER_RESOURCES)}"), key=True)
                continue
            check_quantity(chk, rp, value)
    for res, req in c.resources.requests.items():
        lim = c.resources.limits.get(res)
        if lim is not None:
            try:
                if parse_quantity(req) > parse_quantity(lim):
                    chk.error(path + ("resources", "requests", res), f"request {req} is more than the limit {lim}")
            except ValueError:
                pass  # reported above


_PROBES = (("liveness_probe", "livenessProbe"), ("readiness_probe", "readinessProbe"),
           ("startup_probe", "startupProbe"))


def _check_container(chk: Checker, c: Container, path: Path_, volumes: set[str], host_network: bool,
                     init: bool) -> None:
    check_name(chk, path + ("name",), c.name, "container name", label=True)
    if not c.image.strip():
        chk.error(path + ("image",), f"container {c.name!r} is missing the required 'image' field")
    elif c.image != c.image.strip():
        chk.error(path + ("image",), f"{c.image!r} has spaces around it")
    if c.image_pull_policy and c.image_pull_policy not in PULL_POLICIES:  # podman's were repaired (dialect)
        chk.error(path + ("imagePullPolicy",),
                  f"{c.image_pull_policy!r} is not a pull policy: use Always, IfNotPresent or Never")
    _check_working_dir(chk, c.working_dir, path + ("workingDir",))
    _check_env(chk, c, path)
    port_names = _check_ports(chk, c, path, host_network)
    _check_mounts(chk, c, path, volumes)
    _check_resources(chk, c, path)
    if c.security_context is not None:
        sc = c.security_context
        _check_ids(chk, path + ("securityContext",), [(("runAsUser",), sc.run_as_user, "user"),
                                                      (("runAsGroup",), sc.run_as_group, "group")])
    sidecar = init and c.restart_policy == "Always"
    if c.restart_policy and not init:
        chk.error(path + ("restartPolicy",), "only an init container takes a restartPolicy (Always makes it a "
                  "sidecar); an app container follows the pod's restartPolicy")
    elif c.restart_policy and not sidecar:
        chk.error(path + ("restartPolicy",), f"{c.restart_policy!r}: an init container's restartPolicy can only "
                  "be Always (a sidecar that keeps running beside the app containers)")
    for attr, jname in _PROBES:
        probe = getattr(c, attr)
        if probe is not None:
            _check_probe(chk, probe, path + (jname,), jname, init and not sidecar, port_names)
    if c.lifecycle is not None:
        for hook, hname in ((c.lifecycle.post_start, "postStart"), (c.lifecycle.pre_stop, "preStop")):
            if hook is not None:
                _check_hook(chk, hook, path + ("lifecycle", hname), init and not sidecar, port_names)
    if c.lifecycle is not None and c.lifecycle.stop_signal and c.lifecycle.stop_signal.upper() not in SIGNALS:
        hint = close(c.lifecycle.stop_signal.upper(), SIGNALS) or close(
            "SIG" + c.lifecycle.stop_signal.upper(), SIGNALS)
        chk.error(path + ("lifecycle", "stopSignal"), f"invalid signal: {c.lifecycle.stop_signal}"
                  + (f" (did you mean {hint}?)" if hint else " (use a name like SIGTERM)"))


def _check_key_to_path(chk: Checker, items, path: Path_, seen: set[str] | None = None) -> None:
    seen = set() if seen is None else seen  # a projected volume's paths are one namespace
    for j, item in enumerate(items):
        ip = path + ("items", j)
        if item.path.startswith("/") or ".." in item.path.split("/") or not item.path:
            chk.error(ip + ("path",), f"{item.path!r} must be a relative path without '..'")
        elif os.path.normpath(item.path) in seen:
            chk.error(ip + ("path",), f"{item.path!r} is used twice in this volume")
        seen.add(os.path.normpath(item.path))
        if item.mode is not None and not 0 <= item.mode <= 0o777:
            chk.error(ip + ("mode",), f"{item.mode} is not a file mode (0-0777; in YAML, write octal as 0644)")


# What a downwardAPI volume file can hold (the API server's list; status fields are env-only).
VOLUME_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                      "metadata.annotations")


def _check_mode(chk: Checker, mode: int | None, path: Path_) -> None:
    if mode is not None and not 0 <= mode <= 0o777:
        chk.error(path, f"{mode} is not a file mode (0-0777; in YAML, write octal as 0644)")


def _check_downward_items(chk: Checker, items, path: Path_, containers: set[str], seen: set[str]) -> None:
    for j, item in enumerate(items):
        ip = path + ("items", j)
        if item.path.startswith("/") or ".." in item.path.split("/") or not item.path:
            chk.error(ip + ("path",), f"{item.path!r} must be a relative path without '..'")
        elif os.path.normpath(item.path) in seen:
            chk.error(ip + ("path",), f"{item.path!r} is used twice in this volume")
        seen.add(os.path.normpath(item.path))
        _check_mode(chk, item.mode, ip + ("mode",))
        if (item.field_ref is None) == (item.resource_field_ref is None):
            chk.error(ip, "needs exactly one of fieldRef, resourceFieldRef")
        elif item.field_ref is not None:
            fp = item.field_ref.field_path
            if fp not in VOLUME_FIELD_PATHS and not _FIELD_KEY.match(fp):
                hint = " (status fields are for env only)" if fp.startswith("status.") or fp.startswith("spec.") \
                    else did_you_mean(fp, VOLUME_FIELD_PATHS)
                chk.error(ip + ("fieldRef", "fieldPath"), f"{fp!r} is not a field a volume can hold: use one of "
                          f"{', '.join(VOLUME_FIELD_PATHS)}, or metadata.labels['KEY']{hint}")
        else:
            rf = item.resource_field_ref
            rp = ip + ("resourceFieldRef",)
            if rf.resource not in ENV_RESOURCES:
                chk.error(rp + ("resource",), f"{rf.resource!r} is not one of {', '.join(ENV_RESOURCES)}")
            if not rf.container_name:
                chk.error(rp + ("containerName",), "a volume is the pod's: name the container whose resources "
                          "it holds")
            elif rf.container_name not in containers:
                chk.error(rp + ("containerName",), f"no container named {rf.container_name!r} in this pod"
                          + did_you_mean(rf.container_name, containers))


def _check_projected(chk: Checker, proj, pp: Path_, containers: set[str]) -> None:
    seen: set[str] = set()
    _check_mode(chk, proj.default_mode, pp + ("defaultMode",))
    for i, src in enumerate(proj.sources):
        sp = pp + ("sources", i)
        given = [n for n, s in (("configMap", src.config_map), ("secret", src.secret),
                                ("downwardAPI", src.downward_api), ("serviceAccountToken", src.service_account_token))
                 if s is not None]
        if len(given) != 1:
            chk.error(sp, "needs exactly one of configMap, secret, downwardAPI (the projections podplay runs)")
            continue
        if src.service_account_token is not None:
            chk.error(sp + ("serviceAccountToken",), "a service account token is minted by the Kubernetes API "
                      "server, and podplay has none: put a token in a Secret and project that instead")
        for ref, what in ((src.config_map, "ConfigMap"), (src.secret, "Secret")):
            if ref is None:
                continue
            if not ref.name:
                chk.error(sp + (given[0], "name"), f"names no {what}")
            _check_key_to_path(chk, ref.items, sp + (given[0],), seen)
        if src.downward_api is not None:
            _check_downward_items(chk, src.downward_api.items, sp + ("downwardAPI",), containers, seen)


def _check_volume(chk: Checker, v, vp: Path_, host: HostFacts, containers: set[str] = frozenset()) -> None:
    sources = [s for s in (v.empty_dir, v.host_path, v.config_map, v.secret, v.persistent_volume_claim,
                           v.downward_api, v.projected, v.image) if s is not None]
    if len(sources) != 1:
        what = "no volume source" if not sources else "more than one volume source"
        chk.error(vp, f"has {what}: use exactly one of {volume_sources_text()}")
    if v.host_path is not None and not v.host_path.path.startswith("/"):
        chk.error(vp + ("hostPath", "path"), f"{v.host_path.path!r} must be an absolute path")
    if v.empty_dir is not None and v.empty_dir.size_limit is not None:
        limit = check_quantity(chk, vp + ("emptyDir", "sizeLimit"), v.empty_dir.size_limit)
        if limit is not None and v.empty_dir.medium != "Memory":
            chk.warn_once(vp + ("emptyDir", "sizeLimit"), DISK_LIMIT_MESSAGE, key=True)
        elif limit is not None and 0 < host.memory < limit:
            # The tmpfs is mounted with size=sizeLimit: the kernel takes any size, but pages
            # beyond the host's RAM can never be had, and apply would refuse the mount later.
            most = host.memory // 2**20
            chk.error(vp + ("emptyDir", "sizeLimit"), f"{v.empty_dir.size_limit} is more than this host's memory "
                      f"({most}Mi): use at most {most}Mi, or leave sizeLimit out (the pod's memory limit bounds "
                      "a Memory emptyDir)")
    if v.persistent_volume_claim is not None:
        check_name(chk, vp + ("persistentVolumeClaim", "claimName"), v.persistent_volume_claim.claim_name,
                   "claim name", label=False)
    if v.image is not None:
        ref = v.image.reference
        if not ref.strip():
            chk.error(vp + ("image", "reference"), "names no image (e.g. registry.example/data:v1)")
        elif ref != ref.strip() or " " in ref:
            chk.error(vp + ("image", "reference"), f"{ref!r} has spaces in it")
        if v.image.pull_policy and v.image.pull_policy not in PULL_POLICIES:
            chk.error(vp + ("image", "pullPolicy"), f"{v.image.pull_policy!r} is not a pull policy: use Always, "
                      "IfNotPresent or Never")
    if v.downward_api is not None:
        _check_mode(chk, v.downward_api.default_mode, vp + ("downwardAPI", "defaultMode"))
        _check_downward_items(chk, v.downward_api.items, vp + ("downwardAPI",), containers, set())
    if v.projected is not None:
        _check_projected(chk, v.projected, vp + ("projected",), containers)
    for src, sname, ref_name in ((v.config_map, "configMap", "name"), (v.secret, "secret", "secretName")):
        if src is None:
            continue
        if not (src.name if sname == "configMap" else src.secret_name):
            chk.error(vp + (sname, ref_name), f"names no {'ConfigMap' if sname == 'configMap' else 'Secret'}")
        _check_key_to_path(chk, src.items, vp + (sname,))
        mode = src.default_mode
        if mode is not None and not 0 <= mode <= 0o777:
            chk.error(vp + (sname, "defaultMode"), f"{mode} is not a file mode (0-0777; in YAML, write octal "
                      "as 0644)")


def _check_volumes(chk: Checker, spec: PodSpec, path: Path_, host: HostFacts) -> set[str]:
    """The pod's volumes; returns their names (mounts refer to them)."""
    names: set[str] = set()
    containers = {c.name for c in spec.init_containers + spec.containers}
    for i, v in enumerate(spec.volumes):
        vp = path + ("volumes", i)
        check_name(chk, vp + ("name",), v.name, "volume name", label=True)
        if v.name in names:
            chk.error(vp + ("name",), f"duplicate volume name {v.name!r}")
        names.add(v.name)
        _check_volume(chk, v, vp, host, containers)
    return names


def _containers(spec: PodSpec):
    """(field name, index, container, is init) of every container, init containers first."""
    for field_name, containers, init in (("initContainers", spec.init_containers, True),
                                         ("containers", spec.containers, False)):
        for i, c in enumerate(containers):
            yield field_name, i, c, init


def _check_containers(chk: Checker, spec: PodSpec, path: Path_, volumes: set[str]) -> None:
    names: set[str] = set()
    host_ports: dict[tuple[int, str], Path_] = {}
    for field_name, i, c, init in _containers(spec):
        cp = path + (field_name, i)
        if c.name and c.name in names:
            chk.error(cp + ("name",), f"duplicate container name {c.name!r}")
        names.add(c.name)
        _check_container(chk, c, cp, volumes, spec.host_network, init)
        for j, p in enumerate(c.ports):
            if not p.host_port:
                continue
            k = (p.host_port, p.protocol)
            if k in host_ports:
                chk.error(cp + ("ports", j, "hostPort"), f"hostPort {p.host_port}/{p.protocol} is already used in "
                          f"this pod (at {convert.fmt_path(host_ports[k])})")
            else:
                host_ports[k] = cp + ("ports", j)
    for field_name, i, c, _ in _containers(spec):
        for j, e in enumerate(c.env):
            rf = e.value_from.resource_field_ref if e.value_from else None
            if rf is not None and rf.container_name and rf.container_name not in names:
                chk.error(path + (field_name, i, "env", j, "valueFrom", "resourceFieldRef", "containerName"),
                          f"no container named {rf.container_name!r} in this pod")


def _check_ids(chk: Checker, path: Path_, ids: list[tuple[Path_, int | None, str]]) -> None:
    """runAsUser, runAsGroup, fsGroup, supplementalGroups: (path, value, "user"/"group"). The
    schema's int64 lets -1 and 2^32 through; runc would fail on them when the container starts."""
    for where, value, what in ids:
        if value is not None and not 0 <= value <= MAX_ID:
            chk.error(path + where, f"{value} is not a {what} ID: use 0 to {MAX_ID}")


def _check_working_dir(chk: Checker, wd: str, path: Path_) -> None:
    """An absolute, clean path outside /proc: runc enters it before the container's process starts,
    and a working directory under /proc/self/fd reaches the host (runc's CVE-2024-21626).

    A relative one is only warned about: the runtime has always run it from / (runtime.oci joins
    it to /), and Kubernetes leaves it to the runtime; manifests that rely on that keep working."""
    if not wd:
        return
    clean = os.path.normpath("/" + wd.lstrip("/"))
    if clean == "/proc" or clean.startswith("/proc/"):
        chk.error(path, f"{wd!r} is under /proc, which would give the container a way into the host's files; "
                  "use a directory of the image, e.g. /app or /tmp")
    elif not wd.startswith("/"):
        chk.warn(path, f"{wd!r} is not an absolute path; podplay runs the container in {clean!r}: write that")
    elif wd != clean:
        chk.error(path, f"{wd!r} is not a clean path (no '.', '..', '//' or trailing '/'): write {clean!r}")


def _check_sysctls(chk: Checker, spec: PodSpec, path: Path_) -> None:
    for i, s in enumerate(spec.security_context.sysctls):
        sp = path + ("securityContext", "sysctls", i)
        if len(s.name) > 253 or not SYSCTL_NAME.match(s.name):
            chk.error(sp + ("name",), f"{s.name!r} is not a valid sysctl name: segments of lowercase letters, "
                      "digits, '-' and '_', separated by '.' or '/', e.g. net.ipv4.ip_unprivileged_port_start")
        elif not s.name.startswith(SAFE_SYSCTL_PREFIXES):
            chk.error(sp + ("name",), f"sysctl {s.name!r} is not namespaced/safe: podplay allows "
                      + ", ".join(p + "*" for p in SAFE_SYSCTL_PREFIXES))
        elif s.name.startswith("net.") and spec.host_network:
            chk.error(sp + ("name",), f"sysctl {s.name!r} cannot be set since the network namespace is the host's "
                      "(hostNetwork: true)")
        # CRI-O's check for CVE-2022-0811: a '+' or '=' in a value let one entry set other sysctls.
        if "+" in s.value or "=" in s.value:
            chk.error(sp + ("value",), f"{s.value!r} must not contain '+' or '=': give only this sysctl's own "
                      "value (set another sysctl with another entry)")


def check_pod_spec(chk: Checker, spec: PodSpec, path: Path_, host: HostFacts, in_deployment: bool = False) -> None:
    if not spec.containers:
        chk.error(path + ("containers",), "a pod needs at least one container")
    if in_deployment and spec.restart_policy != "Always":
        # podman runs such a Deployment's pod with the policy given (its tests rely on it): so does
        # podplay, as a podman dialect (an error with --strict).
        chk.dialect(path + ("restartPolicy",), f"{spec.restart_policy!r} → 'Always' (a Deployment's pods "
                    "always restart; a Pod runs a task to completion)")
    volumes = _check_volumes(chk, spec, path, host)
    _check_containers(chk, spec, path, volumes)
    _check_sysctls(chk, spec, path)
    sc = spec.security_context
    _check_ids(chk, path + ("securityContext",), [
        (("runAsUser",), sc.run_as_user, "user"), (("runAsGroup",), sc.run_as_group, "group"),
        (("fsGroup",), sc.fs_group, "group"),
        *((("supplementalGroups", i), g, "group") for i, g in enumerate(sc.supplemental_groups))])
    if not spec.host_users:
        # The API server's rule: a user-namespaced pod shares none of the host's namespaces.
        for flag, name in ((spec.host_network, "hostNetwork"), (spec.host_pid, "hostPID"), (spec.host_ipc, "hostIPC")):
            if flag:
                chk.error(path + ("hostUsers",), f"hostUsers: false cannot be combined with {name}: true")
    if spec.termination_grace_period_seconds < 0:
        chk.error(path + ("terminationGracePeriodSeconds",), "must not be negative (0 stops at once)")
    if spec.hostname and (len(spec.hostname) > 63 or not DNS1123_LABEL.match(spec.hostname)):
        chk.error(path + ("hostname",), f"{spec.hostname!r} is not a valid hostname: use at most 63 lowercase "
                  "letters, digits and '-'")
    if spec.dns_policy == "None" and not (spec.dns_config and spec.dns_config.nameservers):
        chk.error(path + ("dnsPolicy",), "dnsPolicy None needs dnsConfig.nameservers")
    for i, alias in enumerate(spec.host_aliases):
        try:
            ipaddress.ip_address(alias.ip)
        except ValueError:
            chk.error(path + ("hostAliases", i, "ip"), f"{alias.ip!r} is not an IP address")


# --- Deployment ----------------------------------------------------------------------------------------

def _check_replica_ports(chk: Checker, obj: Deployment) -> None:
    """Replicas share the host: a host port (or the host's network) can be bound by one of them."""
    spec, tspec = obj.spec, obj.spec.template.spec
    if spec.replicas <= 1:
        return
    annotations = {**obj.metadata.annotations, **spec.template.metadata.annotations}
    per_replica = annotations.get(ANN_PORT_PER_REPLICA, "").lower() == "true"
    for i, c in enumerate(tspec.containers):
        for j, p in enumerate(c.ports):
            pp = ("spec", "template", "spec", "containers", i, "ports", j)
            if tspec.host_network:
                chk.error(pp + ("containerPort",), f"with hostNetwork, {spec.replicas} replicas would all bind "
                          f"port {p.container_port} on the host; use 1 replica")
            elif p.host_port and not per_replica:
                chk.error(pp + ("hostPort",),
                          f"hostPort {p.host_port} cannot be shared by {spec.replicas} replicas on one host; "
                          f"use 1 replica, or the annotation {ANN_PORT_PER_REPLICA}: \"true\" to give "
                          "replica N the port hostPort+N")
            elif p.host_port and p.host_port + spec.replicas - 1 > 65535:
                chk.error(pp + ("hostPort",), f"replica {spec.replicas - 1} would get hostPort "
                          f"{p.host_port + spec.replicas - 1}, beyond 65535")


def _check_strategy(chk: Checker, obj: Deployment) -> None:
    strategy = obj.spec.strategy
    if strategy.type != "RollingUpdate":
        return
    ru = strategy.rolling_update
    for fname, value in (("maxSurge", ru.max_surge), ("maxUnavailable", ru.max_unavailable)):
        if not re.match(r"^(\d+%?)$", str(value)):
            chk.error(("spec", "strategy", "rollingUpdate", fname), f"{value!r} must be a number or a "
                      "percentage like 25%")
    if str(ru.max_surge) in ("0", "0%") and str(ru.max_unavailable) in ("0", "0%"):
        chk.error(("spec", "strategy", "rollingUpdate"), "maxSurge and maxUnavailable cannot both be 0")


def check_deployment(chk: Checker, obj: Deployment, host: HostFacts) -> None:
    check_replicated(chk, obj, host)
    _check_strategy(chk, obj)


def check_replicated(chk: Checker, obj, host: HostFacts) -> None:
    """What every kind that expands a template to replicas needs (Deployment, ReplicaSet,
    ReplicationController): a name that leaves room for ordinals, a sane count, a selector its
    template's labels match, and pods that keep running (restartPolicy Always)."""
    kind = obj.kind
    check_meta(chk, obj.metadata, kind.lower())
    spec = obj.spec
    if len(obj.metadata.name) > 240:
        chk.error(("metadata", "name"), f"{kind.lower()} names are limited to 240 characters (replica suffixes)")
    if spec.replicas < 0:
        chk.error(("spec", "replicas"), "must not be negative")
    elif spec.replicas > MAX_REPLICAS:
        chk.error(("spec", "replicas"), f"{spec.replicas} is more than podplay runs on one host "
                  f"(at most {MAX_REPLICAS})")
    selector = selector_of(obj)
    # A ReplicationController's selector is a plain map (and defaults to the template's labels).
    sel_path = ("spec", "selector") if kind == "ReplicationController" else ("spec", "selector", "matchLabels")
    labels = spec.template.metadata.labels
    check_labels(chk, sel_path, selector)
    check_meta(chk, spec.template.metadata, "pod", ("spec", "template", "metadata"), named=False)
    if not selector:
        chk.error(("spec", "selector"), f"a {kind} needs spec.selector"
                  + ("" if kind == "ReplicationController" else ".matchLabels")
                  + (" (or template labels)" if kind == "ReplicationController" else ""))
    for k, v in selector.items():
        if labels.get(k) != v:
            chk.error(("spec", "template", "metadata", "labels"),
                      f"selector {k}={v} does not match the template's labels (add {k}: {v})")
    tspec = spec.template.spec
    # podman runs a Deployment whose pods do not restart (a dialect, warned about in check_pod_spec);
    # the kinds podman does not run keep the API server's rule.
    if tspec.restart_policy != "Always" and kind != "Deployment":
        chk.error(("spec", "template", "spec", "restartPolicy"), f"a {kind}'s pods must have restartPolicy "
                  f"Always, not {tspec.restart_policy} (use a Pod for a run-to-completion task)")
    check_pod_spec(chk, tspec, ("spec", "template", "spec"), host, in_deployment=kind == "Deployment")
    _check_replica_ports(chk, obj)
