"""Which files a set of manifest paths names: the walking rules, kept light.

`podplay up` uses them twice: to load the manifests, and before that to check cheaply whether
anything changed since the last converged pass (reconciler.converged), which must not pay for
the YAML parser, the schema or the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reconciler.errors import Diagnostic, Severity

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _is_skipped(name: str) -> bool:
    """Hidden files (and editor locks like .#x.yaml), editor backups and swap files."""
    return (name.startswith((".", "#"))
            or name.endswith(("~", "#", ".swp", ".swo", ".swx", ".swn", ".bak", ".orig", ".rej", ".tmp")))


def find_manifest_files(paths: Sequence[str]) -> tuple[list[str], list[Diagnostic]]:
    """Files named directly are always read; directories are walked recursively in sorted order
    (a directory's own files first, then its sub-directories), skipping hidden entries."""
    files: list[str] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if raw == "-":
            files.append("-")
        elif p.is_dir():
            found = _walk(raw, problems)
            if not found:
                problems.append(Diagnostic(Severity.ERROR, raw, 0, 0, "",
                                           "no manifest files (*.yaml, *.yml, *.json) in this directory"))
            files.extend(found)
        elif p.exists():
            files.append(raw)
        else:
            problems.append(Diagnostic(Severity.ERROR, raw, 0, 0, "", "no such file or directory"))
    seen: set[str] = set()
    unique = []
    for f in files:
        k = f if f == "-" else os.path.realpath(f)
        if k not in seen:
            seen.add(k)
            unique.append(f)
    return unique, problems


def _walk(top: str, problems: list[Diagnostic]) -> list[str]:
    found: list[str] = []
    visited: set[str] = set()

    def failed(exc: OSError) -> None:
        problems.append(Diagnostic(Severity.ERROR, exc.filename or top, 0, 0, "",
                                   f"cannot read directory: {exc.strerror or exc}"))

    # Symlinked directories are followed (a common way to share manifests), once each.
    for dirpath, dirnames, filenames in os.walk(top, onerror=failed, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_skipped(d))
        for name in sorted(filenames):
            if name.endswith(MANIFEST_SUFFIXES) and not _is_skipped(name):
                found.append(os.path.join(dirpath, name))
    return found
