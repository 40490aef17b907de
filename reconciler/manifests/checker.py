"""How the checks report: a Checker turns (field path, message) into a located Diagnostic.

Every check receives the Checker of the object it looks at and calls ``error``/``warn`` with a
path relative to the object; the Checker finds the line and column. A warning that would say the
same thing about every pod ("this field is not acted on") is a ``warn_once``: the loader shows the
first of its kind in a load, and drops the rest (see ``loader.said_once``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.errors import Diagnostic, Severity
from reconciler.manifests.positions import Path_, Positions
from reconciler.model import convert


@dataclass(frozen=True)
class Finding:
    """One diagnostic; `once` is set for a warning shown once per load (equal keys: the first wins)."""

    diagnostic: Diagnostic
    once: str = ""
    dialect: bool = False  # podman's spelling of something Kubernetes spells otherwise (see Checker.dialect)


# What a podman-only value gets told: it runs, but a cluster would refuse the same file.
DIALECT_MESSAGE = "would be rejected by a Kubernetes API server: use {fix}"


class Checker:
    """Collects the findings about one object; `base` locates the object inside its document."""

    def __init__(self, file: str, pos: Positions, base: Path_ = ()):
        self.file, self.pos, self.base = file, pos, base
        self.findings: list[Finding] = []
        self.paths: list[Path_] = []  # parallel to findings: the path each one is about

    def error(self, path: Path_, message: str, key: bool = False) -> None:
        self.report(Severity.ERROR, path, message, key)

    def warn(self, path: Path_, message: str, key: bool = False) -> None:
        self.report(Severity.WARNING, path, message, key)

    def warn_once(self, path: Path_, message: str, key: bool = False, same: str = "") -> None:
        """A warning shown once per load for every place of the same shape (list indices do not
        count), or for everything that names the same `same`."""
        shape = same or re.sub(r"\[\d+\]", "[]", convert.fmt_path(tuple(path)))
        self.report(Severity.WARNING, path, message, key, once=f"{message}\0{shape}")

    def dialect(self, path: Path_, fix: str, key: bool = False) -> None:
        """Something `podman kube play` accepts and podplay runs as podman would, but which an API
        server refuses: a warning by default, an error with ``--strict`` (see loader.said_once).
        `fix` is the Kubernetes spelling, e.g. "'udp' → 'UDP'". Said once per load for each fix."""
        message = DIALECT_MESSAGE.format(fix=fix)
        self.report(Severity.WARNING, path, message, key, once=f"dialect\0{message}", dialect=True)

    def report(self, sev: Severity, path: Path_, message: str, key: bool = False, once: str = "",
               dialect: bool = False) -> None:
        path = tuple(path)
        line, col = self.pos.find(self.base + path, key=key)
        self.findings.append(Finding(Diagnostic(sev, self.file, line, col, convert.fmt_path(path), message), once,
                                     dialect))
        self.paths.append(path)

    def at(self, path: Path_) -> tuple[int, int]:
        return self.pos.find(self.base + tuple(path))

    @property
    def failed(self) -> bool:
        """An error was found; a dialect warning does not fail the object here: with --strict the
        load as a whole fails (said_once makes it an error), the object itself stays buildable."""
        return any(f.diagnostic.severity == Severity.ERROR for f in self.findings)


# --- phrasing ------------------------------------------------------------------------------------

_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "a boolean (true/false)", "null": "null"}


def type_words(types: str | list[str]) -> str:
    return " or ".join(_TYPE_WORDS.get(t, t) for t in (types if isinstance(types, list) else [types]))


QUOTE_LIMIT = 60  # characters of a value an error quotes back


def quote(value: Any) -> str:
    """A value as JSON for a message, cut short: errors name a value, they do not copy a file."""
    text = json.dumps(value, default=str)
    if len(text) <= QUOTE_LIMIT:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as JSON"
    return f"{text[:QUOTE_LIMIT - 20]}… ({size})"


def describe(value: Any) -> str:
    """What a value is, in words: 'a string ("x")', 'a list'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({quote(value)})"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def close(word: str, options: Iterable[str]) -> str | None:
    """The option `word` was probably meant to be (for 'did you mean …?'), or None."""
    options = list(options)
    for o in options:
        if o.lower() == word.lower():
            return o
    import difflib  # only for a misspelled key: 0.5 MB a keeper need not hold

    hint = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    return hint[0] if hint else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close option exists, else ''."""
    hint = close(word, options)
    return f" (did you mean {hint!r}?)" if hint else ""
