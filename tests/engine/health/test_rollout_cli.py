"""`podplay up` / `rollout history|undo|status` / `plan` / `status` on the fake host, in process."""

from __future__ import annotations

import io

import pytest

from reconciler.cli import main
from reconciler.desired import build_desired
from reconciler.drivers.fake import FakeHost
from reconciler.errors import EXIT_APPLY_FAILED
from reconciler.manifests import load_manifests
from tests.engine.health.test_rollout_engine import deployment


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("PODPLAY_DRIVER", "fake")
    monkeypatch.setenv("PODPLAY_FAKE_REGISTRY", "*")
    monkeypatch.setenv("PODPLAY_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("PODPLAY_RUNROOT", str(tmp_path / "run"))
    monkeypatch.setenv("PODPLAY_NETWORK_DIR", str(tmp_path / "net.d"))
    manifests = tmp_path / "m"
    manifests.mkdir()

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        monkeypatch.setattr("sys.stderr", err)
        code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    run.dir = manifests
    run.host = lambda: FakeHost(tmp_path / "root" / "fakehost.json")
    return run


def write(cli, text: str) -> str:
    path = cli.dir / "web.yaml"
    path.write_text(text.replace("progressDeadlineSeconds: 60", "progressDeadlineSeconds: 1"))
    return str(path)


def test_failed_update_exits_3_rolls_back_and_shows_in_history_status_and_plan(cli):
    path = write(cli, deployment())
    code, out, err = cli("up", "--wait", path)
    assert code == 0, err
    write(cli, deployment(image="busybox:1.37"))
    host = cli.host()
    for pod in build_desired(load_manifests([path]).objects).pods.values():
        host.set_probe(pod.containers[0].id, False, "readiness")  # the new revision never gets ready
    code, out, err = cli("up", path)
    assert code == EXIT_APPLY_FAILED, (out, err)
    assert "rollout of deployment default/web to revision 2 failed" in err
    assert "rolled back to revision 1" in err
    assert "deployment default/web revision 1" in out  # progress lines

    code, out, _ = cli("rollout", "history", "web")
    assert code == 0
    rows = [line.split()[:2] for line in out.splitlines()[2:] if line.strip()[:1].isdigit()]
    assert rows == [["1", "complete"], ["2", "failed"]]
    assert "(pinned)" in out and "pinned to revision 1" in out

    code, out, _ = cli("plan", path)
    assert "No changes" in out and "pinned to revision 1" in out
    code, out, _ = cli("status")
    assert "deployment default/web: revision 2 failed" in out and "pinned to revision 1" in out
    code, out, _ = cli("rollout", "status", "web")
    assert "pinned" in out


def test_undo_pins_the_previous_revision_until_the_manifest_changes(cli):
    path = write(cli, deployment())
    assert cli("up", "--wait", path)[0] == 0
    write(cli, deployment(image="busybox:1.37"))
    code, out, err = cli("up", path)
    assert code == 0, err
    assert "revision 2 (complete)" in out
    code, out, err = cli("rollout", "undo", "web")
    assert code == 0, err
    assert "pinned to revision 1" in out
    images = {c["image"] for c in cli.host().containers.values() if c["role"] == "app"}
    assert images == {"busybox:1.36"}
    code, out, _ = cli("up", path)
    assert "No changes" in out and "pinned to revision 1" in out
    # Back to what the manifest says: the pin goes.
    code, out, err = cli("rollout", "undo", "web", "--to-revision", "2")
    assert code == 0, err
    assert "pin released" in out
    assert {c["image"] for c in cli.host().containers.values() if c["role"] == "app"} == {"busybox:1.37"}


def test_rollout_commands_name_what_is_missing(cli):
    code, _, err = cli("rollout", "history", "nope")
    assert code == 6 and "no revisions recorded for deployment default/nope" in err
    path = write(cli, deployment())
    cli("up", path)
    code, _, err = cli("rollout", "undo", "web")
    assert code == 6 and "no revision before 1" in err
    code, _, err = cli("rollout", "undo", "web", "--to-revision", "7")
    assert code == 6 and "has no revision 7" in err
