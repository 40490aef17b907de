"""The loader: files → documents → objects, one document loop for every caller.

``load_file`` reads one file through the stages (documents, schema, model, field checks) and
keeps every finding; ``combine_files`` puts files together, applies the warn-once policy and the
cross-object checks. ``load_manifests`` (``podplay up``, ``plan``, ``validate``) is the two in a
row; ``podplay watch`` calls them apart, re-reading only the files that changed (in a child
process), and gets the same findings. ``load_objects`` feeds Python objects through the same loop.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler import admission
from reconciler.errors import Diagnostic, Severity
from reconciler.manifests.checker import Checker, Finding, close, describe, did_you_mean
from reconciler.manifests.cross import Entry, ObjectId, check_across
from reconciler.manifests.dialect import repair_podman
from reconciler.manifests.documents import parse_documents
from reconciler.manifests.fields import refuse_volume_sources, warn_podman_annotations, warn_unused
from reconciler.manifests.hostfacts import HostFacts, this_host
from reconciler.manifests.kinds import check_object, decode_b64_fields
from reconciler.manifests.links import refuse_links
from reconciler.manifests.positions import Path_, Positions
from reconciler.manifests.schema import SchemaCache, check_schema
from reconciler.model import convert
from reconciler.model.source import Loaded
from reconciler.model.workloads import ALL_API_VERSIONS as API_VERSIONS
from reconciler.model.workloads import ALL_KINDS as KINDS
from reconciler.model.workloads import WORKLOAD_KINDS
from reconciler.sources import find_manifest_files

SUPPORTED = ", ".join(KINDS)

# Real Kubernetes kinds that podplay skips with a warning. A kind that is in neither list but
# looks like a supported one ("Deploymnet", "pod") is a typo, and an error.
OTHER_KUBE_KINDS = {
    "Service", "Endpoints", "EndpointSlice", "Ingress", "IngressClass", "NetworkPolicy", "Namespace", "Node",
    "PersistentVolume", "StorageClass", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
    "ClusterRoleBinding", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob",
    "PodTemplate", "PodDisruptionBudget", "HorizontalPodAutoscaler", "LimitRange", "ResourceQuota",
    "CustomResourceDefinition", "Event", "Lease", "PriorityClass", "RuntimeClass", "CSIDriver",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService", "ConfigMapList",
    "PodList", "SecretList", "DeploymentList", "PersistentVolumeClaimList", "ServiceList",
}
BASE64_FIELDS = {"Secret": ("data",), "ConfigMap": ("binaryData",)}


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


@dataclass
class FileLoad:
    """One file loaded on its own, for callers that cache files between loads (``podplay watch``
    re-reads only the files that changed). ``combine_files`` runs the cross-object checks over a
    set of them and gives what ``load_manifests`` would have given for those versions."""

    file: str
    objects: list[Loaded] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # this file's own, in the order found
    unreadable: bool = False
    documents: int = 0  # documents that held anything (0: the file is empty or only comments)
    _entries: list[Entry] = field(default_factory=list, repr=False)
    _known: set[ObjectId] = field(default_factory=set, repr=False)  # exist, but could not be built

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return said_once(self.findings)

    @property
    def ok(self) -> bool:
        return not any(d.severity == Severity.ERROR for d in self.diagnostics)


def said_once(findings: Iterable[Finding], strict: bool = False) -> list[Diagnostic]:
    """The warn-once policy: of the findings with the same `once` key, only the first is shown,
    with a count of the places (and files) it stands for. Applied to a whole load (every file of
    it), however the files were loaded. `strict` (``--strict``): podman's dialect is an error,
    reported at every place (an error is never folded: each place needs its edit)."""
    findings = list(findings)
    places: dict[str, list[Diagnostic]] = {}
    for f in findings:
        if f.once and not (strict and f.dialect):
            places.setdefault(f.once, []).append(f.diagnostic)
    out = []
    for f in findings:
        d = f.diagnostic
        if strict and f.dialect:
            out.append(replace(d, severity=Severity.ERROR))
            continue
        if f.once:
            same = places.pop(f.once, None)
            if same is None:
                continue  # folded into the first
            if len(same) > 1:
                files = len({s.file for s in same})
                d = replace(d, message=f"{d.message} ({len(same)} places"
                            + (f" in {files} files)" if files > 1 else ")"))
        out.append(d)
    return out


# --- entry points ---------------------------------------------------------------------------------

def load_manifests(paths: Sequence[str], *, stdin_text: str | None = None,
                   schema_cache: str | Path | None = None, host: HostFacts | None = None,
                   strict: bool = False) -> ManifestSet:
    """Read every manifest under `paths`; never raises for bad input. `schema_cache` names a
    file that remembers documents which passed their schema (see SchemaCache); `host` is what
    the manifests must fit (default: this host); `strict`: podman's dialect is an error."""
    files, problems = find_manifest_files(paths)
    files, refused = refuse_links(paths, files)
    problems += refused
    cache = SchemaCache(schema_cache) if schema_cache is not None else None
    loads = [load_file(f, stdin_text if f == "-" else None, schema_cache=cache, host=host) for f in files]
    result = combine_files(loads, complete=not problems and not any(f.unreadable for f in loads), strict=strict)
    result.diagnostics[:0] = problems
    result.unreadable[:0] = [d.file for d in problems]
    if files and not result.objects and not result.errors:
        result.diagnostics.append(Diagnostic(Severity.ERROR, files[0] if len(files) == 1 else ", ".join(paths), 0, 0,
                                             "", f"no supported object ({SUPPORTED}) found"))
    if cache is not None:
        cache.save()
    return result


