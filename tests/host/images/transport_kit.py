"""Helpers for the transport tests: skopeo as the third-party reader, podplay as a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.images import _tool_env


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["skopeo", *args], capture_output=True, env=_tool_env())
    if check and res.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {res.stderr.decode()}")
    return res


def skopeo_json(location: str, *extra: str) -> dict:
    """``skopeo inspect`` of any transport (registries: plain http, no TLS check)."""
    flags = ["--tls-verify=false"] if location.startswith("docker://") else []
    return json.loads(skopeo("inspect", *flags, *extra, location).stdout)


def skopeo_raw(location: str, *extra: str) -> bytes:
    flags = ["--tls-verify=false"] if location.startswith("docker://") else []
    return skopeo("inspect", *flags, "--raw", *extra, location).stdout


def skopeo_config(location: str, *extra: str) -> bytes:
    flags = ["--tls-verify=false"] if location.startswith("docker://") else []
    return skopeo("inspect", *flags, "--config", "--raw", *extra, location).stdout


class Podplay:
    """``python -m reconciler`` with its own root, registries.conf and auth file."""

    def __init__(self, paths, tmp: Path):
        self.paths = paths
        conf = tmp / "registries.conf"
        conf.write_text("")
        self.auth_file = tmp / "auth.json"
        self.env = {**os.environ, "PODPLAY_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(self.auth_file)}

    def __call__(self, *args, stdin: bytes | str | None = None, ok: bool = True, stdin_file=None):
        if isinstance(stdin, str):
            stdin = stdin.encode()
        res = subprocess.run([sys.executable, "-m", "reconciler", "--root", str(self.paths.root),
                              "--runroot", str(self.paths.runroot), *args],
                             input=stdin, stdin=stdin_file, capture_output=True, env=self.env)
        if ok:
            assert res.returncode == 0, res.stderr.decode()
        return res

    def text(self, *args, **kw) -> str:
        return self(*args, **kw).stdout.decode()
