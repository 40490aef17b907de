"""`podplay generate systemd` as a user runs it: output forms, files, and refusals."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.unit.units.helpers import VENV_PODPLAY, parse_unit

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: registry.example/app:1
"""


def podplay(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODPLAY_")}
    return subprocess.run([str(VENV_PODPLAY), *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture
def pods(tmp_path) -> Path:
    d = tmp_path / "pods"
    d.mkdir()
    (d / "a.yaml").write_text(POD.format(name="a"))
    (d / "b.yaml").write_text(POD.format(name="b"))
    return d


def test_stdout_holds_every_unit_after_a_name_line(pods):
    proc = podplay("generate", "systemd", str(pods))
    assert proc.returncode == 0, proc.stderr
    chunks = proc.stdout.split("\n# podplay-")
    assert proc.stdout.startswith("# podplay-default-a.service\n")
    assert len(chunks) == 2 and chunks[1].startswith("default-b.service\n")
    # The console script that ran is the executable the units name, by absolute path.
    unit = parse_unit(chunks[1].split("\n", 1)[1])
    assert unit["Service"]["ExecStart"] == [f"{VENV_PODPLAY} up --wait --timeout 120 {pods / 'b.yaml'}"]


def test_relative_paths_become_absolute(pods):
    proc = podplay("generate", "systemd", "pods/a.yaml", cwd=pods.parent)
    assert proc.returncode == 0, proc.stderr
    assert f"ExecStopPost={VENV_PODPLAY} down {pods / 'a.yaml'}\n" in proc.stdout


def test_files_writes_each_unit_and_prints_its_path(pods, tmp_path):
    out = tmp_path / "etc" / "systemd" / "system"
    proc = podplay("generate", "systemd", "--files", str(out), str(pods))
    assert proc.returncode == 0, proc.stderr
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["podplay-default-a.service", "podplay-default-b.service"]
    assert proc.stdout.splitlines() == [str(p) for p in written]
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644  # systemd reads units as any user; no secrets in them
        assert "[Service]" in p.read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    # Generating again replaces the files in place.
    (pods / "a.yaml").write_text(POD.format(name="a").replace("app:1", "app:2"))
    assert podplay("generate", "systemd", "--files", str(out), str(pods)).returncode == 0
    assert sorted(out.iterdir()) == written


def test_invalid_manifests_write_nothing(pods, tmp_path):
    (pods / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers: 7\n")
    out = tmp_path / "units"
    proc = podplay("generate", "systemd", "--files", str(out), str(pods))
    assert proc.returncode == 1
    assert "bad.yaml:5" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--sync", "https://bot:s3cret@git.example.com/x.git"], "carries a password"),
    (["--sync", "https://ghp_t0ken@git.example.com/x.git"], "carries a token"),
    (["--branch", "main", "{pods}"], "go with --sync"),
    (["--executable", "bin/podplay", "{pods}"], "must be an absolute path"),
    (["--executable", "/opt/it's/podplay", "{pods}"], "systemd refuses quotes"),
    (["--wanted-by", "multi user", "{pods}"], "is not a unit name"),
    (["--sync", "https://git.example.com/x.git", "--interval", "0"], "positive number of seconds"),
    ([], "name manifest files"),
    (["-"], "(stdin) cannot be used"),
])
def test_refusals_are_clear_and_exit_1(pods, tmp_path, args, message):
    out = tmp_path / "units"
    proc = podplay("generate", "systemd", "--files", str(out), *[a.replace("{pods}", str(pods)) for a in args])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_file_name_systemd_cannot_carry_is_refused(tmp_path):
    d = tmp_path / "pods"
    d.mkdir()
    (d / "new\nline.yaml").write_text(POD.format(name="x"))
    out = tmp_path / "units"
    proc = podplay("generate", "systemd", "--files", str(out), str(d))
    assert proc.returncode == 1
    assert "control character" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_files_into_a_regular_file_is_a_clear_error(pods, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    proc = podplay("generate", "systemd", "--files", str(blocker), str(pods))
    assert proc.returncode == 1
    assert f"cannot write units to {blocker}" in proc.stderr and "Traceback" not in proc.stderr


def test_generate_alone_prints_usage():
    proc = podplay("generate")
    assert proc.returncode == 2
    assert "systemd" in proc.stderr


def test_storage_paths_from_the_environment_reach_the_unit(pods, tmp_path):
    env = {**os.environ, "PODPLAY_ROOT": str(tmp_path / "root"), "PODPLAY_RUNROOT": "/run/podplay"}
    proc = subprocess.run([str(VENV_PODPLAY), "generate", "systemd", str(pods / "a.yaml")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    service = parse_unit(proc.stdout.split("\n", 1)[1])["Service"]
    assert service["Environment"] == [f"PODPLAY_ROOT={tmp_path / 'root'}"]  # the runroot is the default


def test_user_units_are_refused_to_root_with_the_way_out(pods):
    """Root's pods belong in system units: `--user` as root says so rather than writing units for
    root's own user manager."""
    assert os.geteuid() == 0, "the unit tests run as root on this host"
    proc = podplay("generate", "systemd", "--user", str(pods))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--user makes units for an unprivileged user's own systemd" in proc.stderr
    assert "leave out --user" in proc.stderr
    assert proc.stdout == ""
