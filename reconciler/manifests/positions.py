"""Where things are in a manifest: field paths and their (line, column) marks.

Every finding names a place; these are the types that carry places from the readers (YAML,
JSON) to the checks.
"""

from __future__ import annotations

Path_ = tuple  # a field path: ("spec", "containers", 0, "image")

MAX_DEPTH = 100  # nesting of one document; kube objects need about 15
MAX_VALUES = 200_000  # values in one document, aliases expanded (stops "billion laughs")


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


class DocError(Exception):
    """A document that cannot be read on: where, and why."""

    def __init__(self, line: int, column: int, message: str, path: Path_ = ()):
        super().__init__(message)
        self.line, self.column, self.message, self.path = line, column, message, path