def load_file(file: str, text: str | None = None, *, schema_cache: SchemaCache | None = None,
              host: HostFacts | None = None) -> FileLoad:
    """Read one manifest file (or parse `text` as its content) without the cross-object checks."""
    if text is None:
        read = _read(file, None)
        if isinstance(read, Diagnostic):
            return FileLoad(file, findings=[Finding(read)], unreadable=True)
        text = read
    loader = _Loader(file, schema_cache, host or this_host())
    docs = []
    for item in parse_documents(text, file):
        if isinstance(item, Diagnostic):
            loader.load.findings.append(Finding(item))
            loader.load.unreadable = True
        else:
            docs.append(item)
    loader.load.documents = len(docs)
    loader.load_documents(docs)
    return loader.load


def combine_files(loads: Sequence[FileLoad], *, complete: bool = True, strict: bool = False) -> ManifestSet:
    """The files' objects and findings plus the cross-object checks (duplicates, references, host
    ports) over all of them. `complete` false: some source is unknown, so "not found" is not said.
    `strict`: podman's dialect is an error (the files are loaded the same either way)."""
    result = ManifestSet(files=[f.file for f in loads])
    result.diagnostics = said_once((finding for f in loads for finding in f.findings), strict)
    entries: list[Entry] = []
    known: set[ObjectId] = set()
    for f in loads:
        result.objects.extend(f.objects)
        entries.extend(f._entries)
        known |= f._known
        if f.unreadable:
            result.unreadable.append(f.file)
    result.diagnostics.extend(check_across(entries, known, complete))
    result.diagnostics.extend(admission.review(entries, result.diagnostics))  # the pod-security policy in force
    return result


