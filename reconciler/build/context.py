"""The build context: what COPY and ADD may read, and nothing else.

- ``.containerignore`` (else ``.dockerignore``) patterns, Docker's rules: Go ``filepath.Match``
  globs with ``**`` for any number of directories, ``!`` re-includes, the last match wins, a
  pattern matches a path or anything under it.
- Sources are resolved inside the context as if it were ``/``: ``..`` stops at the context's
  root and a symlink met on the way is followed *within* the context (so a link to ``/etc``
  names the context's ``etc``, which does not exist). A source that is itself a symlink is
  resolved the same way; symlinks found while walking a copied directory are copied as links.
- Files are opened with ``O_NOFOLLOW`` after resolution, so a link swapped in meanwhile is refused.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from reconciler.build.parse import BuildError

MAX_LINKS = 40


def _glob_re(pattern: str) -> re.Pattern:
    """A Docker ignore pattern (cleaned, no leading /) as a regex matching the path or below."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append(fnmatch.translate(f"[{body}]")[4:-3])
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "(?:/.*)?$", re.DOTALL)


@dataclass(frozen=True)
class IgnoreRules:
    rules: tuple[tuple[bool, re.Pattern], ...] = ()  # (exclude?, pattern)
    source: str = ""

    def ignored(self, rel: str) -> bool:
        """Is ``rel`` (a path relative to the context, / separated) excluded?"""
        out = False
        for exclude, pattern in self.rules:
            if pattern.match(rel):
                out = exclude
        return out

    def may_include_below(self, rel: str) -> bool:
        """Could something under the ignored directory ``rel`` be re-included by a ``!`` rule?"""
        return any(not exclude for exclude, _ in self.rules)

    @classmethod
    def load(cls, context: Path, containerfile_name: str = "") -> IgnoreRules:
        for name in ([containerfile_name + ".containerignore", containerfile_name + ".dockerignore"]
                     if containerfile_name else []) + [".containerignore", ".dockerignore"]:
            path = context / name
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise BuildError(f"cannot read it: {exc}", str(path)) from None
            return cls.parse(text, str(path))
        return cls()

    @classmethod
    def parse(cls, text: str, source: str = "") -> IgnoreRules:
        rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclude = True
            if line.startswith("!"):
                exclude, line = False, line[1:].strip()
            cleaned = os.path.normpath(line).lstrip("/")
            if cleaned in ("", "."):
                cleaned = "**"
            rules.append((exclude, _glob_re(cleaned)))
        return cls(tuple(rules), source)


class Context:
    def __init__(self, root: str | os.PathLike, ignore: IgnoreRules | None = None):
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise BuildError(f"the build context {root} is not a directory")
        self.ignore = ignore or IgnoreRules()

    def resolve(self, rel: str) -> str:
        """``rel`` resolved inside the context as if the context were ``/``: a context-relative
        path with no symlink component (except possibly the last, which is followed too)."""
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue  # `..` at the context's root stays at the root
            candidate = os.path.join(self.root, *done, part)
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                done.append(part)
                done.extend(p for p in parts)
                return "/".join(done)
            except OSError as exc:
                raise BuildError(f"cannot read {rel} in the build context: {exc.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise BuildError(f"too many levels of symbolic links resolving {rel} in the build context")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/".join(done)

    def path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def glob(self, pattern: str) -> list[str]:
        """Context-relative paths (resolved, not ignored) that ``pattern`` names, sorted."""
        cleaned = "/".join(p for p in pattern.replace("\\", "/").split("/") if p not in ("", "."))
        if not any(ch in cleaned for ch in "*?["):
            rel = self.resolve(cleaned)
            if not os.path.lexists(self.path(rel)) or (rel and self.ignore.ignored(rel)):
                return []
            return [rel]
        # Globs match entry by entry from the root, each directory resolved in the context.
        found = [""]
        for part in [p for p in cleaned.split("/") if p]:
            nxt = []
            for base in found:
                if part == "..":
                    nxt.append(self.resolve(base + "/.."))
                    continue
                d = self.path(base)
                try:
                    names = sorted(os.listdir(d))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                for name in names:
                    if fnmatch.fnmatchcase(name, part) if any(c in part for c in "*?[") else name == part:
                        nxt.append(self.resolve(f"{base}/{name}" if base else name))
            found = nxt
        return sorted({f for f in found if f and not self.ignore.ignored(f)})

    def walk(self, rel: str):
        """(context-relative path, lstat) for ``rel`` and, for a directory, everything under it
        that is not ignored, sorted; symlinks are not followed."""
        top = self.path(rel)
        st = os.lstat(top)
        yield rel, st
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [rel]
        while stack:
            d = stack.pop()
            try:
                names = sorted(os.listdir(self.path(d)))
            except OSError as exc:
                raise BuildError(f"cannot list {d or '.'} in the build context: {exc.strerror}") from None
            entries = []
            for name in names:
                child = f"{d}/{name}" if d else name
                if self.ignore.ignored(child):
                    if os.path.isdir(self.path(child)) and not os.path.islink(self.path(child)) and \
                            self.ignore.may_include_below(child):
                        # An ignored directory can hold a re-included path: walk it, but
                        # emit only what is not ignored.
                        stack.append(child)
                    continue
                entries.append((child, os.lstat(self.path(child))))
            for child, cst in entries:
                yield child, cst
            stack.extend(sorted((c for c, s in entries if stat.S_ISDIR(s.st_mode)), reverse=True))

    def open(self, rel: str):
        fd = os.open(self.path(rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return os.fdopen(fd, "rb")
