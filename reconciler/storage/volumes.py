"""Pod volumes and named claim volumes on the host (``VolumeDriver``).

Where each kind lives::

    emptyDir (disk)          <root>/pods/<uid>/volumes/<name>     survives container restarts and
                                                                  reboots, not the pod
    emptyDir (Memory)        <runroot>/pods/<uid>/volumes/<name>  tmpfs, size= from sizeLimit
    configMap                <runroot>/pods/<uid>/volumes/<name>
    secret                   <runroot>/pods/<uid>/volumes/<name>  tmpfs: never written to disk
    hostPath                 the host path itself, checked (and created) per its type
    persistentVolumeClaim    <root>/volumes/<namespace>/<claim>   survives the pod

configMap and secret files are laid out as the kubelet does: the files sit in a hidden
``..<time>`` directory, ``..data`` points at it, and each top-level name is a symlink through
``..data``; a new set of files is written beside the old one and swapped in with one rename, so
a reader sees the old set or the new one, never a mix. emptyDir and claim directories are 0777
(as the kubelet and the hostPath provisioners make them) so that a container running as any
user can write; their parents are root-only. A disk emptyDir's sizeLimit is not enforced (the
kubelet evicts instead; we have no quota): only a Memory emptyDir is bounded, and never by more
than the host's memory.

A typed hostPath is looked up from ``/`` one component at a time with ``O_NOFOLLOW`` dir fds
(``resolve_host_path``): the kubelet follows symlinks, which lets whoever can plant a link make a
``DirectoryOrCreate`` or ``FileOrCreate`` create things where the link points. podplay follows a
symlink only where the operator trusts it: ``$PODPLAY_HOSTPATH_SYMLINKS`` (':'-separated paths; a
link at or below one is followed if root owns it; "/" trusts every root-owned link, "" none).
Unset, it trusts the links distributions make themselves, so ``/var/run/docker.sock`` works on
hosts where /var/run → /run (the volume then names /run/docker.sock, the path that was checked).
A hostPath without a type is passed on unchecked, as the kubelet does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import StorageError
from reconciler.model.quantity import NODE_RESOURCE_MARK, node_resource
from reconciler.paths import HostPaths
from reconciler.storage import mounts

if TYPE_CHECKING:
    from reconciler.desired import DesiredClaim, DesiredVolume, VolumeFile

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DATA_LINK = "..data"
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice")
_KINDS = ("emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim")
_HOST_PATH_CHECKS = {
    "DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
    "Directory": (stat.S_ISDIR, "a directory"),
    "FileOrCreate": (stat.S_ISREG, "a file"),
    "File": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a unix socket"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}
ENV_HOSTPATH_SYMLINKS = "PODPLAY_HOSTPATH_SYMLINKS"
# Links that distributions make themselves, root-owned in root-only directories: /var/run and
# /var/lock (→ /run) and the merged-/usr links. A hostPath through any other symlink is refused
# unless the operator lists it.
DEFAULT_TRUSTED_SYMLINKS = ("/var/run", "/var/lock", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_MAX_SYMLINKS = 40  # the kernel's own limit for one lookup (ELOOP)
_MAX_CREATE_RETRIES = 64


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not _ID.match(value):
        raise StorageError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-'")


def split_claim(ref: str) -> tuple[str, str]:
    """"<namespace>/<claim>" → (namespace, claim), both DNS-1123 names."""
    ns, sep, name = (ref or "").partition("/")
    if not sep or not _DNS.match(ns) or not _DNS.match(name):
        raise StorageError(f"invalid claim reference {ref!r}: want <namespace>/<claimName>, "
                           "lower-case letters, digits, '-' and '.'")
    return ns, name


def _file_parts(vol: DesiredVolume, f: VolumeFile) -> list[str]:
    path = f.path
    parts = path.split("/")
    if (not path or "\x00" in path or path.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or parts[0].startswith("..")):
        raise StorageError(f"volume {vol.name!r}: item path {path!r} must be a relative path without "
                           "'..' or empty components, not starting with '..'")
    return parts


def _validate(volumes: Sequence[DesiredVolume]) -> None:
    seen = set()
    for vol in volumes:
        _check_id(vol.name, "volume name")
        if vol.name in seen:
            raise StorageError(f"volume {vol.name!r} is declared twice")
        seen.add(vol.name)
        if vol.kind not in _KINDS:
            raise StorageError(f"volume {vol.name!r}: unsupported kind {vol.kind!r}")
        if vol.kind == "emptyDir" and vol.medium not in ("", "Memory"):
            raise StorageError(f"volume {vol.name!r}: emptyDir medium {vol.medium!r} is not supported "
                               "(use \"\" or \"Memory\")")
        if vol.kind == "hostPath":
            if not vol.path.startswith("/") or "\x00" in vol.path:
                raise StorageError(f"volume {vol.name!r}: hostPath {vol.path!r} must be an absolute path")
            if vol.path_type not in HOST_PATH_TYPES:
                known = ", ".join(repr(t) for t in HOST_PATH_TYPES)
                raise StorageError(f"volume {vol.name!r}: unknown hostPath type {vol.path_type!r} (one of {known})")
        if vol.kind == "persistentVolumeClaim":
            split_claim(vol.claim)
        if vol.kind in ("configMap", "secret"):
            files: dict[str, bool] = {}  # path → is a directory
            for f in vol.files:
                parts = _file_parts(vol, f)
                for i in range(1, len(parts)):
                    prefix = "/".join(parts[:i])
                    if files.setdefault(prefix, True) is not True:
                        raise StorageError(f"volume {vol.name!r}: {prefix!r} is both a file and a directory")
                if f.path in files:
                    raise StorageError(f"volume {vol.name!r}: item path {f.path!r} is used twice")
                files[f.path] = False
                if not 0 <= f.mode <= 0o777:
                    raise StorageError(f"volume {vol.name!r}: mode {oct(f.mode)} of {f.path!r} is not "
                                       "between 0 and 0777")


class HostVolumes:
    """``VolumeDriver`` on the host's file systems (see the module docstring)."""

    def __init__(self, paths: HostPaths, *, symlinks: Sequence[str] | None = None):
        self.paths = paths
        # Where a hostPath may pass through a symlink (see trusted_symlinks).
        self.symlinks = tuple(symlinks) if symlinks is not None else trusted_symlinks()

    # -- paths ----------------------------------------------------------------------------------

    def _volatile(self, uid: str) -> Path:
        return self.paths.pods_run / uid

    def _durable(self, uid: str) -> Path:
        return self.paths.root / "pods" / uid

    def claim_path(self, ref: str) -> Path:
        ns, name = split_claim(ref)
        return self.paths.claims / ns / name

    # -- pod volumes ----------------------------------------------------------------------------

    def prepare_pod_volumes(self, uid: str, volumes: Sequence[DesiredVolume]) -> dict[str, str]:
        _check_id(uid, "pod uid")
        _validate(volumes)
        for vol in volumes:  # a missing claim is bad input: fail before anything is made
            if vol.kind == "persistentVolumeClaim" and not self.claim_path(vol.claim).is_dir():
                raise StorageError(f"volume {vol.name!r}: claim {vol.claim!r} does not exist "
                                   "(ensure_claim runs first)")
        out = {}
        for vol in volumes:
            try:
                out[vol.name] = str(self._prepare(uid, vol))
            except StorageError:
                raise
            except (OSError, ValueError) as e:
                # ValueError: a path the kernel cannot take (too long, an embedded NUL).
                where = f" {vol.path!r}" if vol.kind == "hostPath" else ""
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise StorageError(f"pod {uid}: cannot prepare volume {vol.name!r}{where}: {reason}") from e
        return out

    def _prepare(self, uid: str, vol: DesiredVolume) -> Path:
        if vol.kind == "hostPath":
            return self._host_path(uid, vol)
        if vol.kind == "persistentVolumeClaim":
            return self.claim_path(vol.claim)
        if vol.kind == "emptyDir" and vol.medium == "":
            d = self._durable(uid) / "volumes" / vol.name
            _mkdirs(d.parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
                _own_dir(d, vol, 0o777)
            return d
        d = self._volatile(uid) / "volumes" / vol.name
        _mkdirs(d.parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        if vol.kind == "emptyDir":
            if not mounts.is_mountpoint(d):
                opts = "mode=0777" + (f",size={tmpfs_size(vol.size_limit)}" if vol.size_limit else "")
                mounts.mount("tmpfs", d, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV, opts)
                _own_dir(d, vol, 0o777)
            return d
        if vol.kind == "secret" and not mounts.is_mountpoint(d):
            mounts.mount("tmpfs", d, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC, "mode=0755")
        _own_dir(d, vol, 0o755)
        write_files(d, vol)
        return d

    def _host_path(self, uid: str, vol: DesiredVolume) -> Path:
        if vol.path_type == "":
            return Path(vol.path)  # no type: nothing is checked or made, as the kubelet does
        return resolve_host_path(vol.path, vol.path_type, self.symlinks, f"pod {uid}: volume {vol.name!r}")

    def remove_pod_volumes(self, uid: str) -> None:
        _check_id(uid, "pod uid")
        # remove_tree unmounts the tmpfs volumes first and refuses to delete through a mount.
        for base in (self._volatile(uid), self._durable(uid)):
            mounts.remove_tree(base)

    def list_pod_volumes(self) -> list[str]:
        uids = set()
        for parent in (self.paths.pods_run, self.paths.root / "pods"):
            for uid in _listdir(parent):
                if _ID.match(uid) and (parent / uid / "volumes").is_dir():
                    uids.add(uid)
        return sorted(uids)

    # -- claims ---------------------------------------------------------------------------------

    def ensure_claim(self, claim: DesiredClaim) -> str:
        d = self.claim_path(claim.ref)
        try:
            _mkdirs(d.parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
                os.chmod(d, 0o777)
        except OSError as e:
            raise StorageError(f"cannot create claim volume {claim.ref!r}: {e}") from e
        if not d.is_dir() or d.is_symlink():
            raise StorageError(f"claim volume {claim.ref!r}: {d} is not a directory")
        return str(d)

    def remove_claim(self, ref: str) -> None:
        d = self.claim_path(ref)
        mounts.remove_tree(d)
        with contextlib.suppress(OSError):
            d.parent.rmdir()  # the namespace directory, when it was the last claim

    def list_claims(self) -> list[str]:
        out = []
        for ns in _listdir(self.paths.claims):
            if not _DNS.match(ns) or not (self.paths.claims / ns).is_dir():
                continue
            for name in _listdir(self.paths.claims / ns):
                if _DNS.match(name) and (self.paths.claims / ns / name).is_dir():
                    out.append(f"{ns}/{name}")
        return sorted(out)


def _listdir(path: Path) -> list[str]:
    """Names in ``path``; none when it does not exist; a StorageError when it cannot be read."""
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise StorageError(f"cannot list {path}: {e.strerror}") from e


def trusted_symlinks() -> tuple[str, ...]:
    """Where a hostPath may pass through a symlink: ``$PODPLAY_HOSTPATH_SYMLINKS`` (absolute
    paths separated by ':'; a symlink at or below one of them is followed, so "/" follows every
    root-owned symlink, and an empty value none), else the distribution's compatibility links."""
    env = os.environ.get(ENV_HOSTPATH_SYMLINKS)
    if env is None:
        return DEFAULT_TRUSTED_SYMLINKS
    return tuple(p for p in env.split(":") if p.startswith("/"))


def _trusted(path: str, symlinks: Sequence[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in symlinks)


def tmpfs_size(limit: int) -> int:
    """A Memory emptyDir's tmpfs size: its sizeLimit, but never more than the host's memory
    (the kernel accepts any size, and a tmpfs that outgrows memory takes the host down with it)."""
    from reconciler.manifests.hostfacts import this_host  # the one reading of the host's memory

    memory = this_host().memory
    return min(limit, memory) if memory > 0 else limit


def resolve_host_path(path: str, kind: str, symlinks: Sequence[str], what: str) -> Path:
    """Check (and for the ``…OrCreate`` types make) the hostPath ``path`` of type ``kind``; the
    path of what was checked, with the symlinks it was allowed to pass through resolved.

    The walk starts at ``/`` and goes one component at a time through directory fds opened with
    ``O_NOFOLLOW``, so the kernel never resolves a symlink for us: a symlink is followed only
    where ``symlinks`` trusts it (and only when root owns it), a missing directory is made
    where it is missing and not wherever a link points, and a file is made with ``O_EXCL``.
    Every failure is a StorageError that starts with ``what``.
    """
    check = _HOST_PATH_CHECKS.get(kind)
    if check is None or not path.startswith("/") or "\x00" in path:
        raise StorageError(f"{what}: hostPath {path!r} of type {kind!r} cannot be checked")
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise StorageError(f"{what}: hostPath {path!r} has a '..' component; give the path without it")
    walk = _HostPathWalk(path, kind, check, symlinks, what, parts)
    try:
        return walk.run()
    finally:
        walk.close()


class _HostPathWalk:
    """The state of one resolve_host_path walk: the open directory fds and what is left to walk."""

    def __init__(self, path: str, kind: str, check, symlinks: Sequence[str], what: str, parts: list[str]):
        self.path, self.kind, self.check, self.symlinks, self.what = path, kind, check, symlinks, what
        self.fds = [os.open("/", _O_DIR)]
        self.names: list[str] = []  # the directories walked so far: fds[i + 1] is names[i]
        self.todo = list(reversed(parts))  # a stack: the next component is last
        self.followed = self.retries = 0

    def fail(self, message: str) -> StorageError:
        return StorageError(f"{self.what}: hostPath {self.path!r}{message}")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)

    def run(self) -> Path:
        while self.todo:
            comp = self.todo.pop()
            if comp == "..":  # only ever from the target of a trusted symlink
                if self.names:
                    self.names.pop()
                    os.close(self.fds.pop())
                continue
            done = self.step(comp, "/" + "/".join([*self.names, comp]), last=not self.todo)
            if done is not None:
                return done
        # The path ends at a directory already open (it is "/", or a trusted link led there).
        _check_type(os.fstat(self.fds[-1]), self.kind, self.check, self.path, self.what)
        return Path("/" + "/".join(self.names))

    def step(self, comp: str, here: str, *, last: bool) -> Path | None:
        """One component; the resolved path when the walk ends here."""
        try:
            st: os.stat_result | None = os.stat(comp, dir_fd=self.fds[-1], follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None:
            return self.missing(comp, here, last=last)
        if stat.S_ISLNK(st.st_mode):
            self.symlink(comp, here, st)
            return None
        if last:
            _check_type(st, self.kind, self.check, self.path, self.what)
            return Path(here)
        if not stat.S_ISDIR(st.st_mode):
            raise self.fail(f": {here} is not a directory")
        self.fds.append(os.open(comp, _O_DIR, dir_fd=self.fds[-1]))
        self.names.append(comp)
        return None

    def missing(self, comp: str, here: str, *, last: bool) -> Path | None:
        kind = self.kind
        if kind == "DirectoryOrCreate" or (kind == "FileOrCreate" and last):
            made = _create(self.fds[-1], comp, directory=kind == "DirectoryOrCreate")
            if made and kind == "FileOrCreate":
                return Path(here)
            if not made:
                # Another process made the name meanwhile (and may remove it again): look
                # again, a bounded number of times.
                self.retries += 1
                if self.retries > _MAX_CREATE_RETRIES:
                    raise self.fail(f": {here} keeps changing while it is being created")
            self.todo.append(comp)  # look at what is there now
            return None
        if last:
            raise self.fail(f" does not exist (type {kind} wants it to)")
        hint = " (FileOrCreate makes the file, not its parent directory)" if kind == "FileOrCreate" else ""
        raise self.fail(f": its parent directory {here} does not exist{hint}")

    def symlink(self, comp: str, here: str, st: os.stat_result) -> None:
        if st.st_uid != 0 or not _trusted(here, self.symlinks):
            owner = "" if st.st_uid == 0 else f" owned by uid {st.st_uid}"
            raise self.fail(f": {here} is a symlink{owner}; podplay follows no symlink in a hostPath unless root "
                            f"owns it and ${ENV_HOSTPATH_SYMLINKS} lists it (now: {':'.join(self.symlinks) or 'none'}):"
                            " give the path it points to instead")
        self.followed += 1
        if self.followed > _MAX_SYMLINKS:
            raise self.fail(f": more than {_MAX_SYMLINKS} symlinks on the way")
        target = os.readlink(comp, dir_fd=self.fds[-1])
        if target.startswith("/"):
            for fd in self.fds[1:]:
                os.close(fd)
            del self.fds[1:]
            self.names = []
        self.todo.extend(reversed([p for p in target.split("/") if p and p != "."]))


def _create(dir_fd: int, name: str, *, directory: bool) -> bool:
    """Make ``name`` (0755 directory or empty 0644 file) in ``dir_fd``; False if it exists."""
    try:
        if directory:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
            return True
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dir_fd)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o644)  # whatever the umask
    finally:
        os.close(fd)
    return True


def _check_type(st: os.stat_result, kind: str, check: tuple, path: str, what: str) -> None:
    test, noun = check
    if not test(st.st_mode):
        raise StorageError(f"{what}: hostPath {path!r} is not {noun} (type {kind})")


def _mkdirs(path: Path) -> None:
    """Create a private directory chain (parents of volumes are root-only)."""
    missing = []
    while not path.is_dir() and path != path.parent:
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)


def _own_dir(d: Path, vol: DesiredVolume, mode: int) -> None:
    uid = vol.owner_uid if vol.owner_uid is not None else 0
    if vol.fs_group is not None:
        os.chown(d, uid, vol.fs_group, follow_symlinks=False)
        os.chmod(d, mode | stat.S_ISGID | 0o050)
    else:
        os.chown(d, uid, 0, follow_symlinks=False)
        os.chmod(d, mode)


def _node_filled(data: bytes) -> bytes:
    """A downwardAPI file that names a resource its container does not set: the node's value."""
    if not data.startswith(NODE_RESOURCE_MARK):
        return data
    from reconciler.manifests.hostfacts import this_host

    resource, _, divisor = data[len(NODE_RESOURCE_MARK):].decode().partition(":")
    cpu_millis = len(os.sched_getaffinity(0)) * 1000
    return node_resource(resource, divisor, cpu_millis, this_host().memory).encode()


def write_files(root: Path, vol: DesiredVolume) -> None:
    """Write a configMap/secret file set into ``root`` and swap it in atomically (``..data``)."""
    uid = vol.owner_uid if vol.owner_uid is not None else 0
    gid = vol.fs_group if vol.fs_group is not None else 0
    root_fd = os.open(root, _O_DIR)
    try:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + os.urandom(4).hex()
        os.mkdir(stamp, 0o700, dir_fd=root_fd)
        data_fd = os.open(stamp, _O_DIR, dir_fd=root_fd)
        dirs = {"": data_fd}
        try:
            os.fchown(data_fd, uid, gid)
            os.fchmod(data_fd, 0o755 if vol.fs_group is None else 0o2755)
            for f in vol.files:
                parts = _file_parts(vol, f)
                pfd = data_fd
                for i in range(len(parts) - 1):
                    key = "/".join(parts[: i + 1])
                    if key not in dirs:
                        os.mkdir(parts[i], 0o700, dir_fd=pfd)
                        dirs[key] = os.open(parts[i], _O_DIR, dir_fd=pfd)
                        os.fchown(dirs[key], uid, gid)
                        os.fchmod(dirs[key], 0o755 if vol.fs_group is None else 0o2755)
                    pfd = dirs[key]
                fd = os.open(parts[-1], _O_NEWFILE, 0o600, dir_fd=pfd)
                try:
                    view = memoryview(_node_filled(f.data))
                    while view:
                        view = view[os.write(fd, view):]
                    os.fchown(fd, uid, gid)
                    # With an fsGroup the group may read, as the kubelet arranges.
                    os.fchmod(fd, f.mode | (0o440 if vol.fs_group is not None else 0))
                finally:
                    os.close(fd)
        finally:
            for fd in dirs.values():
                os.close(fd)
        # Swap ..data to the new set in one rename.
        tmp_link = f"..data_tmp.{os.urandom(4).hex()}"
        os.symlink(stamp, tmp_link, dir_fd=root_fd)
        os.rename(tmp_link, DATA_LINK, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        tops = {_file_parts(vol, f)[0] for f in vol.files}
        for name in tops:
            want = f"{DATA_LINK}/{name}"
            try:
                if os.readlink(name, dir_fd=root_fd) == want:
                    continue
                os.unlink(name, dir_fd=root_fd)
            except FileNotFoundError:
                pass
            os.symlink(want, name, dir_fd=root_fd)
        # Drop what the previous set had: its directory and its top-level links.
        for name in os.listdir(root_fd):
            if name in tops or name in (DATA_LINK, stamp):
                continue
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if name.startswith("..") and stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=root_fd)
            elif stat.S_ISLNK(st.st_mode):
                os.unlink(name, dir_fd=root_fd)
    finally:
        os.close(root_fd)
