"""Unit names: our pure systemd_escape against the real `systemd-escape`, and the length limit."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.errors import InputError
from reconciler.units import UNIT_NAME_MAX, name_part, systemd_escape, unit_name
from tests.unit.units.helpers import verify

# Any text systemd-escape can take as an argument: no NUL, no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)
# Paths, with the pieces that need simplifying: repeated and trailing slashes, '.', dot-files, '-'.
PATH = st.lists(st.sampled_from(["", ".", "a", "b-c", ".hidden", "x y", "é", "d\\e", "k:v", "%i"]),
                min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts))


def real_escape(values: list[str], path: bool = False) -> list[str]:
    out = subprocess.run(["systemd-escape", *(["--path"] if path else []), "--", *values],
                         capture_output=True, text=True, check=True).stdout
    # Printed space-separated: an escaped result never holds a space (it becomes \x20).
    return out.rstrip("\n").split(" ")


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=20))
def test_escape_matches_systemd_escape(values):
    assert [systemd_escape(v) for v in values] == real_escape(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(PATH, min_size=1, max_size=20))
def test_path_escape_matches_systemd_escape_path(values):
    assert [systemd_escape(v, path=True) for v in values] == real_escape(values, path=True)


def test_path_with_dotdot_is_refused_like_systemd():
    with pytest.raises(InputError, match=r"'\.\.'"):
        systemd_escape("/srv/../etc", path=True)
    assert subprocess.run(["systemd-escape", "--path", "/srv/../etc"], capture_output=True).returncode != 0


def test_colon_is_escaped_in_unit_names_and_reads_back():
    part = name_part("/srv/k:v", path=True)
    assert ":" not in part
    back = subprocess.run(["systemd-escape", "--unescape", "--path", part], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert back == "/srv/k:v"


def test_long_names_are_cut_within_the_limit_and_stay_distinct(tmp_path):
    a = unit_name("podplay-file-", name_part("/srv/" + "x-" * 200 + "a.yaml", path=True))
    b = unit_name("podplay-file-", name_part("/srv/" + "x-" * 200 + "b.yaml", path=True))
    assert UNIT_NAME_MAX - 4 < len(a) <= UNIT_NAME_MAX and UNIT_NAME_MAX - 4 < len(b) <= UNIT_NAME_MAX
    assert a != b
    # The cut never splits an escape, and systemd accepts the name.
    for name in (a, b):
        assert re.fullmatch(r"(?:[A-Za-z0-9_.-]|\\x[0-9a-f]{2})+\.service", name), name
    for name in (a, b):
        (tmp_path / name).write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    proc = verify([tmp_path / a, tmp_path / b])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_short_names_are_untouched():
    assert unit_name("podplay-", "default-web") == "podplay-default-web.service"
