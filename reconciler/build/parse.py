"""Containerfile (Dockerfile) text → instructions, and the build's variable expansion. PURE.

The format is small enough to read by hand: a ``# escape=`` parser directive, comments, line
continuations with the escape character (comment lines inside a continued instruction are
dropped, as BuildKit does), ``INSTRUCTION [--flag=value]… arguments``, the exec form as a JSON
array, and heredocs (``<<EOF``, ``<<-EOF``, quoted terminators) after RUN, COPY and ADD.

Expansion follows the Dockerfile shell lexer (not a shell): ``$VAR``, ``${VAR}``,
``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``, ``${VAR+word}``; single quotes keep ``$``
literal, the escape character keeps the next character literal. ``words`` splits and expands in
one pass, so a value's spaces never split it into two words.

Every error is a ``BuildError`` naming the file, the line and the instruction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from reconciler.errors import InputError

INSTRUCTIONS = frozenset({"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
                          "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
                          "HEALTHCHECK", "SHELL"})
# Flags each instruction takes (anything else is an error, as in buildah).
FLAGS = {"FROM": {"platform"}, "RUN": {"network", "mount", "security"},
         "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
         "ADD": {"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"},
         "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"}}
HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_HEREDOC_RE = re.compile(r"<<(-?)(?:\"([^\"]+)\"|'([^']+)'|([A-Za-z_][A-Za-z0-9_]*))")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BuildError(InputError):
    """The Containerfile or the build's inputs are wrong (permanent: fix the input)."""

    def __init__(self, message: str, file: str = "", line: int = 0, instruction: str = ""):
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        what = f"{instruction}: " if instruction else ""
        super().__init__(f"{where}{what}{message}")
        self.file, self.line, self.instruction = file, line, instruction


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool  # an unquoted terminator: the content is expanded (by the shell for RUN)
    chomp: bool  # <<- : leading tabs were removed


@dataclass(frozen=True)
class Instruction:
    command: str  # upper case
    args: str  # the text after the command and its flags, continuations joined
    line: int  # where the instruction starts
    flags: tuple[tuple[str, str], ...] = ()
    heredocs: tuple[Heredoc, ...] = ()
    original: str = ""  # the instruction as written (one line), for history and messages

    @property
    def json(self) -> list[str] | None:
        """The exec form (a JSON array of strings), or None for the shell form."""
        return exec_form(self.args)

    def flag(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.flags:
            if k == name:
                return v
        return default


@dataclass(frozen=True)
class Containerfile:
    path: str
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)


def exec_form(text: str) -> list[str] | None:
    text = text.strip()
    if not text.startswith("["):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None  # Docker runs a malformed array as the shell form
    if isinstance(doc, list) and all(isinstance(x, str) for x in doc):
        return doc
    return None


def parse_containerfile(text: str, path: str = "Containerfile") -> Containerfile:
    lines = text.splitlines()
    directives: dict[str, str] = {}
    i = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
    while i < len(lines):
        m = _DIRECTIVE_RE.match(lines[i])
        if not m or m.group(1).lower() in directives:
            break
        directives[m.group(1).lower()] = m.group(2)
        i += 1
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise BuildError(f"the escape directive must be \\ or ` (got {escape!r})", path, 1)
    out: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts = []
        line = raw.lstrip()
        while True:
            body = line.rstrip()
            if body.endswith(escape):
                parts.append(body[:-1])
                i += 1
                # Skip comment and blank lines inside a continuation.
                while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= len(lines):
                    break
                line = lines[i]
                continue
            parts.append(line)
            i += 1
            break
        joined = "".join(parts).strip()
        instruction, i = _instruction(joined, start, path, lines, i)
        out.append(instruction)
    return Containerfile(path, tuple(out), escape, directives)


