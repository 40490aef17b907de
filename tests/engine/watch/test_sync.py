"""`podplay sync URL`: real git (file:// and `git daemon` on 127.0.0.1), the fake host.

Most cases run `podplay sync --once` (fetch, converge, exit) after each push: the same code
path as the keeper's, without waiting for an interval; one case runs the keeper for real.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.watch.conftest import eventually, pod

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.test",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.test"}


class Repo:
    """A bare repository (the remote) and a clone to commit from."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bare = tmp / "remote.git"
        self.work = tmp / "work"
        self.gitconfig = tmp / "gitconfig"
        self.gitconfig.write_text("")
        self.env = {**os.environ, **GIT_ENV, "GIT_CONFIG_GLOBAL": str(self.gitconfig)}
        self.git("init", "--quiet", "--bare", "-b", "main", str(self.bare), cwd=tmp)
        self.git("init", "--quiet", "-b", "main", str(self.work), cwd=tmp)
        self.git("remote", "add", "origin", str(self.bare))

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def git(self, *args: str, cwd: Path | None = None) -> str:
        res = subprocess.run(["git", *args], cwd=cwd or self.work, env=self.env, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, f"git {' '.join(args)}: {res.stderr}"
        return res.stdout.strip()

    def commit(self, files: dict[str, str | None], message: str = "change", *, sign: bool = False) -> str:
        for name, text in files.items():
            p = self.work / name
            if text is None:
                p.unlink()
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", message, *(["-S"] if sign else []))
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")

    def revert(self) -> str:
        self.git("revert", "--no-edit", "HEAD")
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path)


def sync_once(site, repo, *args: str, env: dict | None = None):
    return site.podplay("sync", repo.url, "--path", "apps", "--once", *args, env=env)


def keeper_status(site) -> dict:
    [k] = site.status()["keepers"]
    return k


def test_commit_bad_commit_and_revert(site, repo):
    c1 = repo.commit({"apps/a.yaml": pod("a"), "README.md": "not a manifest\n"})
    res = sync_once(site, repo)
    assert res.returncode == 0, res.stderr
    assert site.running() == {"default/a": {"app"}}
    uid = site.pods()["default/a"]
    k = keeper_status(site)
    assert k["kind"] == "sync" and k["source"]["applied"] == c1 and k["source"]["branch"] == "main"
    assert k["source"]["url"] == repo.url and not k["source"]["problem"]

    bad = repo.commit({"apps/a.yaml": pod("a", command="sleep 9").replace("image:", "imgae:")}, "typo")
    res = sync_once(site, repo)
    assert res.returncode == 1, "an invalid commit is bad input"
    assert site.pods() == {"default/a": uid}, "a refused commit must not touch the host"
    k = keeper_status(site)
    assert k["source"]["applied"] == c1 and k["source"]["head"] == bad
    assert f"commit {bad[:12]} not applied" in k["source"]["problem"]
    assert "apps/a.yaml:" in k["source"]["problem"], "the reason names the file as a path in the repository"
    assert "imgae" in k["source"]["problem"]
    text = site.podplay("status").stdout
    assert f"applied commit: {c1}" in text and "not applied" in text
    assert "commit_refused" in res.stderr

    c3 = repo.revert()
    res = sync_once(site, repo)
    assert res.returncode == 0, res.stderr
    assert keeper_status(site)["source"]["applied"] == c3
    assert site.pods() == {"default/a": uid}, "the revert describes the same pod: nothing to do"

    c4 = repo.commit({"apps/a.yaml": pod("a", command="sleep 2"), "apps/sub/b.yaml": pod("b")})
    assert sync_once(site, repo).returncode == 0
    assert site.running() == {"default/a": {"app"}, "default/b": {"app"}}
    assert site.pods()["default/a"] != uid
    assert keeper_status(site)["source"]["applied"] == c4

    repo.commit({"apps/sub/b.yaml": None})
    assert sync_once(site, repo).returncode == 0
    assert set(site.running()) == {"default/a"}, "a file removed from the repository is pruned"
    # Only the applied commit's checkout is kept.
    sync_dir = site.paths.root / "sync"
    [sid] = os.listdir(sync_dir)
    assert len(os.listdir(sync_dir / sid / "commits")) == 1


