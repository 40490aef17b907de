"""Containerfile parsing and the build's variable expansion (pure, table-driven)."""

from __future__ import annotations

import pytest

from reconciler.build.context import IgnoreRules
from reconciler.build.parse import BuildError, expand, key_values, parse_containerfile, words

ENV = {"A": "a", "EMPTY": "", "SP": "x y"}


@pytest.mark.parametrize(("text", "expected"), [
    ("$A", ["a"]),
    ("${A}b", ["ab"]),
    ("${MISSING:-def}", ["def"]),
    ("${EMPTY:-def}", ["def"]),
    ("${EMPTY-def}", [""]),
    ("${A:+alt}", ["alt"]),
    ("${MISSING:+alt}", [""]),
    ("${MISSING+alt}", [""]),
    ("'$A'", ["$A"]),
    ('"$A b"', ["a b"]),
    ("\\$A", ["$A"]),
    ("$SP z", ["x y", "z"]),  # an expanded value is never split
    ("a\\ b c", ["a b", "c"]),
    ("$", ["$"]),
    ("${MISSING}", [""]),
])
def test_words(text, expected):
    assert words(text, ENV) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("/app/$A", "/app/a"),
    ("'$A' \"$A\"", "'$A' \"a\""),
    ("\\$A", "$A"),
])
def test_expand_keeps_quotes_and_spaces(text, expected):
    assert expand(text, ENV) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("A=1 B=2", [("A", "1"), ("B", "2")]),
    ('A="x y" B=$A', [("A", "x y"), ("B", "a")]),
    ("A some value", [("A", "some value")]),
    ("A=", [("A", "")]),
])
def test_key_values(text, expected):
    assert key_values(text, ENV) == expected


def test_bad_substitution_is_an_error():
    with pytest.raises(ValueError):
        words("${A", ENV)
    with pytest.raises(ValueError):
        words("'open", ENV)


def test_parse_continuations_comments_flags_and_exec_form():
    cf = parse_containerfile(
        "# escape=\\\n"
        "\n"
        "# a comment\n"
        "FROM busybox AS base\n"
        "RUN echo a \\\n"
        "# inside the continuation\n"
        "    && echo b\n"
        "COPY --chown=1:2 --from=base /x /y\n"
        'CMD ["sh", "-c", "echo hi"]\n'
        "env A=b\n", "Containerfile")
    cmds = [(i.command, i.line) for i in cf.instructions]
    assert cmds == [("FROM", 4), ("RUN", 5), ("COPY", 8), ("CMD", 9), ("ENV", 10)]
    assert cf.instructions[1].args == "echo a     && echo b"
    assert cf.instructions[2].flags == (("chown", "1:2"), ("from", "base"))
    assert cf.instructions[2].flag("from") == "base"
    assert cf.instructions[3].json == ["sh", "-c", "echo hi"]
    assert cf.instructions[1].json is None


def test_escape_directive_backtick():
    cf = parse_containerfile("# escape=`\nFROM scratch\nENV A=b `\n  C=d\n")
    assert cf.escape == "`"
    assert cf.instructions[1].args == "A=b   C=d"


def test_heredocs():
    cf = parse_containerfile(
        "FROM scratch\n"
        "RUN <<EOF\n"
        "echo one\n"
        "EOF\n"
        "COPY <<-'END' /f\n"
        "\tkept $A\n"
        "\tEND\n"
        "ENV A=b\n")
    run, copy = cf.instructions[1], cf.instructions[2]
    assert run.heredocs[0].name == "EOF" and run.heredocs[0].content == "echo one\n" and run.heredocs[0].expand
    assert copy.heredocs[0].content == "kept $A\n" and not copy.heredocs[0].expand and copy.heredocs[0].chomp
    assert cf.instructions[3].command == "ENV" and cf.instructions[3].line == 8


@pytest.mark.parametrize(("text", "message"), [
    ("FROM scratch\nFROB x\n", "Containerfile:2: unknown instruction 'FROB'"),
    ("FROM scratch\nCOPY --frob=1 a b\n", "Containerfile:2: COPY: unknown flag --frob"),
    ("FROM scratch\nCOPY --chown a b\n", "Containerfile:2: COPY: --chown needs a value"),
    ("FROM scratch\nENV\n", "Containerfile:2: ENV: needs arguments"),
    ("FROM scratch\nRUN <<EOF\necho\n", "Containerfile:2: RUN: heredoc <<EOF is not terminated"),
    ("# escape=x\nFROM scratch\n", "Containerfile:1: the escape directive"),
])
def test_parse_errors_name_file_line_and_instruction(text, message):
    with pytest.raises(BuildError) as err:
        parse_containerfile(text, "Containerfile")
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("rules", "path", "ignored"), [
    ("*.log", "a.log", True),
    ("*.log", "sub/a.log", False),
    ("**/*.log", "sub/deep/a.log", True),
    ("**/*.log", "a.log", True),
    ("build", "build/x/y", True),
    ("/build", "build", True),
    ("*\n!keep.txt", "keep.txt", False),
    ("*\n!keep.txt", "other", True),
    ("secret?.txt", "secret1.txt", True),
    ("[a-c].txt", "b.txt", True),
    ("# comment\n\n", "x", False),
    ("docs\n!docs/README.md", "docs/README.md", False),
    ("docs\n!docs/README.md", "docs/other.md", True),
])
def test_ignore_rules(rules, path, ignored):
    assert IgnoreRules.parse(rules).ignored(path) is ignored
