"""ps, pods, logs, exec, stop, start, rm: the everyday commands on the pods podplay runs.

Reading (``ps``, ``pods``, ``logs``, ``exec``) goes straight to the runtime's and the network's
list methods: no manifests, no state store, no image store, so that ``podplay ps`` starts fast
(nothing here imports yaml, jsonschema or requests). Mutating (``stop``, ``start``, ``rm``)
goes through the engine like ``up``: under the apply lock, after crash recovery, as journaled
transactions (``reconcile.apply_request``).

Naming: a pod is ``NAME`` or ``NAMESPACE/NAME``; a bare name is looked up in every namespace
(or in ``-n NAMESPACE``) and must be unique. ``logs`` and ``exec`` take ``POD[/CONTAINER]`` (or
``NAMESPACE/POD/CONTAINER``, or ``-c CONTAINER``); a full container id from ``ps -q`` works too.

What ``up`` (and ``watch``) does afterwards is convergence, not memory of these commands: a
stopped pod's containers are restarted by the next pass as its restartPolicy says (Always:
yes; OnFailure: yes, a stop signal is a failure; Never: no), and a removed pod is created again
while its manifest still describes it.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.errors import (
    EXIT_APPLY_FAILED,
    EXIT_INVALID,
    EXIT_USAGE,
    ApplyError,
    InputError,
    NotFoundError,
    PodplayError,
)

if TYPE_CHECKING:
    from reconciler.observed import ObservedAttachment, ObservedContainer, ObservedPod, PortMapping

# Container states. ContainerState is a StrEnum, so its members equal these strings: this module
# need not import reconciler.observed at import time (`--help` imports every CLI area
# to build its parser).
RUNNING, EXITED, CREATED, PAUSED, UNKNOWN = "running", "exited", "created", "paused", "unknown"

# podman's convention for exec: the command's own exit code, or one of these for ours.
EXEC_PODPLAY_ERROR = 125  # podplay could not run the command (unknown pod, stopped container, …)
EXEC_CANNOT_INVOKE = 126  # the command exists but cannot be executed (not executable, a directory)
EXEC_NOT_FOUND = 127  # the command does not exist in the container

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UsageError(InputError):
    """The command line names something ambiguously (a container must be chosen, …)."""

    exit_code = EXIT_USAGE


class RefusedError(InputError):
    """The request is valid but would need a flag the user did not give (rm of a running pod)."""

    exit_code = EXIT_INVALID


# --- registration ---------------------------------------------------------------------------------

def _namespace_option(p, listing: bool = False) -> None:
    p.add_argument("--namespace", "-n", metavar="NS", default=None,
                   help="only pods in this namespace (default: all namespaces)" if listing else
                   "the pods' namespace (default: any; a bare name must then be unique)")


def register(sub, common) -> None:
    import argparse

    p = sub.add_parser("ps", parents=[common], help="list containers",
                       description="List the containers of podplay's pods: by default the running app (and "
                       "init) containers; -a adds exited and created ones; --infra adds each pod's "
                       "infra container. READY: the app container runs and its readiness probe (if any) passed. "
                       "An exited container that a running `podplay watch`/`sync` will restart shows its crash-loop "
                       "back-off in STATE (exited (1), back-off 40s). A NAMESPACE column appears when a listed pod "
                       "is outside 'default' and no --namespace is given.")
    p.add_argument("pods", nargs="*", metavar="POD", help="only these pods")
    p.add_argument("--all", "-a", action="store_true", help="also exited and created containers")
    p.add_argument("--infra", action="store_true", help="also the infra container of each pod")
    p.add_argument("--quiet", "-q", action="store_true", help="print container ids only")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table",
                   help="json: a list of objects with stable field names (see the README)")
    _namespace_option(p, listing=True)
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("pods", parents=[common], help="list pods",
                       description="One line per pod: READY (ready/all app containers; ready = running, and the "
                       "readiness probe passed if there is one), STATUS (Running, Pending, Succeeded, Failed, Stopped, "
                       "Restarting, CrashLoopBackOff, Unknown), RESTARTS, IP, AGE and the manifest file it came from. "
                       "CrashLoopBackOff: a container that failed again after a restart waits out its back-off "
                       "before a running `podplay watch`/`sync` restarts it.")
    p.add_argument("pods", nargs="*", metavar="POD", help="only these pods")
    p.add_argument("--quiet", "-q", action="store_true", help="print pod names (namespace/name) only")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    _namespace_option(p, listing=True)
    p.set_defaults(func=cmd_pods)

    p = sub.add_parser("logs", parents=[common], help="print a container's log",
                       description="Print the log of POD's container (the only app container, or the one "
                       "named as POD/CONTAINER or with -c). The container's stdout goes to stdout and its "
                       "stderr to stderr.")
    p.add_argument("target", metavar="POD[/CONTAINER]")
    p.add_argument("--container", "-c", default=None, metavar="NAME", help="the container (instead of POD/NAME)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new lines until the container exits (or Ctrl-C)")
    p.add_argument("--tail", type=_non_negative_int, default=None, metavar="N", help="only the last N lines")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="only lines since a duration ago (10s, 5m, 1h30m) or a time (RFC 3339)")
    p.add_argument("--timestamps", "-t", action="store_true", help="prefix each line with its time (RFC 3339, UTC)")
    p.add_argument("--previous", "-p", action="store_true",
                   help="the previous instance's log (not kept by podplay: a restart replaces the log)")
    _namespace_option(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("exec", parents=[common], help="run a command in a running container",
                       description="Run CMD in POD's container (runc exec). The exit code is the command's; "
                       "podplay's own failures exit 125, a command that cannot be executed 126, a command "
                       "that does not exist 127.")
    p.add_argument("target", metavar="POD[/CONTAINER]")
    # REMAINDER: everything after POD is the command, options included (`exec web ls -l` works
    # like `exec web -- ls -l`); podplay's own options go before POD.
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command and its arguments")
    p.add_argument("--container", "-c", default=None, metavar="NAME", help="the container (instead of POD/NAME)")
    p.add_argument("--interactive", "-i", action="store_true", help="pass stdin to the command")
    p.add_argument("--tty", "-t", action="store_true", help="give the command a terminal (stdin must be one)")
    p.add_argument("--env", "-e", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable (KEY alone: its value here); repeatable")
    _namespace_option(p)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("stop", parents=[common], help="stop pods' containers (they stay, exited)",
                       description="Stop the running containers of each POD: its stop signal, then SIGKILL "
                       "after terminationGracePeriodSeconds (or --timeout). The containers stay, exited; the "
                       "pod keeps its infra container, IP and host ports. `podplay start` starts them again; "
                       "the next `up` or `watch` pass restarts them as the pod's restartPolicy says.")
    p.add_argument("pods", nargs="+", metavar="POD")
    p.add_argument("--timeout", "-t", type=_non_negative_int, default=None, metavar="S",
                   help="seconds before SIGKILL (default: the pod's terminationGracePeriodSeconds)")
    _namespace_option(p)
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("start", parents=[common], help="start pods' stopped containers again",
                       description="Start the containers of each POD that are not running (fresh instances "
                       "from the pod's manifest, as a restart does; the image stored locally is used, no "
                       "registry is asked). A pod whose infra container is gone is recreated.")
    p.add_argument("pods", nargs="+", metavar="POD")
    _namespace_option(p)
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("rm", parents=[common], help="remove pods entirely",
                       description="Remove each POD: containers, infra, network attachment, snapshots and pod "
                       "volumes (claims are kept). A pod with running containers is refused unless -f, which "
                       "stops them first. `up` creates the pod again while a manifest describes it.")
    p.add_argument("pods", nargs="+", metavar="POD")
    p.add_argument("--force", "-f", action="store_true", help="stop running containers first")
    p.add_argument("--timeout", "-t", type=_non_negative_int, default=None, metavar="S",
                   help="with -f: seconds before SIGKILL (default: terminationGracePeriodSeconds)")
    _namespace_option(p)
    p.set_defaults(func=cmd_rm)


def _non_negative_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


# --- pure formatting helpers ----------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """kubectl's AGE style: 45s, 3m20s, 12m, 5h3m, 30h, 3d4h, 40d, 2y30d, 9y."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if d < 365 * 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def age(since: float, now: float) -> str:
    return human_duration(now - since) if since else "-"


