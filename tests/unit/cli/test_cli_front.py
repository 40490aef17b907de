"""The front end builds only the area a command belongs to: its AREAS table must match the areas."""

from __future__ import annotations

import argparse
import importlib

import pytest

from reconciler.cli import AREAS, build_parser


def registered(area: str) -> set[str]:
    module = importlib.import_module(f"reconciler.cli.{area}")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    module.register(sub, argparse.ArgumentParser(add_help=False))
    return set(sub.choices)


@pytest.mark.parametrize("area", AREAS)
def test_commands_table_lists_exactly_what_the_area_registers(area):
    assert set(AREAS[area]) == registered(area)


@pytest.mark.parametrize(("argv", "expected"), [
    (["ps", "-a"], {"ps", "pods", "logs", "exec", "stop", "start", "rm"}),
    (["--root", "/x", "up", "d"], {"validate", "plan", "up", "play", "down"}),
    (["--help"], None),
    (["nonsense"], None),
])
def test_only_the_owning_area_is_built(argv, expected):
    parser = build_parser(argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    everything = set().union(*(registered(a) for a in AREAS))
    assert set(sub.choices) == (expected if expected is not None else everything)
