"""podplay as a user installs it.

These run with the rest of the suite (in the development venv), and ``scripts/smoke-wheel.sh``
runs them again against a wheel installed into a fresh venv, from a copy outside the checkout,
where nothing can come from the source tree: a data file the wheel does not ship fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

import reconciler
from reconciler.model.kube import KINDS

BIN = Path(sys.executable).parent  # the venv's scripts: its `podplay` is the one under test
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def podplay(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PODPLAY_ROOT=str(tmp_path / "root"), PODPLAY_RUNROOT=str(tmp_path / "run"),
               PODPLAY_NETWORK_DIR=str(tmp_path / "net.d"))
    return subprocess.run([str(BIN / "podplay"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.skipif(not os.environ.get("PODPLAY_SMOKE_INSTALLED"), reason="only in scripts/smoke-wheel.sh")
def test_this_is_the_installed_package_not_the_checkout():
    assert "site-packages" in reconciler.__file__, reconciler.__file__


def test_the_package_carries_its_schemas():
    schemas = files("reconciler") / "schemas"
    for kind in KINDS:
        doc = json.loads((schemas / f"{kind}.json").read_text())
        assert doc["properties"]["kind"] == {"const": kind}
    assert json.loads((schemas / "SOURCE.json").read_text())


def test_help(tmp_path):
    res = podplay(tmp_path, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: podplay" in res.stdout


def test_validate_the_examples(tmp_path):
    res = podplay(tmp_path, "validate", str(EXAMPLES))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("valid: ")


def test_bad_input_is_reported_located_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: app, imagee: x}]\n")
    res = podplay(tmp_path, "validate", str(bad))
    assert res.returncode == 1
    assert f"{bad}:5:28: error: spec.containers[0].imagee: unknown field 'imagee'" in res.stderr
    assert "Traceback" not in res.stderr


def test_plan_the_examples(tmp_path):
    res = podplay(tmp_path, "plan", str(EXAMPLES))
    assert res.returncode == 0, res.stderr
    assert "+ create pod default/hello-web (new)" in res.stdout


def test_generate_systemd_units_for_the_examples(tmp_path):
    res = podplay(tmp_path, "generate", "systemd", "--files", str(tmp_path / "units"), str(EXAMPLES))
    assert res.returncode == 0, res.stderr
    units = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert "podplay-default-hello\\x2dweb.service" in units, units
