"""PURE  desired state → systemd unit texts (``podplay generate systemd``).

Three kinds of unit:

* **pod units**: ``podplay-<namespace>-<pod>.service`` runs ``podplay up`` on start and
  ``podplay down`` after stop, for the manifest files that describe the pod (plus the files that
  hold the ConfigMaps, Secrets and claims it uses). ``podplay up`` converges whole files, so a
  file that yields several pods (a Deployment's replicas, or a file with several Pods) gets one
  unit for all of them, named after the file (``podplay-file-<escaped path>.service``);
  ``per_file`` asks for that naming for every file.
* **watcher units**: ``podplay-watch-<escaped path>.service`` runs ``podplay watch PATH``.
* **sync units**: ``podplay-sync-<escaped URL>.service`` runs ``podplay sync URL …``.

With ``UnitOptions.user`` the units are for an unprivileged user's own service manager
(``systemctl --user``): installed into ``default.target``, with the user's storage paths written
out whole (the unit and the user's shell must share one store), and without the system's
``network-online.target``, which a user's manager cannot see (a start that fails because the
network is not up yet is retried, as any failed start is).

This module only builds text: the caller loads the manifests, resolves the podplay executable
and writes files. Every value that reaches a unit file goes through one of the quoting helpers
below, because systemd gives ``%`` (specifiers), ``$`` (Exec lines), ``"``, ``\\`` and
whitespace special meanings that differ from key to key.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import sha
from reconciler.desired import DesiredPod, DesiredState, cron_run, run_pods
from reconciler.errors import InputError
from reconciler.model.kube import ConfigMap, PersistentVolumeClaim, Secret
from reconciler.model.source import Loaded
from reconciler.paths import HostPaths

DEFAULT_PATHS = HostPaths(Path("/var/lib/podplay"), Path("/run/podplay"), Path("/etc/podplay/net.d"))
UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) counts the terminating NUL

# How long a pod unit may take to start and stop. podplay cannot know at generation time how
# big the images are or how long init containers run, so the start budget is a sum of generous
# allowances, written into the unit as a comment so that an operator sees where it came from
# (and overrides it with `systemctl edit` when it does not fit).
START_BASE = 60  # lock, load, CNI, snapshots
PULL_ALLOWANCE = 180  # per distinct image that may be pulled (pull policy other than Never)
INIT_ALLOWANCE = 120  # per init container (they run to completion inside `up`)
WAIT_TIMEOUT = 120  # `up --wait --timeout`: containers running after they were created
STOP_BASE = 30
STOP_PER_POD = 10  # runc delete, CNI DEL, unmounts, on top of the pod's grace period
RESTART_SEC = 30  # pod units: retry a failed start (registry down at boot) after this long
WATCH_RESTART_SEC = 5
WATCH_STOP_TIMEOUT = 120  # the watcher finishes the pass in progress, which may stop a pod
# Exit codes that a retry cannot fix: invalid manifests (1) and usage errors (2).
NO_RESTART_CODES = "1 2"

# What lets the host's pods outlive the unit that started them (the cgroup question).
#
# conmon, which supervises each container, is a child of the podplay process that created the
# container, so it lives in the cgroup of the unit that ran that podplay. The containers
# themselves are moved by runc into cgroups of their own (cgroupsPath /podplay/<uid>/<id>) in
# every hierarchy, the name=systemd and unified ones that systemd tracks units by included. With
# systemd's default KillMode=control-group, stopping the unit would SIGTERM/SIGKILL every
# conmon in it: the containers would keep running, orphaned, their exit codes and logs lost, and
# podplay's next pass would find them in a state it cannot explain. The containers belong to the
# host, not to the process that happened to start them, so every unit here uses KillMode=process:
#
# * watcher and sync units: stopping the unit signals only the watcher itself; it leaves the
#   pods running, which is what `podplay watch` promises on SIGTERM.
# * pod units (Type=oneshot): there is no main process left after `up` returns, so stopping
#   kills nothing; ExecStopPost=`podplay down` is what stops the containers, each with its grace
#   period, and conmon exits with them. If `down` fails, the pods stay up rather than being
#   half-killed behind podplay's back.
#
# KillMode=none would also spare conmon, but systemd deprecates it (and `systemd-analyze verify`
# warns about it). The cleaner long-term fix is for the runtime to move conmon into a cgroup of
# its own (as podman does with --cgroups=split or a transient scope); KillMode=process stays
# correct either way.


@dataclass(frozen=True)
class UnitOptions:
    executable: tuple[str, ...]  # absolute argv prefix that runs podplay
    paths: HostPaths = DEFAULT_PATHS
    per_file: bool = False
    wanted_by: str = "multi-user.target"
    user: bool = False  # units for the user's own manager (systemctl --user)


@dataclass(frozen=True)
class Unit:
    name: str
    text: str
    kind: str  # pod | file | watch | sync
    pods: tuple[str, ...] = ()  # "<namespace>/<name>" of the pods it runs
    files: tuple[str, ...] = ()  # the manifest files it passes to podplay


@dataclass
class UnitSet:
    units: list[Unit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the user should know (stderr)


# --- systemd's escaping and quoting ----------------------------------------------------------------

_VALID_UNIT_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:_.")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|target|socket|timer|path|mount)$")


def _escape_byte(b: int) -> str:
    return f"\\x{b:02x}"


def systemd_escape(text: str, *, path: bool = False) -> str:
    """What ``systemd-escape [--path] TEXT`` prints.

    Every byte of the UTF-8 encoding outside ``[A-Za-z0-9:_.]`` becomes ``\\xNN``, ``/`` becomes
    ``-`` and a leading ``.`` is escaped too. With ``path``, the path is simplified first
    (repeated and trailing slashes, ``.`` components) and ``/`` alone becomes ``-``; a path with
    ``..`` is refused, as systemd does.
    """
    if path:
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise InputError(f"cannot make a unit name from {text!r}: the path contains '..'")
        if not parts:
            return "-"
        text = "/".join(parts)
    if not text:
        raise InputError("cannot make a unit name from an empty string")
    data = text.encode("utf-8", "surrogateescape")
    out = []
    for i, b in enumerate(data):
        ch = chr(b)
        if ch == "/":
            out.append("-")
        elif (i == 0 and ch == ".") or b >= 0x80 or ch not in _VALID_UNIT_CHARS:
            out.append(_escape_byte(b))
        else:
            out.append(ch)
    return "".join(out)


def name_part(text: str, *, path: bool = False) -> str:
    """``systemd_escape`` for a piece of a unit name, with ``:`` escaped as well: systemd accepts
    ``:`` in unit names, but ``systemd-analyze verify`` fails on a unit file whose name has one
    ("Couldn't process aliases"), and ``systemd-escape --unescape`` reads ``\\x3a`` back all the same."""
    return systemd_escape(text, path=path).replace(":", "\\x3a")


def unit_name(prefix: str, body: str, suffix: str = ".service") -> str:
    """``prefix + body + suffix``, kept within systemd's 255 characters: an over-long body is
    cut (never inside a ``\\xNN`` escape) and ends in ``_`` and a hash of the whole body, so that
    two long names stay distinct."""
    name = prefix + body + suffix
    if len(name) <= UNIT_NAME_MAX:
        return name
    digest = sha.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    keep = UNIT_NAME_MAX - len(prefix) - len(suffix) - len(digest) - 1
    cut = body[:keep]
    tail = cut.rfind("\\")
    if tail != -1 and tail > len(cut) - 4:  # do not split "\x2d"
        cut = cut[:tail]
    return f"{prefix}{cut}_{digest}{suffix}"


_BARE_WORD = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def _check_text(value: str, what: str) -> None:
    # Unit files are line-based: a newline would end the setting, other control characters have no
    # faithful spelling in every key. A line-continuation backslash is just as treacherous.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"{what} {value!r} contains a control character; systemd units cannot carry it")
    if "\\" in value:
        raise InputError(f"{what} {value!r} contains a backslash; systemd units cannot carry it safely")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} {value!r} is not valid UTF-8; systemd units cannot carry it") from None


def quote_word(value: str, *, exec_line: bool = False) -> str:
    """One word of a setting that systemd splits into words (Exec*, Environment,
    RequiresMountsFor): ``%`` doubled (specifiers), ``$`` doubled on Exec lines (variable
    substitution), double quotes around anything but plain characters."""
    value = value.replace("%", "%%")
    if exec_line:
        value = value.replace("$", "$$")
    if _BARE_WORD.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: Sequence[str]) -> str:
    # systemd substitutes variables in the arguments, never in the executable's path: a `$` there
    # is literal and must not be doubled.
    return " ".join([quote_word(argv[0]), *(quote_word(a, exec_line=True) for a in argv[1:])])


def _plain(value: str) -> str:
    """A value systemd takes whole (Description=): only specifiers need escaping."""
    return value.replace("%", "%%")


def file_url(path: str) -> str:
    """``file:`` URL of an absolute path for Documentation= (percent-encoded, then specifier-safe)."""
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")
    encoded = "".join(chr(b) if chr(b) in safe else f"%{b:02X}" for b in path.encode("utf-8"))
    return _plain("file:" + encoded)


# --- building blocks ----------------------------------------------------------------------------------

def _abs(path: str, what: str) -> str:
    _check_text(path, what)
    if not os.path.isabs(path):
        raise InputError(f"{what} {path!r} must be an absolute path")
    return os.path.normpath(path)


def _environment(options: UnitOptions) -> list[str]:
    # A user's defaults depend on its environment ($XDG_RUNTIME_DIR is set under its manager, maybe
    # not in the shell that generated the unit): its units name every path, so that the unit's
    # podplay and the user's own use one store.
    paths = options.paths
    out = []
    for var, value, default in (("PODPLAY_ROOT", paths.root, DEFAULT_PATHS.root),
                                ("PODPLAY_RUNROOT", paths.runroot, DEFAULT_PATHS.runroot),
                                ("PODPLAY_NETWORK_DIR", paths.network_dir, DEFAULT_PATHS.network_dir)):
        if options.user or Path(value) != default:
            out.append(quote_word(f"{var}={_abs(str(value), var)}"))
    return out


def _mounts(paths: HostPaths, extra: Iterable[str]) -> str:
    found = [str(paths.root), str(paths.runroot), str(paths.network_dir), *extra]
    return " ".join(quote_word(_abs(p, "path")) for p in dict.fromkeys(found))


def _render(header: Sequence[str], sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    for title, entries in sections:
        if lines:
            lines.append("")
        lines.append(f"[{title}]")
        lines.extend(f"{k}={v}" for k, v in entries)
    return "\n".join(lines) + "\n"


def _network_deps(options: UnitOptions) -> list[tuple[str, str]]:
    # Pods pull images and publish ports: wait for the network to be configured, not merely for
    # the networking stack (network.target). A user's manager has no such target to wait for.
    if options.user:
        return []
    return [("Wants", "network-online.target"), ("After", "network-online.target")]


def _install(options: UnitOptions) -> tuple[str, list[tuple[str, str]]]:
    return "Install", [("WantedBy", options.wanted_by)]


_GENERATED = {False: "Generated by `podplay generate systemd`; regenerate it rather than edit it.",
              True: "Generated by `podplay generate systemd --user` (a unit for `systemctl --user`); regenerate it "
                    "rather than edit it."}


def _cmd(options: UnitOptions, *args: str) -> str:
    return exec_line([*options.executable, *args])


# --- pod units ----------------------------------------------------------------------------------------

def _references(pod: DesiredPod) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every ConfigMap, Secret and claim the pod reads, optional or not:
    an optional one changes what runs when present, so its file belongs to the unit too."""
    ns = pod.namespace
    spec = pod.spec
    refs: set[tuple[str, str, str]] = set()
    for c in spec.init_containers + spec.containers:
        for src in c.env_from:
            if src.config_map_ref:
                refs.add(("ConfigMap", ns, src.config_map_ref.name))
            if src.secret_ref:
                refs.add(("Secret", ns, src.secret_ref.name))
        for var in c.env:
            vf = var.value_from
            if vf and vf.config_map_key_ref:
                refs.add(("ConfigMap", ns, vf.config_map_key_ref.name))
            if vf and vf.secret_key_ref:
                refs.add(("Secret", ns, vf.secret_key_ref.name))
    for v in spec.volumes:
        if v.config_map:
            refs.add(("ConfigMap", ns, v.config_map.name))
        if v.secret:
            refs.add(("Secret", ns, v.secret.secret_name))
        if v.persistent_volume_claim:
            refs.add(("PersistentVolumeClaim", ns, v.persistent_volume_claim.claim_name))
    for ref in spec.image_pull_secrets:
        refs.add(("Secret", ns, ref.name))
    return refs


