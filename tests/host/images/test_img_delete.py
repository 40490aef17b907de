"""`podplay delete docker://REF`: skopeo delete's verb, the registry's errors shown plainly."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.images import _tool_env, make_busybox_image
from tests.support.registry import REGISTRY_BIN, free_port, start_registry


def podplay(host_paths, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", "--root", str(host_paths.root), "--runroot",
                           str(host_paths.runroot), *args], capture_output=True, text=True)


def skopeo_exists(ref: str) -> bool:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, env=_tool_env()).returncode == 0


def test_delete_by_tag_and_by_digest(host_paths, registry):
    pushed = make_busybox_image(registry, "del/app", config={"env": {"X": "1"}})
    assert skopeo_exists(pushed.ref)
    res = podplay(host_paths, "delete", "--tls-verify=false", f"docker://{pushed.ref}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == pushed.digest
    assert not skopeo_exists(pushed.ref) and not skopeo_exists(pushed.by_digest)
    again = podplay(host_paths, "delete", "--tls-verify=false", f"docker://{pushed.by_digest}")
    assert again.returncode == 5, again.stderr  # an image error, as a pull of it would be
    assert "not found" in again.stderr and "Traceback" not in again.stderr


def test_delete_refused_by_the_registry_is_shown_plainly(host_paths, tmp_path):
    reg = start_registry(tmp_path / "reg")
    proc = None
    try:
        pushed = make_busybox_image(reg, "del/kept")
        reg.stop()
        # The same data, served by a registry whose deletes are disabled (distribution's default).
        reg.port = free_port()
        cfg = reg.workdir / "nodelete.yml"
        cfg.write_text(reg._config().replace("  delete:\n    enabled: true\n", "  delete:\n    enabled: false\n"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        reg.proc = proc
        assert reg._wait_ready()
        ref = f"{reg.host}/del/kept:latest"
        res = podplay(host_paths, "delete", "--tls-verify=false", f"docker://{ref}")
        assert res.returncode == 5, res.stderr
        assert res.stderr.startswith(f"Error: cannot delete manifest {reg.host}/del/kept@{pushed.digest}: "
                                     f"registry {reg.host} answered HTTP 405"), res.stderr
        assert "Traceback" not in res.stderr
        assert skopeo_exists(ref)
    finally:
        reg.stop()


def test_delete_needs_a_registry_reference(host_paths):
    res = podplay(host_paths, "delete", "localhost/app:latest")
    assert res.returncode == 1 and "docker://REF" in res.stderr
