"""Secrets stay secret on the real stack: a private image pulled with an imagePullSecret, Secret
volumes and env, and `sync` of a repository behind a token. Afterwards an unprivileged local
user reads nothing under either root, and no output (plan, status, ps, logs, errors) shows a
credential; the git token is nowhere on disk at all."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.engine.watch.test_sync import Repo
from tests.engine.watch.test_sync_credentials import _AuthHandler
from tests.host.e2e.conftest import exec_in
from tests.support.images import make_busybox_image
from tests.support.registry import auth_registry  # noqa: F401 - a fixture

GIT_TOKEN = "ghp-e2e-7d41aa-T0KEN"  # noqa: S105 - test credentials
FILE_SECRET = "vol-secret-93bd"
ENV_SECRET = "env-secret-51fe"
NOBODY = 65534
BUSYBOX = "localhost/busybox:latest"

# Run by the unprivileged user: every directory it can list and every file it can open.
WALK = """
import json, os, sys
seen = []
for top in sys.argv[1:]:
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
        seen.append(dirpath)
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                with open(p, "rb") as f:
                    f.read(1)
                seen.append(p)
            except OSError:
                pass
print(json.dumps(seen))
"""


@pytest.fixture
def git_over_http(tmp_path):
    (tmp_path / "git").mkdir()
    repo = Repo(tmp_path / "git")
    _AuthHandler.expected = "Basic " + base64.b64encode(f"bot:{GIT_TOKEN}".encode()).decode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_AuthHandler, directory=str(repo.tmp)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield repo, f"http://bot:{GIT_TOKEN}@127.0.0.1:{server.server_address[1]}/remote.git"
    server.shutdown()
    server.server_close()


def test_no_local_user_reads_the_roots_and_no_output_shows_a_credential(stack, auth_registry, git_over_http):  # noqa: F811
    reg = auth_registry
    private = make_busybox_image(reg, "e2e/private")
    docker_config = json.dumps({"auths": {reg.host: {"username": reg.username, "password": reg.password}}})
    m = stack.write("app.yaml", f"""
apiVersion: v1
kind: Secret
metadata: {{name: pull}}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{docker_config}'
---
apiVersion: v1
kind: Secret
metadata: {{name: app}}
stringData: {{file: {FILE_SECRET}, env: {ENV_SECRET}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  imagePullSecrets: [{{name: pull}}]
  containers:
  - name: app
    image: {private.ref}
    command: [sh, -c, "echo started; sleep 1000"]
    env: [{{name: TOKEN, valueFrom: {{secretKeyRef: {{name: app, key: env}}}}}}]
    securityContext: {{runAsUser: 1000}}
    volumeMounts: [{{name: s, mountPath: /s}}]
  volumes:
  - {{name: s, secret: {{secretName: app}}}}
""")
    outputs = []

    def run(*args, check=True):
        res = stack.run(*args, check=check)
        outputs.append(f"$ podplay {args[0]}\n{res.stdout}{res.stderr}")  # not the arguments: they hold the URL
        return res

    run("validate", str(m))
    run("plan", str(m))
    run("plan", "-o", "json", str(m))
    run("up", "--wait", str(m))
    # The pod got what it needs: its own user reads its secret file and env.
    assert exec_in(stack, "private", "app", "cat", "/s/file").stdout == FILE_SECRET
    assert exec_in(stack, "private", "app", "sh", "-c", "echo $TOKEN").stdout.strip() == ENV_SECRET

    repo, url = git_over_http
    repo.commit({"apps/synced.yaml": f"""apiVersion: v1
kind: Pod
metadata: {{name: synced}}
spec:
  containers:
  - {{name: app, image: {BUSYBOX}, command: [sleep, "1000"]}}
"""})
    repo.git("update-server-info", cwd=repo.bare)
    run("sync", url, "--path", "apps", "--once")
    # Errors: a wrong token, and a URL git refuses.
    run("sync", url.replace(GIT_TOKEN, "wrong-" + GIT_TOKEN), "--path", "apps", "--once", check=False)
    run("sync", url.replace("http://", "ext::http://"), "--once", check=False)
    for args in (("status",), ("status", "-o", "json"), ("ps", "-a"), ("pods",), ("logs", "private"),
                 ("logs", "synced")):
        run(*args)

    text = "\n".join(outputs)
    assert "started" in text and "synced" in text
    for secret in (GIT_TOKEN, reg.password, FILE_SECRET, ENV_SECRET,
                   base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()):
        assert secret not in text, f"{secret!r} shown:\n{text}"

    # The git token is nowhere on disk (the pull password may be, in the owner-only state store).
    for top in (stack.paths.root, stack.paths.runroot):
        res = subprocess.run(["grep", "-rlF", "--", GIT_TOKEN, str(top)], capture_output=True, text=True)
        assert res.stdout == "", res.stdout
    assert os.stat(stack.paths.state_db).st_mode & 0o777 == 0o600

    # An unprivileged local user, with the path to both roots open to it, reads nothing.
    base = stack.paths.root.parent
    os.chmod(base, 0o755)
    seen = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "/usr/bin/python3", "-c", WALK, str(stack.paths.root), str(stack.paths.runroot)],
                          capture_output=True, text=True, check=True, cwd="/")
    assert json.loads(seen.stdout) == [], seen.stdout
    for top in (stack.paths.root, stack.paths.runroot):
        assert Path(top).stat().st_mode & 0o077 == 0, top

    synced = next(stack.paths.root.glob("sync/*/current"))
    stack.run("down", str(synced))
    stack.run("stop", "-t", "0", "private")
    stack.run("down", str(m))
