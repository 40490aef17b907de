"""`podplay sync https://user:TOKEN@host/repo.git`: the token reaches git and nothing else.

The remote is a bare repository served over git's "dumb" HTTP protocol by a small server on
127.0.0.1 that demands HTTP Basic authentication: git can only clone and fetch if the
credentials reach it (through podplay's ASKPASS), and the test then looks for the token in
every file under the storage root, in every output and in `podplay status`.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

from reconciler.redact import redact_url
from reconciler.watch.sync import split_credentials
from tests.engine.watch.conftest import pod
from tests.engine.watch.test_sync import Repo

TOKEN = "tok-3f9a1c-S3CRET"  # noqa: S105 - a test credential
USER = "deploy-bot"


class _AuthHandler(http.server.SimpleHTTPRequestHandler):
    expected = ""

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def http_repo(tmp_path):
    """(repo, url without credentials): the repo's bare remote over HTTP with Basic auth."""
    repo = Repo(tmp_path)
    handler = functools.partial(_AuthHandler, directory=str(tmp_path))
    _AuthHandler.expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield repo, f"http://127.0.0.1:{server.server_address[1]}/remote.git"
    server.shutdown()
    server.server_close()


def push(repo: Repo, files: dict[str, str]) -> str:
    commit = repo.commit(files)
    repo.git("update-server-info", cwd=repo.bare)  # what the dumb protocol serves
    return commit


def files_holding(root: Path, needle: bytes) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            if p.is_symlink() or not p.is_file():
                continue
            if needle in p.read_bytes():
                out.append(str(p))
    return out


@pytest.mark.parametrize(("url", "want"), [
    ("https://u:p%40ss@host/r.git", ("https://host/r.git", "u", "p@ss")),
    ("https://TOKEN@host:8443/r.git", ("https://host:8443/r.git", "TOKEN", "")),
    ("http://host/r.git", ("http://host/r.git", "", "")),
    ("ssh://git@host/r.git", ("ssh://git@host/r.git", "", "")),
    ("file:///srv/r.git", ("file:///srv/r.git", "", "")),
])
def test_split_credentials(url, want):
    assert split_credentials(url) == want


def test_redact_url():
    assert redact_url("cannot fetch https://u:tok@h/r.git: x") == "cannot fetch https://***@h/r.git: x"
    assert redact_url("git://h/r.git and ssh://git@h/r") == "git://h/r.git and ssh://***@h/r"


def test_the_token_reaches_git_and_nothing_else(site, http_repo, tmp_path):
    repo, bare_url = http_repo
    url = bare_url.replace("http://", f"http://{USER}:{TOKEN}@")
    c1 = push(repo, {"apps/a.yaml": pod("a")})
    # A credential helper in the user's git config must not get to store the token.
    store = tmp_path / "git-credentials"
    gitconfig = tmp_path / "user-gitconfig"
    gitconfig.write_text(f"[credential]\n\thelper = store --file={store}\n")
    env = {**site.env, "GIT_CONFIG_GLOBAL": str(gitconfig), "HOME": str(tmp_path)}

    outputs = []
    res = site.podplay("sync", url, "--path", "apps", "--once", env=env)
    outputs += [res.stdout, res.stderr]
    assert res.returncode == 0, res.stderr
    assert site.running() == {"default/a": {"app"}}

    c2 = push(repo, {"apps/b.yaml": pod("b")})
    res = site.podplay("sync", url, "--path", "apps", "--once", env=env)  # the fetch path
    outputs += [res.stdout, res.stderr]
    assert res.returncode == 0, res.stderr
    assert set(site.running()) == {"default/a", "default/b"}

    # A wrong token: the same source (its identity is the URL without credentials), so it keeps
    # running from its mirror and says why the fetch failed, naming the URL without the token.
    wrong = bare_url.replace("http://", f"http://{USER}:wrong-{TOKEN}@")
    res = site.podplay("sync", wrong, "--path", "apps", "--once", "--log-format", "json", env=env)
    outputs += [res.stdout, res.stderr]
    assert res.returncode == 0 and f"Authentication failed for '{bare_url}/'" in res.stderr, res.stderr

    status = site.podplay("status", env=env)
    status_json = site.podplay("status", "-o", "json", env=env)
    outputs += [status.stdout, status.stderr, status_json.stdout, status_json.stderr]
    [k] = [k for k in site.status()["keepers"] if k["source"]["applied"]]
    assert k["source"]["url"] == bare_url and k["source"]["applied"] == c2 != c1

    for text in outputs:
        assert TOKEN not in text, text
    assert files_holding(site.paths.root, TOKEN.encode()) == []
    assert files_holding(site.paths.runroot, TOKEN.encode()) == [] if site.paths.runroot.exists() else True
    assert not store.exists(), "a credential helper stored the token"
    mirror = next(site.paths.root.glob("sync/*/mirror.git"))
    got = subprocess.run(["git", "--git-dir", str(mirror), "config", "remote.origin.url"], capture_output=True,
                         text=True).stdout.strip()
    assert got == bare_url
    # Owner-only: the mirror holds a private repository's files.
    assert (site.paths.root / "sync").stat().st_mode & 0o077 == 0


def test_an_old_mirror_with_the_token_in_its_config_is_scrubbed(site, http_repo):
    repo, bare_url = http_repo
    url = bare_url.replace("http://", f"http://{USER}:{TOKEN}@")
    push(repo, {"apps/a.yaml": pod("a")})
    assert site.podplay("sync", url, "--path", "apps", "--once").returncode == 0
    mirror = next(site.paths.root.glob("sync/*/mirror.git"))
    # What an older podplay left: the URL as typed in the mirror's config.
    subprocess.run(["git", "--git-dir", str(mirror), "config", "remote.origin.url", url], check=True)
    assert site.podplay("sync", url, "--path", "apps", "--once").returncode == 0
    assert files_holding(site.paths.root, TOKEN.encode()) == []


def test_credentials_from_the_environment_keep_them_off_the_command_line(site, http_repo):
    repo, bare_url = http_repo
    push(repo, {"apps/a.yaml": pod("a")})
    assert site.podplay("sync", bare_url, "--path", "apps", "--once").returncode == 3  # 401: no credentials
    env = {**site.env, "PODPLAY_GIT_USERNAME": USER, "PODPLAY_GIT_PASSWORD": TOKEN}
    res = site.podplay("sync", bare_url, "--path", "apps", "--once", env=env)
    assert res.returncode == 0, res.stderr
    assert site.running() == {"default/a": {"app"}}
    assert files_holding(site.paths.root, TOKEN.encode()) == []
