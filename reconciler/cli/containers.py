"""ps, pods, logs, exec, stop, start, rm: the everyday commands on the pods podplay runs.

This module registers them; they live by what they do:

    hostpods.py   reading the host's pods (runtime and network list methods only) and naming them
    pods.py       ps and pods: tables, JSON, readiness and back-off from the store's read-only view
    logs_exec.py  logs and exec
    lifecycle.py  stop, start and rm, planned by ``reconciler.podcmds`` and applied by the engine

Reading (``ps``, ``pods``, ``logs``, ``exec``) loads no manifests, no state store and no image
store, so that ``podplay ps`` starts fast (nothing here imports yaml, jsonschema or requests).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.cli.lifecycle import cmd_rm, cmd_start, cmd_stop
from reconciler.cli.logs_exec import cmd_exec, cmd_logs
from reconciler.cli.pods import cmd_pods, cmd_ps


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    options: dict

    @classmethod
    def of(cls, *flags: str, **options) -> Arg:
        return cls(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    func: Callable
    args: tuple[Arg, ...]


# --- the options several commands share -----------------------------------------------------------

NAMESPACE_LISTED = Arg.of("--namespace", "-n", metavar="NS", default=None,
                          help="only pods in this namespace (default: all namespaces)")
NAMESPACE = Arg.of("--namespace", "-n", metavar="NS", default=None,
                   help="the pods' namespace (default: any; a bare name must then be unique)")
PODS = Arg.of("pods", nargs="+", metavar="POD")
SOME_PODS = Arg.of("pods", nargs="*", metavar="POD", help="only these pods")
TARGET = Arg.of("target", metavar="POD[/CONTAINER]")
CONTAINER = Arg.of("--container", "-c", default=None, metavar="NAME", help="the container (instead of POD/NAME)")


def _timeout(help: str) -> Arg:
    return Arg.of("--timeout", "-t", type=_non_negative_int, default=None, metavar="S", help=help)


# --- the commands ---------------------------------------------------------------------------------

PS = Command(
    "ps", "list containers",
    "List the containers of podplay's pods: by default the running app (and init) containers; -a adds exited "
    "and created ones; --infra adds each pod's infra container. READY: the app container runs and its readiness "
    "probe (if any) passed. An exited container that a running `podplay watch`/`sync` will restart shows its "
    "crash-loop back-off in STATE (exited (1), back-off 40s). A NAMESPACE column appears when a listed pod is "
    "outside 'default' and no --namespace is given.",
    cmd_ps, (
        SOME_PODS,
        Arg.of("--all", "-a", action="store_true", help="also exited and created containers"),
        Arg.of("--infra", action="store_true", help="also the infra container of each pod"),
        Arg.of("--quiet", "-q", action="store_true", help="print container ids only"),
        Arg.of("--output", "-o", choices=("table", "json"), default="table",
               help="json: a list of objects with stable field names (see the README)"),
        NAMESPACE_LISTED,
    ))

PODS_CMD = Command(
    "pods", "list pods",
    "One line per pod: READY (ready/all app containers; ready = running, and the readiness probe passed if there "
    "is one), STATUS (Running, Pending, Succeeded, Failed, Stopped, Restarting, CrashLoopBackOff, Unknown), "
    "RESTARTS, IP, AGE and the manifest file it came from. CrashLoopBackOff: a container that failed again after "
    "a restart waits out its back-off before a running `podplay watch`/`sync` restarts it.",
    cmd_pods, (
        SOME_PODS,
        Arg.of("--quiet", "-q", action="store_true", help="print pod names (namespace/name) only"),
        Arg.of("--output", "-o", choices=("table", "json"), default="table"),
        NAMESPACE_LISTED,
    ))

LOGS = Command(
    "logs", "print a container's log",
    "Print the log of POD's container (the only app container, or the one named as POD/CONTAINER or with -c). "
    "The container's stdout goes to stdout and its stderr to stderr.",
    cmd_logs, (
        TARGET, CONTAINER,
        Arg.of("--follow", "-f", action="store_true",
               help="keep printing new lines until the container exits (or Ctrl-C)"),
        Arg.of("--tail", type=_non_negative_int, default=None, metavar="N", help="only the last N lines"),
        Arg.of("--since", default=None, metavar="WHEN",
               help="only lines since a duration ago (10s, 5m, 1h30m) or a time (RFC 3339)"),
        Arg.of("--timestamps", "-t", action="store_true", help="prefix each line with its time (RFC 3339, UTC)"),
        Arg.of("--previous", "-p", action="store_true",
               help="the previous instance's log (not kept by podplay: a restart replaces the log)"),
        NAMESPACE,
    ))

EXEC = Command(
    "exec", "run a command in a running container",
    "Run CMD in POD's container (runc exec). The exit code is the command's; podplay's own failures exit 125, a "
    "command that cannot be executed 126, a command that does not exist 127.",
    cmd_exec, (
        TARGET,
        # REMAINDER: everything after POD is the command, options included (`exec web ls -l` works
        # like `exec web -- ls -l`); podplay's own options go before POD.
        Arg.of("command", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command and its arguments"),
        CONTAINER,
        Arg.of("--interactive", "-i", action="store_true", help="pass stdin to the command"),
        Arg.of("--tty", "-t", action="store_true", help="give the command a terminal (stdin must be one)"),
        Arg.of("--env", "-e", action="append", default=[], metavar="KEY[=VALUE]",
               help="set an environment variable (KEY alone: its value here); repeatable"),
        NAMESPACE,
    ))

STOP = Command(
    "stop", "stop pods' containers (they stay, exited)",
    "Stop the running containers of each POD: its stop signal, then SIGKILL after terminationGracePeriodSeconds "
    "(or --timeout). The containers stay, exited; the pod keeps its infra container, IP and host ports. "
    "`podplay start` starts them again; the next `up` or `watch` pass restarts them as the pod's restartPolicy "
    "says.",
    cmd_stop, (PODS, _timeout("seconds before SIGKILL (default: the pod's terminationGracePeriodSeconds)"), NAMESPACE))

START = Command(
    "start", "start pods' stopped containers again",
    "Start the containers of each POD that are not running (fresh instances from the pod's manifest, as a "
    "restart does; the image stored locally is used, no registry is asked). A pod whose infra container is gone "
    "is recreated.",
    cmd_start, (PODS, NAMESPACE))

RM = Command(
    "rm", "remove pods entirely",
    "Remove each POD: containers, infra, network attachment, snapshots and pod volumes (claims are kept). A pod "
    "with running containers is refused unless -f, which stops them first. `up` creates the pod again while a "
    "manifest describes it.",
    cmd_rm, (
        PODS,
        Arg.of("--force", "-f", action="store_true", help="stop running containers first"),
        _timeout("with -f: seconds before SIGKILL (default: terminationGracePeriodSeconds)"),
        NAMESPACE,
    ))

COMMANDS = (PS, PODS_CMD, LOGS, EXEC, STOP, START, RM)


def register(sub, common) -> None:
    for c in COMMANDS:
        p = sub.add_parser(c.name, parents=[common], help=c.help, description=c.description)
        for a in c.args:
            p.add_argument(*a.flags, **a.options)
        p.set_defaults(func=c.func)
