"""Launching a container under conmon, the monitor that stays with it after podplay exits.

conmon (api version 1) forks itself into the background, runs ``runc create``, and reports the
container's pid — or runc's error — as one JSON line on the pipe named by ``_OCI_SYNCPIPE``:
``{"data": 4242}`` or ``{"data": -1, "message": "…"}``. It then holds the container's stdio,
writes the CRI log, and on exit writes the exit code to ``<exit-dir>/<id>`` and
``<persist-dir>/exit`` and, after an OOM kill, ``<persist-dir>/oom``. podplay starts the
process afterwards with ``runc start`` itself, as podman does.

conmon's stdio are /dev/null (and its stderr a file, for errors before it daemonizes), so that
it never holds a caller's pipes open; its only inherited descriptor is the sync pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.errors import ContainerRuntimeError, EnvironmentProblem

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Launched:
    pid: int  # the container's init process
    conmon_pid: int


def runc_message(text: str) -> str:
    """The human part of runc's (logrus-formatted) error output."""
    msgs = []
    for line in text.splitlines():
        m = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
        if m:
            msgs.append(m.group(1).replace('\\"', '"').replace("\\\\", "\\"))
        elif line.strip():
            msgs.append(line.strip())
    return "; ".join(dict.fromkeys(msgs)) or text.strip()


def _read_sync(fd: int, deadline: float) -> dict | None:
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0]
    if not line:
        return None
    try:
        return json.loads(line)
    except ValueError:
        return {"data": -1, "message": line.decode(errors="replace")}


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def launch(*, conmon: str, runc: str, runc_root: str, cid: str, bundle: str, record: str, socket_dir: str,
           log_path: str, rootless: bool = False, tty: bool = False, stdin: bool = False, stdin_once: bool = False,
           timeout: float = 120.0, join_cgroups: Sequence[str] = ()) -> Launched:
    """Create container ``cid`` from ``bundle`` under a detached conmon; its pid once created.
    ``join_cgroups``: the cgroup.procs files conmon joins before it runs runc."""
    exits = os.path.join(record, "exits")
    persist = os.path.join(record, "persist")
    for d in (exits, persist, socket_dir):
        os.makedirs(d, exist_ok=True)
    argv = [
        conmon, "--api-version", "1",
        "-c", cid, "-u", cid, "-n", cid,
        "-r", runc, "-b", bundle,
        "-p", os.path.join(record, "pidfile"),
        "-P", os.path.join(record, "conmon.pid"),
        "-l", f"k8s-file:{log_path}",
        "--exit-dir", exits,
        "--persist-dir", persist,
        "--socket-dir-path", socket_dir,
        "--runtime-arg", f"--root={runc_root}",
        *(["--runtime-arg", "--rootless=true"] if rootless else []),
    ]
    if tty:
        argv.append("-t")
    if stdin:
        argv.append("-i")
        if not stdin_once:
            argv.append("--leave-stdin-open")
    argv = joined(argv, join_cgroups)
    read_fd, write_fd = os.pipe()
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "_OCI_SYNCPIPE": str(write_fd)}
    err_path = os.path.join(record, "conmon.err")
    try:
        with open(err_path, "wb") as err:
            # conmon's oom file lands in its working directory too: keep it inside the record.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    pass_fds=(write_fd,), env=env, cwd=persist, start_new_session=True)
    except OSError as e:
        os.close(read_fd)
        os.close(write_fd)
        raise EnvironmentProblem(f"cannot run conmon ({conmon}): {e.strerror}") from None
    os.close(write_fd)
    try:
        msg = _await_create(proc, read_fd, cid, record, err_path, timeout)
    finally:
        os.close(read_fd)
    pid = msg.get("data", -1)
    if not isinstance(pid, int) or pid <= 0:
        raise ContainerRuntimeError(f"cannot create container {cid}: "
                                    f"{runc_message(str(msg.get('message') or 'runc create failed'))}")
    return Launched(pid, _read_pid(os.path.join(record, "conmon.pid")))


def joined(argv: list[str], procs: Sequence[str]) -> list[str]:
    """``argv`` run by a shell that first moves itself into each cgroup (\"0\" is the writer
    itself), then becomes ``argv``: conmon and the runc it runs start there. (A preexec_fn would
    do the same in Python, which is not safe in a process with threads.)"""
    if not procs:
        return argv
    script = "; ".join(f'echo 0 > "${{{i}}}" || exit 125' for i in range(1, len(procs) + 1))
    return ["/bin/sh", "-c", f'{script}; shift {len(procs)}; exec "$@"', "sh", *procs, *argv]


def _await_create(proc: subprocess.Popen, read_fd: int, cid: str, record: str, err_path: str,
                  timeout: float) -> dict:
    """conmon detaches, then reports runc create's outcome on the sync pipe: that message."""
    deadline = time.monotonic() + timeout
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ContainerRuntimeError(f"conmon did not detach within {timeout:.0f}s for {cid}") from None
    if rc != 0:
        with open(err_path, errors="replace") as f:
            text = f.read().strip()
        raise ContainerRuntimeError(f"conmon failed for {cid} (exit {rc}): {text or 'no message'}")
    try:
        msg = _read_sync(read_fd, deadline)
    except TimeoutError:
        conmon_pid = _read_pid(os.path.join(record, "conmon.pid"))
        if conmon_pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(conmon_pid, signal.SIGKILL)
        raise ContainerRuntimeError(f"runc create {cid} did not finish within {timeout:.0f}s") from None
    if msg is None:
        raise ContainerRuntimeError(f"conmon exited without creating {cid}; see {err_path}")
    return msg