def load_objects(items: Iterable[Any], source: str = "<python>", *, host: HostFacts | None = None) -> ManifestSet:
    """Library entry: plain dicts or kubernetes client models (V1Pod, V1Deployment…).

    The ``kubernetes`` package is imported only when such a model object is passed
    (install ``podplay[kube]``); plain dicts never need it. Positions are unknown (line 0).
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
        docs.append((_plain(item), pos))
    loader = _Loader(source, None, host or this_host())
    loader.load_documents(docs)
    return combine_files([loader.load])


# --- the document loop ------------------------------------------------------------------------------

class _Loader:
    """One file's documents → its FileLoad: objects, findings, and what the cross checks need."""

    def __init__(self, file: str, schema_cache: SchemaCache | None, host: HostFacts):
        self.load = FileLoad(file)
        self.cache = schema_cache
        self.host = host

    def load_documents(self, docs: Iterable[tuple[Any, Positions]]) -> None:
        for doc, pos in docs:
            if isinstance(doc, dict) and doc.get("kind") == "List":
                self.load_list(doc, pos)
            else:
                self.load_object(doc, pos, ())

    def load_list(self, doc: dict, pos: Positions) -> None:
        chk = Checker(self.load.file, pos)
        items = _check_list(chk, doc)
        self.load.findings.extend(chk.findings)
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("kind") == "List":
                chk = Checker(self.load.file, pos)
                chk.error(("items", i, "kind"), "a List inside a List is not supported; put its items here")
                self.load.findings.extend(chk.findings)
                continue
            self.load_object(item, pos, ("items", i))

    def load_object(self, data: Any, pos: Positions, base: Path_) -> None:
        chk = Checker(self.load.file, pos, base)
        try:
            entry = self._stages(data, chk)
        finally:
            self.load.findings.extend(chk.findings)
        if entry is not None:
            self.load._entries.append(entry)
            if entry.ok:
                self.load.objects.append(entry.loaded)

    def _stages(self, data: Any, chk: Checker) -> Entry | None:
        """The stages of one object; None when it did not get as far as the model."""
        if isinstance(data, dict) and data.get("kind") == "Namespace":  # its pod-security labels (admission)
            chk.findings.extend(Finding(d) for d in admission.namespace_findings(data, chk.file, chk.at))
            if "Namespace" not in KINDS:
                return None  # read for those labels only, until the model has the kind
        kind = _supported_kind(chk, data)
        if kind is None:
            return None
        raw = _normalized(chk, kind, data)  # a private copy: repairs and base64 decoding change it
        repair_podman(chk, kind, raw)
        if not check_schema(kind, raw, chk, self.cache):
            self._remember(kind, raw)
            return None  # could not repair: the schema's findings are all we can say
        decode_b64_fields(raw, BASE64_FIELDS.get(kind, ()), chk)
        schema_paths, first = list(chk.paths), len(chk.findings)
        obj, refused = _build(chk, kind, raw)
        built = len(chk.findings)
        if obj is None:
            self._remember(kind, raw)
            return None
        check_object(chk, obj, self.host)
        _drop_repeats(chk, refused, built)  # a refused volume type is its volume's one finding
        _drop_repeats(chk, schema_paths, first)
        # Pod-security findings in fields the model drops (info here; judged in combine_files).
        chk.findings.extend(Finding(d) for d in admission.unmodelled_findings(raw, chk.file, chk.at))
        line, col = chk.at(())
        return Entry(Loaded(obj, chk.file, line, col), chk.pos, chk.base, ok=not chk.failed)

    def _remember(self, kind: str, raw: dict) -> None:
        """An object that exists but could not be built: references to it are not 'not found'."""
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        if isinstance(meta.get("name"), str):
            self.load._known.add((kind, meta.get("namespace") or "default", meta["name"]))


# --- the stages of one object ------------------------------------------------------------------------

def _check_list(chk: Checker, doc: dict) -> list:
    """A `kind: List`'s own fields; returns its items ([] when it has none to give)."""
    allowed = ("apiVersion", "kind", "items", "metadata")
    for k in doc:
        if k not in allowed:
            chk.error((k,), f"unknown field {k!r}" + did_you_mean(k, allowed), key=True)
    if doc.get("apiVersion") != "v1":
        chk.error(("apiVersion",), f"a List needs apiVersion 'v1', not {doc.get('apiVersion')!r}")
    items = doc.get("items")
    if not isinstance(items, list):
        chk.error(("items",), "a List needs items: a list of objects" if items is None
                  else f"must be a list, not {describe(items)}")
        return []
    return items


