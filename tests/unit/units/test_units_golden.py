"""Golden tests of `podplay generate systemd`: fixtures that carry their own assertions.

Each case is ``fixtures/<case>.yaml`` (or a directory ``fixtures/<case>.d/``) whose comment lines
say how to generate and what must hold:

    # generate: ARGS            arguments after `podplay generate systemd` ({case} = the case's path)
    # assert-units: NAME…       exactly these units are generated
    # assert-key: UNIT Section Key=value    one of Key's values in [Section] is exactly this
    # assert-no-key: UNIT Section Key       Key is not set in [Section]
    # assert-note: TEXT         some note to the user contains TEXT
    # assert-error: TEXT        generation fails with an error that contains TEXT

The generated units are compared with ``fixtures/<case>/<unit>`` (``UPDATE_GOLDEN=1`` rewrites
them); the assertions are checked separately, on the parsed unit, so that a regenerated golden file
cannot silently lose what a case is about. Manifest paths appear in units as /srv/pods/…, and the
executable as /usr/bin/podplay, so that the golden files do not depend on the checkout.
A second pass generates every case with the real paths and the venv's podplay and runs
`systemd-analyze verify` on the result (`verify --user`, as an unprivileged user, for the cases
that generate with --user): any output fails the test.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path

import pytest

from reconciler.cli import build_parser
from reconciler.cli.units import build_units
from reconciler.errors import PodplayError
from reconciler.manifests import ManifestSet, load_manifests
from reconciler.paths import HostPaths
from reconciler.units import DEFAULT_PATHS
from tests.unit.units.helpers import VENV_PODPLAY, parse_unit, verify

FIXTURES = Path(__file__).parent / "fixtures"
VIRTUAL = "/srv/pods"
CASE_PATHS = sorted(p for p in FIXTURES.iterdir() if p.suffix == ".yaml" or (p.is_dir() and p.suffix == ".d"))


@dataclasses.dataclass
class Case:
    path: Path
    generate: str = "{case}"
    units: list[str] | None = None
    keys: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    no_keys: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str = ""

    @property
    def name(self) -> str:
        return self.path.stem if self.path.suffix == ".yaml" else self.path.name[:-2]

    @property
    def expected_dir(self) -> Path:
        return FIXTURES / self.name


def read_case(path: Path) -> Case:
    case = Case(path)
    files = [path] if path.is_file() else sorted(path.glob("*.yaml"))
    for f in files:
        for line in f.read_text().splitlines():
            if not line.startswith("# ") or ":" not in line:
                continue
            directive, _, rest = line[2:].partition(": ")
            rest = rest.strip()
            if directive == "generate":
                case.generate = rest
            elif directive == "assert-units":
                case.units = rest.split()
            elif directive == "assert-key":
                unit, section, setting = rest.split(" ", 2)
                key, _, value = setting.partition("=")
                case.keys.append((unit, section, key, value))
            elif directive == "assert-no-key":
                unit, section, key = rest.split()
                case.no_keys.append((unit, section, key))
            elif directive == "assert-note":
                case.notes.append(rest)
            elif directive == "assert-error":
                case.error = rest
    return case


def _virtual_loader(paths):
    """load_manifests on the fixture files, reporting them under /srv/pods."""
    real = [p.replace(VIRTUAL, str(FIXTURES), 1) for p in paths]
    result = load_manifests(real)

    def virt(f: str) -> str:
        return f.replace(str(FIXTURES), VIRTUAL, 1)

    return ManifestSet(objects=[dataclasses.replace(o, file=virt(o.file)) for o in result.objects],
                       diagnostics=[dataclasses.replace(d, file=virt(d.file)) for d in result.diagnostics],
                       files=[virt(f) for f in result.files], unreadable=[virt(f) for f in result.unreadable])


def generate(case: Case, *, real: bool = False):
    target = str(case.path) if real else f"{VIRTUAL}/{case.path.name}"
    argv = [target if a == "{case}" else a for a in shlex.split(case.generate)]
    if "--executable" in argv:
        i = argv.index("--executable")
        if real:
            del argv[i:i + 2]
    if "--executable" not in argv:
        argv += ["--executable", str(VENV_PODPLAY) if real else "/usr/bin/podplay"]
    args = build_parser().parse_args(["generate", "systemd", *argv])
    host_paths = HostPaths(Path(getattr(args, "root", DEFAULT_PATHS.root)),
                           Path(getattr(args, "runroot", DEFAULT_PATHS.runroot)),
                           Path(getattr(args, "network_dir", DEFAULT_PATHS.network_dir)))
    return build_units(args, host_paths, load=None if real else _virtual_loader)


CASES = [read_case(p) for p in CASE_PATHS]
GOOD = [c for c in CASES if not c.error]
BAD = [c for c in CASES if c.error]


def _ids(cases):
    return [c.path.name for c in cases]


@pytest.mark.parametrize("case", BAD, ids=_ids(BAD))
def test_refused(case):
    with pytest.raises(PodplayError) as exc:
        generate(case)
    assert case.error in str(exc.value)


@pytest.mark.parametrize("case", GOOD, ids=_ids(GOOD))
def test_golden(case):
    result = generate(case)
    produced = {u.name: u.text for u in result.units}
    if os.environ.get("UPDATE_GOLDEN") == "1":
        case.expected_dir.mkdir(exist_ok=True)
        for old in case.expected_dir.iterdir():
            old.unlink()
        for name, text in produced.items():
            (case.expected_dir / name).write_text(text)
    expected = {p.name: p.read_text() for p in case.expected_dir.iterdir()} if case.expected_dir.is_dir() else {}
    assert sorted(produced) == sorted(expected), "generated units differ from the golden files (UPDATE_GOLDEN=1)"
    for name, text in produced.items():
        assert text == expected[name], f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("case", GOOD, ids=_ids(GOOD))
def test_assertions(case):
    """The fixture's own assertions, on the parsed units: they hold whatever the golden text says."""
    assert case.units or case.keys, f"{case.path.name} asserts nothing"
    result = generate(case)
    units = {u.name: parse_unit(u.text) for u in result.units}
    if case.units is not None:
        assert sorted(units) == sorted(case.units)
    for unit, section, key, value in case.keys:
        values = units[unit].get(section, {}).get(key, [])
        assert value in values, f"{unit} [{section}] {key}: expected {value!r}, found {values!r}"
    for unit, section, key in case.no_keys:
        assert key not in units[unit].get(section, {}), f"{unit} [{section}] sets {key}"
    for note in case.notes:
        assert any(note in n for n in result.notes), f"no note contains {note!r}: {result.notes!r}"


@pytest.mark.parametrize("case", GOOD, ids=_ids(GOOD))
def test_systemd_analyze_verify(case, tmp_path):
    """Every generated unit passes `systemd-analyze verify` without a single line of output."""
    files = []
    for u in generate(case, real=True).units:
        (tmp_path / u.name).write_text(u.text)
        files.append(tmp_path / u.name)
    assert files
    proc = verify(files, user="--user" in shlex.split(case.generate))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc.stdout + proc.stderr
