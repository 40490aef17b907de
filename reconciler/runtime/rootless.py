"""Rootless podplay's user namespace: the user as root, and its subordinate IDs above, held open.

As podman does, one pause process per user holds a user namespace that maps 0 to the user and
1…N to the user's subordinate ranges (written by the setuid ``newuidmap``/``newgidmap``; an
unprivileged process may map only itself), and a mount namespace inside it, so that the mounts
made there (overlays of image layers) outlive the command that made them and every later
command sees them. A command joins both with ``nsenter`` (as root inside). The holder's pid and
start time are kept in ``<run root>/pause.pid``: a recycled pid is never taken for it.

Every command of an unprivileged user that runs containers runs inside it (reconciler.cli.rootless),
which stops the holder once no container and no mount needs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from reconciler import idmap
from reconciler.errors import EnvironmentProblem
from reconciler.runtime import hostinfo
from reconciler.subids import SUBGID, SUBUID, SubIdRange, parse

_CLONE_NEWNS = 0x00020000


def _ranges(path: str, user: str, uid: int) -> list[SubIdRange]:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    return [r for r in parse(text) if r.name in (user, str(uid))]


def id_map_args(own: int, ranges: list[SubIdRange]) -> list[str]:
    """newuidmap's triples: 0 is the user itself, the subordinate ranges follow from 1 on."""
    out = ["0", str(own), "1"]
    inside = 1
    for r in ranges:
        out += [str(inside), str(r.start), str(r.count)]
        inside += r.count
    return out


class UserNamespace:
    def __init__(self, run_dir: Path, *, pause: str = "/usr/bin/catatonit", subuid: str = SUBUID,
                 subgid: str = SUBGID):
        self.run_dir = Path(run_dir)
        self.pause = pause
        self.subuid, self.subgid = subuid, subgid

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pause.pid"

    def holder(self) -> int:
        """The live holder's pid, or 0."""
        try:
            rec = json.loads(self.pid_file.read_text())
            pid, start = int(rec["pid"]), rec["start"]
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        return pid if hostinfo.proc_start_time(pid) == start else 0

    def ensure(self) -> int:
        """The holder's pid, started when there is none."""
        pid = self.holder()
        return pid or self._start()

    def _start(self) -> int:
        uid, gid = os.geteuid(), os.getegid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        uids, gids = _ranges(self.subuid, user, uid), _ranges(self.subgid, user, uid)
        if not uids or not gids:
            raise EnvironmentProblem(f"{user} has no subordinate IDs in {self.subuid} and {self.subgid}; as root: "
                                     f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}")
        tools = [shutil.which("newuidmap"), shutil.which("newgidmap")]
        if not all(tools):
            raise EnvironmentProblem("newuidmap and newgidmap are needed; as root: apt-get install uidmap")
        if not os.path.isfile(self.pause):
            raise EnvironmentProblem(f"the pause binary {self.pause} is missing (install catatonit)")
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        def hold() -> None:  # in the child, inside its new user namespace with the maps written
            if unshare(_CLONE_NEWNS) == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execv(self.pause, [self.pause, "-P"])

        unshare = ctypes.CDLL(None, use_errno=True).unshare
        with idmap.unshared_child(hold, setsid=True) as pid:
            for tool, ranges, own in ((tools[0], uids, uid), (tools[1], gids, gid)):
                res = subprocess.run([tool, str(pid), *id_map_args(own, ranges)], capture_output=True, text=True,
                                     check=False)
                if res.returncode != 0:
                    raise EnvironmentProblem(f"{os.path.basename(tool)} failed: {res.stderr.strip()}")
        # The holder is our child until we exit; it must never become a zombie of a long-running
        # caller: reap it in the background when it ends.
        import threading

        threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
        start = hostinfo.proc_start_time(pid)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "start": start}))
        os.replace(tmp, self.pid_file)
        self._wait_mount_ns(pid)
        return pid

    @staticmethod
    def _wait_mount_ns(pid: int) -> None:
        """The holder unshares its mount namespace right after the maps are written: wait for it."""
        import time

        mine = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") != mine:
                    return
            time.sleep(0.005)
        raise EnvironmentProblem("the user namespace's holder did not make its mount namespace")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as root inside the user's namespaces, in the current directory (entering a
        mount namespace would otherwise move it to the namespace's root)."""
        pid = self.ensure()
        return ["nsenter", f"--target={pid}", "--user", "--mount", f"--wd={os.getcwd()}", "--", *argv]

    def stop(self) -> None:
        import time

        pid = self.holder()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            # Dead once it is a zombie: its parent (a podplay long gone, then init) reaps it.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.01)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