def format_port(p: PortMapping) -> str:
    """podman's notation: hostIP:hostPort->containerPort/protocol (0.0.0.0 when no hostIP)."""
    host = p.host_ip or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{p.host_port}->{p.container_port}/{p.protocol.lower()}"


def state_text(c: ObservedContainer, restart_at: float | None = None, now: float = 0.0) -> str:
    """``running``, ``exited (1)``; ``exited (1), back-off 40s`` while a keeper waits to restart it
    (``restart_at``: when, from ``pending_restarts``)."""
    if c.state == EXITED:
        code = "?" if c.exit_code is None else str(c.exit_code)
        text = f"exited ({code}{', OOM killed' if c.oom_killed else ''})"
        if restart_at is not None and restart_at > now:
            # Rounded up: "back-off 0s" would read as "no back-off" while the wait still runs.
            text += f", back-off {human_duration(math.ceil(restart_at - now))}"
        return text
    return str(c.state)


def rfc3339(ts: float) -> str | None:
    """UTC with microseconds, truncated (never rounded up: a printed time fed back to --since
    must not skip the line it was printed for)."""
    if not ts:
        return None
    whole = int(ts)
    micros = int((ts - whole) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration before ``now`` (Go style: 10s, 5m, 1h30m, 500ms; also 2d) or an
    RFC 3339 time (2024-05-01T12:00:00Z, with fractions and offsets). The unix time it means."""
    text = text.strip()
    if text and _DURATION.sub("", text) == "" and _DURATION.match(text):
        return now - sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))
    from reconciler.runtime.logs import parse_timestamp

    try:
        return parse_timestamp(text.encode())
    except (ValueError, UnicodeError):
        raise InputError(f"--since {text!r}: expected a duration like 10s, 5m or 1h30m, or a time like "
                         "2024-05-01T12:00:00Z") from None


def pod_status(pod: ObservedPod, stopped: bool = False, restarts: Mapping[str, float] | None = None,
               now: float = 0.0) -> str:
    """kubectl-like phase of one pod instance, from what the runtime shows.

    Unknown: the infra container is gone or lost its runtime state (a reboot), so the pod's
    namespaces are gone. CrashLoopBackOff (kubectl's word): an exited container that has
    been restarted before waits for its next restart (``restarts``: container id → when a
    keeper restarts it, from ``pending_restarts``). Pending: a container is created but not
    started (or not created yet). Running: every app container runs. When they all exited:
    Stopped (``stopped``: the last thing done to the pod was a ``podplay stop``), Succeeded
    (all exited 0), else Failed. Restarting: some exited container has been restarted before
    or, with others still running, exited with an error.
    """
    if pod.infra is None or pod.infra.state != RUNNING:
        return "Unknown"
    apps = list(pod.containers.values())
    if not apps:
        return "Pending"
    # The first restart after a crash is immediate (no back-off), so a pending one means the
    # container failed again after being restarted: a crash loop.
    if restarts and any(c.state == EXITED and c.restart_count >= 1 and restarts.get(c.id, 0.0) > now
                        for c in apps):
        return "CrashLoopBackOff"
    states = [c.state for c in apps]
    if any(s in (CREATED, UNKNOWN) for s in states):
        return "Pending"
    if all(s == RUNNING for s in states):
        return "Running"
    exited = [c for c in apps if c.state == EXITED]
    if len(exited) == len(apps):
        if stopped:
            return "Stopped"
        if all(c.exit_code == 0 for c in exited):
            return "Succeeded"
        if any(c.restart_count > 0 for c in exited):
            return "Restarting"
        return "Failed"
    if any(c.restart_count > 0 or c.exit_code != 0 for c in exited):
        return "Restarting"
    return "Running"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, three spaces apart (podman's look); the last column is not padded."""
    rows = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])] + [r[-1]]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def listing(items: Sequence[str], limit: int = 12) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


