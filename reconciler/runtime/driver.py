"""``RuncRuntime``: the RuntimeDriver on runc and conmon, with a catatonit infra container per pod.

Files (every one written by podplay, conmon or runc; nothing lives only in memory):

    <root>/containers/<id>/config.json     OCI bundle (rootfs is the snapshot's path)
    <root>/containers/<id>/labels.json     the io.podplay.* labels and creation facts, small and
                                           quick to read for list_containers
    <root>/containers/<id>/ctr.log         CRI-format log written by conmon
    <root>/containers/.restarts/<id>       how many times this id was created (restart count)
    <root>/containers/.infra-rootfs/       catatonit, copied once; the infra's read-only rootfs
    <runroot>/runc/                        runc --root (runc's own state; never parsed by us)
    <runroot>/conmon/<id>/                 state.json (pid + start time, conmon pid), started,
                                           pidfile, conmon.pid, exits/<id>, persist/{exit,oom}
    <runroot>/pods/<uid>/                  hosts, resolv.conf, hostname, shm/ (the pod's tmpfs)

State is derived from those files and /proc, not from runc: a pid is alive when /proc/<pid>/stat
shows the start time recorded at creation (so a reused pid is not mistaken for the container);
conmon's exit file gives the exit code; our ``started`` marker tells created from running. That
keeps ``list_containers`` to a few small reads per container (no runc process, no parsing of
runc's state.json, whose format is runc's business). A bundle whose run-root record is gone
(reboot: the run root is a tmpfs) is UNKNOWN, and removing it cleans up whatever is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from reconciler.drivers.base import InfraInfo
from reconciler.errors import ContainerRuntimeError, EnvironmentProblem, NotFoundError, PodplayError
from reconciler.fsutil import atomic_write
from reconciler.idmap import IdMap
from reconciler.observed import (
    LABEL_CONTAINER,
    LABEL_POD,
    LABEL_POD_UID,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_STOP_SIGNAL,
    ContainerState,
    ImageInfo,
    NetworkStatus,
    ObservedContainer,
)
from reconciler.paths import HostPaths
from reconciler.runtime import cgroups, hostinfo, oci, pinns, pod_files
from reconciler.runtime import conmon as _conmon
from reconciler.runtime.logs import read_log
from reconciler.runtime.rootfs import ensure_subpath, read_file_in_root
from reconciler.runtime.userns import Staging, locked_options, staged_subpaths
from reconciler.runtime.users import resolve_user

if TYPE_CHECKING:
    from reconciler.desired import DesiredContainer, DesiredPod

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PROC_NS = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid", "user": "user"}
KILL_WAIT = 30.0  # after SIGKILL a process exits unless stuck in the kernel
EXIT_FILE_WAIT = 10.0  # conmon writes the exit file right after it reaps the container


@dataclass(frozen=True)
class _Status:
    state: ContainerState
    pid: int = 0
    pid_start: int | None = None
    conmon_pid: int = 0
    conmon_start: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    pinned: Mapping[str, str] | None = None  # a sandbox of pinned namespaces (runtime.pinns): type → path


def _read_text(path: Path | str) -> str | None:
    # os.open/os.read rather than open(): list_containers reads several small files per
    # container on every reconcile pass, and the io wrappers cost more than the reads.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def _read_json(path: Path | str) -> dict | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _nodename() -> str:
    return os.uname().nodename


def _write_quietly(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def _cgroup_hierarchies() -> list[str]:
    """The mounted cgroup hierarchies (one on a cgroup v2 host, one per controller on v1)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return ["/sys/fs/cgroup"]
    try:
        return [e.path for e in os.scandir("/sys/fs/cgroup") if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _write_in_place(path: Path, content: str) -> None:
    """Rewrite a file keeping its inode: containers bind-mount it, and a rename would leave
    them looking at the old one."""
    data = content.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        if os.pread(fd, len(data) + 1, 0) == data:
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _host_errors(fn):
    """Every public method reports host failures (a full disk, a vanished directory) as a
    ContainerRuntimeError naming what it was doing, never as a bare OSError."""
    what = fn.__name__.replace("_", " ")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            raise ContainerRuntimeError(f"{what}: {e.strerror or e}{where}") from e

    return wrapper


def _secrets_to_give(pod: DesiredPod, container: DesiredContainer, volumes: Mapping[str, str], uid: int) -> list[str]:
    """The secret files this container needs made its own to read them.

    podplay writes secret files owner-only (0400 by default) and owned by root, or by the pod's
    runAsUser. A container running as another user (an image USER, a container-level runAsUser)
    could not read its own secret, where Kubernetes' 0644 default lets it: root-owned files
    are given to that user. Files that another non-root user already owns are refused with what
    to do instead; with an fsGroup the files are group-readable and nothing changes."""
    if uid == 0:
        return []
    by_name = {v.name: v for v in pod.volumes}
    out = []
    for vm in container.spec.volume_mounts:
        vol = by_name.get(vm.name)
        if vol is None or vol.kind != "secret" or vol.fs_group is not None or vm.name not in volumes:
            continue
        root = volumes[vm.name]
        try:
            stamp = os.readlink(os.path.join(root, "..data"))
        except FileNotFoundError:
            continue  # an optional secret that does not exist: an empty volume
        if "/" in stamp or not stamp.startswith(".."):
            raise ContainerRuntimeError(f"secret volume {vol.name!r}: unexpected ..data link {stamp!r}")
        for dirpath, _, filenames, dirfd in os.fwalk(os.path.join(root, stamp), follow_symlinks=False):
            for name in filenames:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_uid == uid:
                    continue
                if st.st_uid != 0:
                    raise ContainerRuntimeError(
                        f"{pod.ref}/{container.name} runs as uid {uid}, but the files of secret volume "
                        f"{vol.name!r} are owner-only and belong to uid {st.st_uid}: give the pod a "
                        "securityContext.fsGroup, or the secret a defaultMode that its group or others can read")
                out.append(os.path.join(dirpath, name))
    return out


class IdRangeAllocator(Protocol):
    """Host ID ranges for hostUsers: false pods (reconciler.store.idranges.PodIdAllocator: a state
    store table beside podplay's /etc/subuid and /etc/subgid entries)."""

    def allocate(self, pod_uid: str) -> IdMap: ...

    def release(self, pod_uid: str) -> None: ...


class RuncRuntime:
    """The RuntimeDriver on runc + conmon. Tool paths and policy knobs are constructor arguments
    so that tests and packagers can point them elsewhere."""

    def __init__(self, paths: HostPaths, *, runc: str = "runc", conmon: str = "conmon",
                 pause: str = "/usr/bin/catatonit", seccomp_profile: str = "/usr/share/containers/seccomp.json",
                 seccomp_root: str = "/var/lib/kubelet/seccomp", cgroup_parent: str | None = None,
                 pids_limit: int = 4096, create_timeout: float = 120.0, id_ranges: IdRangeAllocator | None = None,
                 rootless: bool = False):
        self.paths = paths
        # Rootless: podplay runs as root in the user's own namespace (runtime.rootless): runc is
        # told so, and the pods get cgroups only where the host delegates some (runtime.cgroups).
        self.rootless = rootless
        self.id_ranges = id_ranges
        self._staging = Staging(paths.userns_mounts)
        self._runc_name, self._conmon_name, self.pause = runc, conmon, pause
        self.seccomp_profile = seccomp_profile
        self.seccomp_root = seccomp_root
        # /podplay/<root tag>: cgroups are host-wide, and two storage roots may run the very same pod.
        self.cgroup_parent = "/" + (cgroup_parent or f"podplay/{paths.tag}").strip("/")
        self.pids_limit = pids_limit
        self.create_timeout = create_timeout
        self._facts: dict = {}

    # --- tools and host facts ----------------------------------------------------------------

    def _tool(self, name: str, what: str) -> str:
        key = f"tool:{name}"
        if key not in self._facts:
            found = shutil.which(name)
            if not found:
                raise EnvironmentProblem(f"{what} ({name}) is not installed; run ./scripts/setup.sh")
            self._facts[key] = os.path.abspath(found)
        return self._facts[key]

    @property
    def runc(self) -> str:
        return self._tool(self._runc_name, "runc")

    @property
    def conmon(self) -> str:
        return self._tool(self._conmon_name, "conmon")

    def _fact(self, name: str, compute):
        if name not in self._facts:
            self._facts[name] = compute()
        return self._facts[name]

    def _default_seccomp(self) -> dict | None:
        def load():
            try:
                with open(self.seccomp_profile) as f:
                    return json.load(f)
            except FileNotFoundError:
                return None
            except ValueError as e:
                raise EnvironmentProblem(f"{self.seccomp_profile} is not valid JSON: {e}") from None
        return self._fact("seccomp", load)

    def _localhost_seccomp(self, relative: str, where: str) -> dict:
        parts = relative.split("/")
        if not relative or relative.startswith("/") or ".." in parts:
            raise ContainerRuntimeError(f"{where}: seccompProfile.localhostProfile {relative!r} must be a "
                                        f"relative path under {self.seccomp_root} without '..'")
        path = os.path.join(self.seccomp_root, relative)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            raise ContainerRuntimeError(f"{where}: seccomp profile {path} does not exist") from None
        except (OSError, ValueError) as e:
            raise ContainerRuntimeError(f"{where}: seccomp profile {path} is unreadable: {e}") from None

    # --- paths ---------------------------------------------------------------------------------

    def _check_id(self, cid: str) -> str:
        if not isinstance(cid, str) or not _ID.match(cid):
            raise ContainerRuntimeError(f"{cid!r} is not a valid container id")
        return cid

    def _bundle(self, cid: str) -> Path:
        return self.paths.containers / cid

    def _record(self, cid: str) -> Path:
        return self.paths.conmon / cid

    @property
    def _socket_dir(self) -> Path:
        return self.paths.conmon / ".sock"

    @property
    def _restarts(self) -> Path:
        return self.paths.containers / ".restarts"

    @property
    def _infra_rootfs(self) -> Path:
        return self.paths.containers / ".infra-rootfs"

    def _pod_dir(self, uid: str) -> Path:
        return self.paths.pods_run / uid

    def _cgroup(self, uid: str, cid: str) -> str:
        """A container's cgroupsPath. Rootless: only below a delegated cgroup v2 subtree (on v1,
        conmon joins the pod's delegated cgroups and runc makes the container's under them)."""
        if not self.rootless:
            return f"{self.cgroup_parent}/{uid}/{cid}"
        delegation = self._delegation()
        pod = self._rootless_pod_cgroups(uid)
        if delegation.version != 2 or not pod:
            return ""
        return "/" + os.path.relpath(os.path.join(pod[0], cid), delegation.root)

    def _delegation(self) -> cgroups.Delegation:
        return self._fact("delegation", cgroups.delegation)

    def _prepare_rootless_cgroups(self, uid: str) -> list[str]:
        """Make a rootless pod's delegated cgroups; the cgroup.procs files conmon joins.
        cgroup v1: conmon starts in the pod's cgroups, and runc (which it runs) makes the
        container's cgroup under its own (a cgroupsPath would need every hierarchy delegated).
        cgroup v2: the controllers are switched on down to the pod's cgroup, and the container's
        cgroupsPath lies below it; conmon stays where podplay runs, since a cgroup that hands
        controllers to children may hold no processes of its own."""
        pods = self._rootless_pod_cgroups(uid)
        delegation = self._delegation()
        if delegation.version == 2:
            top = os.path.dirname(next(iter(delegation.dirs.values())))
            for d in pods:
                try:
                    cgroups.enable_v2(top, d, delegation.dirs)
                except OSError as exc:
                    raise ContainerRuntimeError(f"rootless cgroup: {exc.strerror}") from None
            return []
        for d in pods:
            os.makedirs(d, exist_ok=True)
        return [os.path.join(d, "cgroup.procs") for d in pods]

    def _rootless_pod_cgroups(self, uid: str) -> list[str]:
        """A rootless pod's cgroup in each delegated hierarchy (runc makes the containers' below)."""
        dirs = dict.fromkeys(self._delegation().dirs.values())  # v2: one for every controller
        return [os.path.join(d, self.paths.tag, uid) for d in dirs] if self.rootless and uid else []

    # --- state ---------------------------------------------------------------------------------

    def _status(self, cid: str, known: bool = False) -> _Status | None:
        """None when podplay has no bundle for ``cid``. (Plain string paths: this is the hot
        path of list_containers, and pathlib's joins cost as much as the reads.)"""
        if not known and not os.path.isdir(f"{self.paths.containers}/{cid}"):
            return None
        rec = f"{self.paths.conmon}/{cid}"
        st = _read_json(f"{rec}/state.json")
        if st is None:
            return _Status(ContainerState.UNKNOWN)
        pid, pid_start = int(st.get("pid", 0)), st.get("pid_start")
        conmon_pid, conmon_start = int(st.get("conmon_pid", 0)), st.get("conmon_start")
        started_text = _read_text(f"{rec}/started")
        started_at = float(started_text) if started_text else 0.0
        pinned = st.get("pinned")
        if pinned is not None:  # no process: it lives while its namespaces are mounted
            state = ContainerState.RUNNING if pinns.alive(pinned.values()) else ContainerState.EXITED
            return _Status(state, started_at=started_at, pinned=pinned)
        exit_path = f"{rec}/exits/{cid}"
        exit_text = _read_text(exit_path)
        if exit_text is not None:
            oom = os.path.exists(f"{rec}/persist/oom")
            try:
                code = int(exit_text.strip())
                finished = os.stat(exit_path).st_mtime
            except (ValueError, OSError):
                code, finished = None, 0.0
            if not oom and code == 137:
                oom = self._oom_from_cgroup(cid, Path(rec))
            return _Status(ContainerState.EXITED, pid, pid_start, conmon_pid, conmon_start, code, oom,
                           started_at, finished)
        if pid > 0 and hostinfo.proc_start_time(pid) == pid_start:
            state = ContainerState.RUNNING if started_at else ContainerState.CREATED
            if not self._managed(cid, conmon_pid, conmon_start):
                state = ContainerState.UNKNOWN  # it runs, but nothing can stop, exec or watch it properly
            return _Status(state, pid, pid_start, conmon_pid, conmon_start, None, False, started_at)
        # Dead without an exit file: conmon is writing it right now, or conmon was killed.
        oom = os.path.exists(f"{rec}/persist/oom")
        return _Status(ContainerState.EXITED, pid, pid_start, conmon_pid, conmon_start, None, oom, started_at)

    def _managed(self, cid: str, conmon_pid: int, conmon_start) -> bool:
        """A live container is managed while runc keeps its state (a wiped run root or a deleted
        state dir leaves runc blind: no kill, no exec) and its conmon lives (it writes the log and
        the exit code). Either gone: the container is UNKNOWN, and the diff replaces it."""
        if not os.path.exists(f"{self.paths.runc_root}/{cid}/state.json"):
            return False
        # A record without conmon's start time (it had exited by the time it was taken) says nothing.
        return conmon_pid <= 0 or conmon_start is None or hostinfo.proc_start_time(conmon_pid) == conmon_start

    def _oom_from_cgroup(self, cid: str, rec: Path) -> bool:
        """conmon's OOM event can lose the race with the container's exit; the memory cgroup still
        counts the kill until ``runc delete`` removes it. Remember the answer in conmon's place."""
        cgroup = self._labels(cid).get("cgroup", "")
        text = _read_text(Path("/sys/fs/cgroup/memory") / cgroup.lstrip("/") / "memory.oom_control") \
            if cgroup else None
        killed = any(line.startswith("oom_kill ") and line.split()[1] != "0" for line in (text or "").splitlines())
        if killed:
            with contextlib.suppress(OSError):
                (rec / "persist" / "oom").touch()
        return killed

    def _labels(self, cid: str) -> dict:
        return _read_json(f"{self.paths.containers}/{cid}/labels.json") or {}

    def _observe(self, cid: str, known: bool = False) -> ObservedContainer | None:
        status = self._status(cid, known)
        if status is None:
            return None
        doc = self._labels(cid)
        labels = doc.get("labels") or {}
        if not labels and not os.path.isdir(f"{self.paths.containers}/{cid}"):
            return None  # removed while we were looking
        uid, _, name = cid.partition(".")
        restarts = _read_text(f"{self.paths.containers}/.restarts/{cid}")
        try:
            restart_count = max(0, int(restarts or "1") - 1)
        except ValueError:
            restart_count = 0
        state = status.state if labels else ContainerState.UNKNOWN  # half-written bundle
        return ObservedContainer(
            id=cid,
            pod_uid=labels.get(LABEL_POD_UID, uid),
            pod=labels.get(LABEL_POD, ""),
            name=labels.get(LABEL_CONTAINER, name),
            role=labels.get(LABEL_ROLE, "app" if name else "infra"),
            state=state,
            spec_hash=labels.get(LABEL_SPEC_HASH, ""),
            image=labels.get(oci.LABEL_IMAGE, ""),
            image_id=labels.get(oci.LABEL_IMAGE_ID, ""),
            pid=status.pid if state in (ContainerState.RUNNING, ContainerState.CREATED) else 0,
            exit_code=status.exit_code,
            oom_killed=status.oom_killed,
            started_at=status.started_at,
            finished_at=status.finished_at,
            restart_count=restart_count,
            labels=dict(labels),
        )

    @_host_errors
    def list_containers(self) -> list[ObservedContainer]:
        try:
            names = sorted(e.name for e in os.scandir(self.paths.containers)
                           if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        out = []
        for cid in names:
            c = self._observe(cid, known=True)
            if c is not None:
                out.append(c)
        return out

    # --- runc ----------------------------------------------------------------------------------

    @property
    def _runc_globals(self) -> list[str]:
        return ["--root", str(self.paths.runc_root), *(["--rootless", "true"] if self.rootless else [])]

    def _run_runc(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.runc, *self._runc_globals, *args], capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ContainerRuntimeError(f"runc {' '.join(args)} did not finish within {timeout:.0f}s") from None

    def _runc(self, *args: str, timeout: float = 60.0) -> None:
        res = self._run_runc(*args, timeout=timeout)
        if res.returncode != 0:
            raise ContainerRuntimeError(f"runc {args[0]} {args[-1]}: "
                                        f"{_conmon.runc_message(res.stderr or res.stdout)}")

    # --- infra ---------------------------------------------------------------------------------

    def _ensure_infra_rootfs(self) -> str:
        root = self._infra_rootfs
        target = root / "catatonit"
        if not target.exists():
            if not os.path.isfile(self.pause):
                raise EnvironmentProblem(f"the pause binary {self.pause} is missing (install catatonit)")
            for d in ("proc", "dev", "sys", "etc"):
                (root / d).mkdir(parents=True, exist_ok=True)
            # A name of its own: pods are created in parallel threads (and processes may race too).
            tmp = root / f".catatonit.{os.getpid()}.{threading.get_ident()}.tmp"
            shutil.copyfile(self.pause, tmp)
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)
        return str(root)

    def _host_resolv(self) -> pod_files.ResolvConf:
        text = _read_text(Path("/etc/resolv.conf")) or ""
        conf = pod_files.parse_resolv_conf(text)
        if conf.nameservers and all(n.startswith("127.") for n in conf.nameservers):
            # systemd-resolved's stub: its upstream servers are what a pod can actually use.
            upstream = _read_text(Path("/run/systemd/resolve/resolv.conf"))
            if upstream:
                conf = pod_files.parse_resolv_conf(upstream)
        return conf

    def _pod_hostname(self, pod: DesiredPod) -> str:
        return self._fact("hostname", _nodename) if pod.spec.host_network else pod.hostname

    def _write_pod_files(self, pod: DesiredPod, pod_ip: str) -> Path:
        d = self._pod_dir(pod.uid)
        d.mkdir(parents=True, exist_ok=True)
        host_hosts = (_read_text(Path("/etc/hosts")) or "") if pod.spec.host_network else ""
        _write_in_place(d / "hosts", pod_files.render_hosts(pod, pod_ip, host_hosts))
        conf = pod_files.resolv_conf_for(pod, self._host_resolv())
        _write_in_place(d / "resolv.conf", pod_files.render_resolv_conf(conf))
        _write_in_place(d / "hostname", pod_files.render_hostname(self._pod_hostname(pod)))
        return d

    def _context(self, pod: DesiredPod, rootfs: str, cid: str, **extra) -> oci.RuntimeContext:
        d = self._pod_dir(pod.uid)
        return oci.RuntimeContext(
            rootfs=rootfs,
            cgroup_path=self._cgroup(pod.uid, cid),
            hostname=self._pod_hostname(pod),
            hosts_file=str(d / "hosts"),
            resolv_conf_file=str(d / "resolv.conf"),
            hostname_file=str(d / "hostname"),
            shm_dir=str(d / "shm"),
            host_rlimits=self._fact("rlimits", hostinfo.hard_rlimits),
            seccomp_default=self._default_seccomp(),
            arch=self._fact("arch", hostinfo.arch),
            kernel=self._fact("kernel", hostinfo.kernel_version),
            cap_last_cap=self._fact("cap_last_cap", hostinfo.cap_last_cap),
            host_capabilities=self._fact("bounding", hostinfo.bounding_capabilities),
            pids_limit=self.pids_limit,
            swap_accounting=self._fact("swap", hostinfo.swap_accounting),
            rootless=self.rootless,
            rootless_controllers=frozenset(self._delegation().dirs) if self.rootless else frozenset(),
            **extra,
        )

    def _infra_from(self, cid: str, status: _Status) -> InfraInfo:
        if status.pinned is not None:
            return InfraInfo(pid=0, namespaces=dict(status.pinned))
        namespaces = self._labels(cid).get("namespaces") or []
        return InfraInfo(pid=status.pid, namespaces={ns: f"/proc/{status.pid}/ns/{_PROC_NS[ns]}"
                                                     for ns in namespaces if ns in _PROC_NS})

    @_host_errors
    def infra_info(self, uid: str) -> InfraInfo | None:
        cid = self._check_id(uid)
        status = self._status(cid)
        if status is None or status.state != ContainerState.RUNNING:
            return None
        return self._infra_from(cid, status)

    @_host_errors
    def create_infra(self, pod: DesiredPod) -> InfraInfo:
        cid = self._check_id(pod.infra_id)
        status = self._status(cid)
        if status is not None:
            if status.state == ContainerState.RUNNING:
                return self._infra_from(cid, status)
            self._remove(cid)  # a leftover of a crash or a dead infra: start over
        if self._pins(pod):
            return self._create_pinned(pod, cid)
        # Everything that can be refused is checked before the host is touched.
        ctx = self._context(pod, str(self._infra_rootfs), cid)
        config = oci.infra_config(pod, ctx)
        extra: dict = {"namespaces": oci.infra_namespaces(pod)}
        try:
            self._prepare_pod_dir(pod)
            self._ensure_infra_rootfs()
            if not pod.spec.host_users:
                ids = self._allocate(pod)
                self._staging.stage_pod(pod.uid, ids, str(self._infra_rootfs), str(self._pod_dir(pod.uid)))
                files = self._staging.files(pod.uid)
                ctx = dataclasses.replace(ctx, rootfs=self._staging.infra_root(pod.uid), id_map=ids,
                                          shm_dir=str(files / "shm"))
                config = oci.infra_config(pod, ctx)
                extra = {"namespaces": [*extra["namespaces"], "user"], "id_map": ids.to_list()}
            self._create(cid, config, extra)
            status = self._start(cid)
        except BaseException:
            self._undo(cid)
            self._cleanup_pod(pod.uid)
            raise
        return self._infra_from(cid, status)

    @_host_errors
    def address_pod(self, pod: DesiredPod, network: NetworkStatus) -> None:
        self._write_pod_files(pod, network.ip)

    def _prepare_pod_dir(self, pod: DesiredPod) -> None:
        """What either sandbox needs in the pod's run directory: its files and its /dev/shm."""
        d = self._write_pod_files(pod, "")
        if not pod.spec.host_ipc:
            (d / "shm").mkdir(exist_ok=True)
            hostinfo.mount_tmpfs(str(d / "shm"), f"mode=1777,size={oci.SHM_SIZE}")

    def _pins(self, pod: DesiredPod) -> bool:
        """Whether the pod's namespaces can be pinned without a process (runtime.pinns)."""
        return (not self.rootless and pod.spec.host_users and pinns.can_pin(oci.infra_namespaces(pod))
                and not oci.sysctls(pod))

    def _create_pinned(self, pod: DesiredPod, cid: str) -> InfraInfo:
        """The pod's sandbox as pinned namespaces: recorded like a container (labels, a state
        with the pinned paths), so that listing, adoption and removal treat it as the infra."""
        namespaces = oci.infra_namespaces(pod)
        d = self._pod_dir(pod.uid)
        try:
            self._prepare_pod_dir(pod)
            pinned = pinns.pin(str(d / "ns"), namespaces, self._pod_hostname(pod))
            bundle, rec = self._bundle(cid), self._record(cid)
            bundle.mkdir(parents=True, exist_ok=True)
            rec.mkdir(parents=True, exist_ok=True)
            doc = {"labels": oci.container_labels(pod, None), "created_at": time.time(), "cgroup": "",
                   "namespaces": namespaces}
            atomic_write(bundle / "labels.json", json.dumps(doc), 0o600)
            atomic_write(rec / "started", str(time.time()))
            atomic_write(rec / "state.json", json.dumps({"pinned": pinned}))  # last: now it exists
        except BaseException:
            self._undo(cid)
            self._cleanup_pod(pod.uid)
            raise
        return InfraInfo(pid=0, namespaces=pinned)

    # --- containers --------------------------------------------------------------------------

    def _create(self, cid: str, config: dict, extra: Mapping) -> None:
        bundle = self._bundle(cid)
        rec = self._record(cid)
        bundle.mkdir(parents=True, exist_ok=True)
        rec.mkdir(parents=True, exist_ok=True)
        atomic_write(bundle / "config.json", json.dumps(config, indent=1), 0o600)
        doc = {"labels": config.get("annotations", {}), "created_at": time.time(),
               "cgroup": config.get("linux", {}).get("cgroupsPath", ""), **extra}
        atomic_write(bundle / "labels.json", json.dumps(doc), 0o600)
        counter = self._restarts / cid
        self._restarts.mkdir(parents=True, exist_ok=True)
        try:
            count = int(_read_text(counter) or "0")
        except ValueError:
            count = 0
        atomic_write(counter, str(count + 1))
        process = config.get("process", {})
        join = self._prepare_rootless_cgroups(config.get("annotations", {}).get(LABEL_POD_UID, ""))
        launched = _conmon.launch(
            conmon=self.conmon, runc=self.runc, runc_root=str(self.paths.runc_root), rootless=self.rootless, cid=cid,
            bundle=str(bundle), record=str(rec), socket_dir=str(self._socket_dir),
            log_path=str(bundle / "ctr.log"), tty=bool(process.get("terminal")),
            stdin=bool(extra.get("stdin")), stdin_once=bool(extra.get("stdin_once")),
            timeout=self.create_timeout, join_cgroups=join)
        state = {"pid": launched.pid, "pid_start": hostinfo.proc_start_time(launched.pid),
                 "conmon_pid": launched.conmon_pid, "conmon_start": hostinfo.proc_start_time(launched.conmon_pid)}
        atomic_write(rec / "state.json", json.dumps(state))

    @_host_errors
    def create_container(self, pod: DesiredPod, container: DesiredContainer, *, rootfs: str,
                         image: ImageInfo, volumes: Mapping[str, str],
                         network: NetworkStatus | None) -> None:
        cid = self._check_id(container.id)
        where = f"{pod.ref}/{container.name}"
        if self._exists_as_wanted(cid, pod, where):
            return
        if not os.path.isdir(rootfs):
            raise ContainerRuntimeError(f"{where}: rootfs {rootfs} does not exist")
        namespaces = self._pod_namespaces(pod, where)
        passwd = (read_file_in_root(rootfs, "/etc/passwd") or b"").decode(errors="replace")
        group = (read_file_in_root(rootfs, "/etc/group") or b"").decode(errors="replace")
        user = resolve_user(pod, container, image.config.user, passwd, group)

        # The config is first checked with subPaths as written; their directories are made (and
        # their symlinks resolved, inside the volume only) once everything else is accepted.
        subpaths: dict[tuple[str, str], str] = {}
        for vm in container.spec.volume_mounts:
            if vm.sub_path and vm.name in volumes:
                oci.check_subpath(pod, container.name, vm.sub_path)
                subpaths[(vm.name, vm.sub_path)] = os.path.join(volumes[vm.name], vm.sub_path)
        ip = network.ip if network else ""
        ids = None
        if not pod.spec.host_users:
            ids = self.pod_id_map(pod.uid)
            if ids is None:
                raise ContainerRuntimeError(f"{where}: the pod's infra container holds no user namespace "
                                            "(hostUsers: false); remove the pod and create it again")
        ctx = self._context(pod, os.path.abspath(rootfs), cid, user=user, volumes=dict(volumes), subpaths=subpaths,
                            namespaces=namespaces, pod_ip=ip, pod_ips=(ip,) if ip else (), id_map=ids,
                            **self._node_facts(pod, container, where))
        config = oci.container_config(pod, container, image, ctx)
        secret_files = _secrets_to_give(pod, container, volumes, user.uid)
        real: dict[tuple[str, str], str] = {}
        if subpaths:
            try:
                real = {key: ensure_subpath(volumes[key[0]], key[1]) for key in subpaths}
            except ContainerRuntimeError as e:
                raise ContainerRuntimeError(f"{where}: {e}") from None
            config = oci.container_config(pod, container, image, dataclasses.replace(ctx, subpaths=real))
        for path in secret_files:
            os.chown(path, user.uid, -1, follow_symlinks=False)
        if network is not None or not pod.network:  # else: address_pod writes it once attached
            self._write_pod_files(pod, ip)
        extra = {"stdin": container.spec.stdin, "stdin_once": container.spec.stdin_once}
        try:
            if ids is not None:
                config = self._stage_container(pod, container, image, ids, ctx, real)
            self._create(cid, config, extra)
        except BaseException:
            self._undo(cid)
            raise

    def _stage_container(self, pod: DesiredPod, container: DesiredContainer, image: ImageInfo, ids: IdMap,
                         ctx: oci.RuntimeContext, subpaths: Mapping[tuple[str, str], str]) -> dict:
        """The config of a hostUsers: false pod's container, every path in it moved to what the
        pod's unprivileged root can reach (runtime.userns)."""
        kinds = {v.name: v.kind for v in pod.volumes}
        used = {vm.name for vm in container.spec.volume_mounts if vm.name in ctx.volumes}
        rootfs, volumes = self._staging.stage_container(pod.uid, container.name, ids, ctx.rootfs,
                                                        {n: ctx.volumes[n] for n in used}, kinds)
        files = self._staging.files(pod.uid)
        staged = dataclasses.replace(
            ctx, rootfs=rootfs, volumes=volumes, subpaths=staged_subpaths(subpaths, ctx.volumes, volumes),
            hosts_file=str(files / "hosts"), resolv_conf_file=str(files / "resolv.conf"),
            hostname_file=str(files / "hostname"), shm_dir=str(files / "shm"),
            volume_options={name: locked_options(path) for name, path in volumes.items()})
        return oci.container_config(pod, container, image, staged)

    def _exists_as_wanted(self, cid: str, pod: DesiredPod, where: str) -> bool:
        """True when the container already exists with this spec (a create is idempotent); a
        leftover whose runtime state is gone is removed, one with another spec refused."""
        status = self._status(cid)
        if status is None:
            return False
        labels = self._labels(cid).get("labels") or {}
        if status.state != ContainerState.UNKNOWN and labels.get(LABEL_SPEC_HASH) == pod.spec_hash:
            return True
        if status.state != ContainerState.UNKNOWN:
            raise ContainerRuntimeError(f"{where}: container {cid} exists with another spec; remove it first")
        self._remove(cid)
        return False

    def _pod_namespaces(self, pod: DesiredPod, where: str) -> dict[str, str]:
        """The infra container's namespaces the app joins (none for a host-namespaces pod)."""
        if oci.infra_namespaces(pod):
            infra = self.infra_info(pod.uid)
            if infra is None:
                raise ContainerRuntimeError(f"{where}: pod {pod.ref} has no running infra container")
            return dict(infra.namespaces)
        if self._status(pod.infra_id) is None:
            raise ContainerRuntimeError(f"{where}: pod {pod.ref} has no infra container")
        return {}

    def _node_facts(self, pod: DesiredPod, container: DesiredContainer, where: str) -> dict:
        """What the config needs of the host: its address, name, capacity, devices, seccomp profiles."""
        sc = container.spec.security_context
        wanted = oci.localhost_profile(pod, container)
        return {
            "host_ip": self._fact("node_ip", hostinfo.node_ip), "node_name": self._fact("hostname", _nodename),
            "node_cpu_millis": self._fact("cpus", hostinfo.node_cpu_millis),
            "node_memory": self._fact("memory", hostinfo.node_memory),
            "seccomp_localhost": self._localhost_seccomp(wanted, where) if wanted and not (sc and sc.privileged)
            else None,
            "host_devices": self._fact("devices", hostinfo.host_devices) if sc and sc.privileged else (),
        }

    def _start(self, cid: str) -> _Status:
        status = self._status(cid)
        if status is None:
            raise NotFoundError(f"no container {cid}")
        if status.state in (ContainerState.RUNNING, ContainerState.EXITED):
            return status
        if status.state == ContainerState.UNKNOWN:
            raise ContainerRuntimeError(f"container {cid} lost its runtime state (host rebooted?); "
                                        "remove it and create it again")
        started = time.time()
        res = self._run_runc("start", cid)
        if res.returncode != 0:
            now = self._status(cid)
            if now is None or now.state == ContainerState.CREATED:
                raise ContainerRuntimeError(f"cannot start {cid}: {_conmon.runc_message(res.stderr)}")
        atomic_write(self._record(cid) / "started", repr(started))
        return self._status(cid) or status

    @_host_errors
    def start_container(self, container_id: str) -> None:
        self._start(self._check_id(container_id))

    def _wait_exit(self, status: _Status, timeout: float | None) -> bool:
        """Wait until the container is gone and conmon has recorded it (conmon exits right after)."""
        if status.conmon_start is not None and hostinfo.proc_start_time(status.conmon_pid) == status.conmon_start:
            return hostinfo.wait_pid_gone(status.conmon_pid, status.conmon_start, timeout)
        return hostinfo.wait_pid_gone(status.pid, status.pid_start, timeout)

    @_host_errors
    def wait_exits(self, container_ids: Sequence[str], timeout: float) -> bool:
        # conmon writes the exit code and then exits: its end is the moment the exit is known.
        procs = []
        for cid in container_ids:
            status = self._status(self._check_id(cid))
            if status is None or status.state != ContainerState.RUNNING:
                return True
            if status.conmon_start is not None:
                procs.append((status.conmon_pid, status.conmon_start))
            else:
                procs.append((status.pid, status.pid_start))
        return hostinfo.wait_any_gone(procs, timeout)

    @_host_errors
    def wait_container(self, container_id: str, timeout: float | None = None) -> int:
        cid = self._check_id(container_id)
        status = self._status(cid)
        if status is None:
            raise NotFoundError(f"no container {cid}")
        if status.state == ContainerState.UNKNOWN:
            raise ContainerRuntimeError(f"container {cid} lost its runtime state; its exit code is unknown")
        if status.exit_code is None and not self._wait_exit(status, timeout):
            raise ContainerRuntimeError(f"container {cid} did not exit within {timeout}s")
        deadline = time.monotonic() + EXIT_FILE_WAIT
        while True:
            now = self._status(cid)
            if now is None:
                raise NotFoundError(f"container {cid} was removed while waiting for it")
            if now.exit_code is not None:
                return now.exit_code
            if time.monotonic() > deadline:
                raise ContainerRuntimeError(f"container {cid} exited but its monitor recorded no exit code")
            time.sleep(0.01)

    @_host_errors
    def stop_container(self, container_id: str, timeout: int = 30, signal: str = "") -> None:
        cid = self._check_id(container_id)
        status = self._status(cid)
        if status is None or status.state not in (ContainerState.RUNNING, ContainerState.CREATED):
            return
        if status.state == ContainerState.RUNNING:
            name = signal or self._labels(cid).get("labels", {}).get(LABEL_STOP_SIGNAL) or "SIGTERM"
            try:
                num = oci.parse_signal(name)
            except ValueError as e:
                raise ContainerRuntimeError(f"cannot stop {cid}: {e}") from None
            self._run_runc("kill", cid, str(num))
            if self._wait_exit(status, max(0, timeout)):
                return
        # --all finds the processes through the container's cgroup; rootless containers have none
        # (each has its own PID namespace, which dies with its first process).
        self._run_runc("kill", *([] if self.rootless else ["--all"]), cid, "9")
        if not self._wait_exit(status, KILL_WAIT):
            raise ContainerRuntimeError(f"container {cid} did not die within {KILL_WAIT:.0f}s of SIGKILL")

    def _conmon_of(self, status: _Status | None, cid: str) -> tuple[int, int | None]:
        """conmon's pid and start time; from its own pid file when a crash came before state.json
        (then only a process whose command line names this container counts)."""
        if status is not None and status.conmon_pid:
            return status.conmon_pid, status.conmon_start
        try:
            pid = int((_read_text(self._record(cid) / "conmon.pid") or "0").strip())
        except ValueError:
            return 0, None
        argv = (_read_text(f"/proc/{pid}/cmdline") or "").split("\0") if pid > 0 else []
        if not argv or "conmon" not in os.path.basename(argv[0]) or cid not in argv:
            return 0, None
        return pid, hostinfo.proc_start_time(pid)

    def _kill_conmon(self, status: _Status | None, cid: str) -> None:
        pid, start = self._conmon_of(status, cid)
        if not pid or start is None or hostinfo.proc_start_time(pid) != start:
            return
        # conmon exits by itself once the container is gone; give it the moment it needs.
        if not hostinfo.wait_pid_gone(pid, start, 2.0):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                return
            hostinfo.wait_pid_gone(pid, start, KILL_WAIT)

    def _remove(self, cid: str) -> None:
        """Remove everything of ``cid`` whatever state a crash left it in."""
        rec = self._record(cid)
        status = self._status(cid)
        # runc creates its --root when asked anything; no root means runc knows no container.
        runc_has_root = self.paths.runc_root.is_dir() and (status is None or status.pinned is None)
        if status is None and not rec.exists() and not (runc_has_root and self._runc_knows(cid)):
            return
        if runc_has_root:
            res = self._run_runc("delete", "--force", cid)
            if res.returncode != 0 and self._runc_knows(cid):
                raise ContainerRuntimeError(f"cannot remove {cid}: {_conmon.runc_message(res.stderr)}")
        if status is not None and status.pid_start is not None \
                and hostinfo.proc_start_time(status.pid) == status.pid_start:
            self._kill_without_runc(cid, status)
        if (status is not None and status.pid_start is not None
                and not hostinfo.wait_pid_gone(status.pid, status.pid_start, KILL_WAIT)):
            raise ContainerRuntimeError(f"container {cid} did not die after runc delete --force")
        self._kill_conmon(status, cid)
        self._staging.remove_container(cid)
        for path in (self._socket_dir / cid,):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
        shutil.rmtree(rec, ignore_errors=True)
        shutil.rmtree(self._bundle(cid), ignore_errors=True)

    def _kill_without_runc(self, cid: str, status: _Status) -> None:
        """The container outlived `runc delete --force`: runc lost its state. Kill what podplay
        knows it by: every process in the cgroup it was given (frozen first, so none can fork
        away), and its recorded pid, checked by start time so a reused pid is never hit."""
        cgroup = (self._labels(cid).get("cgroup") or "").lstrip("/")
        freezer = f"/sys/fs/cgroup/freezer/{cgroup}/freezer.state"
        frozen = bool(cgroup) and _write_quietly(freezer, "FROZEN")
        pids: set[int] = set()
        if cgroup:
            for h in _cgroup_hierarchies():
                text = _read_text(f"{h}/{cgroup}/cgroup.procs") or ""
                pids |= {int(p) for p in text.split() if p.isdigit()}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if frozen:
            _write_quietly(freezer, "THAWED")
        if hostinfo.proc_start_time(status.pid) == status.pid_start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(status.pid, 9)

    def _undo(self, cid: str) -> None:
        """Best-effort removal after a failed create; the create's own error is the one to report."""
        with contextlib.suppress(PodplayError):
            self._remove(cid)

    def _runc_knows(self, cid: str) -> bool:
        return self._run_runc("state", cid).returncode == 0

    @_host_errors
    def remove_container(self, container_id: str) -> None:
        self._remove(self._check_id(container_id))

    @_host_errors
    def remove_infra(self, uid: str) -> None:
        """Removes the pod's remaining containers too: they would hold its namespaces."""
        self._check_id(uid)
        try:
            leftovers = [e.name for e in os.scandir(self.paths.containers) if e.name.startswith(uid + ".")]
        except FileNotFoundError:
            leftovers = []
        for cid in leftovers:
            self._remove(cid)
        self._remove(uid)
        self._cleanup_pod(uid)

    def _allocate(self, pod: DesiredPod) -> IdMap:
        if self.rootless:
            raise ContainerRuntimeError(f"{pod.ref}: hostUsers: false is for root's pods: a rootless pod already "
                                        "runs in the user's own user namespace")
        if self.id_ranges is None:
            raise ContainerRuntimeError(f"{pod.ref}: hostUsers: false needs an ID range allocator, and this "
                                        "runtime driver was made without one")
        return self.id_ranges.allocate(pod.uid)

    def pod_traces(self, observed: Iterable[str]) -> set[str] | None:
        """Every pod uid the host still has a trace of: ``observed`` (the pass's relist) and each
        directory under the containers, the pods' run directories and the user-namespace staging,
        read here whole (a container whose state could not be read is still there). None when a
        directory cannot be read: an incomplete answer must not free a live pod's range."""
        present = set(observed)
        for d in (self.paths.containers, self.paths.pods_run, self.paths.userns_mounts):
            try:
                present.update(e.name.split(".", 1)[0] for e in os.scandir(d) if not e.name.startswith("."))
            except FileNotFoundError:
                continue
            except OSError:
                return None
        return present

    def pod_id_map(self, uid: str) -> IdMap | None:
        """The host ID range of a hostUsers: false pod, from its infra container (None: the pod
        has none, or no infra)."""
        return IdMap.from_list(self._labels(self._check_id(uid)).get("id_map"))

    def _cleanup_pod(self, uid: str) -> None:
        d = self._pod_dir(uid)
        self._staging.remove_pod(uid)
        if self.id_ranges is not None:
            self.id_ranges.release(uid)
        hostinfo.unmount(str(d / "shm"))
        pinns.unpin(str(d / "ns"))
        shutil.rmtree(d, ignore_errors=True)
        try:
            for e in os.scandir(self._restarts):
                if e.name == uid or e.name.startswith(uid + "."):
                    os.unlink(e.path)
        except FileNotFoundError:
            pass
        self._remove_cgroups(uid)

    def _remove_cgroups(self, uid: str) -> None:
        """runc removes each container's cgroup; the pod's parent directories are ours (rootless:
        those under the delegated ones, which stay the admin's)."""
        pods = self._rootless_pod_cgroups(uid) if self.rootless else \
            [os.path.join(h, self.cgroup_parent.lstrip("/"), uid) for h in _cgroup_hierarchies()]
        for pod in pods:
            if not os.path.isdir(pod):
                continue
            for child in os.scandir(pod):
                if child.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.rmdir(child.path)
            for path in (pod, os.path.dirname(pod)):
                try:
                    os.rmdir(path)
                except OSError:
                    break  # busy: another pod (or process) still uses it

    # --- exec and logs -----------------------------------------------------------------------

    @_host_errors
    def exec_in(self, container_id: str, argv: Sequence[str], *, tty: bool = False, interactive: bool = False,
                env: Mapping[str, str] | None = None, timeout: float | None = None,
                output: BinaryIO | None = None) -> int:
        cid = self._check_id(container_id)
        status = self._status(cid)
        if status is None:
            raise NotFoundError(f"no container {cid}")
        if status.state != ContainerState.RUNNING:
            raise ContainerRuntimeError(f"container {cid} is not running ({status.state})")
        if not argv:
            raise ContainerRuntimeError("exec needs a command")
        if tty and not os.isatty(0):
            raise ContainerRuntimeError("exec with a tty needs a terminal on stdin (drop -t, or run from one)")
        pid_file = self._record(cid) / f"exec-{os.getpid()}-{time.monotonic_ns()}.pid"
        cmd = [self.runc, *self._runc_globals, "exec", "--pid-file", str(pid_file)]
        if tty:
            cmd.append("--tty")
        for k, v in (env or {}).items():
            cmd += ["--env", f"{k}={v}"]
        cmd += [cid, *argv]
        proc = subprocess.Popen(cmd, stdin=None if interactive else subprocess.DEVNULL, stdout=output,
                                stderr=output)
        try:
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                exec_pid = 0
                with contextlib.suppress(ValueError):
                    exec_pid = int((_read_text(pid_file) or "0").strip())
                if exec_pid > 0:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(exec_pid, 9)
                proc.kill()
                proc.wait()
                raise ContainerRuntimeError(f"exec in {cid} did not finish within {timeout}s; killed") from None
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pid_file)

    def read_logs(self, container_id: str, *, follow: bool = False, tail: int | None = None,
                  since: float | None = None) -> Iterator[tuple[float, str, bytes]]:
        cid = self._check_id(container_id)
        if self._status(cid) is None:
            raise NotFoundError(f"no container {cid}")

        def running() -> bool:
            now = self._status(cid)
            return now is not None and now.state in (ContainerState.RUNNING, ContainerState.CREATED)

        def records() -> Iterator[tuple[float, str, bytes]]:
            try:
                yield from read_log(str(self._bundle(cid) / "ctr.log"), follow=follow, tail=tail, since=since,
                                    running=running)
            except OSError as e:
                raise ContainerRuntimeError(f"reading the log of {cid}: {e.strerror or e}") from e

        return records()

