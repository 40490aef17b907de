"""Checks across objects, run once all of a load's objects are known: names defined twice (pods
that Deployments expand to included), ConfigMap/Secret references, and host ports two pods bind.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.errors import Diagnostic, Severity
from reconciler.manifests.checker import did_you_mean
from reconciler.manifests.pods import MAX_REPLICAS
from reconciler.manifests.positions import Path_, Positions
from reconciler.model import convert
from reconciler.model.kube import ConfigMap, Pod, PodSpec, Secret
from reconciler.model.source import ANN_PORT_PER_REPLICA, Loaded
from reconciler.model.workloads import REPLICATED, CronJob, Job, job_pod_names

ObjectId = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class Entry:
    """One object that got as far as the model (possibly with errors), and where it was written."""

    loaded: Loaded
    pos: Positions
    base: Path_
    ok: bool


def check_across(entries: list[Entry], known: set[ObjectId], complete: bool) -> list[Diagnostic]:
    """Every cross-object finding. `known`: objects that exist but could not be built; `complete`
    false: some source could not be read, so a missing object may be in it."""
    out: list[Diagnostic] = []
    _check_duplicates(entries, out)
    _check_references(entries, known, out, complete)
    _check_host_ports(entries, out)
    return out


def _where(e: Entry, path: Path_ = ()) -> str:
    line, _ = e.pos.find(e.base + tuple(path))
    return f"{e.loaded.file}:{line}"


def _error(e: Entry, path: Path_, message: str) -> Diagnostic:
    line, col = e.pos.find(e.base + tuple(path))
    return Diagnostic(Severity.ERROR, e.loaded.file, line, col, convert.fmt_path(tuple(path)), message)


def _pod_specs(o) -> Iterator[tuple[PodSpec, Path_]]:
    if isinstance(o, Pod):
        yield o.spec, ("spec",)
    elif isinstance(o, (*REPLICATED, Job)):
        yield o.spec.template.spec, ("spec", "template", "spec")
    elif isinstance(o, CronJob):
        yield o.spec.job_template.spec.template.spec, ("spec", "jobTemplate", "spec", "template", "spec")


def _check_duplicates(entries: list[Entry], out: list[Diagnostic]) -> None:
    by_key: dict[tuple, Entry] = {}
    name_path = ("metadata", "name")
    for e in entries:
        o = e.loaded.obj
        k = (o.kind, o.metadata.namespace, o.metadata.name)
        first = by_key.get(k)
        if first is None:
            by_key[k] = e
            continue
        what = f"{o.kind} {o.metadata.name!r}" + (f" in namespace {k[1]!r}" if k[1] != "default" else "")
        out.append(_error(e, name_path, f"{what} is defined twice: here and at {_where(first, name_path)}"))
        out.append(_error(first, name_path, f"{what} is defined twice: here and at {_where(e, name_path)}"))
    # Pod names, including the ones Deployments expand to, must not collide.
    pods: dict[tuple[str, str], Entry] = {}
    for e in entries:
        o = e.loaded.obj
        ns = o.metadata.namespace
        if isinstance(o, Pod):
            names = [o.metadata.name]
        elif isinstance(o, REPLICATED):
            names = [f"{o.metadata.name}-{i}" for i in range(min(o.spec.replicas, MAX_REPLICAS))]
        elif isinstance(o, Job):
            names = [n for n, _ in job_pod_names(o.metadata.name, o.spec, MAX_REPLICAS)]
        else:
            continue
        for name in names:
            other = pods.get((ns, name))
            if other is not None and other.loaded.obj.kind != o.kind:
                out.append(_error(e, name_path, f"pod name {name!r} is also produced by "
                                  f"{other.loaded.obj.kind} {other.loaded.obj.metadata.name!r} at "
                                  f"{_where(other, name_path)}"))
            pods.setdefault((ns, name), e)



class _Lookup:
    """The keys of every ConfigMap and Secret of the load, for references to them."""

    def __init__(self, entries: list[Entry], known: set[ObjectId], complete: bool):
        self.data: dict[ObjectId, set[str]] = {}
        for e in entries:
            o = e.loaded.obj
            if isinstance(o, ConfigMap | Secret):
                self.data[(o.kind, o.metadata.namespace, o.metadata.name)] = set(o.items())
        self.known, self.complete = known, complete

    def keys(self, kind: str, ns: str, name: str) -> set[str] | None | bool:
        """The keys; None when the object is missing; True when it exists but is unreadable (or
        may exist in a file that could not be read: 'not found' would be a guess)."""
        if (kind, ns, name) in self.data:
            return self.data[(kind, ns, name)]
        if (kind, ns, name) in self.known or not self.complete:
            return True
        return None


def _check_env_references(e: Entry, lookup: _Lookup, cp: Path_, c, out: list[Diagnostic]) -> None:
    ns = e.loaded.obj.metadata.namespace
    for j, ef in enumerate(c.env_from):
        ref, kind = (ef.config_map_ref, "ConfigMap") if ef.config_map_ref else (ef.secret_ref, "Secret")
        if ref and not ref.optional and lookup.keys(kind, ns, ref.name) is None:
            rname = "configMapRef" if kind == "ConfigMap" else "secretRef"
            out.append(_error(e, cp + ("envFrom", j, rname, "name"), f"{kind} {ref.name!r} not found "
                              "(define it, or mark the reference optional: true)"))
    for j, env in enumerate(c.env):
        vf = env.value_from
        sel = vf and (vf.config_map_key_ref or vf.secret_key_ref)
        if not sel or sel.optional:
            continue
        kind = "ConfigMap" if vf.config_map_key_ref else "Secret"
        sname = "configMapKeyRef" if vf.config_map_key_ref else "secretKeyRef"
        keys = lookup.keys(kind, ns, sel.name)
        if keys is None:
            out.append(_error(e, cp + ("env", j, "valueFrom", sname, "name"),
                              f"{kind} {sel.name!r} not found (define it, or mark the reference optional: true)"))
        elif keys is not True and sel.key not in keys:
            out.append(_error(e, cp + ("env", j, "valueFrom", sname, "key"),
                              f"key {sel.key!r} not found in {kind} {sel.name!r}" + did_you_mean(sel.key, keys)))


def _check_volume_references(e: Entry, lookup: _Lookup, spec: PodSpec, base: Path_, out: list[Diagnostic]) -> None:
    ns = e.loaded.obj.metadata.namespace
    for i, v in enumerate(spec.volumes):
        # (source, kind, path to the source, its name field, what to mark optional)
        refs = [(v.config_map, "ConfigMap", ("volumes", i, "configMap"), "name", "the volume"),
                (v.secret, "Secret", ("volumes", i, "secret"), "secretName", "the volume")]
        for k, p in enumerate(v.projected.sources if v.projected is not None else ()):
            if (p.config_map is None) == (p.secret is None):
                continue  # neither, or both: a malformed source is reported as such, once
            refs += [(p.config_map, "ConfigMap", ("volumes", i, "projected", "sources", k, "configMap"), "name",
                      "the source"),
                     (p.secret, "Secret", ("volumes", i, "projected", "sources", k, "secret"), "name", "the source")]
        for src, kind, sp, nname, what in refs:
            if src is None or src.optional:
                continue
            name = src.secret_name if nname == "secretName" else src.name  # a Secret volume says secretName
            keys = lookup.keys(kind, ns, name)
            if keys is None:
                out.append(_error(e, base + sp + (nname,),
                                  f"{kind} {name!r} not found (define it, or mark {what} optional: true)"))
                continue
            if keys is True:
                continue
            for j, it in enumerate(src.items):
                if it.key not in keys:
                    out.append(_error(e, base + sp + ("items", j, "key"),
                                      f"key {it.key!r} not found in {kind} {name!r}" + did_you_mean(it.key, keys)))


def _check_references(entries: list[Entry], known: set[ObjectId], out: list[Diagnostic], complete: bool) -> None:
    """ConfigMap/Secret references. When some file could not be read (`complete` false), a
    missing object may be in it: 'not found' would be a guess, so it is not said."""
    lookup = _Lookup(entries, known, complete)
    for e in entries:
        ns = e.loaded.obj.metadata.namespace
        for spec, base in _pod_specs(e.loaded.obj):
            for field_name, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
                for i, c in enumerate(containers):
                    _check_env_references(e, lookup, base + (field_name, i), c, out)
            _check_volume_references(e, lookup, spec, base, out)
            for j, ref in enumerate(spec.image_pull_secrets):
                if lookup.keys("Secret", ns, ref.name) is None:
                    line, col = e.pos.find(e.base + base + ("imagePullSecrets", j))
                    out.append(Diagnostic(Severity.WARNING, e.loaded.file, line, col,
                                          convert.fmt_path(base + ("imagePullSecrets", j)),
                                          f"Secret {ref.name!r} not found; pulling without it"))


def _host_bindings(e: Entry) -> Iterator[tuple[str, int, str, Path_, str]]:
    """(hostIP, port, protocol, path, pod name) of every host port the object's pods bind."""
    o = e.loaded.obj
    for spec, base in _pod_specs(o):
        if isinstance(o, REPLICATED):
            annotations = {**o.metadata.annotations, **o.spec.template.metadata.annotations}
            per_replica = annotations.get(ANN_PORT_PER_REPLICA, "").lower() == "true"
            replicas = range(min(o.spec.replicas, MAX_REPLICAS) if per_replica else min(o.spec.replicas, 1))
            names = [(f"{o.metadata.name}-{r}", r if per_replica else 0) for r in replicas]
        else:
            names = [(o.metadata.name, 0)]
        for name, shift in names:
            for i, c in enumerate(spec.containers):
                for j, p in enumerate(c.ports):
                    pp = base + ("containers", i, "ports", j)
                    if spec.host_network:
                        yield p.host_ip, p.container_port, p.protocol, pp + ("containerPort",), name
                    elif p.host_port:
                        yield p.host_ip, p.host_port + shift, p.protocol, pp + ("hostPort",), name