# --- reading the host -------------------------------------------------------------------------------

def group_pods(containers: Iterable[ObservedContainer], attachments: Iterable[ObservedAttachment]) -> list[ObservedPod]:
    """Pod instances with a name, from the runtime's containers and the network's attachments
    (what ``observe_host`` does, minus the snapshot and volume reads that listing does not need)."""
    from reconciler.observed import LABEL_OWNER, LABEL_SOURCE, ObservedPod

    nets = {a.pod_uid: a for a in attachments}
    infra: dict[str, ObservedContainer] = {}
    apps: dict[str, dict[str, ObservedContainer]] = {}
    inits: dict[str, dict[str, ObservedContainer]] = {}
    keys: dict[str, str] = {}
    labels: dict[str, dict] = {}
    for c in containers:
        if c.pod:
            keys.setdefault(c.pod_uid, c.pod)
        if c.role == "infra":
            infra[c.pod_uid] = c
            labels[c.pod_uid] = c.labels
        else:
            labels.setdefault(c.pod_uid, c.labels)
            (inits if c.role == "init" else apps).setdefault(c.pod_uid, {})[c.name] = c
    pods = []
    for uid, key in keys.items():
        lab = labels.get(uid, {})
        pods.append(ObservedPod(uid=uid, key=key, owner=lab.get(LABEL_OWNER, ""), source=lab.get(LABEL_SOURCE, ""),
                                infra=infra.get(uid), containers=apps.get(uid, {}), init_containers=inits.get(uid, {}),
                                network=nets.get(uid)))
    return sorted(pods, key=lambda p: (p.namespace, p.name, -_started(p), p.uid))


def _started(pod: ObservedPod) -> float:
    if pod.infra is not None and pod.infra.started_at:
        return pod.infra.started_at
    return max((c.started_at for c in pod.containers.values()), default=0.0)


@dataclass
class HostView:
    pods: list[ObservedPod]
    close: Callable[[], None]
    runtime: object = None


def read_host(ctx) -> HostView:
    """The named pod instances on this host, read through the runtime and network drivers only."""
    if os.environ.get("PODPLAY_DRIVER", "host") == "fake":
        from reconciler.host import open_drivers

        drivers = open_drivers(ctx.paths, "fake")
        runtime, network, close = drivers.runtime, drivers.network, drivers.close
    else:
        from reconciler.network.driver import CniNetwork
        from reconciler.runtime.driver import RuncRuntime

        runtime, network, close = RuncRuntime(ctx.paths), CniNetwork(ctx.paths), (lambda: None)
    return HostView(group_pods(runtime.list_containers(), network.list_attachments()), close, runtime)


# --- naming ---------------------------------------------------------------------------------------

def _in_namespace(pods: Sequence[ObservedPod], namespace: str | None) -> list[ObservedPod]:
    return [p for p in pods if namespace is None or p.namespace == namespace]


def find_pod_instances(pods: Sequence[ObservedPod], name: str, namespace: str | None = None) -> list[ObservedPod]:
    """Every instance of the pod ``name`` ("NAME" or "NAMESPACE/NAME"), newest first.

    NotFoundError (exit 6) lists what exists; a bare name that exists in several namespaces is
    a UsageError naming them."""
    if "/" in name:
        ns, _, bare = name.partition("/")
        if namespace is not None and ns != namespace:
            raise UsageError(f"{name!r} names namespace {ns!r} but --namespace is {namespace!r}")
        found = [p for p in pods if p.key == name]
    else:
        found = [p for p in _in_namespace(pods, namespace) if p.name == name]
        spaces = sorted({p.namespace for p in found})
        if len(spaces) > 1:
            raise UsageError(f"pod {name!r} exists in namespaces {', '.join(spaces)}: say which, as "
                             f"{spaces[0]}/{name} or with -n {spaces[0]}")
    if found:
        return found
    where = f" in namespace {namespace}" if namespace else ""
    scope = _in_namespace(pods, namespace)
    if not scope:
        raise NotFoundError(f"no pod {name!r}{where}: podplay runs no pods{where} on this host")
    names = {p.key for p in scope} | {p.name for p in scope}
    raise NotFoundError(f"no pod {name!r}{where}{did_you_mean(name, names)} "
                        f"(pods: {listing(sorted({p.key for p in scope}))})")


def current_instance(instances: Sequence[ObservedPod]) -> ObservedPod:
    """During a replacement two instances of a pod may exist for a moment: the one whose infra
    runs, newest first, is the pod."""
    running = [p for p in instances if p.infra is not None and p.infra.state == RUNNING]
    return max(running or instances, key=_started)


def container_names(pod: ObservedPod) -> str:
    text = ", ".join(sorted(pod.containers)) or "none"
    if pod.init_containers:
        text += f" (init containers: {', '.join(sorted(pod.init_containers))})"
    return text


def pick_container(pod: ObservedPod, name: str | None) -> ObservedContainer:
    """The named container (app or init), or the pod's only app container (kubectl's default)."""
    if name is None:
        if len(pod.containers) == 1:
            return next(iter(pod.containers.values()))
        if not pod.containers:
            raise NotFoundError(f"pod {pod.key} has no app containers (init containers: "
                                f"{', '.join(sorted(pod.init_containers)) or 'none'})")
        raise UsageError(f"pod {pod.key} has {len(pod.containers)} containers; choose one as "
                         f"{pod.name}/CONTAINER or with -c: {container_names(pod)}")
    found = pod.containers.get(name) or pod.init_containers.get(name)
    if found is None:
        every = list(pod.containers) + list(pod.init_containers)
        raise NotFoundError(f"pod {pod.key} has no container {name!r}{did_you_mean(name, every)}; "
                            f"its containers: {container_names(pod)}")
    return found


