"""logs and exec: what a container wrote, and a command run inside a running container.

Both read the host as `ps` does (runtime and network list methods, no store) and name a
container as ``POD[/CONTAINER]``, ``NAMESPACE/POD/CONTAINER``, ``-c CONTAINER`` or its id."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

from reconciler.cli.hostpods import RUNNING, read_host, resolve_target
from reconciler.cli.pods import rfc3339, state_text
from reconciler.errors import InputError, PodplayError

# podman's convention for exec: the command's own exit code, or one of these for ours.
EXEC_PODPLAY_ERROR = 125  # podplay could not run the command (unknown pod, stopped container, …)
EXEC_CANNOT_INVOKE = 126  # the command exists but cannot be executed (not executable, a directory)
EXEC_NOT_FOUND = 127  # the command does not exist in the container

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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

