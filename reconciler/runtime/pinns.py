"""A pod's namespaces held by bind mounts instead of a process (what CRI-O's pinns does).

util-linux's ``unshare --net=FILE --uts=FILE --ipc=FILE`` makes the namespaces and binds each on
its file in the pod's run directory; the command it runs in them names the UTS namespace,
brings the loopback up and exits. The namespaces then live exactly as long as those mounts: the containers and the CNI
plugins join them by path, and removing the pod unmounts them. No runc, conmon or catatonit runs
for such a pod's sandbox.

A pod that needs a process in its namespaces keeps the catatonit infra container instead: a
shared PID namespace needs its PID 1, runc applies the pod's sysctls in the namespaces it makes,
and a user namespace (``hostUsers: false``, rootless) is held by its own process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess

from reconciler.errors import ContainerRuntimeError
from reconciler.runtime import hostinfo

# OCI namespace type → unshare's option
_OPTION = {"network": "--net", "uts": "--uts", "ipc": "--ipc"}
TIMEOUT = 30.0


def can_pin(namespaces) -> bool:
    return set(namespaces) <= set(_OPTION)


@functools.cache
def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def alive(paths) -> bool:
    """Whether every one of ``paths`` is still a pinned namespace (not unmounted, not a plain file)."""
    try:
        return all(os.stat(p).st_dev == _nsfs_dev() for p in paths)
    except OSError:
        return False


def pin(directory: str, namespaces, hostname: str) -> dict[str, str]:
    """Fresh namespaces of the given OCI types, each bound on ``directory/<type>``; type → path.
    Whatever a crash left in ``directory`` is unpinned first; a failure leaves nothing pinned."""
    unpin(directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = {ns: os.path.join(directory, ns) for ns in namespaces}
    argv = ["unshare"]
    for ns, path in paths.items():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        argv.append(f"{_OPTION[ns]}={path}")
    # Inside them: name the UTS namespace (the name is an argument, never part of the script)
    # and bring the loopback up, as runc does in a network namespace it makes.
    script = ['printf %s "$1" > /proc/sys/kernel/hostname'] if "uts" in paths else []
    if "network" in paths:
        script.append('"$2" link set lo up')
    argv += ["--", "sh", "-ec", " && ".join(script) or "true", "sh", hostname, shutil.which("ip") or "ip"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        unpin(directory)
        raise ContainerRuntimeError(f"cannot make the pod's namespaces with unshare: {exc}") from None
    if res.returncode != 0 or not alive(paths.values()):
        unpin(directory)
        raise ContainerRuntimeError(f"cannot make the pod's namespaces with unshare: "
                                    f"{(res.stderr or res.stdout).strip() or f'exit {res.returncode}'}")
    return paths


def unpin(directory: str) -> None:
    """Unmount every namespace pinned in ``directory`` and remove it."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(directory, name)
        hostinfo.unmount(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(directory)
