"""A test user of its own (with the subordinate IDs useradd gives it) and podplay installed for
it as a user would: Debian's python3 -m venv and pip from the package registry (the interpreter
behind root's virtual environment is not readable by other users on these machines)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler import subids

LOCK = "/tmp/podplay-test-rootless.lock"

REPO = Path(__file__).resolve().parents[3]


@dataclass
class User:
    name: str
    uid: int
    home: Path
    venv: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
                "PATH": f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **extra}

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: str | None = None) -> subprocess.CompletedProcess:
        """``argv`` as this user, with only the environment a login would give (and ``env``)."""
        assignments = [f"{k}={v}" for k, v in (env if env is not None else self.env()).items()]
        return subprocess.run(["runuser", "-u", self.name, "--", "env", "-i", *assignments, *argv],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd or str(self.home))

    def podplay(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "podplay"), *args, env=env)

    def ranges(self, path: str) -> list[subids.SubIdRange]:
        return subids.ranges_of(self.name, Path(path).read_text())


def _copy_source(dest: Path) -> None:
    """The work tree as git sees it (committed or not), without .venv, caches or build output."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


@pytest.fixture(autouse=True)
def _one_rootless_test_at_a_time():
    with rootless_turn():
        yield


@contextlib.contextmanager
def rootless_turn():
    """One rootless test (or fixture that runs podplay as the user) at a time on the whole host,
    whichever xdist worker has it (pytest-xdist 3.8's `--dist loadgroup` was found not to keep
    `xdist_group` marks on one worker), since they share /dev/net/tun's mode: for each, the
    device as udev leaves it (0666; this VM has no udev, and its device is root's alone), and
    its mode back after."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        mode = os.stat("/dev/net/tun").st_mode & 0o7777
        os.chmod("/dev/net/tun", 0o666)
        try:
            yield
        finally:
            os.chmod("/dev/net/tun", mode)
    finally:
        os.close(fd)  # and the lock with it


@pytest.fixture(scope="session")
def rootless_user():
    base = Path(tempfile.mkdtemp(prefix="pp-user-", dir="/tmp"))
    os.chmod(base, 0o755)
    name = f"pprl{os.getpid() % 100000}"
    home = base / "home"
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", name],
                   check=True, capture_output=True)
    try:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout)
        src = home / "src"
        _copy_source(src)
        subprocess.run(["chown", "-R", f"{name}:", str(src)], check=True)
        user = User(name, uid, home, home / "venv")
        for argv in (["/usr/bin/python3", "-m", "venv", str(user.venv)],
                     [str(user.venv / "bin" / "pip"), "install", "-q", str(src)]):
            res = user.run(*argv, timeout=900)
            assert res.returncode == 0, f"{argv}: {res.stdout}\n{res.stderr}"
        yield user
    finally:
        subprocess.run(["pkill", "-9", "-u", name], capture_output=True)
        uid_text = subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout.strip()
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        if uid_text:
            shutil.rmtree(f"/tmp/podplay-run-{uid_text}", ignore_errors=True)
        for path in (subids.SUBUID, subids.SUBGID):
            assert not subids.ranges_of(name, Path(path).read_text()), f"{path} still lists {name}"
