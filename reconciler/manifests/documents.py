"""Manifest text → documents: plain data plus where every value and key was written.

YAML is read as Kubernetes reads it (YAML 1.1 scalars, strict about duplicate keys); ``*.json``
files are read by a JSON reader (``json_reader``), because Kubernetes reads them with a JSON
decoder. Syntax errors become Diagnostics in words a user acts on (``yaml_errors``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from reconciler.errors import Diagnostic, Severity
from reconciler.manifests.checker import quote
from reconciler.manifests.json_reader import json_documents
from reconciler.manifests.positions import MAX_DEPTH, MAX_VALUES, DocError, Path_, Positions
from reconciler.manifests.yaml_errors import yaml_problem
from reconciler.model import convert

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
        if depth > MAX_DEPTH:
            raise DocError(*where, "document nested too deeply", path)
        if self.count > MAX_VALUES:
            raise DocError(*where, f"document has more than {MAX_VALUES} values (aliases expanded)", path)
        pos[path] = where
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.inside:
            raise DocError(*where, "an alias here refers to a mapping or list that contains it (a loop)", path)
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
            raise DocError(*where, f"unsupported YAML tag {tag!r}; remove it (Kubernetes reads plain values)", path)
        try:
            value = self.constructor.yaml_constructors[tag](self.constructor, node)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad value in the input
            raise DocError(*where, f"cannot read value {quote(node.value)}: {exc}", path) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise DocError(*where, f"{node.value!r} is not a number Kubernetes accepts", path)
        return value

    def key(self, node, path: Path_) -> str:
        yaml = self.yaml
        mark = node.start_mark
        if not isinstance(node, yaml.ScalarNode):
            what = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            raise DocError(mark.line + 1, mark.column + 1, f"a mapping key must be text, not {what}", path)
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
                    raise DocError(m.line + 1, m.column + 1,
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
            line, col, message = yaml_problem(exc, text)
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
        except DocError as exc:
            yield Diagnostic(Severity.ERROR, file, exc.line, exc.column, convert.fmt_path(exc.path), exc.message)
            continue
        except RecursionError:
            yield Diagnostic(Severity.ERROR, file, node.start_mark.line + 1, 1, "", "document nested too deeply")
            continue
        for line, col, path, message in builder.problems:
            yield Diagnostic(Severity.ERROR, file, line, col, convert.fmt_path(path), message)
        if data is not None:
            yield data, pos



def parse_documents(text: str, file: str) -> Iterator[tuple[Any, Positions] | Diagnostic]:
    """Each document as (data, positions), or a Diagnostic. A syntax error ends the file.

    ``*.json`` files are read as JSON; stdin (``-``) is read as JSON when it is valid JSON.
    """
    if file.endswith(".json"):
        yield from json_documents(text, file)
        return
    if file == "-" and text.lstrip()[:1] in ("{", "["):
        items = list(json_documents(text, file))
        if not any(isinstance(d, Diagnostic) for d in items):
            yield from items
            return
    yield from _yaml_documents(text, file)
