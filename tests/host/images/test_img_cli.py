"""The image commands as a user runs them: ``python -m reconciler …`` in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from tests.host.images.conftest import assert_store_verified, skopeo_inspect
from tests.support.images import make_busybox_image


@pytest.fixture
def podplay(host_paths, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    env = {**os.environ, "PODPLAY_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}

    def run(*args, stdin: str | None = None, ok: bool = True):
        res = subprocess.run([sys.executable, "-m", "reconciler", "--root", str(host_paths.root),
                              "--runroot", str(host_paths.runroot), *args],
                             input=stdin.encode() if stdin is not None else None, capture_output=True, env=env)
        if ok:
            assert res.returncode == 0, res.stderr.decode()
        return res

    run.auth_file = tmp_path / "auth.json"
    return run


def test_pull_images_inspect_rmi(podplay, registry, repo, host_paths):
    pushed = make_busybox_image(registry, repo, config={"env": {"GREETING": "hi"}})
    res = podplay("pull", pushed.ref)
    image_id = res.stdout.decode().strip()
    assert len(image_id) == 64 and all(c in "0123456789abcdef" for c in image_id)
    # Not a terminal: one plain line per layer downloaded and one for the image, no escape codes.
    lines = res.stderr.decode().splitlines()
    assert lines and all(line.startswith(f"{pushed.ref}: ") for line in lines) and b"\x1b" not in res.stderr
    assert " layers downloaded " in lines[-1]

    table = podplay("images").stdout.decode().splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == [f"{registry.host}/{repo}", "latest", image_id[:12]]
    assert podplay("images", "-q").stdout.decode().split() == [image_id[:12]]
    listed = json.loads(podplay("images", "--output", "json").stdout)
    assert listed[0]["Id"] == image_id and listed[0]["Names"] == [pushed.ref]
    assert listed[0]["Digest"] == pushed.digest

    doc = json.loads(podplay("inspect", pushed.ref).stdout)[0]
    assert doc["Id"] == image_id and doc["RepoTags"] == [pushed.ref]
    assert "GREETING=hi" in doc["Config"]["Env"]
    assert doc["Digest"] == pushed.digest
    raw = podplay("inspect", "--raw", image_id[:12]).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == pushed.digest
    config = podplay("inspect", "--config", pushed.ref).stdout
    assert hashlib.sha256(config).hexdigest() == image_id

    res = podplay("rmi", pushed.ref)
    assert res.stdout.decode().splitlines() == [f"Untagged: {pushed.ref}", f"Deleted: {image_id}"]
    assert podplay("images", "-q").stdout == b""
    assert_store_verified(host_paths, images=0)
    res = podplay("rmi", pushed.ref, ok=False)
    assert res.returncode == 6 and b"image not known" in res.stderr
    assert podplay("rmi", "-f", pushed.ref).returncode == 0


# Modules a pull from a registry has no use for (with no signature policy, no registries.d, no
# proxy): each one is import time every `podplay pull` would pay.
NOT_FOR_PULL = ("requests", "urllib3", "yaml", "jsonschema", "concurrent.futures", "logging", "subprocess",
                "reconciler.forked", "reconciler.storage", "reconciler.runtime", "reconciler.network",
                "reconciler.model", "reconciler.desired", "reconciler.state")


def test_pull_imports_only_what_it_uses(registry, repo, host_paths, tmp_path):
    pushed = make_busybox_image(registry, repo)
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    code = ("import sys; from reconciler.cli import main; rc = main(sys.argv[1:]); "
            f"print(sorted(m for m in sys.modules if m.startswith({NOT_FOR_PULL!r}))); sys.exit(rc)")
    env = {**os.environ, "PODPLAY_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
           "PODPLAY_REGISTRIES_D": str(tmp_path / "registries.d"),
           "PODPLAY_SIGNATURE_POLICY": str(tmp_path / "policy.json")}
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    (tmp_path / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    res = subprocess.run([sys.executable, "-c", code, "--root", str(host_paths.root), "--runroot",
                          str(host_paths.runroot), "pull", "-q", pushed.ref], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "[]"
    assert_store_verified(host_paths, images=1)


def test_inspect_remote_like_skopeo(podplay, registry, repo, image_factory, host_paths):
    pushed = image_factory.push_index(registry, repo, tag="v1")
    doc = json.loads(podplay("inspect", f"docker://{pushed.ref}", "--platform", "linux/arm64").stdout)
    theirs = skopeo_inspect(pushed.ref, "--override-arch", "arm64", "--override-variant", "v8")
    assert doc["Digest"] == theirs["Digest"] == pushed.digest
    assert doc["Layers"] == theirs["Layers"]
    assert doc["Architecture"] == "arm64" and doc["RepoTags"] == ["v1"]
    assert doc["Name"] == f"{registry.host}/{repo}"
    assert sorted(p["Platform"] for p in doc["Platforms"]) == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    raw = podplay("inspect", "--raw", f"docker://{pushed.ref}").stdout
    assert raw == skopeo_inspect(pushed.ref, "--raw")
    config = podplay("inspect", "--config", f"docker://{pushed.ref}").stdout
    assert json.loads(config)["architecture"] == "amd64"  # the host's choice
    # nothing was pulled
    assert not (host_paths.images / "images.json").exists()


def test_errors_and_exit_codes(podplay, registry, repo):
    res = podplay("pull", "Not/Valid", ok=False)
    assert res.returncode == 1 and b"must be lowercase" in res.stderr
    res = podplay("pull", f"{registry.host}/{repo}:missing", ok=False)
    assert res.returncode == 5 and b"not found" in res.stderr
    assert b"Traceback" not in res.stderr
    res = podplay("inspect", "localhost/nothing", ok=False)
    assert res.returncode == 6 and b"docker://localhost/nothing" in res.stderr
    res = podplay("pull", "--platform", "linux//x", "busybox", ok=False)
    assert res.returncode == 1 and b"invalid platform" in res.stderr


def test_tag_and_prune(podplay, registry, repo, host_paths):
    one = make_busybox_image(registry, repo, config={"labels": {"v": "1"}})
    first = podplay("pull", "-q", one.ref).stdout.decode().strip()
    podplay("tag", first[:12], "localhost/mine:1", "localhost/mine:2")
    names = json.loads(podplay("images", "-o", "json").stdout)[0]["Names"]
    assert names == [one.ref, "localhost/mine:1", "localhost/mine:2"]
    res = podplay("rmi", "localhost/mine:1", "localhost/mine:2")
    assert res.stdout.decode().splitlines() == ["Untagged: localhost/mine:1", "Untagged: localhost/mine:2"]
    make_busybox_image(registry, repo, config={"labels": {"v": "2"}})
    podplay("pull", "-q", one.ref)  # the tag moves: the first image is left without a name
    out = podplay("image", "prune", "--dangling").stdout.decode()
    assert f"Deleted: {first}" in out and "freed" in out
    assert len(json.loads(podplay("image", "ls", "-o", "json").stdout)) == 1
    assert_store_verified(host_paths, images=1)


def test_login_logout(podplay, auth_registry, repo):
    pushed = make_busybox_image(auth_registry, repo)
    auth = podplay.auth_file
    res = podplay("login", "-u", auth_registry.username, "--password-stdin", auth_registry.host,
                  stdin="wrong\n", ok=False)
    assert res.returncode == 5 and b"wrong username or password" in res.stderr
    assert not auth.exists()
    res = podplay("login", "-u", auth_registry.username, "--password-stdin", auth_registry.host,
                  stdin=auth_registry.password + "\n")
    assert b"Login Succeeded" in res.stdout
    assert stat.S_IMODE(os.stat(auth).st_mode) == 0o600
    podplay("pull", "-q", pushed.ref)
    podplay("logout", auth_registry.host)
    assert json.loads(auth.read_text())["auths"] == {}
    res = podplay("logout", auth_registry.host, ok=False)
    assert res.returncode == 6
    res = podplay("login", auth_registry.host, stdin="", ok=False)
    assert res.returncode == 1 and b"--username" in res.stderr