def _instruction(text: str, line: int, path: str, lines: list[str], i: int) -> tuple[Instruction, int]:
    word, _, rest = text.partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + " " + rest
    command = word.upper()
    if command not in INSTRUCTIONS:
        raise BuildError(f"unknown instruction {word!r} (known: {', '.join(sorted(INSTRUCTIONS))})", path, line)
    rest = rest.strip()
    flags: list[tuple[str, str]] = []
    allowed = FLAGS.get(command, set())
    while rest.startswith("--"):
        flag, _, after = rest.partition(" ")
        name, sep, value = flag[2:].partition("=")
        if name not in allowed:
            raise BuildError(f"unknown flag --{name}" + (f" (takes {', '.join('--' + f for f in sorted(allowed))})"
                                                        if allowed else " (it takes no flags)"),
                             path, line, command)
        if not sep:
            raise BuildError(f"--{name} needs a value (--{name}=VALUE)", path, line, command)
        flags.append((name, value))
        rest = after.strip()
    heredocs: list[Heredoc] = []
    if command in HEREDOC_INSTRUCTIONS and exec_form(rest) is None:
        for m in _HEREDOC_RE.finditer(rest):
            chomp = m.group(1) == "-"
            name = m.group(2) or m.group(3) or m.group(4)
            body: list[str] = []
            while True:
                if i >= len(lines):
                    raise BuildError(f"heredoc <<{name} is not terminated (no line {name!r} follows)",
                                     path, line, command)
                current = lines[i]
                i += 1
                if (current.lstrip("\t") if chomp else current) == name:
                    break
                body.append(current.lstrip("\t") if chomp else current)
            heredocs.append(Heredoc(name, "".join(b + "\n" for b in body), m.group(4) is not None, chomp))
    if not rest:
        raise BuildError("needs arguments", path, line, command)
    return Instruction(command, rest, line, tuple(flags), tuple(heredocs), text), i


# --- expansion ------------------------------------------------------------------------------------

def words(text: str, env: dict[str, str], escape: str = "\\", *, expand: bool = True) -> list[str]:
    """Split ``text`` into words as the Dockerfile lexer does, expanding variables from ``env``
    (quotes removed; an expanded value is never split)."""
    out: list[str] = []
    cur: list[str] = []
    have = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            if have:
                out.append("".join(cur))
                cur, have = [], False
            i += 1
            continue
        have = True
        if c == escape and i + 1 < n:
            cur.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated single quote")
            cur.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated double quote")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == escape and i + 1 < n and text[i + 1] in ('"', escape, "$"):
                    cur.append(text[i + 1])
                    i += 2
                elif c == "$" and expand:
                    value, i = _variable(text, i, env, escape)
                    cur.append(value)
                else:
                    cur.append(c)
                    i += 1
        elif c == "$" and expand:
            value, i = _variable(text, i, env, escape)
            cur.append(value)
        else:
            cur.append(c)
            i += 1
    if have:
        out.append("".join(cur))
    return out


def expand(text: str, env: dict[str, str], escape: str = "\\") -> str:
    """``text`` with its variables expanded, quotes and spacing kept (for WORKDIR, USER…):
    only the escape character before ``$`` is consumed."""
    out: list[str] = []
    i, n = 0, len(text)
    quote = ""
    while i < n:
        c = text[i]
        if c == escape and i + 1 < n and text[i + 1] == "$":
            out.append("$")
            i += 2
        elif c == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
            out.append(c)
            i += 1
        elif c == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
            out.append(c)
            i += 1
        elif c == "$" and quote != "'":
            value, i = _variable(text, i, env, escape)
            out.append(value)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _variable(text: str, i: int, env: dict[str, str], escape: str) -> tuple[str, int]:
    """The value of the variable reference at ``text[i] == '$'`` and the index after it."""
    n = len(text)
    if i + 1 >= n:
        return "$", i + 1
    if text[i + 1] == "{":
        end = _closing_brace(text, i + 2)
        if end < 0:
            raise ValueError(f"missing '}}' in {text[i:]!r}")
        inner = text[i + 2:end]
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])(.*))?$", inner, re.DOTALL)
        if not m:
            raise ValueError(f"bad substitution ${{{inner}}}")
        name, op, word = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op is None:
            return value or "", end + 1
        word_value = "".join(words_keep_spaces(word, env, escape))
        if op == ":-":
            return (value if value else word_value), end + 1
        if op == "-":
            return (value if value is not None else word_value), end + 1
        if op == ":+":
            return (word_value if value else ""), end + 1
        return (word_value if value is not None else ""), end + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1:])
    if not m:
        return "$", i + 1
    return env.get(m.group(0), ""), i + 1 + m.end()


def words_keep_spaces(text: str, env: dict[str, str], escape: str) -> list[str]:
    return [expand(text, env, escape)]


def _closing_brace(text: str, i: int) -> int:
    depth = 1
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def key_values(text: str, env: dict[str, str], escape: str = "\\") -> list[tuple[str, str]]:
    """ENV/LABEL/ARG pairs: ``K=V K2="v 2"``, or the legacy ``K value with spaces`` (one pair)."""
    ws = words(text, env, escape)
    if not ws:
        return []
    if "=" not in ws[0]:
        key, _, rest = text.strip().partition(" ")
        if not rest.strip():
            return [(key, "")]
        return [(key, " ".join(words(rest, env, escape)))]
    pairs = []
    for w in ws:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise ValueError(f"{w!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))
