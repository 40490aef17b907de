"""The ``podplay`` command: argparse front end; maps error classes to exit codes.

Each area registers its sub-commands from its own module (``reconciler.cli.<area>``) through
``register(sub, common)``; a handler has the signature ``handler(args, ctx) -> int``. Modules here
import nothing heavy at import time: ``podplay --help`` must start fast.
"""

from __future__ import annotations

from reconciler import classcache

classcache.install()  # before any of the package's dataclasses is defined (reconciler.classcache)

import argparse  # noqa: E402
import errno  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import TextIO  # noqa: E402

from reconciler import __version__  # noqa: E402
from reconciler.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_USAGE, PodplayError, no_space  # noqa: E402
from reconciler.paths import HostPaths  # noqa: E402

# Areas in help order, each with the commands it registers (``register(sub, common)`` in
# ``reconciler.cli.<area>``). The table lives here so that a command imports its own area only:
# a `podplay ps` need not load the image commands, nor a month-long `podplay watch` keep them.
AREAS = {
    "engine": ("validate", "plan", "up", "play", "down"),
    "containers": ("ps", "pods", "logs", "exec", "stop", "start", "rm"),
    "images": ("pull", "images", "inspect", "rmi", "tag", "image", "login", "logout", "copy", "push", "save",
               "load", "import", "delete"),
    "build": ("build",),
    "keep": ("watch", "sync", "status"),
    "units": ("generate",),
    "rollout": ("rollout",),
    "services": ("services", "svc"),
    "workloads": ("jobs", "cronjobs", "get"),
}


@dataclass
class Context:
    paths: HostPaths
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def tty(self) -> bool:
        return self.out.isatty()


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options")
    g.add_argument("--root", default=argparse.SUPPRESS,
                   help="durable storage root (env PODPLAY_ROOT, default /var/lib/podplay)")
    g.add_argument("--runroot", default=argparse.SUPPRESS,
                   help="volatile state root (env PODPLAY_RUNROOT, default /run/podplay)")
    g.add_argument("--network-dir", default=argparse.SUPPRESS,
                   help="CNI network configuration directory (env PODPLAY_NETWORK_DIR, default /etc/podplay/net.d)")
    g.add_argument("--network", default=argparse.SUPPRESS, metavar="NAME",
                   help="network for pods without the podplay.io/network annotation "
                   "(env PODPLAY_NETWORK, default podplay)")
    g.add_argument("--pod-security", default=argparse.SUPPRESS, metavar="LEVEL",
                   choices=("privileged", "baseline", "restricted"),
                   help="what manifests may ask of the host: privileged, baseline or restricted "
                   "(env PODPLAY_POD_SECURITY, config file pod-security, default baseline)")
    g.add_argument("--allow-host-path", action="append", default=argparse.SUPPRESS, metavar="PREFIX",
                   help="a hostPath prefix pods may mount below privileged, repeatable "
                   "(env PODPLAY_ALLOWED_HOST_PATHS, colon-separated; config file allowed-host-paths)")
    g.add_argument("--signature-policy", default=argparse.SUPPRESS, metavar="FILE",
                   help="the containers signature policy every pulled image must satisfy "
                   "(env PODPLAY_SIGNATURE_POLICY, default /etc/containers/policy.json)")
    g.add_argument("--registries.d", dest="registries_d", default=argparse.SUPPRESS, metavar="DIR",
                   help="where signatures are stored, per registry (env PODPLAY_REGISTRIES_D, "
                   "default /etc/containers/registries.d)")
    return common


# Global options that take a value (so that the word after them is not the command).
_VALUED = ("--root", "--runroot", "--network-dir", "--network", "--pod-security", "--allow-host-path",
           "--signature-policy", "--registries.d")

# Commands that take manifests to run under the pod-security policy (reconciler.admission).
# Not down (removing is always allowed), nor the pod commands (they act on pods admitted before),
# nor `generate` (the units it writes run `up`/`watch`, which are judged on the host at boot).
ADMITTED = ("validate", "plan", "up", "play", "watch", "sync")
CONFIG_FILE = "/etc/podplay/config"
_ENV_SETTINGS = {"pod-security": "PODPLAY_POD_SECURITY", "pod-security-warn": "PODPLAY_POD_SECURITY_WARN",
                 "pod-security-audit": "PODPLAY_POD_SECURITY_AUDIT",
                 "allowed-host-paths": "PODPLAY_ALLOWED_HOST_PATHS", "allowed-host-ports": "PODPLAY_ALLOWED_HOST_PORTS"}


