"""A command run by an unprivileged user: checked, then run again inside the user's namespace.

Every missing prerequisite is named with its fix (reconciler.rootless), and so is every hostPort
an unprivileged user cannot bind. Then the command runs again, as root of the user's own user
namespace (reconciler.runtime.rootless: 0 is the user, its subordinate IDs above, a mount
namespace that keeps the overlays), with the user's paths passed explicitly, and the drivers of
rootless mode (runc --rootless, slirp4netns or pasta)."""

from __future__ import annotations

import os
import sys

from reconciler import rootless
from reconciler.errors import EnvironmentProblem
from reconciler.host import ROOTLESS_ENV

# Commands that create, run or change containers, images or networks on the host.
GATED = frozenset({"up", "play", "down", "stop", "start", "rm", "logs", "exec", "watch", "sync", "pull", "import",
                   "load", "build", "rmi", "tag", "push", "save", "copy", "delete"})


def _pods(args, command: str) -> list:
    """The desired pods of an `up`/`play`/`watch` (none for anything else, or unreadable files:
    the command itself reports those)."""
    if command not in ("up", "play", "watch") or getattr(args, "down", False):
        return []
    files = [p for p in getattr(args, "paths", None) or () if p != "-"]
    if not files:
        return []
    from reconciler.desired import build_desired
    from reconciler.manifests import load_manifests

    loaded = load_manifests(files)
    return list(build_desired(loaded.objects).pods.values()) if loaded.ok else []


def check(args, command: str) -> None:
    pods = _pods(args, command)
    problems = rootless.check_prerequisites() + rootless.low_host_ports(rootless.host_port_uses(pods))
    problems += [rootless.Problem(f"{pod.source}: {pod.ref}: hostUsers: false", "leave it out without root: every "
                                  "rootless pod already runs in the user's own user namespace")
                 for pod in pods if not pod.spec.host_users]
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise EnvironmentProblem(f"podplay {command} without root cannot go on:\n  {lines}")
    if any(c.spec.resources.limits or c.spec.resources.requests for pod in pods
           for c in pod.containers + pod.init_containers):
        warn_undelegated(pods)


def warn_undelegated(pods) -> None:
    """Name the pods whose limits the host's cgroup delegation cannot carry, and why."""
    from reconciler.runtime import cgroups

    delegation = cgroups.delegation()
    missing: dict[tuple[str, ...], set[str]] = {}  # the controllers left out → the pods
    for pod in pods:
        wanted: set[str] = set()
        for c in pod.containers + pod.init_containers:
            if c.spec.resources.limits or c.spec.resources.requests:
                wanted |= cgroups.needed(c.spec.resources.limits, c.spec.resources.requests)
        left = tuple(c for c in cgroups.CONTROLLERS if c in wanted and c not in delegation.dirs)
        if left:
            missing.setdefault(left, set()).add(pod.ref)
    for left, refs in sorted(missing.items()):
        what = f"the {', '.join(left)} limits" if delegation.dirs else "resource limits and requests"
        print(f"Warning: {what} of {', '.join(sorted(refs))} are not applied: {delegation.reason(left)}",
              file=sys.stderr)


def run_inside(args, paths, argv: list[str]) -> int:
    """Check, then exec this command again inside the user's namespaces (does not return)."""
    from reconciler.cli import _command_word

    check(args, _command_word(argv))
    from reconciler.runtime.rootless import UserNamespace

    rootless.ensure_own_dir(paths.runroot)
    rootless.ensure_own_dir(paths.root)
    paths.network_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, ROOTLESS_ENV: "1", "PODPLAY_ROOT": str(paths.root), "PODPLAY_RUNROOT": str(paths.runroot),
           "PODPLAY_NETWORK_DIR": str(paths.network_dir)}
    userns = UserNamespace(paths.runroot)
    command = userns.command([sys.executable, "-m", "reconciler", *argv])
    sys.stdout.flush()
    sys.stderr.flush()
    # The command runs as a child, so that the namespaces' holder can go once nothing needs it: a
    # terminal's Ctrl-C reaches both, and only the child acts on it.
    import signal
    import subprocess

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = subprocess.call(command, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not _in_use(paths, userns.holder()):
        userns.stop()
    return 128 - code if code < 0 else code


def _in_use(paths, holder: int) -> bool:
    """Whether the user's namespaces still hold something: a container, or a mount (a snapshot,
    a tmpfs volume) under podplay's roots."""
    if not holder:
        return False
    from reconciler.runtime.driver import RuncRuntime

    if RuncRuntime(paths).list_containers():
        return True
    roots = (str(paths.root) + "/", str(paths.runroot) + "/")
    try:
        with open(f"/proc/{holder}/mountinfo") as f:
            return any(line.split()[4].startswith(roots) for line in f)
    except OSError:
        return False
