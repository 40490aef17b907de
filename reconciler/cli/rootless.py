"""What a command that runs containers says when it is started by an unprivileged user.

Every missing prerequisite is named with its fix (reconciler.rootless), and so is every hostPort
an unprivileged user cannot bind. When nothing is missing the command still stops, saying so:
running containers without root is not finished (README, "Without root")."""

from __future__ import annotations

from reconciler import rootless
from reconciler.errors import EnvironmentProblem

# Commands that create, run or change containers, images or networks on the host.
GATED = frozenset({"up", "play", "down", "stop", "start", "rm", "logs", "exec", "watch", "sync", "pull", "import",
                   "load", "build", "rmi", "tag", "push", "save", "copy", "delete"})


def _port_problems(args) -> list[rootless.Problem]:
    if args.command not in ("up", "play", "watch") or getattr(args, "down", False):
        return []
    files = [p for p in getattr(args, "paths", None) or () if p != "-"]
    if not files:
        return []
    from reconciler.desired import build_desired
    from reconciler.manifests import load_manifests

    loaded = load_manifests(files)
    if not loaded.ok:
        return []  # the command itself reports the manifests' errors
    pods = build_desired(loaded.objects).pods.values()
    return rootless.low_host_ports(rootless.host_port_uses(pods))


def refuse(args) -> None:
    problems = rootless.check_prerequisites() + _port_problems(args)
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise EnvironmentProblem(f"podplay {args.command} without root needs what this host lacks:\n  {lines}")
    raise EnvironmentProblem(
        f"podplay {args.command} without root: every prerequisite is met, but running containers without root "
        "is not finished yet (see README, 'Without root'); run it as root, where pods can have their own user "
        "namespace with hostUsers: false")