def resolve_target(pods: Sequence[ObservedPod], target: str, container: str | None,
                   namespace: str | None) -> tuple[ObservedPod, ObservedContainer]:
    """POD, POD/CONTAINER, NAMESPACE/POD/CONTAINER, NAMESPACE/POD (when no pod is named like the
    namespace) or a container id, plus ``-c``."""
    for p in pods:
        for c in [*p.containers.values(), *p.init_containers.values()]:
            if c.id == target:
                return p, c
    parts = target.split("/")
    if len(parts) > 3 or not all(parts):
        raise UsageError(f"{target!r}: expected POD, POD/CONTAINER or NAMESPACE/POD/CONTAINER")
    if len(parts) == 3:
        pod_name, ctr = f"{parts[0]}/{parts[1]}", parts[2]
    elif len(parts) == 2:
        pod_name, ctr = parts
        bare = _in_namespace(pods, namespace)
        if not any(p.name == parts[0] for p in bare) and any(p.key == target for p in pods):
            pod_name, ctr = target, None  # NAMESPACE/POD
    else:
        pod_name, ctr = target, None
    if container is not None:
        if ctr is not None and ctr != container:
            raise UsageError(f"{target!r} names container {ctr!r} but -c says {container!r}")
        ctr = container
    pod = current_instance(find_pod_instances(pods, pod_name, namespace))
    return pod, pick_container(pod, ctr)


# --- ps and pods ----------------------------------------------------------------------------------

ROLE_ORDER = {"infra": 0, "init": 1, "app": 2}


def container_rows(pods: Sequence[ObservedPod], *, all_states: bool,
                   infra: bool) -> list[tuple[ObservedPod, ObservedContainer]]:
    rows = []
    for pod in pods:
        listed = list(pod.containers.values()) + list(pod.init_containers.values())
        if infra and pod.infra is not None:
            listed.append(pod.infra)
        for c in sorted(listed, key=lambda c: (ROLE_ORDER.get(c.role, 3), c.name)):
            if all_states or c.role == "infra" or c.state == RUNNING:
                rows.append((pod, c))
    return rows


def _ports(pod: ObservedPod) -> tuple[PortMapping, ...]:
    return pod.network.status.ports if pod.network is not None else ()


def _ip(pod: ObservedPod) -> str:
    return pod.network.status.ip if pod.network is not None else ""


def _ports_json(ports: Iterable[PortMapping]) -> list[dict]:
    return [{"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port,
             "protocol": p.protocol.lower()} for p in ports]


def container_json(pod: ObservedPod, c: ObservedContainer, keeping: Keeping | None = None) -> dict:
    """Stable field names of ``ps --output json`` (documented in the README)."""
    keeping = keeping or Keeping()
    return {
        "id": c.id, "namespace": pod.namespace, "pod": pod.name, "pod_uid": pod.uid,
        "name": c.name, "role": c.role, "image": c.image, "image_id": c.image_id,
        "state": str(c.state), "exit_code": c.exit_code, "oom_killed": c.oom_killed,
        "ready": keeping.ready(c) if c.role == "app" else None,
        "restarts": c.restart_count, "restart_at": rfc3339(keeping.restart_at(c) or 0.0), "pid": c.pid or None,
        "started_at": rfc3339(c.started_at), "finished_at": rfc3339(c.finished_at),
        "ip": _ip(pod) or None, "ports": _ports_json(_ports(pod)), "source": pod.source,
    }


def _show_namespace(pods: Iterable[ObservedPod]) -> bool:
    """A NAMESPACE column only when it tells something: a listed pod is outside 'default' (and
    the user did not choose the namespace with -n)."""
    return any(p.namespace != "default" for p in pods)


def ps_table(rows: Sequence[tuple[ObservedPod, ObservedContainer]], now: float, namespace: str | None = None,
             keeping: Keeping | None = None) -> str:
    keeping = keeping or Keeping()
    with_ns = namespace is None and _show_namespace(p for p, _ in rows)
    headers = (["NAMESPACE"] if with_ns else []) + ["POD", "CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS",
                                                    "PORTS", "IP", "AGE"]
    lines = []
    for pod, c in rows:
        name = "(infra)" if c.role == "infra" else f"{c.name} (init)" if c.role == "init" else c.name
        # Readiness is a property of app containers (Kubernetes counts only those); the infra
        # and init containers show "-".
        ready = "-" if c.role != "app" else "true" if keeping.ready(c) else "false"
        cells = [pod.name, name, c.image or "-", state_text(c, keeping.restart_at(c), now), ready,
                 str(c.restart_count), ",".join(format_port(p) for p in _ports(pod)) or "-", _ip(pod) or "-",
                 age(c.started_at, now)]
        lines.append(([pod.namespace] if with_ns else []) + cells)
    return render_table(headers, lines)


def pod_json(pod: ObservedPod, status: str, keeping: Keeping | None = None) -> dict:
    """Stable field names of ``pods --output json`` (documented in the README)."""
    keeping = keeping or Keeping()
    apps = sorted(pod.containers.values(), key=lambda c: c.name)
    return {
        "namespace": pod.namespace, "name": pod.name, "uid": pod.uid, "status": status,
        "ready": sum(1 for c in apps if keeping.ready(c)), "restarts": sum(c.restart_count for c in apps),
        "ip": _ip(pod) or None, "ports": _ports_json(_ports(pod)),
        "started_at": rfc3339(_started(pod)), "source": pod.source, "owner": pod.owner,
        "containers": [{"name": c.name, "state": str(c.state), "exit_code": c.exit_code,
                        "restarts": c.restart_count, "ready": keeping.ready(c),
                        "restart_at": rfc3339(keeping.restart_at(c) or 0.0)} for c in apps],
        "init_containers": [{"name": c.name, "state": str(c.state), "exit_code": c.exit_code}
                            for c in sorted(pod.init_containers.values(), key=lambda c: c.name)],
    }


