"""Files → documents (with line marks) → schema check → semantic checks → model objects.

``load_manifests(paths)`` never raises for bad input: it returns every object it could read and
every problem it found, each naming file, line, column and field path. A file that cannot be
read or parsed is listed in ``unreadable``: the engine must not prune what such a file might
describe ("hold deletes until every source was read").

Every problem is reported at once. An object with schema errors is repaired in a private copy
(unknown keys dropped, wrong values replaced by neutral placeholders) so that the semantic and
cross-object checks still run on the rest of it; their findings at a place the schema already
complained about are dropped, so one mistake gives one message.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import datetime
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from reconciler import sha
from reconciler.errors import Diagnostic, Severity
from reconciler.model import convert
from reconciler.model import source as _source
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
from reconciler.model.source import ANN_PORT_PER_REPLICA, ANNOTATION_PREFIX, Loaded
from reconciler.sources import MANIFEST_SUFFIXES, find_manifest_files  # noqa: F401

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SUPPORTED = ", ".join(KINDS)

# Set by the API server, harmless in exported YAML: accepted without a warning.
SERVER_FIELDS = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds"}

# API defaults of fields podplay does not act on: `kubectl get -o yaml` writes them into every
# object, and a field left at its default asks for nothing that podplay would have to do.
UNUSED_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    "schedulerName": "default-scheduler", "enableServiceLinks": True, "serviceAccountName": "default",
    "serviceAccount": "default", "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
}

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

# podplay's own annotations (model.source.ANN_*), and the prefixes of podman's, which podplay ignores.
PODPLAY_ANNOTATIONS = tuple(sorted(v for k, v in vars(_source).items() if k.startswith("ANN_")))
PODMAN_ANNOTATION_PREFIXES = ("io.podman.annotations.", "io.containers.")

UNUSED_MESSAGE = "podplay accepts this field but does not act on it"
PODMAN_MESSAGE = "podman annotation: podplay does not act on it"
DISK_LIMIT_MESSAGE = ("podplay bounds only a medium: Memory emptyDir (its tmpfs); on disk this limit is not "
                      "enforced (the kubelet evicts the pod, podplay has no quota to apply)")

MAX_REPLICAS = 1000  # one host: a bigger number is a typo, and expanding it would hang
_MAX_DEPTH = 100  # nesting of one document; kube objects need about 15
_MAX_VALUES = 200_000  # values in one document, aliases expanded (stops "billion laughs")

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


# --- finding files: reconciler.sources (light, shared with the no-change check) ----------------

# --- documents with positions ---------------------------------------------------------------------

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
    def __init__(self, line: int, column: int, message: str, path: Path_ = ()):
        super().__init__(message)
        self.line, self.column, self.message, self.path = line, column, message, path


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    return line + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


_CORE_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_TEXT_TAGS = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"}
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YAMLBuilder:
    """YAML node tree → plain data, recording where every value and key was written.

    Scalars resolve as YAML 1.1, as Kubernetes' decoder does (``yes`` is a boolean, ``0644`` is
    octal), except that timestamps and binary stay the text they were written as (the API sees
    strings). Duplicate keys are errors (the API server's strict decoding rejects them too);
    ``<<`` merge keys work, explicit keys winning.
    """

    def __init__(self):
        import yaml

        self.yaml = yaml
        self.constructor = yaml.constructor.SafeConstructor()
        self.problems: list[tuple[int, int, Path_, str]] = []
        self.count = 0
        self.inside: set[int] = set()  # the collection nodes being built (an alias loop revisits one)

    def document(self, node) -> tuple[Any, Positions]:
        self.count = 0
        pos = Positions()
        return self.value(node, (), pos, 0), pos

    def value(self, node, path: Path_, pos: Positions, depth: int) -> Any:
        yaml = self.yaml
        mark = node.start_mark
        where = (mark.line + 1, mark.column + 1)
        self.count += 1
        if depth > _MAX_DEPTH:
            raise _DocError(*where, "document nested too deeply", path)
        if self.count > _MAX_VALUES:
            raise _DocError(*where, f"document has more than {_MAX_VALUES} values (aliases expanded)", path)
        pos[path] = where
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.inside:
            raise _DocError(*where, "an alias here refers to a mapping or list that contains it (a loop)", path)
        self.inside.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path, pos, depth)
            return [self.value(n, path + (i,), pos, depth + 1) for i, n in enumerate(node.value)]
        finally:
            self.inside.discard(id(node))

    def scalar(self, node, path: Path_ = ()) -> Any:
        tag = node.tag
        if tag == "tag:yaml.org,2002:str":
            return node.value
        if tag in _TEXT_TAGS:
            return node.value
        where = (node.start_mark.line + 1, node.start_mark.column + 1)
        if tag not in _CORE_TAGS:
            raise _DocError(*where, f"unsupported YAML tag {tag!r}; remove it (Kubernetes reads plain values)", path)
        try:
            value = self.constructor.yaml_constructors[tag](self.constructor, node)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad value in the input
            raise _DocError(*where, f"cannot read value {node.value!r}: {exc}", path) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise _DocError(*where, f"{node.value!r} is not a number Kubernetes accepts", path)
        return value

    def key(self, node, path: Path_) -> str:
        yaml = self.yaml
        mark = node.start_mark
        if not isinstance(node, yaml.ScalarNode):
            what = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            raise _DocError(mark.line + 1, mark.column + 1, f"a mapping key must be text, not {what}", path)
        value = self.scalar(node, path)
        # Keys become JSON object keys the way Kubernetes' YAML→JSON conversion writes them.
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        return value if isinstance(value, str) else str(value)

    def mapping(self, node, path: Path_, pos: Positions, depth: int) -> dict[str, Any]:
        yaml = self.yaml
        out: dict[str, Any] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append((key_node, value_node))
                continue
            key = self.key(key_node, path)
            kmark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                first = pos.keys.get(path + (key,), (0, 0))
                self.problems.append((*kmark, path + (key,), f"duplicate key {key!r} (first at line {first[0]}); "
                                                             "remove one of them"))
                continue
            pos.keys[path + (key,)] = kmark
            out[key] = self.value(value_node, path + (key,), pos, depth + 1)
        for key_node, value_node in merges:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    m = key_node.start_mark
                    raise _DocError(m.line + 1, m.column + 1,
                                    "a merge key (<<) takes a mapping or a list of mappings, e.g. <<: *defaults", path)
                scratch = Positions()
                data = self.mapping(src, path, scratch, depth + 1)
                for k, v in data.items():
                    if k in out:
                        continue
                    out[k] = v
                    n = len(path) + 1
                    for p, where in scratch.items():
                        if p[:n] == path + (k,):
                            pos[p] = where
                    for p, where in scratch.keys.items():
                        if p[:n] == path + (k,):
                            pos.keys[p] = where
        return out


def _yaml_problem(exc, text: str) -> tuple[int, int, str]:
    """A PyYAML/libyaml error as (line, column, message in words a user acts on)."""
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _line_col(text, exc.position) if exc.position <= len(text) else (0, 0)
        ch = exc.character
        code = f"U+{ord(ch) if isinstance(ch, str) else ch:04X}"
        return line, col, f"character {code} is not allowed in YAML (a control character); remove it"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 0, 0, f"YAML syntax error: {exc}"
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    ctx = exc.context_mark
    cline, ccol = (ctx.line + 1, ctx.column + 1) if ctx else (0, 0)
    problem, context = exc.problem or "", exc.context or ""
    char = text.splitlines()[line - 1][col - 1:col] if 0 < line <= len(text.splitlines()) else ""
    if "cannot start any token" in problem:
        if char == "\t":
            msg = "a tab character: YAML indents with spaces only"
        else:
            msg = f"{char!r} cannot start a plain value; put the value in quotes"
    elif "quoted scalar" in context and "end of stream" in problem:
        return cline, ccol, "YAML syntax error: this quoted string is never closed"
    elif "flow sequence" in context or "flow mapping" in context:
        opener, closer = ("[", "]") if "sequence" in context else ("{", "}")
        msg = f"expected ',' or '{closer}' to continue or close the '{opener}' at line {cline}, column {ccol}"
    elif "mapping values are not allowed" in problem:
        msg = ("unexpected ':' here: indent this key like its siblings, or put a value that contains "
               "': ' in quotes")
    elif "did not find expected key" in problem or "expected <block end>" in problem:
        msg = f"this line is not indented like the mapping that starts at line {cline}, column {ccol}"
    elif "could not find expected ':'" in problem:
        msg = "expected 'key: value' here (is the ':' or its following space missing?)"
    elif "maximum nesting depth" in problem:
        msg = "document nested too deeply"
    elif "undefined alias" in problem:
        msg = "this alias (*name) refers to an anchor (&name) that is not defined before it"
    elif "duplicate anchor" in context:
        msg = f"this anchor is already defined at line {cline}, column {ccol}"
    elif "block sequence" in context and "expected <block end>" in problem:
        msg = f"this line does not continue the list that starts at line {cline}, column {ccol}"
    elif mark is not None and not text[mark.index:].strip():
        # Point at the last thing written, not past the end: that is where the reader looks.
        line, col = _line_col(text, len(text.rstrip()) - 1) if text.strip() else (line, col)
        msg = "the file ends inside a value: is a '[', '{' or quote not closed?"
    else:
        msg = " ".join(filter(None, [context, problem])) or "invalid YAML"
    quote = _unclosed_quote(text, line)
    if quote and "quote" not in msg:
        msg += f" (the quote at line {quote[0]}, column {quote[1]} runs on to the next lines: is it closed?)"
    return line, col, f"YAML syntax error: {msg}"


_QUOTE_START = re.compile(r"""(?:^|[\s\[{,:-])(["'])""")


def _unclosed_quote(text: str, before: int) -> tuple[int, int] | None:
    """The last quoted value before line `before` that does not close on its own line.

    YAML lets a quoted string run over several lines, so a missing closing quote shows up as an
    error further down; pointing back at the quote is what helps.
    """
    found = None
    for n, ln in enumerate(text.splitlines()[:max(before - 1, 0)], 1):
        i = 0
        while True:
            m = _QUOTE_START.search(ln, i)
            if not m or ln.lstrip().startswith("#"):
                break
            q, start = m.group(1), m.start(1)
            j = start + 1
            while True:
                j = ln.find(q, j)
                if j < 0:
                    break
                if q == '"' and ln[j - 1] == "\\":
                    j += 1
                elif q == "'" and ln[j + 1:j + 2] == "'":
                    j += 2
                else:
                    break
            if j < 0:
                found = (n, start + 1)
                break
            i = j + 1
    return found


def _yaml_documents(text: str, file: str) -> Iterator[tuple[Any, Positions] | Diagnostic]:
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    builder = _YAMLBuilder()
    nodes = yaml.compose_all(text, Loader=loader_cls)
    while True:
        try:
            node = next(nodes)
        except StopIteration:
            return
        except (yaml.YAMLError, ValueError) as exc:
            line, col, message = _yaml_problem(exc, text)
            yield Diagnostic(Severity.ERROR, file, line, col, "", message)
            return
        except RecursionError:
            yield Diagnostic(Severity.ERROR, file, 0, 0, "", "YAML syntax error: document nested too deeply")
            return
        if node is None:
            continue
        builder.problems = []
        try:
            data, pos = builder.document(node)
        except _DocError as exc:
            yield Diagnostic(Severity.ERROR, file, exc.line, exc.column, convert.fmt_path(exc.path), exc.message)
            continue
        except RecursionError:
            yield Diagnostic(Severity.ERROR, file, node.start_mark.line + 1, 1, "", "document nested too deeply")
            continue
        for line, col, path, message in builder.problems:
            yield Diagnostic(Severity.ERROR, file, line, col, convert.fmt_path(path), message)
        if data is not None:
            yield data, pos


_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")


class _JSONReader:
    """A stream of JSON values with the position of every value and key.

    Kubernetes reads JSON manifests with a JSON decoder, not as YAML: ``1e3`` is a number, a tab
    is whitespace, duplicate keys are errors. This keeps those rules and the positions.
    """

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.problems: list[tuple[int, int, Path_, str]] = []

    def where(self, offset: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, offset) - 1
        return i + 1, offset - self.starts[i] + 1

    def fail(self, offset: int, message: str):
        raise _DocError(*self.where(offset), f"JSON syntax error: {message}")

    def documents(self) -> Iterator[tuple[Any, Positions]]:
        i = _JSON_WS.match(self.text, 0).end()
        while i < len(self.text):
            pos = Positions()
            self.count = 0
            value, i = self.value(i, (), pos, 0)
            yield value, pos
            i = _JSON_WS.match(self.text, i).end()

    def value(self, i: int, path: Path_, pos: Positions, depth: int) -> tuple[Any, int]:
        text = self.text
        self.count += 1
        if depth > _MAX_DEPTH:
            self.fail(i, "document nested too deeply")
        if self.count > _MAX_VALUES:
            self.fail(i, f"document has more than {_MAX_VALUES} values")
        pos[path] = self.where(i)
        ch = text[i:i + 1]
        if ch == "{":
            return self.object(i, path, pos, depth)
        if ch == "[":
            out = []
            i = _JSON_WS.match(text, i + 1).end()
            if text[i:i + 1] == "]":
                return out, i + 1
            while True:
                if text[i:i + 1] == "]":
                    self.fail(i, "a trailing comma before ']'")
                v, i = self.value(i, path + (len(out),), pos, depth + 1)
                out.append(v)
                i = _JSON_WS.match(text, i).end()
                if text[i:i + 1] == ",":
                    i = _JSON_WS.match(text, i + 1).end()
                elif text[i:i + 1] == "]":
                    return out, i + 1
                else:
                    self.fail(i, "expected ',' or ']'")
        if ch == '"':
            return self.string(i)
        for word, v in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, i):
                return v, i + len(word)
        m = _JSON_NUMBER.match(text, i)
        if m and m.end() > i:
            try:
                v = float(m.group()) if m.group(1) or m.group(2) else int(m.group())
            except ValueError:
                self.fail(i, "number too long")
            if isinstance(v, float) and not math.isfinite(v):
                self.fail(i, f"{m.group()} is not a number Kubernetes accepts")
            return v, m.end()
        self.fail(i, "expected a value" if ch else "unexpected end of file")
        raise AssertionError  # not reached

    def string(self, i: int) -> tuple[str, int]:
        from json.decoder import scanstring

        try:
            return scanstring(self.text, i + 1, True)
        except json.JSONDecodeError as exc:
            self.fail(exc.pos, exc.msg.lower())
        raise AssertionError  # not reached

    def object(self, i: int, path: Path_, pos: Positions, depth: int) -> tuple[dict, int]:
        text = self.text
        out: dict[str, Any] = {}
        i = _JSON_WS.match(text, i + 1).end()
        if text[i:i + 1] == "}":
            return out, i + 1
        while True:
            if text[i:i + 1] != '"':
                self.fail(i, "a trailing comma before '}'" if text[i:i + 1] == "}"
                          else "expected a key in double quotes")
            kstart = i
            key, i = self.string(i)
            i = _JSON_WS.match(text, i).end()
            if text[i:i + 1] != ":":
                self.fail(i, "expected ':' after the key")
            i = _JSON_WS.match(text, i + 1).end()
            if key in out:
                first = pos.keys.get(path + (key,), (0, 0))
                self.problems.append((*self.where(kstart), path + (key,),
                                      f"duplicate key {key!r} (first at line {first[0]}); remove one of them"))
                _, i = self.value(i, path + (key,), Positions(), depth + 1)
            else:
                pos.keys[path + (key,)] = self.where(kstart)
                out[key], i = self.value(i, path + (key,), pos, depth + 1)
            i = _JSON_WS.match(text, i).end()
            if text[i:i + 1] == ",":
                i = _JSON_WS.match(text, i + 1).end()
            elif text[i:i + 1] == "}":
                return out, i + 1
            else:
                self.fail(i, "expected ',' or '}'")


def _json_documents(text: str, file: str) -> Iterator[tuple[Any, Positions] | Diagnostic]:
    reader = _JSONReader(text)
    docs = reader.documents()
    while True:
        try:
            doc = next(docs)
        except StopIteration:
            return
        except _DocError as exc:
            yield Diagnostic(Severity.ERROR, file, exc.line, exc.column, "", exc.message)
            return
        except RecursionError:
            yield Diagnostic(Severity.ERROR, file, 0, 0, "", "JSON syntax error: document nested too deeply")
            return
        for line, col, path, message in reader.problems:
            yield Diagnostic(Severity.ERROR, file, line, col, convert.fmt_path(path), message)
        reader.problems = []
        yield doc


def parse_documents(text: str, file: str) -> Iterator[tuple[Any, Positions] | Diagnostic]:
    """Each document as (data, positions), or a Diagnostic. A syntax error ends the file.

    ``*.json`` files are read as JSON; stdin (``-``) is read as JSON when it is valid JSON.
    """
    if file.endswith(".json"):
        yield from _json_documents(text, file)
        return
    if file == "-" and text.lstrip()[:1] in ("{", "["):
        items = list(_json_documents(text, file))
        if not any(isinstance(d, Diagnostic) for d in items):
            yield from items
            return
    yield from _yaml_documents(text, file)


# --- schema -------------------------------------------------------------------------------------

@cache
def _schema(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.json").read_text())


def _inline_refs(node: Any, root: dict, stack: tuple[str, ...] = ()) -> Any:
    """The schema with every ``$ref`` replaced by its definition (a recursive one stays a ref).

    Resolving references is half of jsonschema's time on a pod; the kinds' schemas are trees,
    so inlining them once makes every validation after it twice as fast.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            return node if name in stack else _inline_refs(root["$defs"][name], root, stack + (name,))
        return {k: (v if k == "$defs" else _inline_refs(v, root, stack)) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, root, stack) for v in node]
    return node


@cache
def _validator(kind: str):
    """One validator per kind, built once: building it costs more than validating a pod.

    ``integer`` means a whole number written without a fraction: the API server's JSON decoder
    refuses ``replicas: 2.0`` (jsonschema alone would accept it).
    """
    import jsonschema

    schema = _inline_refs(_schema(kind), _schema(kind))
    cls = jsonschema.validators.validator_for(schema)
    checker = cls.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    return jsonschema.validators.extend(cls, type_checker=checker)(schema)


def _resolve(schema: dict, root: dict) -> dict:
    for _ in range(20):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not ref:
            break
        schema = root["$defs"][ref.rsplit("/", 1)[-1]]
    return schema if isinstance(schema, dict) else {}


def _placeholder(schema: dict, root: dict, depth: int = 0) -> Any:
    """A neutral valid value for `schema`: stands in for a wrong or missing value so that the
    rest of the object can still be checked."""
    schema = _resolve(schema, root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    t = t[0] if isinstance(t, list) else t
    if t == "object" and depth < 10:
        props = schema.get("properties", {})
        return {r: _placeholder(props.get(r, {}), root, depth + 1) for r in schema.get("required", ())}
    low = schema.get("minimum", 0)
    return {"string": "", "integer": max(0, low), "number": max(0, low), "boolean": False,
            "array": [], "object": {}}.get(t)


_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean (true/false)", "null": "null"}


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


def _close(word: str, options: Iterable[str]) -> str | None:
    options = list(options)
    for o in options:
        if o.lower() == word.lower():
            return o
    import difflib  # only for a misspelled key: 0.5 MB a keeper need not hold

    hint = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return hint[0] if hint else None


def _schema_findings(err, root: dict) -> list[tuple[Path_, str, bool]]:
    """(path, message, point-at-key) for one jsonschema error, in words a user acts on."""
    path = tuple(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        out = []
        for key in err.instance:
            if key in allowed:
                continue
            hint = _close(key, allowed)
            out.append((path + (key,), f"unknown field {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""),
                        True))
        return out
    if v == "required":
        missing = [r for r in err.validator_value if r not in err.instance]
        out = []
        for name in missing:
            msg = "required field is missing"
            if name == "metadata":
                msg += ": every object needs metadata with a name"
            elif name == "containerPort" and "hostPort" in err.instance:
                msg += " (the port the container listens on; podman takes hostPort, Kubernetes does not)"
            elif name == "name" and len(path) >= 2 and path[-2] in ("containers", "initContainers"):
                msg += ": every container needs a name (lowercase letters, digits and '-')"
            out.append((path + (name,), msg, False))
        return out
    if v == "type":
        want = err.validator_value
        want = " or ".join(_TYPE_WORDS.get(w, w) for w in (want if isinstance(want, list) else [want]))
        msg = f"must be {want}, not {_describe(err.instance)}"
        if "string" in err.validator_value and isinstance(err.instance, bool | int | float):
            msg += "; put the value in quotes"
        return [(path, msg, False)]
    if v == "enum":
        options = ", ".join(json.dumps(o) for o in err.validator_value)
        hint = _close(str(err.instance), [str(o) for o in err.validator_value])
        msg = f"{json.dumps(err.instance)} is not one of {options}"
        return [(path, msg + (f"; did you mean {json.dumps(hint)}?" if hint else ""), False)]
    if v == "const":
        return [(path, f"must be {json.dumps(err.validator_value)}, not {json.dumps(err.instance)}", False)]
    if v in ("minimum", "exclusiveMinimum"):
        return [(path, f"{err.instance} is too small (the least is {err.validator_value})", False)]
    if v in ("maximum", "exclusiveMaximum"):
        return [(path, f"{err.instance} is too big (the most is {err.validator_value})", False)]
    return [(path, err.message, False)]


def _repair(data: Any, err, root: dict) -> None:
    """Make `data` pass `err` (see the module docstring); gives up silently where it cannot."""
    path = list(err.absolute_path)
    try:
        parent = data
        for p in path[:-1]:
            parent = parent[p]
        target = parent[path[-1]] if path else data
    except (KeyError, IndexError, TypeError):
        return
    v = err.validator
    if v == "additionalProperties" and isinstance(target, dict):
        allowed = err.schema.get("properties", {})
        for k in [k for k in target if k not in allowed]:
            del target[k]
    elif v == "required" and isinstance(target, dict):
        props = err.schema.get("properties", {})
        for name in err.validator_value:
            target.setdefault(name, _placeholder(props.get(name, {}), root))
    elif path and isinstance(parent, dict | list):
        parent[path[-1]] = _placeholder(err.schema, root)


# --- semantic checks ------------------------------------------------------------------------------

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
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
CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
# fieldRef paths the API server accepts for env (labels/annotations with a key are matched apart).
ENV_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels",
                   "metadata.annotations", "spec.nodeName", "spec.serviceAccountName", "status.hostIP",
                   "status.hostIPs", "status.podIP", "status.podIPs")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
ENV_RESOURCES = tuple(f"{s}.{r}" for s in ("limits", "requests") for r in CONTAINER_RESOURCES)
CPU_DIVISORS = ("1m", "1")
MEMORY_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
_QUANTITY_UNITS = {"kb": "k", "mb": "M", "gb": "G", "tb": "T", "pb": "P", "eb": "E", "kib": "Ki", "mib": "Mi",
                   "gib": "Gi", "tib": "Ti", "pib": "Pi", "eib": "Ei"}


class _Checker:
    """Collects diagnostics for one object; `base` locates the object inside its document."""

    def __init__(self, file: str, pos: Positions, base: Path_, out: list[Diagnostic]):
        self.file, self.pos, self.base, self.out = file, pos, base, out
        self.paths: list[Path_] = []  # parallel to the entries this checker appended

    def error(self, path: Path_, message: str, key: bool = False) -> None:
        self.report(Severity.ERROR, path, message, key)

    def warn(self, path: Path_, message: str, key: bool = False) -> None:
        self.report(Severity.WARNING, path, message, key)

    def report(self, sev: Severity, path: Path_, message: str, key: bool = False) -> None:
        path = tuple(path)
        line, col = self.pos.find(self.base + path, key=key)
        self.out.append(Diagnostic(sev, self.file, line, col, convert.fmt_path(path), message))
        self.paths.append(path)

    def at(self, path: Path_) -> tuple[int, int]:
        return self.pos.find(self.base + tuple(path))


def _suggest(name: str, limit: int, dots: bool) -> str:
    allowed = "a-z0-9.-" if dots else "a-z0-9-"
    s = re.sub(f"[^{allowed}]+", "-", name.lower())
    s = re.sub(r"-{2,}", "-", s)[:limit].strip("-.")
    return s


def _check_name(chk: _Checker, path: Path_, name: str, what: str, label: bool) -> None:
    if not name:
        chk.error(path, f"{what} is missing")
        return
    pattern, limit = (DNS1123_LABEL, 63) if label else (DNS1123_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        chars = "digits and '-'" if label else "digits, '-' and '.'"
        fix = _suggest(name, limit, not label)
        hint = f"; e.g. {fix!r}" if fix and pattern.match(fix) and fix != name else ""
        chk.error(path, f"{name!r} is not a valid {what}: use at most {limit} lowercase letters, {chars}, "
                  f"starting and ending with a letter or digit{hint}")


def _check_qualified_key(chk: _Checker, path: Path_, key: str, what: str) -> bool:
    prefix, _, name = key.rpartition("/")
    ok = (bool(name) and len(name) <= 63 and QUALIFIED_NAME.match(name) is not None
          and (not prefix or ("/" not in key[:-len(name) - 1] and len(prefix) <= 253
                              and DNS1123_SUBDOMAIN.match(prefix) is not None)))
    if not ok:
        chk.error(path, f"{key!r} is not a valid {what} key: [prefix/]name, the name at most 63 letters, digits, "
                  "'-', '_' or '.', starting and ending with a letter or digit", key=True)
    return ok


def _check_labels(chk: _Checker, path: Path_, labels: dict[str, str]) -> None:
    for k, v in labels.items():
        _check_qualified_key(chk, path + (k,), k, "label")
        if len(v) > 63 or not LABEL_VALUE.match(v):
            chk.error(path + (k,), f"{v!r} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', "
                      "starting and ending with a letter or digit")


def _check_meta(chk: _Checker, meta, kind: str, path: Path_ = ("metadata",), named: bool = True) -> None:
    if named:
        _check_name(chk, path + ("name",), meta.name, f"{kind} name", label=False)
        if meta.namespace and (len(meta.namespace) > 63 or not DNS1123_LABEL.match(meta.namespace)):
            chk.error(path + ("namespace",), f"{meta.namespace!r} is not a valid namespace: use at most 63 "
                      "lowercase letters, digits and '-'")
    _check_labels(chk, path + ("labels",), meta.labels)
    for k, v in meta.annotations.items():
        ap = path + ("annotations", k)
        if not _check_qualified_key(chk, ap, k, "annotation"):
            continue
        if k.startswith(ANNOTATION_PREFIX) and k not in PODPLAY_ANNOTATIONS:
            hint = _close(k, PODPLAY_ANNOTATIONS)
            chk.warn(ap, "unknown podplay annotation, ignored" + (f" (did you mean {hint!r}?)" if hint else
                                                                 f"; podplay knows {', '.join(PODPLAY_ANNOTATIONS)}"),
                     key=True)
        elif k == ANN_PORT_PER_REPLICA and v.lower() not in ("true", "false"):
            chk.error(ap, f"{v!r} is not a boolean: use \"true\" or \"false\"")


def _check_quantity(chk: _Checker, path: Path_, value) -> Any:
    try:
        q = parse_quantity(value)
    except ValueError:
        m = re.match(r"^\s*([+-]?[\d.]+)\s*([A-Za-z]+)\s*$", str(value))
        unit = _QUANTITY_UNITS.get(m.group(2).lower()) if m else None
        hint = f"; did you mean {m.group(1) + unit!r}?" if unit else " (e.g. 500m, 128Mi, 1.5, 2e3)"
        chk.error(path, f"{value!r} is not a quantity{hint}")
        return None
    if q < 0:
        chk.error(path, f"{value!r} must not be negative")
        return None
    return q


def _check_probe(chk: _Checker, probe, pp: Path_, kind: str, init: bool, port_names: set[str]) -> None:
    if init:
        chk.error(pp, "init containers cannot have probes (they run to completion first)")
    handlers = [h for h in ("exec", "http_get", "tcp_socket") if getattr(probe, h) is not None]
    if not handlers:
        chk.error(pp, "needs one of exec, httpGet, tcpSocket (the handlers podplay runs)")
    elif len(handlers) > 1:
        chk.error(pp, "has more than one handler: keep exactly one of exec, httpGet, tcpSocket")
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


def _check_env(chk: _Checker, c: Container, path: Path_) -> None:
    for i, e in enumerate(c.env):
        ep = path + ("env", i)
        if not e.name or "=" in e.name:
            chk.error(ep + ("name",), f"{e.name!r} is not a valid environment variable name (non-empty, no '=')")
        if e.value is not None and e.value_from is not None:
            chk.error(ep, "set either value or valueFrom, not both")
        vf = e.value_from
        if vf is None:
            continue
        sources = [s for s in (vf.config_map_key_ref, vf.secret_key_ref, vf.field_ref, vf.resource_field_ref) if s]
        if len(sources) != 1:
            chk.error(ep + ("valueFrom",), "needs exactly one of configMapKeyRef, secretKeyRef, fieldRef, "
                      "resourceFieldRef")
            continue
        for sel, sname in ((vf.config_map_key_ref, "configMapKeyRef"), (vf.secret_key_ref, "secretKeyRef")):
            if sel is not None and not sel.name:
                chk.error(ep + ("valueFrom", sname, "name"), "names no ConfigMap/Secret")
            if sel is not None and not sel.key:
                chk.error(ep + ("valueFrom", sname, "key"), "names no key")
        if vf.field_ref is not None:
            fp = vf.field_ref.field_path
            if fp not in ENV_FIELD_PATHS and not _FIELD_KEY.match(fp):
                hint = _close(fp, ENV_FIELD_PATHS)
                chk.error(ep + ("valueFrom", "fieldRef", "fieldPath"), f"{fp!r} is not a field a container can read"
                          + (f" (did you mean {hint!r}?)" if hint else f"; use one of {', '.join(ENV_FIELD_PATHS)}"))
        rf = vf.resource_field_ref
        if rf is not None:
            rp = ep + ("valueFrom", "resourceFieldRef")
            if rf.resource not in ENV_RESOURCES:
                chk.error(rp + ("resource",), f"{rf.resource!r} is not one of {', '.join(ENV_RESOURCES)}")
            elif rf.container_name and rf.container_name != c.name:
                pass  # another container's resources: checked in the pod
            else:
                allowed = CPU_DIVISORS if rf.resource.endswith("cpu") else MEMORY_DIVISORS
                try:
                    ok = any(parse_quantity(rf.divisor) == parse_quantity(d) for d in allowed)
                except ValueError:
                    ok = False
                if not ok:
                    chk.error(rp + ("divisor",), f"{rf.divisor!r} is not a divisor for {rf.resource}: use one of "
                              + ", ".join(allowed))
    for i, ef in enumerate(c.env_from):
        if bool(ef.config_map_ref) == bool(ef.secret_ref):
            chk.error(path + ("envFrom", i), "needs exactly one of configMapRef, secretRef")


def _check_container(chk: _Checker, c: Container, path: Path_, volumes: set[str], host_network: bool,
                     init: bool) -> None:
    _check_name(chk, path + ("name",), c.name, "container name", label=True)
    if not c.image.strip():
        chk.error(path + ("image",), f"container {c.name!r} is missing the required 'image' field")
    elif c.image != c.image.strip():
        chk.error(path + ("image",), f"{c.image!r} has spaces around it")
    if c.image_pull_policy and c.image_pull_policy not in PULL_POLICIES:
        fix = PODMAN_PULL_POLICIES.get(c.image_pull_policy.lower())
        hint = f"; podman's {c.image_pull_policy!r} is {fix!r} in Kubernetes" if fix else ""
        chk.error(path + ("imagePullPolicy",),
                  f"{c.image_pull_policy!r} is not a pull policy: use Always, IfNotPresent or Never{hint}")
    _check_env(chk, c, path)
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
    mounts_seen: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = path + ("volumeMounts", i)
        if m.name not in volumes:
            hint = _close(m.name, volumes)
            chk.error(mp + ("name",), f"volume {m.name!r} is not declared in the pod's volumes"
                      + (f" (did you mean {hint!r}?)" if hint else ""))
        if not m.mount_path.startswith("/"):
            chk.error(mp + ("mountPath",), f"{m.mount_path!r} must be an absolute path")
        norm = os.path.normpath(m.mount_path)
        if norm in mounts_seen:
            chk.error(mp + ("mountPath",), f"{m.mount_path!r} is mounted twice in this container")
        mounts_seen.add(norm)
        if m.sub_path and (m.sub_path.startswith("/") or ".." in m.sub_path.split("/")):
            chk.error(mp + ("subPath",), f"{m.sub_path!r} must be a relative path without '..'")
    for kind in ("limits", "requests"):
        for res, value in getattr(c.resources, kind).items():
            rp = path + ("resources", kind, res)
            if res not in CONTAINER_RESOURCES and not res.startswith("hugepages-") and "/" not in res:
                hint = _close(res, CONTAINER_RESOURCES)
                chk.error(rp, f"{res!r} is not a resource" + (f" (did you mean {hint!r}?)" if hint else
                                                              f"; use {', '.join(CONTAINER_RESOURCES)}"), key=True)
                continue
            _check_quantity(chk, rp, value)
    for res, req in c.resources.requests.items():
        lim = c.resources.limits.get(res)
        if lim is not None:
            try:
                if parse_quantity(req) > parse_quantity(lim):
                    chk.error(path + ("resources", "requests", res), f"request {req} is more than the limit {lim}")
            except ValueError:
                pass  # reported above
    for probe_name in ("liveness_probe", "readiness_probe", "startup_probe"):
        probe = getattr(c, probe_name)
        if probe is not None:
            jname = {"liveness_probe": "livenessProbe", "readiness_probe": "readinessProbe",
                     "startup_probe": "startupProbe"}[probe_name]
            _check_probe(chk, probe, path + (jname,), jname, init, port_names)
    if c.lifecycle is not None and c.lifecycle.stop_signal and c.lifecycle.stop_signal.upper() not in SIGNALS:
        hint = _close(c.lifecycle.stop_signal.upper(), SIGNALS) or _close(
            "SIG" + c.lifecycle.stop_signal.upper(), SIGNALS)
        chk.error(path + ("lifecycle", "stopSignal"), f"invalid signal: {c.lifecycle.stop_signal}"
                  + (f" (did you mean {hint}?)" if hint else " (use a name like SIGTERM)"))


def _check_key_to_path(chk: _Checker, items, path: Path_) -> None:
    seen: set[str] = set()
    for j, item in enumerate(items):
        ip = path + ("items", j)
        if item.path.startswith("/") or ".." in item.path.split("/") or not item.path:
            chk.error(ip + ("path",), f"{item.path!r} must be a relative path without '..'")
        elif os.path.normpath(item.path) in seen:
            chk.error(ip + ("path",), f"{item.path!r} is used twice in this volume")
        seen.add(os.path.normpath(item.path))
        if item.mode is not None and not 0 <= item.mode <= 0o777:
            chk.error(ip + ("mode",), f"{item.mode} is not a file mode (0-0777; in YAML, write octal as 0644)")


def _check_pod_spec(chk: _Checker, spec: PodSpec, path: Path_, in_deployment: bool = False) -> None:
    if not spec.containers:
        chk.error(path + ("containers",), "a pod needs at least one container")
    if in_deployment and spec.restart_policy != "Always":
        chk.error(path + ("restartPolicy",), f"a Deployment's pods must have restartPolicy Always, not "
                  f"{spec.restart_policy} (use a Pod for a run-to-completion task)")
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
            what = "no volume source" if not sources else "more than one volume source"
            chk.error(vp, f"has {what}: use exactly one of emptyDir, hostPath, configMap, secret, "
                      "persistentVolumeClaim")
        if v.host_path is not None and not v.host_path.path.startswith("/"):
            chk.error(vp + ("hostPath", "path"), f"{v.host_path.path!r} must be an absolute path")
        if v.empty_dir is not None and v.empty_dir.size_limit is not None:
            limit = _check_quantity(chk, vp + ("emptyDir", "sizeLimit"), v.empty_dir.size_limit)
            if limit is not None and v.empty_dir.medium != "Memory":
                chk.warn(vp + ("emptyDir", "sizeLimit"), DISK_LIMIT_MESSAGE, key=True)
        if v.persistent_volume_claim is not None:
            _check_name(chk, vp + ("persistentVolumeClaim", "claimName"), v.persistent_volume_claim.claim_name,
                        "claim name", label=False)
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
    container_names: set[str] = set()
    host_ports: dict[tuple[int, str], Path_] = {}
    for field_name, containers, init in (("initContainers", spec.init_containers, True),
                                         ("containers", spec.containers, False)):
        for i, c in enumerate(containers):
            cp = path + (field_name, i)
            if c.name and c.name in container_names:
                chk.error(cp + ("name",), f"duplicate container name {c.name!r}")
            container_names.add(c.name)
            _check_container(chk, c, cp, volume_names, spec.host_network, init)
            for j, p in enumerate(c.ports):
                if p.host_port:
                    k = (p.host_port, p.protocol)
                    if k in host_ports:
                        chk.error(cp + ("ports", j, "hostPort"),
                                  f"hostPort {p.host_port}/{p.protocol} is already used in this pod "
                                  f"(at {convert.fmt_path(host_ports[k])})")
                    else:
                        host_ports[k] = cp + ("ports", j)
    for field_name, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
        for i, c in enumerate(containers):
            for j, e in enumerate(c.env):
                rf = e.value_from.resource_field_ref if e.value_from else None
                if rf is not None and rf.container_name and rf.container_name not in container_names:
                    chk.error(path + (field_name, i, "env", j, "valueFrom", "resourceFieldRef", "containerName"),
                              f"no container named {rf.container_name!r} in this pod")
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


def _check_deployment(chk: _Checker, obj: Deployment) -> None:
    _check_meta(chk, obj.metadata, "deployment")
    spec = obj.spec
    if len(obj.metadata.name) > 240:
        chk.error(("metadata", "name"), "deployment names are limited to 240 characters (replica suffixes)")
    if spec.replicas < 0:
        chk.error(("spec", "replicas"), "must not be negative")
    elif spec.replicas > MAX_REPLICAS:
        chk.error(("spec", "replicas"), f"{spec.replicas} is more than podplay runs on one host "
                  f"(at most {MAX_REPLICAS})")
    selector = spec.selector.match_labels
    labels = spec.template.metadata.labels
    _check_labels(chk, ("spec", "selector", "matchLabels"), selector)
    _check_meta(chk, spec.template.metadata, "pod", ("spec", "template", "metadata"), named=False)
    if not selector:
        chk.error(("spec", "selector"), "a Deployment needs spec.selector.matchLabels")
    for k, v in selector.items():
        if labels.get(k) != v:
            chk.error(("spec", "template", "metadata", "labels"),
                      f"selector {k}={v} does not match the template's labels (add {k}: {v})")
    tspec = spec.template.spec
    _check_pod_spec(chk, tspec, ("spec", "template", "spec"), in_deployment=True)
    annotations = {**obj.metadata.annotations, **spec.template.metadata.annotations}
    per_replica = annotations.get(ANN_PORT_PER_REPLICA, "").lower() == "true"
    if spec.replicas > 1:
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
    strategy = spec.strategy
    if strategy.type == "RollingUpdate":
        ru = strategy.rolling_update
        for fname, value in (("maxSurge", ru.max_surge), ("maxUnavailable", ru.max_unavailable)):
            if not re.match(r"^(\d+%?)$", str(value)):
                chk.error(("spec", "strategy", "rollingUpdate", fname), f"{value!r} must be a number or a "
                          "percentage like 25%")
        if str(ru.max_surge) in ("0", "0%") and str(ru.max_unavailable) in ("0", "0%"):
            chk.error(("spec", "strategy", "rollingUpdate"), "maxSurge and maxUnavailable cannot both be 0")


def _check_object(chk: _Checker, obj) -> None:
    if isinstance(obj, Pod):
        _check_meta(chk, obj.metadata, "pod")
        _check_pod_spec(chk, obj.spec, ("spec",))
    elif isinstance(obj, Deployment):
        _check_deployment(chk, obj)
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
        if isinstance(obj, Secret):
            _check_secret_type(chk, obj)
    elif isinstance(obj, PersistentVolumeClaim):
        _check_meta(chk, obj.metadata, "PersistentVolumeClaim")
        if not obj.spec.access_modes:
            chk.error(("spec", "accessModes"), "needs at least one access mode, e.g. [ReadWriteOnce]")
        if "storage" not in obj.spec.resources.requests:
            chk.error(("spec", "resources", "requests", "storage"), "required field is missing (the size, e.g. 1Gi)")
        for res, value in obj.spec.resources.requests.items():
            _check_quantity(chk, ("spec", "resources", "requests", res), value)


def _check_secret_type(chk: _Checker, obj: Secret) -> None:
    needed = {"kubernetes.io/dockerconfigjson": ".dockerconfigjson", "kubernetes.io/dockercfg": ".dockercfg"}
    key = needed.get(obj.type)
    if key is None:
        return
    items = obj.items()
    if key not in items:
        chk.error(("data",), f"a Secret of type {obj.type} needs the key {key!r}")
        return
    where = ("stringData", key) if key in obj.string_data else ("data", key)
    try:
        doc = json.loads(items[key])
    except ValueError:
        chk.error(where, f"{key} is not valid JSON")
        return
    if not isinstance(doc, dict):
        chk.error(where, f"{key} must be a JSON object")


def _decode_b64_fields(raw: dict, fields: Sequence[str], chk: _Checker) -> list[Path_]:
    """Decode base64 maps in place (Secret.data, ConfigMap.binaryData); return the bad ones' paths."""
    bad = []
    for fname in fields:
        table = raw.get(fname)
        if not isinstance(table, dict):
            continue
        for k, v in list(table.items()):
            try:
                # Go's decoder skips line breaks (long values are often wrapped), nothing else.
                table[k] = base64.b64decode(str(v).replace("\n", "").replace("\r", ""), validate=True)
            except (binascii.Error, ValueError):
                hint = "put plain text under stringData" if fname == "data" else "encode the value with base64"
                chk.error((fname, k), f"value of {k!r} is not valid base64 ({hint})")
                table[k] = b""
                bad.append((fname, k))
    return bad


# --- one object -------------------------------------------------------------------------------------

@dataclass
class _Entry:
    """One object that got as far as the model (possibly with errors)."""

    loaded: Loaded
    pos: Positions
    base: Path_
    ok: bool


def _drop_nulls(value: Any) -> Any:
    """``field: null`` means unset to the API server: drop such keys before validating."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _get(data: Any, path: Path_) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _related(a: Path_, b: Path_) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


class SchemaCache:
    """Digests of documents that passed their schema, kept in a file between runs.

    Validation is the costliest part of a load (importing jsonschema alone takes longer than
    everything else `podplay up` does when nothing changed), and manifests rarely change between
    runs. A document whose exact content (for this schema release and this podplay) passed
    before is not validated again; everything after the schema (the semantic and cross-object
    checks) always runs. The file is best effort: unreadable or unwritable means no cache.
    """

    LIMIT = 20_000  # digests kept (a rewrite keeps the newest)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.added: list[str] = []
        try:
            self.known = set(self.path.read_text().split())
        except (OSError, UnicodeDecodeError):
            self.known = set()
        from reconciler import __version__

        try:
            source = (SCHEMA_DIR / "SOURCE.json").read_bytes()
        except OSError:
            source = b""
        self.salt = sha.sha256(source + b"\0" + __version__.encode()).hexdigest()

    def key(self, kind: str, data: Any) -> str:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return sha.sha256(f"{self.salt}\0{kind}\0{text}".encode()).hexdigest()

    def __contains__(self, key: str) -> bool:
        return key in self.known

    def add(self, key: str) -> None:
        if key not in self.known:
            self.known.add(key)
            self.added.append(key)

    def save(self) -> None:
        if not self.added:
            return
        from reconciler.fsutil import atomic_write

        try:
            old = [k for k in self.path.read_text().split() if k not in set(self.added)]
        except (OSError, UnicodeDecodeError):
            old = []
        keep = (old + self.added)[-self.LIMIT:]
        with contextlib.suppress(OSError):
            atomic_write(self.path, "\n".join(keep) + "\n")
        self.added = []


class _Run:
    """State shared by every document of one load: once-only warnings, entries, failed names."""

    def __init__(self, result: ManifestSet, schema_cache: SchemaCache | None = None):
        self.result = result
        self.schema_cache = schema_cache
        self.entries: list[_Entry] = []
        self.warned: set[str] = set()
        self.known: set[tuple[str, str, str]] = set()  # objects that exist but could not be built

    def load(self, docs: Iterable[tuple[Any, Positions]], file: str) -> None:
        for doc, pos in docs:
            if isinstance(doc, dict) and doc.get("kind") == "List":
                self.load_list(doc, pos, file)
            else:
                self.load_object(doc, pos, (), file)

    def load_list(self, doc: dict, pos: Positions, file: str) -> None:
        chk = _Checker(file, pos, (), self.result.diagnostics)
        for k in doc:
            if k not in ("apiVersion", "kind", "items", "metadata"):
                hint = _close(k, ("apiVersion", "kind", "items", "metadata"))
                chk.error((k,), f"unknown field {k!r}" + (f" (did you mean {hint!r}?)" if hint else ""), key=True)
        if doc.get("apiVersion") != "v1":
            chk.error(("apiVersion",), f"a List needs apiVersion 'v1', not {doc.get('apiVersion')!r}")
        items = doc.get("items")
        if not isinstance(items, list):
            chk.error(("items",), "a List needs items: a list of objects" if items is None
                      else f"must be a list, not {_describe(items)}")
            return
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("kind") == "List":
                chk.error(("items", i, "kind"), "a List inside a List is not supported; put its items here")
                continue
            self.load_object(item, pos, ("items", i), file)

    def load_object(self, data: Any, pos: Positions, base: Path_, file: str) -> None:
        result = self.result
        out: list[Diagnostic] = []
        chk = _Checker(file, pos, base, out)
        try:
            self._load_object(data, chk, file)
        finally:
            result.diagnostics.extend(out)

    def _load_object(self, data: Any, chk: _Checker, file: str) -> None:  # noqa: PLR0914
        if not isinstance(data, dict):
            chk.error((), f"a manifest document must be a mapping (a Kubernetes object), not {_describe(data)}")
            return
        kind = data.get("kind")
        meta = data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if kind is None:
            chk.error(("kind",), f"required field is missing: every object needs apiVersion and kind ({SUPPORTED})")
            return
        if not isinstance(kind, str):
            chk.error(("kind",), f"must be a string, not {_describe(kind)}")
            return
        if kind not in KINDS:
            hint = None if kind in OTHER_KUBE_KINDS else _close(kind, KINDS)
            if hint:
                chk.error(("kind",), f"unknown kind {kind!r}; did you mean {hint!r}?")
            else:
                label = f"{kind} {name}" if isinstance(name, str) and name else kind
                chk.warn((), f"{label}: kind not supported, skipped (podplay supports {SUPPORTED})")
            return
        data = _drop_nulls(data)
        api = data.get("apiVersion")
        want = API_VERSIONS[kind]
        if api != want:
            if api is None:
                chk.error(("apiVersion",), f"required field is missing: a {kind} needs apiVersion: {want}")
            else:
                chk.error(("apiVersion",), f"a {kind} needs apiVersion {want!r}, not {json.dumps(api)}")
            data["apiVersion"] = want
        if kind in ("Pod", "Deployment") and "spec" not in data:
            chk.error(("spec",), f"required field is missing: a {kind} needs a spec with containers")
            data["spec"] = {"containers": []} if kind == "Pod" else {"selector": {}, "template": {}}

        # 1. schema: every error reported, then repaired in the copy so that checking can go on.
        cache = self.schema_cache
        cache_key = cache.key(kind, data) if cache is not None else ""
        if cache_key and cache_key in cache:
            errors = []
        else:
            validator = _validator(kind)
            errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
            if not errors and cache_key:
                cache.add(cache_key)
        root = _schema(kind) if errors else None
        for err in errors:
            if err.context:  # anyOf/oneOf: the most specific branch says most
                import jsonschema

                err = jsonschema.exceptions.best_match(err.context)
            for path, message, at_key in _schema_findings(err, root):
                chk.error(path, message, key=at_key)
        raw = data  # _drop_nulls made it a private copy: repairs and base64 decoding may change it
        for err in sorted(errors, key=lambda e: -len(e.absolute_path)):
            _repair(raw, err, root)
        if errors and any(True for _ in validator.iter_errors(raw)):
            self._remember(kind, raw)
            return  # could not repair: the findings above are all we can say
        b64 = ("data",) if kind == "Secret" else ("binaryData",) if kind == "ConfigMap" else ()
        _decode_b64_fields(raw, b64, chk)
        schema_paths = list(chk.paths)
        first_semantic = len(chk.out)

        # 2. the model, and the fields it has no place for.
        unused = convert.Unused()
        try:
            obj = convert.build(KINDS[kind], raw, unused=unused)
        except (TypeError, ValueError, KeyError, AttributeError):
            self._remember(kind, raw)
            return
        if not obj.metadata.namespace:
            obj = replace(obj, metadata=replace(obj.metadata, namespace="default"))
        self._unused_warnings(unused, raw, chk)
        self._podman_annotations(obj, chk)

        # 3. semantic checks; drop what repeats a schema finding at the same place.
        _check_object(chk, obj)
        if schema_paths:
            kept = [(d, p) for d, p in zip(chk.out[first_semantic:], chk.paths[first_semantic:], strict=True)
                    if not any(_related(p, s) for s in schema_paths)]
            del chk.out[first_semantic:], chk.paths[first_semantic:]
            for d, p in kept:
                chk.out.append(d)
                chk.paths.append(p)
        ok = not any(d.severity == Severity.ERROR for d in chk.out)
        line, col = chk.at(())
        loaded = Loaded(obj, file, line, col)
        self.entries.append(_Entry(loaded, chk.pos, chk.base, ok))
        if ok:
            self.result.objects.append(loaded)

    def _remember(self, kind: str, raw: dict) -> None:
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        if isinstance(meta.get("name"), str):
            self.known.add((kind, meta.get("namespace") or "default", meta["name"]))

    def _unused_warnings(self, unused: list[Path_], raw: dict, chk: _Checker) -> None:
        for path in unused:
            if path and path[0] == "status":
                continue
            if len(path) == 2 and path[0] == "metadata" and path[1] in SERVER_FIELDS:
                continue
            value = _get(raw, path)
            if value in ({}, [], "", None) or (path[-1] in UNUSED_DEFAULTS and value == UNUSED_DEFAULTS[path[-1]]):
                continue  # an empty or default value asks for nothing (exported YAML is full of them)
            pattern = convert.fmt_path(tuple("[]" if isinstance(p, int) else p for p in path)).replace(".[]", "[]")
            if pattern in self.warned:
                continue
            self.warned.add(pattern)
            chk.warn(path, UNUSED_MESSAGE, key=True)

    def _podman_annotations(self, obj, chk: _Checker) -> None:
        metas = [(("metadata",), obj.metadata)]
        if isinstance(obj, Deployment):
            metas.append((("spec", "template", "metadata"), obj.spec.template.metadata))
        for path, meta in metas:
            for k in meta.annotations:
                if k.startswith(PODMAN_ANNOTATION_PREFIXES) and f"annotation:{k}" not in self.warned:
                    self.warned.add(f"annotation:{k}")
                    chk.warn(path + ("annotations", k), PODMAN_MESSAGE, key=True)


# --- cross-object checks ---------------------------------------------------------------------------

def _where(e: _Entry, path: Path_ = ()) -> str:
    line, _ = e.pos.find(e.base + tuple(path))
    return f"{e.loaded.file}:{line}"


def _error(e: _Entry, path: Path_, message: str) -> Diagnostic:
    line, col = e.pos.find(e.base + tuple(path))
    return Diagnostic(Severity.ERROR, e.loaded.file, line, col, convert.fmt_path(tuple(path)), message)


def _pod_specs(o) -> Iterator[tuple[PodSpec, Path_]]:
    if isinstance(o, Pod):
        yield o.spec, ("spec",)
    elif isinstance(o, Deployment):
        yield o.spec.template.spec, ("spec", "template", "spec")


def _check_duplicates(entries: list[_Entry], out: list[Diagnostic]) -> None:
    by_key: dict[tuple, _Entry] = {}
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
    pods: dict[tuple[str, str], _Entry] = {}
    for e in entries:
        o = e.loaded.obj
        ns = o.metadata.namespace
        if isinstance(o, Pod):
            names = [o.metadata.name]
        elif isinstance(o, Deployment):
            names = [f"{o.metadata.name}-{i}" for i in range(min(o.spec.replicas, MAX_REPLICAS))]
        else:
            continue
        for name in names:
            other = pods.get((ns, name))
            if other is not None and other.loaded.obj.kind != o.kind:
                out.append(_error(e, name_path, f"pod name {name!r} is also produced by "
                                  f"{other.loaded.obj.kind} {other.loaded.obj.metadata.name!r} at "
                                  f"{_where(other, name_path)}"))
            pods.setdefault((ns, name), e)


def _check_references(entries: list[_Entry], known: set[tuple[str, str, str]], out: list[Diagnostic],
                      complete: bool) -> None:
    """ConfigMap/Secret references. When some file could not be read (`complete` false), a
    missing object may be in it: 'not found' would be a guess, so it is not said."""
    data: dict[tuple[str, str, str], set[str]] = {}
    for e in entries:
        o = e.loaded.obj
        if isinstance(o, ConfigMap | Secret):
            data[(o.kind, o.metadata.namespace, o.metadata.name)] = set(o.items())

    def lookup(kind: str, ns: str, name: str) -> set[str] | None | bool:
        """The keys; None when the object is missing; True when it exists but is unreadable."""
        if (kind, ns, name) in data:
            return data[(kind, ns, name)]
        if (kind, ns, name) in known or not complete:
            return True
        return None

    for e in entries:
        o = e.loaded.obj
        ns = o.metadata.namespace
        for spec, base in _pod_specs(o):
            for field_name, containers in (("initContainers", spec.init_containers), ("containers", spec.containers)):
                for i, c in enumerate(containers):
                    cp = base + (field_name, i)
                    for j, ef in enumerate(c.env_from):
                        ref, kind = (ef.config_map_ref, "ConfigMap") if ef.config_map_ref else (ef.secret_ref, "Secret")
                        if ref and not ref.optional and lookup(kind, ns, ref.name) is None:
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
                        keys = lookup(kind, ns, sel.name)
                        if keys is None:
                            out.append(_error(e, cp + ("env", j, "valueFrom", sname, "name"),
                                              f"{kind} {sel.name!r} not found (define it, or mark the reference "
                                              "optional: true)"))
                        elif keys is not True and sel.key not in keys:
                            hint = _close(sel.key, keys)
                            out.append(_error(e, cp + ("env", j, "valueFrom", sname, "key"),
                                              f"key {sel.key!r} not found in {kind} {sel.name!r}"
                                              + (f" (did you mean {hint!r}?)" if hint else "")))
            for i, v in enumerate(spec.volumes):
                for src, kind, fname, nname in ((v.config_map, "ConfigMap", "configMap", "name"),
                                                (v.secret, "Secret", "secret", "secretName")):
                    if src is None or src.optional:
                        continue
                    name = src.name if kind == "ConfigMap" else src.secret_name
                    keys = lookup(kind, ns, name)
                    if keys is None:
                        out.append(_error(e, base + ("volumes", i, fname, nname),
                                          f"{kind} {name!r} not found (define it, or mark the volume optional: true)"))
                        continue
                    if keys is True:
                        continue
                    for j, it in enumerate(src.items):
                        if it.key not in keys:
                            hint = _close(it.key, keys)
                            out.append(_error(e, base + ("volumes", i, fname, "items", j, "key"),
                                              f"key {it.key!r} not found in {kind} {name!r}"
                                              + (f" (did you mean {hint!r}?)" if hint else "")))
            for j, ref in enumerate(spec.image_pull_secrets):
                if lookup("Secret", ns, ref.name) is None:
                    line, col = e.pos.find(e.base + base + ("imagePullSecrets", j))
                    out.append(Diagnostic(Severity.WARNING, e.loaded.file, line, col,
                                          convert.fmt_path(base + ("imagePullSecrets", j)),
                                          f"Secret {ref.name!r} not found; pulling without it"))


def _host_bindings(e: _Entry) -> Iterator[tuple[str, int, str, Path_, str]]:
    """(hostIP, port, protocol, path, pod name) of every host port the object's pods bind."""
    o = e.loaded.obj
    for spec, base in _pod_specs(o):
        if isinstance(o, Deployment):
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


def _check_host_ports(entries: list[_Entry], out: list[Diagnostic]) -> None:
    """Two pods binding the same host port (on overlapping host IPs): only the first to start
    can have it. A warning, not an error: the engine applies pod by pod, and the other pods of
    the pass are fine (it reports the losing pod's failure then)."""
    wildcard = ("", "0.0.0.0", "::")
    seen: dict[tuple[int, str], list[tuple[str, _Entry, Path_, str]]] = {}
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


# --- entry points ------------------------------------------------------------------------------------

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


def _finish(run: _Run, complete: bool) -> None:
    out = run.result.diagnostics
    _check_duplicates(run.entries, out)
    _check_references(run.entries, run.known, out, complete)
    _check_host_ports(run.entries, out)


def load_manifests(paths: Sequence[str], *, stdin_text: str | None = None,
                   schema_cache: str | Path | None = None) -> ManifestSet:
    """Read every manifest under `paths`; never raises for bad input. `schema_cache` names a
    file that remembers documents which passed their schema (see SchemaCache)."""
    files, problems = find_manifest_files(paths)
    result = ManifestSet(files=files, diagnostics=list(problems))
    result.unreadable.extend(d.file for d in problems)
    cache = SchemaCache(schema_cache) if schema_cache is not None else None
    run = _Run(result, cache)
    for file in files:
        text = _read(file, stdin_text)
        if isinstance(text, Diagnostic):
            result.diagnostics.append(text)
            result.unreadable.append(file)
            continue
        docs = []
        for item in parse_documents(text, file):
            if isinstance(item, Diagnostic):
                result.diagnostics.append(item)
                if file not in result.unreadable:
                    result.unreadable.append(file)
            else:
                docs.append(item)
        run.load(docs, file)
    _finish(run, complete=not result.unreadable)
    if files and not result.objects and not result.errors:
        result.diagnostics.append(Diagnostic(Severity.ERROR, files[0] if len(files) == 1 else ", ".join(paths), 0, 0,
                                             "", f"no supported object ({SUPPORTED}) found"))
    if cache is not None:
        cache.save()
    return result



@dataclass
class FileLoad:
    """One file loaded on its own, for callers that cache files between loads (``podplay watch``
    re-reads only the files that changed). ``combine_files`` runs the cross-object checks over a
    set of them and gives what ``load_manifests`` would have given for those versions."""

    file: str
    objects: list[Loaded] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # this file's own findings
    unreadable: bool = False
    documents: int = 0  # documents that held anything (0: the file is empty or only comments)
    _entries: list[_Entry] = field(default_factory=list, repr=False)
    _known: set[tuple[str, str, str]] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        return not any(d.severity == Severity.ERROR for d in self.diagnostics)


def load_file(file: str, text: str | None = None) -> FileLoad:
    """Read one manifest file (or parse `text` as its content) without the cross-object checks."""
    if text is None:
        read = _read(file, None)
        if isinstance(read, Diagnostic):
            return FileLoad(file, diagnostics=[read], unreadable=True)
        text = read
    result = ManifestSet(files=[file])
    run = _Run(result)
    docs = []
    unreadable = False
    for item in parse_documents(text, file):
        if isinstance(item, Diagnostic):
            result.diagnostics.append(item)
            unreadable = True
        else:
            docs.append(item)
    run.load(docs, file)
    return FileLoad(file, result.objects, result.diagnostics, unreadable, len(docs), run.entries, run.known)


def combine_files(loads: Sequence[FileLoad], *, complete: bool = True) -> ManifestSet:
    """The files' objects and findings plus the cross-object checks (duplicates, references, host
    ports) over all of them. `complete` false: some source is unknown, so "not found" is not said."""
    result = ManifestSet(files=[f.file for f in loads])
    run = _Run(result)
    once: set[tuple[str, str]] = set()
    for f in loads:
        result.objects.extend(f.objects)
        for d in f.diagnostics:
            # "accepted but not acted on" and podman-annotation warnings: once per run, as in
            # load_manifests, although each file was loaded on its own.
            if d.severity == Severity.WARNING and d.message in (UNUSED_MESSAGE, PODMAN_MESSAGE, DISK_LIMIT_MESSAGE):
                pattern = (d.message, re.sub(r"\[\d+\]", "[]", d.path))
                if pattern in once:
                    continue
                once.add(pattern)
            result.diagnostics.append(d)
        run.entries.extend(f._entries)
        run.known |= f._known
        if f.unreadable:
            result.unreadable.append(f.file)
    _finish(run, complete)
    return result

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


def load_objects(items: Iterable[Any], source: str = "<python>") -> ManifestSet:
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
    result = ManifestSet(files=[source])
    run = _Run(result)
    run.load(docs, source)
    _finish(run, complete=True)
    return result
