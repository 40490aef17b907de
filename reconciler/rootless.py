"""Rootless podplay: where an unprivileged user's state lives, and what the host must provide.

Paths follow podman's rules for a non-root user:

* durable state: ``$XDG_DATA_HOME/podplay`` (``~/.local/share/podplay``);
* volatile state: ``$XDG_RUNTIME_DIR/podplay`` when that directory is set and is the user's own,
  else ``<temp dir>/podplay-run-<uid>`` (made 0700 and checked to be the user's: another user
  must not be able to prepare it);
* CNI configuration: ``$XDG_CONFIG_HOME/podplay/net.d`` (``~/.config/podplay/net.d``).

``check_prerequisites`` lists every missing prerequisite with the command that fixes it (no
subordinate IDs, no newuidmap/newgidmap, user namespaces disabled, no slirp4netns or pasta);
``low_host_ports`` the hostPorts an unprivileged user cannot bind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import EnvironmentProblem
from reconciler.idmap import RANGE_SIZE
from reconciler.subids import SUBGID, SUBUID, parse

_CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}; {self.fix}"


def rootless() -> bool:
    return os.geteuid() != 0


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir)


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_DATA_HOME") or str(_home(env) / ".local" / "share")
    return Path(base) / "podplay"


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(base) / "podplay"


def run_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_RUNTIME_DIR/podplay`` if that directory exists and is ours, else the fallback in
    the temporary directory (as podman falls back to ``/tmp/podman-run-<uid>``)."""
    uid = os.geteuid()
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        with contextlib.suppress(OSError):
            st = os.stat(xdg)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and os.access(xdg, os.W_OK | os.X_OK):
                return Path(xdg) / "podplay"
    return Path(env.get("TMPDIR") or tempfile.gettempdir()) / f"podplay-run-{uid}"