def _display_source(source: str) -> str:
    if not source or source == "-":
        return source or "-"
    try:
        rel = os.path.relpath(source)
    except ValueError:
        return source
    return rel if not rel.startswith("..") else source


def pods_table(pods: Sequence[ObservedPod], statuses: dict[str, str], now: float, namespace: str | None = None,
               keeping: Keeping | None = None) -> str:
    keeping = keeping or Keeping()
    with_ns = namespace is None and _show_namespace(pods)
    headers = (["NAMESPACE"] if with_ns else []) + ["NAME", "READY", "STATUS", "RESTARTS", "IP", "AGE", "SOURCE"]
    lines = []
    for pod in pods:
        apps = pod.containers.values()
        cells = [pod.name, f"{sum(1 for c in apps if keeping.ready(c))}/{len(apps)}", statuses[pod.uid],
                 str(sum(c.restart_count for c in apps)), _ip(pod) or "-", age(_started(pod), now),
                 _display_source(pod.source)]
        lines.append(([pod.namespace] if with_ns else []) + cells)
    return render_table(headers, lines)


def _select(view: HostView, names: Sequence[str], namespace: str | None) -> list[ObservedPod]:
    if not names:
        return _in_namespace(view.pods, namespace)
    chosen: dict[str, ObservedPod] = {}
    for name in names:
        for p in find_pod_instances(view.pods, name, namespace):
            chosen[p.uid] = p
    return [p for p in view.pods if p.uid in chosen]


# --- what the state store adds: readiness, pending restarts, stopped pods --------------------------
#
# The runtime knows whether a container runs, not whether its readiness probe passed nor when a
# keeper will restart it. Both live in the state store, written by the processes that decide
# them: the HealthMonitor saves each container's probe record (probes table), and a running
# `podplay watch`/`sync` publishes its crash-loop schedule (sources table, "backoff": container
# id → {until, restarts, …}, computed by reconciler.watch.backoff.restart_at from the same
# observed containers). `ps` reads those rows with sqlite directly: no StateStore, no probe
# state machine, no desired state, so nothing heavy is imported on its path.

@dataclass
class Keeping:
    """Readiness and pending restarts of the listed containers, and which pods were stopped.
    Empty (every running container ready, nothing pending) when there is no state store."""

    probes: dict[str, dict[str, bool]] = field(default_factory=dict)  # pod uid → container → ready
    restarts: dict[str, float] = field(default_factory=dict)  # container id → when a keeper restarts it
    stopped: set[str] = field(default_factory=set)  # pod uids whose last transaction was `podplay stop`

    def ready(self, c: ObservedContainer) -> bool:
        """Running, and its readiness (and startup) probes passed; without probes running is ready
        (Kubernetes' rule). A container with probes and no verdict yet (none has run, or no
        keeper runs them) is not ready."""
        from reconciler.observed import LABEL_PROBE_GATED

        gated = c.labels.get(LABEL_PROBE_GATED) == "true"
        return c.state == RUNNING and self.probes.get(c.pod_uid, {}).get(c.name, not gated)

    def restart_at(self, c: ObservedContainer) -> float | None:
        return self.restarts.get(c.id) if c.state == EXITED else None


def probe_readiness(rows: Iterable[tuple[str, dict]], pods: Iterable[ObservedPod]) -> dict[str, dict[str, bool]]:
    """pod uid → container name → ready, from (pod uid, probe record) rows of the probes table.

    The rule of ``reconciler.health.readiness``: a record belongs to one run of its container (its
    ``started_at``); a container restarted since has probes but no verdict yet, so it is not ready.
    (A unit test holds the two to the same answers.)"""
    runs = {p.uid: {c.name: c.started_at for c in p.containers.values()} for p in pods}
    out: dict[str, dict[str, bool]] = {}
    for uid, rec in rows:
        name = rec.get("name", "")
        started = runs.get(uid, {})
        fresh = name not in started or started[name] == rec.get("started_at")
        out.setdefault(uid, {})[name] = bool(rec.get("ready", False)) and fresh
    return out


def pending_restarts(keepers: Iterable[dict], pods: Iterable[ObservedPod], now: float,
                     alive: Callable[[int], bool] | None = None) -> dict[str, float]:
    """container id → when it will be restarted, for exited containers that a live keeper holds in
    crash-loop back-off. Without a live keeper nothing restarts an exited container (``up`` runs
    once), so nothing is pending. A schedule entry counts only for the container run it was made
    for (same restart count): a container restarted and exited again since waits for the keeper's
    next relist to be scheduled anew."""
    alive = alive or _keeper_alive
    schedule: dict[str, dict] = {}
    for rec in keepers:
        if rec.get("running") and alive(int(rec.get("pid") or 0)):
            schedule.update(rec.get("backoff") or {})
    out = {}
    for pod in pods:
        for c in pod.containers.values():
            b = schedule.get(c.id)
            if b is None or c.state != EXITED or b.get("restarts") != c.restart_count:
                continue
            until = float(b.get("until") or 0.0)
            if until > now:
                out[c.id] = until
    return out


