"""`podplay plan` and `up` as processes (over the file-backed fake host): what they load, and the
no-change answer `plan` shares with `up`.

A plan loads only what planning needs: not the apply machinery, not jsonschema once the schema
cache knows the file, and — on a host that still matches what `up` converged — not even the
YAML parser or the engine. The no-change answer says what the full plan says, and it is not
given when the pod-security policy changed since (the files must be reviewed again)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.engine.conftest import pod_yaml

# (the fake drivers load the model and ctypes themselves: the host's drivers load neither to list)
WATCHED = ("jsonschema", "yaml", "reconciler.manifests", "reconciler.apply", "reconciler.reconcile",
           "reconciler.converger", "concurrent.futures")
RUN = ("import sys\nfrom reconciler.cli import main\n"
       "try:\n    code = main(sys.argv[1:])\n"
       f"finally:\n    print('LOADED', *[m for m in {WATCHED!r} if m in sys.modules], file=sys.stderr)\n"
       "sys.exit(code)\n")


@pytest.fixture
def podplay(tmp_path):
    env = {**os.environ, "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
           "PODPLAY_ROOT": str(tmp_path / "root"), "PODPLAY_RUNROOT": str(tmp_path / "run"),
           "PODPLAY_CONFIG": str(tmp_path / "no-config")}
    for var in ("PODPLAY_POD_SECURITY", "PODPLAY_NETWORK"):
        env.pop(var, None)

    def run(*args: str, **extra: str) -> tuple[int, str, str, set[str]]:
        res = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                             env={**env, **extra}, timeout=120)
        loaded = next(line for line in res.stderr.splitlines() if line.startswith("LOADED"))
        err = "\n".join(line for line in res.stderr.splitlines() if not line.startswith("LOADED"))
        return res.returncode, res.stdout, err, set(loaded.split()[1:])

    return run


@pytest.fixture
def manifest(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(pod_yaml("web"))
    return str(f)


def test_plan_loads_neither_apply_nor_jsonschema_once_the_file_passed_its_schema(podplay, manifest):
    code, out, _, first = podplay("plan", manifest)
    assert code == 0 and "create pod default/web" in out
    assert "jsonschema" in first  # validated once …
    code, again, _, second = podplay("plan", manifest)
    assert code == 0 and again == out
    assert not second & {"jsonschema", "reconciler.apply", "concurrent.futures"}  # … then cached


def test_plan_of_a_converged_host_answers_as_the_full_plan_without_reading_the_files(podplay, manifest):
    assert podplay("up", "-q", manifest)[0] == 0
    code, out, err, loaded = podplay("plan", manifest)
    assert code == 0 and out == "No changes. The host matches the manifests.\n"
    assert not loaded & {"yaml", "reconciler.manifests", "reconciler.reconcile", "jsonschema"}
    # --strict always reads the files: the full plan says the same
    full = podplay("plan", "--strict", manifest)
    assert full[:3] == (code, out, err) and "reconciler.converger" in full[3]
    # and `up` of the unchanged host answers the same way, as lightly
    code, out, _, loaded = podplay("up", manifest)
    assert code == 0 and out == "No changes. The host matches the manifests.\n"
    assert not loaded & {"yaml", "reconciler.manifests", "reconciler.reconcile"}


def test_a_stricter_pod_security_policy_is_not_answered_from_the_fingerprint(podplay, manifest):
    assert podplay("up", "-q", manifest)[0] == 0
    for command in (("plan", manifest), ("up", manifest)):
        code, _, err, _ = podplay(*command, PODPLAY_POD_SECURITY="restricted")
        assert code == 1 and "restricted" in err, (command, err)
    assert podplay("plan", manifest)[1] == "No changes. The host matches the manifests.\n"
