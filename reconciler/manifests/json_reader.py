"""JSON manifests, read as Kubernetes reads them, keeping the position of every value and key."""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterator
from typing import Any

from reconciler.errors import Diagnostic, Severity
from reconciler.manifests.positions import MAX_DEPTH, MAX_VALUES, DocError, Path_, Positions
from reconciler.model import convert

_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")


class JSONReader:
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
        raise DocError(*self.where(offset), f"JSON syntax error: {message}")

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
        if depth > MAX_DEPTH:
            self.fail(i, "document nested too deeply")
        if self.count > MAX_VALUES:
            self.fail(i, f"document has more than {MAX_VALUES} values")
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


def json_documents(text: str, file: str) -> Iterator[tuple[Any, Positions] | Diagnostic]:
    reader = JSONReader(text)
    docs = reader.documents()
    while True:
        try:
            doc = next(docs)
        except StopIteration:
            return
        except DocError as exc:
            yield Diagnostic(Severity.ERROR, file, exc.line, exc.column, "", exc.message)
            return
        except RecursionError:
            yield Diagnostic(Severity.ERROR, file, 0, 0, "", "JSON syntax error: document nested too deeply")
            return
        for line, col, path, message in reader.problems:
            yield Diagnostic(Severity.ERROR, file, line, col, convert.fmt_path(path), message)
        reader.problems = []
        yield doc