def read_keeping(ctx, pods: Sequence[ObservedPod], now: float, *, stopped: bool = False) -> Keeping:
    """The state store's rows about ``pods`` (read-only; `ps` never creates a store). ``stopped``:
    also which of them were last stopped with `podplay stop` (``pods`` needs it, ``ps`` not)."""
    uids = sorted({p.uid for p in pods})
    if not uids or not ctx.paths.state_db.exists():
        return Keeping()
    import json
    import sqlite3

    marks = ",".join("?" * len(uids))
    try:
        db = sqlite3.connect(f"file:{ctx.paths.state_db}?mode=ro", uri=True, timeout=5)
        try:
            probe_rows = [(uid, json.loads(rec)) for uid, rec in db.execute(
                f"SELECT pod_uid, record FROM probes WHERE pod_uid IN ({marks})", uids)]  # noqa: S608
            keepers = [json.loads(rec) for (rec,) in db.execute("SELECT record FROM sources")]
            last = _stopped_uids(db, pods) if stopped else set()
        finally:
            db.close()
    except (sqlite3.Error, ValueError):
        return Keeping()
    return Keeping(probe_readiness(probe_rows, pods), pending_restarts(keepers, pods, now), last)


def _stopped_uids(db, pods: Sequence[ObservedPod]) -> set[str]:
    """Pod instances whose last transaction was a `podplay stop` (only asked about pods whose
    containers all exited)."""
    wanted = sorted(p.uid for p in pods if p.containers and all(c.state == EXITED for c in p.containers.values()))
    if not wanted:
        return set()
    rows = db.execute(
        f"SELECT uid, kind FROM txns WHERE uid IN ({','.join('?' * len(wanted))}) AND status = 'committed' "  # noqa: S608
        "AND kind IN ('stop', 'start', 'create') ORDER BY id", wanted).fetchall()
    last: dict[str, str] = {}
    for uid, kind in rows:
        last[uid] = kind
    return {uid for uid, kind in last.items() if kind == "stop"}


def cmd_ps(args, ctx) -> int:
    view = read_host(ctx)
    try:
        pods = _select(view, args.pods, args.namespace)
    finally:
        view.close()
    rows = container_rows(pods, all_states=args.all, infra=args.infra)
    if args.quiet:
        for _, c in rows:
            print(c.id, file=ctx.out)
        return 0
    now = time.time()
    keeping = read_keeping(ctx, pods, now)
    if args.output == "json":
        import json

        json.dump([container_json(p, c, keeping) for p, c in rows], ctx.out, indent=2)
        print(file=ctx.out)
    else:
        print(ps_table(rows, now, args.namespace, keeping), file=ctx.out)
    return 0


def cmd_pods(args, ctx) -> int:
    view = read_host(ctx)
    try:
        pods = _select(view, args.pods, args.namespace)
    finally:
        view.close()
    if args.quiet:
        for p in pods:
            print(p.key, file=ctx.out)
        return 0
    now = time.time()
    keeping = read_keeping(ctx, pods, now, stopped=True)
    statuses = {p.uid: pod_status(p, p.uid in keeping.stopped, keeping.restarts, now) for p in pods}
    if args.output == "json":
        import json

        json.dump([pod_json(p, statuses[p.uid], keeping) for p in pods], ctx.out, indent=2)
        print(file=ctx.out)
    else:
        print(pods_table(pods, statuses, now, args.namespace, keeping), file=ctx.out)
    return 0


# --- logs -----------------------------------------------------------------------------------------

def cmd_logs(args, ctx) -> int:
    if args.previous:
        raise InputError("podplay keeps no log of a container's previous instance: a restart creates the "
                         "container afresh and its old log goes with it")
    since = parse_since(args.since, time.time()) if args.since else None
    view = read_host(ctx)
    try:
        _, container = resolve_target(view.pods, args.target, args.container, args.namespace)
        records = view.runtime.read_logs(container.id, follow=args.follow, tail=args.tail, since=since)
        _write_records(records, ctx, timestamps=args.timestamps, follow=args.follow)
    finally:
        view.close()
    return 0


def _write_records(records, ctx, *, timestamps: bool, follow: bool) -> None:
    """Each line to our stdout or stderr as the container wrote it there, as bytes (a log need
    not be UTF-8). Flushed whenever the stream changes (so that a terminal shows the two
    interleaved in log order) and, when following, after every line."""
    sinks = {}
    for name, text in (("stdout", ctx.out), ("stderr", ctx.err)):
        text.flush()
        binary = getattr(text, "buffer", None)
        sinks[name] = (binary.write, binary.flush) if binary is not None else (
            lambda data, text=text: text.write(data.decode(errors="replace")), text.flush)
    last = None
    for ts, stream, line in records:
        write, flush = sinks.get(stream, sinks["stdout"])
        if last is not None and last is not flush:
            last()
        write(((rfc3339(ts) + " ").encode() if timestamps else b"") + line + b"\n")
        if follow:
            flush()
        last = flush
    for _, flush in sinks.values():
        flush()


# --- exec -----------------------------------------------------------------------------------------

def exec_env(pairs: Sequence[str], environ: dict[str, str]) -> dict[str, str]:
    """``-e KEY=VALUE`` pairs; ``-e KEY`` takes KEY's value from podplay's environment (skipped
    when unset, as podman does)."""
    env: dict[str, str] = {}
    for item in pairs:
        key, eq, value = item.partition("=")
        if not key or not re.fullmatch(r"[^\s=]+", key):
            raise InputError(f"-e {item!r}: expected KEY=VALUE")
        if eq:
            env[key] = value
        elif key in environ:
            env[key] = environ[key]
    return env