def test_a_commit_that_fails_to_apply_returns_the_host_to_the_last_good_commit(site, repo):
    c1 = repo.commit({"apps/a.yaml": pod("a")})
    assert sync_once(site, repo).returncode == 0
    with site.mutate() as h:
        h.host_ports_in_use.add(9090)  # held by some other program on this host
    ports = "    ports: [{containerPort: 80, hostPort: 9090}]\n"
    c2 = repo.commit({"apps/a.yaml": pod("a", command="sleep 5", extra=ports)})
    res = sync_once(site, repo)
    assert res.returncode == 3
    assert "rollback" in res.stderr
    assert site.running() == {"default/a": {"app"}}, "the last good commit's pod runs again"
    k = keeper_status(site)
    assert k["source"]["applied"] == c1 and k["source"]["last_good"] == c1
    [failed] = k["source"]["failed"]
    assert failed["commit"] == c2 and "9090" in failed["reason"]
    assert "9090" in k["source"]["problem"]
    current = site.paths.root / "sync" / k["id"] / "current"
    assert os.readlink(current).endswith(c1), "current points at the last good commit again"


def test_verify_applies_only_commits_signed_by_an_allowed_key(site, repo, tmp_path):
    keys = {}
    for who in ("dev", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(tmp_path / who)],
                       check=True, capture_output=True)
        keys[who] = tmp_path / who
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"dev@example.test {(tmp_path / 'dev.pub').read_text()}")
    verifier = tmp_path / "verifier.gitconfig"
    verifier.write_text(f'[gpg "ssh"]\n\tallowedSignersFile = {allowed}\n')
    env = {**site.env, "GIT_CONFIG_GLOBAL": str(verifier), "GIT_CONFIG_NOSYSTEM": "1"}
    repo.git("config", "gpg.format", "ssh")

    repo.git("config", "user.signingkey", str(keys["dev"]))
    c1 = repo.commit({"apps/a.yaml": pod("a")}, sign=True)
    res = sync_once(site, repo, "--verify", env=env)
    assert res.returncode == 0, res.stderr
    assert keeper_status(site)["source"]["applied"] == c1

    unsigned = repo.commit({"apps/b.yaml": pod("b")})
    assert sync_once(site, repo, "--verify", env=env).returncode == 1
    assert set(site.running()) == {"default/a"}
    assert "not signed" in keeper_status(site)["source"]["problem"]

    repo.git("config", "user.signingkey", str(keys["stranger"]))
    stranger = repo.commit({"apps/c.yaml": pod("c")}, sign=True)
    assert sync_once(site, repo, "--verify", env=env).returncode == 1
    assert set(site.running()) == {"default/a"}
    assert "no valid signature" in keeper_status(site)["source"]["problem"]
    assert {r["commit"] for r in keeper_status(site)["source"]["refused"]} == {unsigned, stranger}

    repo.git("config", "user.signingkey", str(keys["dev"]))
    repo.commit({}, "signed again", sign=True)
    assert sync_once(site, repo, "--verify", env=env).returncode == 0
    assert set(site.running()) == {"default/a", "default/b", "default/c"}


def test_works_offline_from_its_local_clone(site, repo):
    c1 = repo.commit({"apps/a.yaml": pod("a")})
    assert sync_once(site, repo).returncode == 0
    repo.bare.rename(repo.tmp / "unreachable.git")
    with site.mutate() as h:  # the pod vanished (say, a reboot wiped it)
        h.containers.clear()
        h.attachments.clear()
        h.snapshots.clear()
        h.pod_volumes.clear()
    res = sync_once(site, repo)
    assert res.returncode == 0, res.stderr
    assert site.running() == {"default/a": {"app"}}
    k = keeper_status(site)
    assert k["source"]["applied"] == c1 and "cannot fetch" in k["source"]["fetch_error"]
    assert "fetch failed" in site.podplay("status").stdout