def ensure_own_dir(path: Path) -> Path:
    """``path`` made 0700 if missing; refused when it exists and is not this user's own directory
    (a fallback in a shared temporary directory could have been made by someone else first)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise EnvironmentProblem(f"{path} is not a directory of your own (owner uid {st.st_uid}); remove it, or "
                                 "set XDG_RUNTIME_DIR to a directory that is yours")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


# --- prerequisites ---------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _subid_count(path: str, user: str, uid: int) -> int:
    text = _read(path) or ""
    return sum(r.count for r in parse(text) if r.name in (user, str(uid)))


def _id_tool_ok(path: str) -> bool:
    """newuidmap must be setuid root or carry file capabilities to write another user's map."""
    st = os.stat(path)
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return True
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def _userns_error() -> str:
    """'' when this process can make a user namespace, else why not (a forked child tries)."""
    libc = ctypes.CDLL(None, use_errno=True)
    unshare = libc.unshare
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(r)
            err = 0 if unshare(_CLONE_NEWUSER) == 0 else ctypes.get_errno()
            os.write(w, str(err).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        answer = os.read(r, 16).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return "" if answer == "0" else os.strerror(int(answer or "1"))


def check_prerequisites(user: str | None = None, uid: int | None = None, *,
                        subuid: str = SUBUID, subgid: str = SUBGID, probe: bool = True) -> list[Problem]:
    """Everything a rootless podplay needs that this host lacks, each with its fix."""
    uid = os.geteuid() if uid is None else uid
    if user is None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
    problems = []
    for path, kind, flag in ((subuid, "user", "--add-subuids"), (subgid, "group", "--add-subgids")):
        count = _subid_count(path, user, uid)
        if count < RANGE_SIZE:
            have = f"only {count}" if count else "no"
            problems.append(Problem(
                f"{path} gives {user} {have} subordinate {kind} IDs (a pod needs {RANGE_SIZE})",
                f"as root: usermod {flag} 100000-165535 {user} (any free range of {RANGE_SIZE})"))
    for tool in ("newuidmap", "newgidmap"):
        found = shutil.which(tool)
        if not found:
            problems.append(Problem(f"{tool} is not installed", "as root: apt-get install uidmap"))
        elif not _id_tool_ok(found):
            problems.append(Problem(f"{found} is neither setuid root nor has file capabilities",
                                    f"as root: chmod u+s {found} (or reinstall uidmap)"))
    problems += _userns_problems(probe)
    problems += [p for p in (choose_network()[1],) if p is not None]
    problems += _tun_problems(TUN)
    return problems


TUN = "/dev/net/tun"

# What carries a rootless pod's network: slirp4netns, or pasta (Debian's passt package).
NETWORK_TOOLS = {"slirp4netns": "slirp4netns", "pasta": "passt"}  # tool → Debian package
NETWORK_ENV = "PODPLAY_ROOTLESS_NETWORK"


def choose_network(env: Mapping[str, str] | None = None, which=None) -> tuple[str, Problem | None]:
    """The tool that networks rootless pods: ``$PODPLAY_ROOTLESS_NETWORK`` when set (slirp4netns
    or pasta), else slirp4netns when installed, else pasta; or ("", the problem)."""
    env = os.environ if env is None else env
    which = which or shutil.which
    asked = env.get(NETWORK_ENV, "")
    if asked:
        if asked not in NETWORK_TOOLS:
            return "", Problem(f"{NETWORK_ENV}={asked!r} names no rootless network",
                               f"set it to {' or '.join(NETWORK_TOOLS)}, or unset it")
        if not which(asked):
            return "", Problem(f"{NETWORK_ENV}={asked} asks for {asked}, which is not installed",
                               f"as root: apt-get install {NETWORK_TOOLS[asked]}")
        return asked, None
    for tool in NETWORK_TOOLS:
        if which(tool):
            return tool, None
    return "", Problem("neither slirp4netns nor pasta is installed: rootless pods would have no network",
                       "as root: apt-get install slirp4netns (or passt)")


def network_tool() -> str:
    tool, problem = choose_network()
    if problem is not None:
        raise EnvironmentProblem(str(problem))
    return tool


def _tun_problems(path: str) -> list[Problem]:
    """slirp4netns and pasta open the tun device from inside the user namespace, where its owner
    (the host's root) is nobody: only its "other" bits count (udev makes it 0666)."""
    try:
        st = os.stat(path)
    except OSError:
        return [Problem(f"{path} does not exist: rootless pods would have no network",
                        "as root: modprobe tun")]
    if (st.st_mode & 0o006) != 0o006:
        return [Problem(f"{path} is not usable by other users (mode {stat.S_IMODE(st.st_mode):o}): rootless pods "
                        "would have no network", f"as root: chmod 0666 {path} (udev's default)")]
    return []


def _userns_problems(probe: bool) -> list[Problem]:
    knobs = (
        ("/proc/sys/user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
         "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for podplay)"),
    )
    out = []
    for path, bad, fix in knobs:
        value = (_read(path) or "").strip()
        if value == bad:
            out.append(Problem(f"unprivileged user namespaces are disabled ({path} is {bad})", f"as root: {fix}"))
    if not out and probe:
        why = _userns_error()
        if why:
            out.append(Problem(f"this user cannot create a user namespace ({why})",
                               "as root: allow unprivileged user namespaces (sysctl user.max_user_namespaces, "
                               "kernel.unprivileged_userns_clone)"))
    return out


def unprivileged_port_start() -> int:
    try:
        return int((_read("/proc/sys/net/ipv4/ip_unprivileged_port_start") or "1024").strip())
    except ValueError:
        return 1024


@dataclass(frozen=True)
class PortUse:
    pod: str  # namespace/name
    source: str  # the manifest file
    field: str  # spec.containers[i].ports[j].hostPort
    port: int


def low_host_ports(uses: Iterable[PortUse], start: int | None = None) -> list[Problem]:
    """The hostPorts below the first port an unprivileged user may bind."""
    start = unprivileged_port_start() if start is None else start
    return [Problem(f"{u.source}: {u.pod}: {u.field} {u.port} is below {start}, which only root may bind",
                    f"use a hostPort of {start} or more, or as root: sysctl -w net.ipv4.ip_unprivileged_port_start="
                    f"{u.port}")
            for u in uses if 0 < u.port < start]


def host_port_uses(pods) -> list[PortUse]:
    """Every hostPort of desired pods (``DesiredPod``), with where it is written."""
    out = []
    for pod in pods:
        for field_name, containers in (("initContainers", pod.spec.init_containers),
                                       ("containers", pod.spec.containers)):
            for i, c in enumerate(containers):
                for j, p in enumerate(c.ports):
                    if p.host_port:
                        out.append(PortUse(pod.ref, str(pod.source), f"spec.{field_name}[{i}].ports[{j}].hostPort",
                                           p.host_port))
    return out