def _check_host_ports(entries: list[Entry], out: list[Diagnostic]) -> None:
    """Two pods binding the same host port (on overlapping host IPs): only the first to start
    can have it. A warning, not an error: the engine applies pod by pod, and the other pods of
    the pass are fine (it reports the losing pod's failure then)."""
    wildcard = ("", "0.0.0.0", "::")
    seen: dict[tuple[int, str], list[tuple[str, Entry, Path_, str]]] = {}
    for e in entries:
        for ip, port, proto, path, pod in _host_bindings(e):
            for oip, other, opath, opod in seen.get((port, proto), []):
                if opod == pod and other is e:
                    continue  # the same pod: checked with the pod
                if ip != oip and ip not in wildcard and oip not in wildcard:
                    continue
                for a, apath, apod, b, bpath, bpod in ((e, path, pod, other, opath, opod),
                                                       (other, opath, opod, e, path, pod)):
                    line, col = a.pos.find(a.base + apath)
                    out.append(Diagnostic(Severity.WARNING, a.loaded.file, line, col, convert.fmt_path(apath),
                                          f"host port {port}/{proto} of pod {apod!r} is also bound by pod {bpod!r} "
                                          f"at {_where(b, bpath)}: only one of them can start"))
            seen.setdefault((port, proto), []).append((ip, e, path, pod))

