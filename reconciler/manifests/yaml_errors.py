"""PyYAML's syntax errors, reworded: where the mistake is and what would fix it."""

from __future__ import annotations

import re


def line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    return line + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1



def yaml_problem(exc, text: str) -> tuple[int, int, str]:
    """A PyYAML/libyaml error as (line, column, message in words a user acts on)."""
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):
        line, col = line_col(text, exc.position) if exc.position <= len(text) else (0, 0)
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
        line, col = line_col(text, len(text.rstrip()) - 1) if text.strip() else (line, col)
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

