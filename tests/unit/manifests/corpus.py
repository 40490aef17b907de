"""The manifest corpora's expectation format, shared by the corpus tests.

A single-file case carries its expectations in its own header comments::

    # expect: 9:7 error spec.containers[0].imagee: unknown field 'imagee'

that is ``LINE:COLUMN SEVERITY PATH: FRAGMENT``, where PATH is the field path (``-`` for none) and
FRAGMENT must occur in the message. A case that needs several files is a directory whose
``expect.txt`` holds the same lines prefixed by the file, relative to the directory
(``b.yaml:4:9 error metadata.name: defined twice``; ``.`` is the directory itself). In
messages, the case directory's own path is written relative (``at a.yaml:4``).

Valid cases may also list ``# objects: Pod/default/web ConfigMap/default/cfg``: exactly the
objects that must load. A case with a ``# strict`` line (``strict`` in ``expect.txt``) is loaded
as ``--strict`` loads it: podman's dialect is an error.

To draft the lines for a new case, run ``python -m tests.unit.manifests.corpus CASE``; it prints
what the loader says now. Read every line before pasting it: the corpus states what a user
should see, not what the code happens to print.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import Diagnostic
from reconciler.manifests import ManifestSet, load_manifests

CORPUS = Path(__file__).resolve().parents[1] / "corpus"

_LINE = re.compile(r"^(?:(?P<file>[^\s:]+):)?(?P<line>\d+):(?P<col>\d+) (?P<sev>error|warning) "
                   r"(?P<path>\S+): (?P<msg>.+)$")


@dataclass(frozen=True)
class Expected:
    file: str  # relative to the case directory ("" for a single-file case)
    line: int
    column: int
    severity: str
    path: str
    fragment: str

    def __str__(self) -> str:
        where = f"{self.file}:" if self.file else ""
        return f"{where}{self.line}:{self.column} {self.severity} {self.path or '-'}: {self.fragment}"


def parse_line(text: str) -> Expected:
    m = _LINE.match(text.strip())
    if not m:
        raise ValueError(f"not an expectation line: {text!r}")
    path = "" if m["path"] == "-" else m["path"]
    return Expected(m["file"] or "", int(m["line"]), int(m["col"]), m["sev"], path, m["msg"])


def cases(kind: str) -> list[Path]:
    """The cases of corpus/<kind>: files and directories, sorted."""
    root = CORPUS / kind
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def expectations(case: Path) -> tuple[list[Expected], list[str] | None]:
    """(expected diagnostics, expected object keys or None) of a case."""
    if case.is_dir():
        lines = (case / "expect.txt").read_text().splitlines()
        prefix = ""
    else:
        lines = [ln for ln in case.read_text().splitlines() if ln.startswith("#")]
        prefix = "#"
    expected, objects = [], None
    for ln in lines:
        body = ln[len(prefix):].strip()
        if body.startswith("expect:"):
            expected.append(parse_line(body[len("expect:"):]))
        elif body.startswith("objects:"):
            objects = body[len("objects:"):].split()
        elif not prefix and body and not body.startswith("#") and body != "strict":
            expected.append(parse_line(body))
    return expected, objects


def is_strict(case: Path) -> bool:
    if case.is_dir():
        return "strict" in (ln.strip() for ln in (case / "expect.txt").read_text().splitlines())
    return any(ln.strip() == "# strict" for ln in case.read_text().splitlines())


def load_case(case: Path) -> ManifestSet:
    return load_manifests([str(case)], strict=is_strict(case))


def actual(case: Path, result: ManifestSet) -> list[tuple[Expected, Diagnostic]]:
    """Each diagnostic in the expectation form (file relative to the case, full message)."""
    base = str(case) + "/" if case.is_dir() else ""
    out = []
    for d in result.diagnostics:
        if case.is_dir():
            rel = "." if d.file == str(case) else d.file[len(base):] if d.file.startswith(base) else d.file
        else:
            rel = ""
        message = d.message.replace(base, "") if base else d.message.replace(str(case), case.name)
        out.append((Expected(rel, d.line, d.column, str(d.severity), d.path, message), d))
    return out


def mismatch(expected: list[Expected], got: list[Expected]) -> tuple[list[Expected], list[Expected]]:
    """(expected but missing, reported but not expected); both empty when they agree exactly."""
    unmatched = list(got)
    missing = []
    for e in expected:
        for g in unmatched:
            if ((g.file, g.line, g.column, g.severity, g.path) == (e.file, e.line, e.column, e.severity, e.path)
                    and e.fragment in g.fragment):
                unmatched.remove(g)
                break
        else:
            missing.append(e)
    return missing, unmatched


def main(argv: list[str]) -> None:
    for arg in argv:
        case = Path(arg).resolve()
        result = load_case(case)
        print(f"== {case.name}")
        for e, _ in actual(case, result):
            print(("" if case.is_dir() else "# expect: ") + str(e))
        for o in result.objects:
            print(f"   object {o.key} ({o.file}:{o.line})")


if __name__ == "__main__":
    main(sys.argv[1:])