def pod_security_policy(args, paths: HostPaths | None = None):
    """The host's pod-security policy: the command line, then the environment, then the config
    file ($PODPLAY_CONFIG or /etc/podplay/config), then the defaults (baseline)."""
    from reconciler import admission

    settings: list[tuple[str, dict[str, str]]] = []
    if getattr(args, "pod_security", None):
        settings.append(("--pod-security", {"pod-security": args.pod_security}))
    if getattr(args, "allow_host_path", None):
        settings.append(("--allow-host-path", {"allowed-host-paths": ":".join(args.allow_host_path)}))
    settings += [(f"${var}", {key: os.environ[var]}) for key, var in _ENV_SETTINGS.items()
                 if os.environ.get(var) is not None]
    config_file = os.environ.get("PODPLAY_CONFIG") or CONFIG_FILE
    try:
        with open(config_file, encoding="utf-8") as f:
            settings.append((config_file, admission.parse_config(f.read(), config_file)))
    except FileNotFoundError:
        pass
    protected = [os.path.realpath(p) for p in (paths.root, paths.runroot)] if paths is not None else []
    return admission.make_policy(settings, protected)


def _command_word(argv: list[str]) -> str:
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def _areas(argv: list[str] | None):
    """The area modules to register: only the one that owns the command when argv names one
    (building every area's parser costs more than everything else `podplay ps` does)."""
    word = _command_word(argv) if argv is not None else ""
    owner = [area for area, commands in AREAS.items() if word in commands]
    return [importlib.import_module(f"reconciler.cli.{area}") for area in owner or AREAS]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (every command when argv is None or names no known command)."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="podplay",
        parents=[common],
        description="Run Kubernetes YAML on one Linux host: no cluster, no daemon.",
        epilog="Exit codes: 0 ok, 1 invalid input, 2 usage, 3 apply failed, 4 locked, 5 image error, "
        "6 not found, 7 host environment problem, 130 interrupted. "
        "`podplay exec` passes the command's own exit code through.",
    )
    parser.add_argument("--version", action="version", version=f"podplay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _areas(argv):
        module.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    # The trust settings go through the environment, as PODPLAY_REGISTRIES_CONF does: every image
    # store this command makes (the engine's, forked pull children) reads them from there.
    for option, env in (("signature_policy", "PODPLAY_SIGNATURE_POLICY"), ("registries_d", "PODPLAY_REGISTRIES_D")):
        if getattr(args, option, None):
            os.environ[env] = os.path.abspath(getattr(args, option))
    ctx = Context(HostPaths.from_env(getattr(args, "root", None), getattr(args, "runroot", None),
                                     getattr(args, "network_dir", None), getattr(args, "network", None)))
    try:
        if os.geteuid() != 0:
            from reconciler.cli import rootless

            words = sys.argv[1:] if argv is None else list(argv)
            if _command_word(words) in rootless.GATED:
                return rootless.run_inside(args, ctx.paths, words)
        policy = None
        if args.command in ADMITTED and not getattr(args, "down", False):
            from reconciler import admission

            try:
                policy = pod_security_policy(args, ctx.paths)
            except (admission.PolicyError, OSError) as exc:
                print(f"Error: pod security settings: {exc}", file=sys.stderr)
                return EXIT_INVALID
        with _enforcing(policy):
            return int(args.func(args, ctx) or 0)
    except PodplayError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # A full disk wherever it shows up first: one clear message, never a traceback.
        err = no_space(exc.filename or ctx.paths.root)
        print(f"Error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # Output piped into `head` and friends: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _enforcing(policy):
    if policy is None:
        import contextlib

        return contextlib.nullcontext()
    from reconciler import admission

    return admission.enforcing(policy)


if __name__ == "__main__":
    sys.exit(main())