def _supported_kind(chk: Checker, data: Any) -> str | None:
    """The document's kind when podplay loads it; None (with the reason reported) when not."""
    if not isinstance(data, dict):
        chk.error((), f"a manifest document must be a mapping (a Kubernetes object), not {describe(data)}")
        return None
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if kind is None:
        chk.error(("kind",), f"required field is missing: every object needs apiVersion and kind ({SUPPORTED})")
        return None
    if not isinstance(kind, str):
        chk.error(("kind",), f"must be a string, not {describe(kind)}")
        return None
    if kind not in KINDS:
        api = data.get("apiVersion")
        # A kind of a custom API group (CronTab of stable.example.com) is nobody's typo of ours.
        custom = isinstance(api, str) and "." in api.split("/")[0] and "/" in api \
            and not api.split("/")[0].endswith(".k8s.io")
        hint = None if kind in OTHER_KUBE_KINDS or custom else close(kind, KINDS)
        if hint:
            chk.error(("kind",), f"unknown kind {kind!r}; did you mean {hint!r}?")
        else:
            label = f"{kind} {name}" if isinstance(name, str) and name else kind
            chk.warn((), f"{label}: kind not supported, skipped (podplay supports {SUPPORTED})")
        return None
    return kind


def _drop_nulls(value: Any) -> Any:
    """``field: null`` means unset to the API server: drop such keys before validating."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _normalized(chk: Checker, kind: str, data: dict) -> dict:
    """A private copy without nulls, with apiVersion and spec present (reported when they were not)."""
    data = _drop_nulls(data)
    api = data.get("apiVersion")
    want = API_VERSIONS[kind]
    if api != want:
        if api is None:
            chk.error(("apiVersion",), f"required field is missing: a {kind} needs apiVersion: {want}")
        else:
            chk.error(("apiVersion",), f"a {kind} needs apiVersion {want!r}, not {json.dumps(api)}")
        data["apiVersion"] = want
    if (kind in ("Pod", "Deployment") or kind in WORKLOAD_KINDS) and "spec" not in data:
        chk.error(("spec",), f"required field is missing: a {kind} needs a spec with containers")
        data["spec"] = {"containers": []} if kind == "Pod" else {"selector": {}, "template": {}}
    return data


def _build(chk: Checker, kind: str, raw: dict):
    """The model object (None if it cannot be built), and findings about the fields it has no place
    for; with the paths of those refused as errors."""
    unused = convert.Unused()
    try:
        obj = convert.build(KINDS[kind], raw, unused=unused)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None, []
    if not obj.metadata.namespace:
        obj = replace(obj, metadata=replace(obj.metadata, namespace="default"))
    refused = refuse_volume_sources(chk, unused)
    warn_unused(chk, unused, raw, refused)
    warn_podman_annotations(chk, obj)
    return obj, refused


def _related(a: Path_, b: Path_) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _drop_repeats(chk: Checker, schema_paths: list[Path_], first: int) -> None:
    """One mistake, one message: drop the findings after `first` at a place (or inside or above a
    place) that the schema already complained about."""
    if not schema_paths:
        return
    kept = [(f, p) for f, p in zip(chk.findings[first:], chk.paths[first:], strict=True)
            if not any(_related(p, s) for s in schema_paths)]
    del chk.findings[first:], chk.paths[first:]
    for f, p in kept:
        chk.findings.append(f)
        chk.paths.append(p)


# --- reading --------------------------------------------------------------------------------------------

def _read(file: str, stdin_text: str | None) -> str | Diagnostic:
    import sys

    try:
        if file == "-":
            return stdin_text if stdin_text is not None else sys.stdin.read()
        with open(file, "rb") as f:
            data = f.read()
    except OSError as exc:
        return Diagnostic(Severity.ERROR, file, 0, 0, "", f"cannot read file: {exc.strerror or exc}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return Diagnostic(Severity.ERROR, file, line, col, "",
                          f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8")


def _plain(value: Any) -> Any:
    """Python data as JSON data (what a YAML/JSON file would have given)."""
    if isinstance(value, dict):
        return {("true" if k is True else "false" if k is False else "null" if k is None else str(k)): _plain(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
