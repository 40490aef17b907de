"""What systemd itself makes of the generated units, and what their commands do when run.

systemd's manager parses each unit (``systemd --test``, see helpers.systemd_load): the argv it
would execute, the environment, the mount dependencies. Paths full of characters that mean
something to systemd (spaces, quotes, ``$``, ``%``, ``'``, non-ASCII) must come back unchanged.
Then the very command lines systemd would run are run, against the file-backed fake host, to show
that start converges the pod, reload applies an edit and stop-post removes only that unit's pods.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.unit.units.helpers import VENV_PODPLAY, systemd_load, verify

NASTY = "we ird \"q\" $HOME %i 'z' ü"


def podplay(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_PODPLAY), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def pod(name: str, image: str = "registry.example/app:1", extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: {name}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: app
            image: {image}
        """) + extra


@pytest.fixture
def unit_dir(tmp_path) -> Path:
    # systemd --test runs as an unprivileged user: it must be able to read the units.
    d = tmp_path / "units"
    d.mkdir()
    for p in (tmp_path, d):
        p.chmod(0o755)
    return d


def test_systemd_reads_back_every_value(tmp_path, unit_dir):
    base = tmp_path / NASTY
    manifests = base / "pods"
    manifests.mkdir(parents=True)
    volumes = f'  volumes:\n  - name: media\n    hostPath: {{path: {json.dumps(f"{base}/media %d")}}}\n'
    (manifests / "web app.yaml").write_text(pod("web", extra=volumes))
    root, runroot = base / "root", base / "run"
    url = "https://git.example.com/a%20b/$repo.git"
    # An installed podplay may live under an awkward path too: it is argv[0] of every command.
    # (Quotes excepted: systemd refuses them there, and so does generate.)
    exe = tmp_path / "bin $HOME %i ü" / "podplay"
    exe.parent.mkdir()
    shutil.copy(VENV_PODPLAY, exe)
    for extra in ([str(manifests)], ["--watch", str(manifests)],
                  ["--sync", url, "--branch", "release/v1 'x'", "--executable", str(exe)]):
        proc = podplay("generate", "systemd", "--root", str(root), "--runroot", str(runroot),
                       "--files", str(unit_dir), *extra)
        assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in unit_dir.iterdir())
    assert len(names) == 3, names
    proc = verify(sorted(unit_dir.iterdir()))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")

    file = str(manifests / "web app.yaml")
    web = systemd_load(unit_dir, "podplay-default-web.service")
    assert web["ExecStart"] == [[str(VENV_PODPLAY), "up", "--wait", "--timeout", "120", file]]
    assert web["ExecReload"] == web["ExecStart"]
    assert web["ExecStopPost"] == [[str(VENV_PODPLAY), "down", file]]
    assert "ExecStop" not in web
    assert sorted(web["Environment"]) == [f"PODPLAY_ROOT={root}", f"PODPLAY_RUNROOT={runroot}"]
    assert set(web["RequiresMountsFor"]) == {str(root), str(runroot), "/etc/podplay/net.d", file,
                                             f"{base}/media %d"}
    assert [unquote(u.removeprefix("file:")) for u in web["Documentation"]] == [file]
    assert web["Type"] == ["oneshot"] and web["RemainAfterExit"] == ["yes"] and web["KillMode"] == ["process"]
    assert "network-online.target" in web["Wants"] and "network-online.target" in web["After"]

    # [Install] is not part of the loaded unit: `systemctl --root` enables offline, as on a real host.
    system = tmp_path / "sysroot" / "etc/systemd/system"
    system.mkdir(parents=True)
    for name in names:
        shutil.copy(unit_dir / name, system / name)
        subprocess.run(["systemctl", f"--root={tmp_path / 'sysroot'}", "enable", name], capture_output=True,
                       check=True)
    assert sorted(p.name for p in (system / "multi-user.target.wants").iterdir()) == names

    watch_name = next(n for n in names if n.startswith("podplay-watch-"))
    watch = systemd_load(unit_dir, watch_name)
    assert watch["ExecStart"] == [[str(VENV_PODPLAY), "watch", str(manifests)]]
    assert watch["Description"] == [f"podplay watcher of {manifests}"]
    assert str(manifests) in watch["RequiresMountsFor"]
    assert watch["Type"] == ["exec"] and watch["KillMode"] == ["process"] and watch["Restart"] == ["on-failure"]
    # The unit name is systemd-escape --path of the directory: it reads back to the directory.
    unescaped = subprocess.run(["systemd-escape", "--unescape", "--path",
                                watch_name.removeprefix("podplay-watch-").removesuffix(".service")],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert unescaped == str(manifests)

    sync_name = next(n for n in names if n.startswith("podplay-sync-"))
    sync = systemd_load(unit_dir, sync_name)
    assert sync["ExecStart"] == [[str(exe), "sync", url, "--branch", "release/v1 'x'"]]
    assert sync["Documentation"] == [url]


def test_python_m_reconciler_is_resolved_to_the_interpreter(tmp_path):
    """Started as `python -m reconciler`, the units run the same interpreter, by absolute path."""
    (tmp_path / "p.yaml").write_text(pod("solo"))
    proc = subprocess.run([sys.executable, "-m", "reconciler", "generate", "systemd", str(tmp_path / "p.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (f"ExecStart={os.path.abspath(sys.executable)} -m reconciler up --wait --timeout 120 "
            f"{tmp_path / 'p.yaml'}\n") in proc.stdout


def _run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}{proc.stderr}"
    return proc


def _pods_on(fakehost: Path) -> dict[str, str]:
    """pod ref → uid of its running app containers on the file-backed fake host."""
    if not fakehost.exists():
        return {}
    host = json.loads(fakehost.read_text())
    out = {}
    for c in host["containers"].values():
        labels = c.get("labels", {})
        if c.get("state") == "running" and labels.get("io.podplay.role") == "app":
            out[labels["io.podplay.pod"]] = labels["io.podplay.pod-uid"]
    return out


def test_unit_commands_start_reload_and_stop_their_own_pods(tmp_path, unit_dir):
    manifests = tmp_path / "pods dir"
    manifests.mkdir()
    (manifests / "config.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: shared
        data:
          greeting: hello
        """))
    uses_config = "    envFrom:\n    - configMapRef: {name: shared}\n"
    (manifests / "web.yaml").write_text(pod("web") + uses_config)
    (manifests / "api.yaml").write_text(pod("api") + uses_config)
    root, runroot = tmp_path / "root %x", tmp_path / "run"
    gen = podplay("generate", "systemd", "--root", str(root), "--runroot", str(runroot),
                  "--files", str(unit_dir), str(manifests))
    assert gen.returncode == 0, gen.stderr
    web = systemd_load(unit_dir, "podplay-default-web.service")
    api = systemd_load(unit_dir, "podplay-default-api.service")

    def env_of(unit) -> dict:
        # The environment systemd gives the commands, plus the fake host instead of real runc.
        return {"PATH": os.environ["PATH"], "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
                "PODPLAY_NETWORK_DIR": str(tmp_path / "net.d"),
                **dict(e.split("=", 1) for e in unit["Environment"])}

    fakehost = root / "fakehost.json"
    _run(web["ExecStart"][0], env_of(web))
    assert set(_pods_on(fakehost)) == {"default/web"}
    _run(api["ExecStart"][0], env_of(api))
    before = _pods_on(fakehost)
    assert set(before) == {"default/web", "default/api"}

    # Reload after an edit: the edited pod is replaced, the other is left alone.
    (manifests / "api.yaml").write_text(pod("api", image="registry.example/app:2") + uses_config)
    _run(api["ExecReload"][0], env_of(api))
    after = _pods_on(fakehost)
    assert after["default/web"] == before["default/web"]
    assert after["default/api"] != before["default/api"]

    # Stopping web's unit removes web only, although both units pass config.yaml to podplay.
    _run(web["ExecStopPost"][0], env_of(web))
    assert set(_pods_on(fakehost)) == {"default/api"}
    _run(api["ExecStopPost"][0], env_of(api))
    assert _pods_on(fakehost) == {}
    host = json.loads(fakehost.read_text())
    assert not host["containers"] and not host["attachments"]