@dataclass
class _Group:
    pod_files: list[str]
    support_files: list[str]
    pods: list[DesiredPod]

    @property
    def files(self) -> list[str]:
        return self.pod_files + self.support_files


def _group_files(objects: Sequence[Loaded], desired: DesiredState) -> tuple[list[_Group], list[str]]:
    """Which files each unit must pass to podplay.

    `podplay up FILES` loads only FILES, so a pod whose ConfigMap lives in another file needs that
    file too. Files that hold no pods (ConfigMaps, Secrets, claims) can be shared by several units.
    Two files that hold pods and reference each other form one group: each pod of the group still
    gets its own unit, which passes all the group's files and limits the pass with `--only`.
    """
    defined: dict[tuple[str, str, str], str] = {}
    files: list[str] = []
    for o in objects:
        files.append(o.file)
        if isinstance(o.obj, ConfigMap | Secret | PersistentVolumeClaim):
            defined[(o.obj.kind, o.obj.metadata.namespace, o.obj.metadata.name)] = o.file
    files = list(dict.fromkeys(files))
    pods_by_file: dict[str, list[DesiredPod]] = {}
    # A Job stands in by its first pod: its unit runs the Job (`--only JOB`), whichever pods it needs;
    # a CronJob by the first pod of a run.
    stand_ins = [run[0] for run in desired.job_pods.values() if run]
    stand_ins += [run_pods(cron_run(c, f"{c.obj.metadata.name}-0"), objects)[0] for c in desired.crons.values()]
    for pod in [*desired.pods.values(), *stand_ins]:
        pods_by_file.setdefault(pod.source, []).append(pod)

    parent = {f: f for f in pods_by_file}

    def find(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    needs: dict[str, set[str]] = {f: set() for f in pods_by_file}
    for f, pods in pods_by_file.items():
        for pod in pods:
            for ref in _references(pod):
                other = defined.get(ref)
                if other is None or other == f:
                    continue
                if other in pods_by_file:
                    parent[find(other)] = find(f)
                else:
                    needs[f].add(other)
    groups: dict[str, _Group] = {}
    for f in sorted(pods_by_file):
        g = groups.setdefault(find(f), _Group([], [], []))
        g.pod_files.append(f)
        g.pods.extend(sorted(pods_by_file[f], key=lambda p: p.ref))
    for g in groups.values():
        g.support_files = sorted(set().union(*(needs[f] for f in g.pod_files)))
    used = {f for g in groups.values() for f in g.files}
    idle = [f for f in files if f not in used]
    return sorted(groups.values(), key=lambda g: g.pod_files), idle


def _start_budget(pods: Sequence[DesiredPod]) -> tuple[int, str]:
    images = {c.spec.image for p in pods for c in p.init_containers + p.containers if c.pull_policy != "Never"}
    inits = sum(len(p.init_containers) for p in pods)
    grace = sum(p.spec.termination_grace_period_seconds for p in pods)
    total = START_BASE + PULL_ALLOWANCE * len(images) + INIT_ALLOWANCE * inits + grace + WAIT_TIMEOUT
    parts = [f"{START_BASE} s base", f"{len(images)} image pull{'s' if len(images) != 1 else ''} x {PULL_ALLOWANCE} s"]
    if inits:
        parts.append(f"{inits} init container{'s' if inits != 1 else ''} x {INIT_ALLOWANCE} s")
    parts += [f"{grace} s to stop a replaced revision", f"{WAIT_TIMEOUT} s --wait"]
    return total, " + ".join(parts)


def _stop_budget(pods: Sequence[DesiredPod]) -> tuple[int, str]:
    grace = sum(p.spec.termination_grace_period_seconds for p in pods)
    total = STOP_BASE + grace + STOP_PER_POD * len(pods)
    n = len(pods)
    return total, (f"{STOP_BASE} s base + {grace} s of grace periods + {n} pod{'s' if n != 1 else ''} x "
                   f"{STOP_PER_POD} s teardown")


def _describe_pods(pods: Sequence[DesiredPod], limit: int = 3) -> str:
    refs = [p.ref for p in pods]
    if len(refs) <= limit:
        return ", ".join(refs)
    return f"{', '.join(refs[:limit])} and {len(refs) - limit} more"


def _pod_unit(group: _Group, pods: Sequence[DesiredPod], options: UnitOptions,
              jobs: dict[str, Loaded] | None = None) -> Unit:
    """The unit of one pod (`--only` limits the pass to it), or with --per-file of a whole group."""
    files = group.files
    if not options.per_file and pods[0].owner.kind == "Job" and jobs is not None:
        return _job_unit(group, pods[0], options, jobs)
    for f in files:
        _abs(f, "manifest file")
    if options.per_file:
        name = unit_name("podplay-file-", name_part(group.pod_files[0], path=True))
        kind = "file"
        what = f"podplay pod{'s' if len(pods) != 1 else ''} {_describe_pods(pods)}"
        only: list[str] = []
    else:
        (pod,) = pods
        name = unit_name("podplay-", name_part(f"{pod.namespace}/{pod.name}", path=True))
        kind, what = "pod", f"podplay pod {pod.ref}"
        # `--only` keeps the pass to this pod: the other pods of the same files have units of their own.
        only = ["--only", pod.ref] if len(group.pods) > 1 else []
    start, start_why = _start_budget(pods)
    stop, stop_why = _stop_budget(pods)
    host_paths = sorted({_abs(v.path, f"hostPath of pod {p.ref}") for p in pods for v in p.volumes
                         if v.kind == "hostPath" and v.path})
    up = _cmd(options, "up", "--wait", "--timeout", str(WAIT_TIMEOUT), *only, *files)
    header = [
        _GENERATED[options.user],
        f"Runs {', '.join(p.ref for p in pods)} from {', '.join(files)}.",
        "start: `podplay up` converges the files once (podplay does not stay resident: conmon",
        "supervises the containers); reload: converge again after an edit; stop: `podplay down`.",
        f"TimeoutStartSec: {start_why}.",
        f"TimeoutStopSec: {stop_why}.",
    ]
    unit = [("Description", _plain(what)),
            *[("Documentation", file_url(f)) for f in files],
            *_network_deps(options),
            ("RequiresMountsFor", _mounts(options.paths, [*files, *host_paths]))]
    first = pods[0]
    if not options.per_file and first.owner.kind == "StatefulSet" and first.ordinal:
        # A StatefulSet's pods start in order: each unit after the one of the ordinal below.
        below = unit_name("podplay-", name_part(f"{first.namespace}/{first.owner.name}-{first.ordinal - 1}",
                                                path=True))
        unit += [("Wants", below), ("After", below)]
    service = [("Type", "oneshot"),
               ("RemainAfterExit", "yes"),
               *[("Environment", e) for e in _environment(options)],
               ("ExecStart", up),
               ("ExecReload", up),
               # ExecStopPost, not ExecStop: it also runs when the start failed half-way, so a failed
               # unit leaves no pods behind (quadlet's .kube units do the same).
               ("ExecStopPost", _cmd(options, "down", *only, *files)),
               ("KillMode", "process"),  # see the cgroup note at the top of reconciler/units.py
               ("TimeoutStartSec", str(start)),
               ("TimeoutStopSec", str(stop)),
               ("Restart", "on-failure"),
               ("RestartSec", f"{RESTART_SEC}s"),
               ("RestartPreventExitStatus", NO_RESTART_CODES)]
    text = _render(header, [("Unit", unit), ("Service", service), _install(options)])
    return Unit(name, text, kind, tuple(p.ref for p in pods), tuple(files))


JOB_TIMEOUT = 86400  # a Job without activeDeadlineSeconds: `up --wait` follows it for at most a day


def _job_unit(group: _Group, first: DesiredPod, options: UnitOptions, jobs: dict[str, Loaded]) -> Unit:
    """A Job's unit: starting it runs the Job to its end (`up --wait` follows it), and it stays
    active after a success. Not restarted on failure: a failed Job has spent its backoffLimit
    or deadline, and the record of the run keeps it failed until its template changes."""
    files = group.files
    for f in files:
        _abs(f, "manifest file")
    ref = f"{first.owner.namespace}/{first.owner.name}"
    deadline = jobs[ref].obj.spec.active_deadline_seconds
    wait = deadline + WAIT_TIMEOUT if deadline else JOB_TIMEOUT
    start, start_why = _start_budget([first])
    start += wait - WAIT_TIMEOUT
    start_why = start_why.replace(f"{WAIT_TIMEOUT} s --wait", f"{wait} s --wait for the Job")
    stop, stop_why = _stop_budget([first])
    only = ["--only", ref] if len(group.pods) > 1 else []
    host_paths = sorted({_abs(v.path, f"hostPath of job {ref}") for v in first.volumes
                         if v.kind == "hostPath" and v.path})
    up = _cmd(options, "up", "--wait", "--timeout", str(wait), *only, *files)
    header = [
        _GENERATED[options.user],
        f"Runs Job {ref} from {', '.join(files)}.",
        "start: `podplay up --wait` runs the Job to its end (a finished Job is not run again unless",
        "its template changes). Stopping the unit (at shutdown too) leaves the Job's pods and its",
        "record, so that a finished Job stays finished across reboots; `podplay down` removes them.",
        f"TimeoutStartSec: {start_why}.",
        f"TimeoutStopSec: {stop_why}.",
    ]
    unit = [("Description", _plain(f"podplay job {ref}")),
            *[("Documentation", file_url(f)) for f in files],
            *_network_deps(options),
            ("RequiresMountsFor", _mounts(options.paths, [*files, *host_paths]))]
    service = [("Type", "oneshot"),
               ("RemainAfterExit", "yes"),
               *[("Environment", e) for e in _environment(options)],
               ("ExecStart", up),
               ("KillMode", "process"),
               ("TimeoutStartSec", str(start)),
               ("TimeoutStopSec", str(stop))]
    text = _render(header, [("Unit", unit), ("Service", service), _install(options)])
    name = unit_name("podplay-job-", name_part(ref, path=True))
    return Unit(name, text, "job", (ref,), tuple(files))


def _cron_units(group: _Group, cron: Loaded, options: UnitOptions) -> list[Unit]:
    """A CronJob's .timer and .service: the timer fires at the schedule (OnCalendar= in the
    CronJob's time zone) and starts the service, whose `podplay up --wait` finds the run due and
    runs it to its end — concurrencyPolicy, history limits and all, as under `watch`. So a host
    with no podplay process running still runs its CronJobs."""
    from reconciler import cron as schedules

    files = group.files
    for f in files:
        _abs(f, "manifest file")
    c = cron.obj
    ref = f"{c.metadata.namespace}/{c.metadata.name}"
    deadline = c.spec.job_template.spec.active_deadline_seconds
    wait = deadline + WAIT_TIMEOUT if deadline else JOB_TIMEOUT
    only = ["--only", ref] if len(group.pods) > 1 else []
    base = name_part(ref, path=True)
    service_name = unit_name("podplay-cron-", base)
    timer_name = unit_name("podplay-cron-", base, ".timer")
    service_header = [
        _GENERATED[options.user],
        f"Runs CronJob {ref} from {', '.join(files)} when {timer_name} fires.",
        "`podplay up --wait` starts the run that is due (as `watch` would) and follows it to its end.",
    ]
    unit = [("Description", _plain(f"podplay cronjob {ref}")),
            *[("Documentation", file_url(f)) for f in files],
            *_network_deps(options),
            ("RequiresMountsFor", _mounts(options.paths, files))]
    service = [("Type", "oneshot"),
               *[("Environment", e) for e in _environment(options)],
               ("ExecStart", _cmd(options, "up", "--wait", "--timeout", str(wait), *only, *files)),
               ("KillMode", "process"),
               ("TimeoutStartSec", str(wait + START_BASE + PULL_ALLOWANCE))]
    service_text = _render(service_header, [("Unit", unit), ("Service", service)])
    calendar = schedules.to_calendar(c.spec.schedule, c.spec.time_zone)
    timer_header = [
        _GENERATED[options.user],
        f"The schedule of CronJob {ref}: {c.spec.schedule}" + (f" ({c.spec.time_zone})" if c.spec.time_zone else
                                                                " (local time)") + ".",
        "Check it with: systemd-analyze calendar " + " ".join(f"'{v}'" for v in calendar),
    ]
    timer = [*[("OnCalendar", v) for v in calendar],
             ("AccuracySec", "1s"),  # a CronJob fires on its minute, not within systemd's default minute
             ("Persistent", "false"),  # a run missed while the host was off is not made up (no startingDeadline)
             ("Unit", service_name)]
    timer_text = _render(timer_header, [("Unit", [("Description", _plain(f"podplay cronjob {ref} schedule"))]),
                                        ("Timer", timer), ("Install", [("WantedBy", "timers.target")])])
    return [Unit(service_name, service_text, "cronjob", (ref,), tuple(files)),
            Unit(timer_name, timer_text, "timer", (ref,), tuple(files))]


def pod_units(objects: Sequence[Loaded], desired: DesiredState, options: UnitOptions) -> UnitSet:
    """One unit per pod (or per file with ``options.per_file``) for the loaded manifests.

    ``objects`` carry absolute file names (``Loaded.file``) and ``desired`` is
    ``build_desired(objects)``. Raises InputError for names systemd cannot carry.
    """
    _check_options(options)
    result = UnitSet()
    groups, idle = _group_files(objects, desired)
    for group in groups:
        if options.per_file:
            result.units.append(_pod_unit(group, group.pods, options))
        else:
            for pod in group.pods:
                cron = desired.crons.get(f"{pod.owner.namespace}/{pod.owner.name.rsplit('-', 1)[0]}")
                if pod.owner.kind == "Job" and f"{pod.namespace}/{pod.owner.name}" not in desired.jobs and cron:
                    result.units.extend(_cron_units(group, cron, options))
                else:
                    result.units.append(_pod_unit(group, [pod], options, desired.jobs))
    for f in idle:
        result.notes.append(f"{f}: describes no pod (and no pod uses what it describes); no unit for it")
    _check_unique(result.units)
    return result


# --- watcher and sync units ------------------------------------------------------------------------------

def watch_unit(path: str, options: UnitOptions) -> Unit:
    """A long-running ``podplay watch PATH``."""
    _check_options(options)
    path = _abs(path, "watched path")
    name = unit_name("podplay-watch-", name_part(path, path=True))
    return _resident_unit(options, name, "watch", f"podplay watcher of {path}", [file_url(path)],
                          ["watch", path], mounts=[path], files=(path,))


def sync_unit(url: str, options: UnitOptions, *, branch: str = "", path: str = "",
              interval: float | None = None) -> Unit:
    """A long-running ``podplay sync URL`` (GitOps pull from a git repository)."""
    _check_options(options)
    _check_text(url, "repository URL")
    if not url or any(c.isspace() for c in url):
        raise InputError(f"repository URL {url!r} must be non-empty and contain no whitespace")
    # A user:password, or over http(s) any user part at all (a token is sent as the user name), would
    # sit in a unit file every user can read. An ssh user (git@) is only a login name.
    secret = "a password" if re.match(r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", url, re.IGNORECASE) \
        else "a token" if re.match(r"^https?://[^/@]+@", url, re.IGNORECASE) else ""
    if secret:
        raise InputError(f"the repository URL carries {secret}, and a unit file is readable by every user; "
                         "give the bare URL and put PODPLAY_GIT_USERNAME and PODPLAY_GIT_PASSWORD in an "
                         "EnvironmentFile= only root can read (a drop-in for the unit), or use a git credential "
                         "helper or a deploy key")
    args = ["sync", url]
    what = f"podplay sync of {url}"
    if branch:
        _check_text(branch, "branch")
        args += ["--branch", branch]
        what += f" (branch {branch})"
    if path:
        _check_text(path, "path in the repository")
        args += ["--path", path]
    if interval is not None:
        if not interval > 0:
            raise InputError(f"--interval must be a positive number of seconds, not {interval}")
        args += ["--interval", f"{interval:g}"]
    # Documentation= takes http(s) URLs in plain ASCII only; other schemes (ssh, git, file) are not
    # documentation systemd knows how to show.
    docs = [_plain(url)] if re.match(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+$", url) else []
    # Named after the URL without its scheme: the repository, not how it is reached, is the identity.
    name = unit_name("podplay-sync-", name_part(re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", url)))
    return _resident_unit(options, name, "sync", what, docs, args, mounts=[], files=())


def _resident_unit(options: UnitOptions, name: str, kind: str, what: str, docs: Sequence[str],
                   args: Sequence[str], *, mounts: Sequence[str], files: tuple[str, ...]) -> Unit:
    """A unit whose main process is a podplay that stays running (watch, sync)."""
    header = [
        _GENERATED[options.user],
        f"Keeps converging: `podplay {args[0]}` runs in the foreground and is restarted if it fails.",
        "Stopping the unit stops the watcher only: the pods belong to the host and keep running",
        "(KillMode=process; see the cgroup note at the top of reconciler/units.py).",
    ]
    unit = [("Description", _plain(what)),
            *[("Documentation", d) for d in docs],
            *_network_deps(options),
            ("RequiresMountsFor", _mounts(options.paths, mounts))]
    service = [("Type", "exec"),
               *[("Environment", e) for e in _environment(options)],
               ("ExecStart", _cmd(options, *args)),
               ("KillMode", "process"),
               ("Restart", "on-failure"),
               ("RestartSec", f"{WATCH_RESTART_SEC}s"),
               ("RestartPreventExitStatus", NO_RESTART_CODES),
               ("TimeoutStopSec", str(WATCH_STOP_TIMEOUT))]
    text = _render(header, [("Unit", unit), ("Service", service), _install(options)])
    return Unit(name, text, kind, (), files)


def _check_options(options: UnitOptions) -> None:
    if not options.executable:
        raise InputError("the podplay executable is unknown")
    exe = _abs(options.executable[0], "podplay executable")
    if any(q in exe for q in "\"'"):
        raise InputError(f"podplay executable {exe!r}: systemd refuses quotes in the path of the program a unit runs")
    if not _UNIT_NAME.match(options.wanted_by):
        raise InputError(f"--wanted-by {options.wanted_by!r} is not a unit name (like multi-user.target)")


def _check_unique(units: Sequence[Unit]) -> None:
    seen: dict[str, Unit] = {}
    for u in units:
        if u.name in seen:
            raise InputError(f"two units would be named {u.name}: for {', '.join(seen[u.name].files)} "
                             f"and for {', '.join(u.files)}; generate them separately with --per-file")
        seen[u.name] = u