def test_hostile_repositories_and_arguments_are_refused(site, repo):
    repo.commit({"apps/a.yaml": pod("a")})
    assert sync_once(site, repo).returncode == 0
    (repo.work / "apps" / "passwd.yaml").symlink_to("/etc/passwd")
    evil = repo.commit({}, "link out")
    assert sync_once(site, repo).returncode == 1
    problem = keeper_status(site)["source"]["problem"]
    assert evil[:12] in problem and "passwd.yaml is a symbolic link to /etc/passwd" in problem
    assert "root:" not in problem

    res = site.podplay("sync", "--upload-pack=touch /tmp/pwned", "--once")
    assert res.returncode in (1, 2)
    res = site.podplay("sync", repo.url, "--path", "../..", "--once")
    assert res.returncode == 1 and "inside the repository" in res.stderr
    res = site.podplay("sync", "ext::sh -c touch% /tmp/pwned", "--once")
    assert res.returncode == 1 and "not allowed" in res.stderr
    assert not Path("/tmp/pwned").exists()


def test_a_clone_that_fails_says_why(site, tmp_path):
    res = site.podplay("sync", f"file://{tmp_path}/missing.git", "--once")
    assert res.returncode == 3
    [k] = site.status()["keepers"]
    assert "cannot clone" in k["source"]["fetch_error"] and k["source"]["problem"]
    assert site.pods() == {}


# --- git daemon ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def git_daemon(repo):
    """`git daemon` serving the test's repositories on 127.0.0.1 (a free port), killed at teardown."""
    for _ in range(5):
        port = _free_port()
        # `git daemon` runs git-daemon as a child: a session of its own lets teardown kill both.
        proc = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={repo.tmp}",
                                 "--listen=127.0.0.1", f"--port={port}", str(repo.tmp)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=repo.env,
                                start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        if proc.poll() is None:
            break
        _kill_group(proc)
    else:
        pytest.fail("git daemon did not start")
    yield f"git://127.0.0.1:{port}/remote.git"
    _kill_group(proc)
    proc.stderr.close()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_running_sync_over_git_daemon_follows_the_branch(site, repo, git_daemon):
    c1 = repo.commit({"apps/a.yaml": pod("a")})
    k = site.keeper("sync", git_daemon, "--path", "apps", "--interval", "0.3", "--relist", "0.2")
    eventually(lambda: site.running() == {"default/a": {"app"}}, "the first commit to apply")
    k.wait_event("applied", lambda e: c1.startswith(e["commit"]))

    c2 = repo.commit({"apps/b.yaml": pod("b")})
    k.wait_event("applied", lambda e: c2.startswith(e["commit"]))
    eventually(lambda: set(site.running()) == {"default/a", "default/b"}, "the pushed commit to converge")

    bad = repo.commit({"apps/b.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\n"})
    k.wait_event("commit_refused", lambda e: bad.startswith(e["commit"]))
    st = keeper_status(site)
    assert st["running"] and st["source"]["applied"] == c2 and "spec" in st["source"]["problem"]

    c4 = repo.revert()
    k.wait_event("applied", lambda e: c4.startswith(e["commit"]))
    assert keeper_status(site)["source"]["problem"] == ""

    # A container that dies is restarted by the same keeper.
    cid = site.containers("default/b")["app"]["id"]
    with site.mutate() as h:
        h.exit_container(cid, 1)
    k.wait_event("restarted", lambda e: e["pod"] == "default/b")
    assert k.stop() == 0
    assert set(site.running()) == {"default/a", "default/b"}