def _container_env(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def find_executable(root: str, command: str, path: str) -> tuple[int, str]:
    """Where execvp in the container would find ``command``: (0, path), or (126 | 127, why).

    ``root`` is the container's root as this process can reach it (/proc/<pid>/root); the
    lookup keeps absolute symlinks inside it, as the container itself would see them."""
    from reconciler.fsutil import resolve_in_root

    def probe(candidate: str) -> tuple[int, str]:
        try:
            real = resolve_in_root(root, candidate)
            st = os.stat(real)
        except FileNotFoundError:
            return EXEC_NOT_FOUND, f"{candidate}: no such file or directory"
        except NotADirectoryError:
            return EXEC_NOT_FOUND, f"{candidate}: not a directory on the way"
        except PermissionError:
            return EXEC_CANNOT_INVOKE, f"{candidate}: permission denied"
        import stat

        if stat.S_ISDIR(st.st_mode):
            return EXEC_CANNOT_INVOKE, f"{candidate}: is a directory"
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            return EXEC_CANNOT_INVOKE, f"{candidate}: permission denied (not executable)"
        return 0, candidate

    if "/" in command:
        return probe(command)
    denied = None
    for d in path.split(":"):
        if not d.startswith("/"):
            continue  # a relative PATH entry depends on the working directory: leave it to runc
        code, what = probe(os.path.join(d, command))
        if code == 0:
            return code, what
        if code == EXEC_CANNOT_INVOKE and not what.endswith("is a directory"):
            denied = denied or (code, what)
    return denied or (EXEC_NOT_FOUND, f"{command}: executable file not found in $PATH")


def cmd_exec(args, ctx) -> int:
    """podman's convention: podplay's own failures exit 125 (never 6, which could be the
    command's own code), so a script can tell them from the command's."""
    try:
        return _exec(args, ctx)
    except PodplayError as exc:
        print(f"Error: {exc}", file=ctx.err)
        return EXEC_PODPLAY_ERROR


def _exec(args, ctx) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise InputError("exec needs a command after --")
    env = exec_env(args.env, dict(os.environ))
    view = read_host(ctx)
    try:
        pod, c = resolve_target(view.pods, args.target, args.container, args.namespace)
        if c.state != RUNNING:
            raise PodplayError(f"container {pod.key}/{c.name} is not running ({state_text(c)})"
                               + ("; `podplay start " + pod.name + "` starts it" if c.role == "app" else ""))
        # A relative path with a slash depends on the working directory: left to runc.
        if c.pid and ("/" not in argv[0] or argv[0].startswith("/")):
            path = env.get("PATH") or _container_env(c.pid).get("PATH") or DEFAULT_PATH
            code, why = find_executable(f"/proc/{c.pid}/root", argv[0], path)
            if code:
                print(f"Error: {why} (in {pod.key}/{c.name})", file=ctx.err)
                return code
        code = view.runtime.exec_in(c.id, argv, tty=args.tty, interactive=args.interactive, env=env)
    finally:
        view.close()
    return 128 - code if code < 0 else code


# --- stop, start, rm -------------------------------------------------------------------------------

def _engine(ctx):
    from reconciler.host import open_drivers
    from reconciler.state import StateStore

    os.environ.setdefault("PODPLAY_COMMAND", " ".join(["podplay"] + sys.argv[1:]))
    return open_drivers(ctx.paths), StateStore(ctx.paths.state_db)


def _named_instances(observed, names: Sequence[str], namespace: str | None) -> list[ObservedPod]:
    """Instances of the named pods in the observed host (every instance of each name)."""
    pods = [p for p in observed.pods.values() if p.key]
    chosen: dict[str, ObservedPod] = {}
    for name in names:
        for p in find_pod_instances(pods, name, namespace):
            chosen[p.uid] = p
    return sorted(chosen.values(), key=lambda p: (p.key, p.uid))


def _run_request(ctx, decide, verbs: dict[str, str], after=None) -> int:
    """Apply what ``decide(observed)`` plans, printing one line per pod done; then
    ``after(plan, state)``, if given."""
    from reconciler.reconcile import apply_request

    drivers, state = _engine(ctx)
    failed: list[str] = []

    def report(event: str, txn, message: str) -> None:
        if txn.kind == "shared" and event == "ok":
            return
        if event == "ok":
            print(f"{verbs.get(txn.kind, txn.kind)} {txn.key}", file=ctx.out)
        elif event in ("failed", "skipped"):
            failed.append(txn.key)
            print(f"! {txn.key}: {message}", file=ctx.err)

    try:
        result = apply_request(drivers, state, ctx.paths, decide, report=report)
        if after is not None:
            after(result.plan, state)
    finally:
        drivers.close()
        state.close()
    for note in result.recovered:
        print(f"recovered: {note}", file=ctx.err)
    for note in getattr(decide, "notes", ()):
        print(note, file=ctx.out)
    return EXIT_APPLY_FAILED if failed else 0


class _Decider:
    """Builds a plan from the observed host under the apply lock; collects notes for the user
    (pods that needed nothing)."""

    def __init__(self, fn):
        self.fn = fn
        self.notes: list[str] = []

    def __call__(self, observed):
        return self.fn(observed, self.notes)


def cmd_stop(args, ctx) -> int:
    from reconciler.plan import Plan, PlannedStep, Txn
    from reconciler.steps import StopContainers

    def decide(observed, notes):
        txns = []
        for pod in _named_instances(observed, args.pods, args.namespace):
            running = tuple(c.id for c in sorted([*pod.containers.values(), *pod.init_containers.values()],
                                                  key=lambda c: c.name)
                            if c.state in (RUNNING, PAUSED, CREATED))
            if not running:
                notes.append(f"{pod.key} is not running")
                continue
            timeout = pod.grace_period if args.timeout is None else args.timeout
            step = StopContainers(pod.key, pod.uid, container_ids=running, timeout=timeout)
            txns.append(Txn(f"t{len(txns) + 1}", "stop", pod.key, pod.uid, (PlannedStep(f"s{len(txns) + 1}", step),)))
        return Plan(txns=tuple(txns))

    def warn_keepers(plan, state) -> None:
        stopped = {t.key for t in plan.txns}
        for rec in state.sources().values():
            kept = stopped & set(rec.get("pods") or ())
            if kept and rec.get("running") and _keeper_alive(int(rec.get("pid") or 0)):
                print(f"note: `podplay {rec.get('kind', 'watch')}` (pid {rec.get('pid')}) keeps "
                      f"{', '.join(sorted(kept))} converged: it restarts the containers as the restartPolicy "
                      "says; remove the pod from its manifests to keep it stopped", file=ctx.err)

    return _run_request(ctx, _Decider(decide), {"stop": "stopped"}, after=warn_keepers)


def _keeper_alive(pid: int) -> bool:
    """Is ``pid`` still a podplay process (not a recycled pid)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return pid > 0 and (b"podplay" in cmd or b"reconciler" in cmd)


def _load_desired_pod(pod: ObservedPod, host_paths):
    """The DesiredPod of an observed instance, rebuilt from the manifest it came from (its file,
    or failing that the file's directory, where the ConfigMaps and Secrets it uses may live).
    Only an exact match (same uid, so the same spec hash) is returned."""
    from reconciler.desired import build_desired
    from reconciler.manifests import load_manifests
    from reconciler.reconcile import absolute_sources

    source = pod.source
    if not source or source == "-":
        raise ApplyError(f"cannot start {pod.key}: it was created from standard input, so podplay cannot "
                         "rebuild its containers; run `podplay up` with its manifest again")
    changed = False
    for paths in ([source], [os.path.dirname(source)]):
        if not os.path.exists(paths[0]):
            continue
        loaded = load_manifests(paths)
        if loaded.errors:
            continue
        desired = build_desired(absolute_sources(loaded.objects, host_paths))
        d = desired.pods.get(pod.key)
        if d is not None and d.uid == pod.uid:
            return d
        changed = changed or d is not None
    if changed:
        raise ApplyError(f"cannot start {pod.key}: {source} has changed since this pod was created; "
                         f"`podplay up {source}` replaces the pod with the new version")
    raise ApplyError(f"cannot start {pod.key}: {source} no longer describes it (missing, invalid, or the pod "
                     f"was removed from it); `podplay up` with its manifest recreates it, `podplay rm "
                     f"{pod.name}` removes it")


def _never_pull(plan):
    """``start`` uses the image the pod was made from, as stored here: it never asks a registry."""
    import dataclasses

    from reconciler.steps import PullImage

    txns = []
    for t in plan.txns:
        steps = tuple(dataclasses.replace(ps, step=dataclasses.replace(ps.step, policy="IfNotPresent"))
                      if isinstance(ps.step, PullImage) and ps.step.policy == "Always" else ps for ps in t.steps)
        txns.append(dataclasses.replace(t, steps=steps))
    return dataclasses.replace(plan, txns=tuple(txns))


def cmd_start(args, ctx) -> int:
    from reconciler.desired import DesiredState
    from reconciler.diff import Action, Change, Reason
    from reconciler.model.kube import ObjectKey
    from reconciler.plan import make_plan

    # Resolve names and rebuild the pods' specs before taking the lock: loading manifests is slow
    # and touches nothing. Under the lock the host is looked at again.
    view = read_host(ctx)
    view.close()
    wanted = {}
    for name in args.pods:
        inst = current_instance(find_pod_instances(view.pods, name, args.namespace))
        wanted[inst.uid] = inst
    desired = {}
    for inst in wanted.values():
        if not _needs_start(inst):
            continue
        desired[inst.uid] = _load_desired_pod(inst, ctx.paths)

    def decide(observed, notes):
        changes = []
        pods = {}
        for uid, inst in wanted.items():
            now = observed.pods.get(uid)
            if now is None:
                raise NotFoundError(f"pod {inst.key} was removed meanwhile")
            if uid not in desired or not _needs_start(now):
                notes.append(f"{inst.key} is already running")
                continue
            d = desired[uid]
            pods[d.ref] = d
            key = ObjectKey("Pod", d.namespace, d.name)
            if now.infra is None or now.infra.state != RUNNING:
                changes.append(Change(key, Action.REPLACE, Reason.INCOMPLETE, before=uid, after=uid,
                                      detail="infra container is gone"))
            else:
                names = tuple(c.name for c in d.containers
                              if c.name not in now.containers or now.containers[c.name].state != RUNNING)
                changes.append(Change(key, Action.START, Reason.REQUESTED, before=uid, after=uid, containers=names,
                                      detail="podplay start"))
        return _never_pull(make_plan(changes, DesiredState(pods=pods), observed))

    return _run_request(ctx, _Decider(decide), {"start": "started", "create": "started",
                                                      "delete": "removed the broken instance of"})


def _needs_start(pod: ObservedPod) -> bool:
    if pod.infra is None or pod.infra.state != RUNNING:
        return True
    return not pod.containers or any(c.state != RUNNING for c in pod.containers.values())


def cmd_rm(args, ctx) -> int:
    from reconciler.desired import DesiredState
    from reconciler.diff import Action, Change, Reason
    from reconciler.model.kube import ObjectKey
    from reconciler.plan import make_plan

    def decide(observed, notes):
        instances = _named_instances(observed, args.pods, args.namespace)
        running = [p for p in instances
                   if any(c.state in (RUNNING, PAUSED)
                          for c in [*p.containers.values(), *p.init_containers.values()])]
        if running and not args.force:
            names = ", ".join(sorted({p.key for p in running}))
            raise RefusedError(f"{names} {'is' if len(running) == 1 else 'are'} running: `podplay stop` "
                               f"{'it' if len(running) == 1 else 'them'} first, or remove with -f")
        changes = [Change(ObjectKey("Pod", p.namespace, p.name), Action.DELETE, Reason.REQUESTED, before=p.uid)
                   for p in instances]
        plan = make_plan(changes, DesiredState(), observed)
        return _with_timeout(plan, args.timeout) if args.timeout is not None else plan

    return _run_request(ctx, _Decider(decide), {"delete": "removed"})


def _with_timeout(plan, timeout: int):
    import dataclasses

    from reconciler.steps import StopContainers

    txns = tuple(dataclasses.replace(t, steps=tuple(
        dataclasses.replace(ps, step=dataclasses.replace(ps.step, timeout=timeout))
        if isinstance(ps.step, StopContainers) else ps for ps in t.steps)) for t in plan.txns)
    return dataclasses.replace(plan, txns=txns)
