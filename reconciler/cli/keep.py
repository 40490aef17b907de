"""watch, sync, status: the commands that keep a host converged, and report how it stands."""

from __future__ import annotations

import json
import os
import signal
import sys

from reconciler.cli.engine import strict_option
from reconciler.cli.pullopts import timeout_options, use_timeouts
from reconciler.errors import EXIT_INVALID, EXIT_USAGE


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return value


def _keeper_options(p) -> None:
    g = p.add_argument_group("keeping")
    g.add_argument("--relist", type=_seconds, default=2.0, metavar="S",
                   help="seconds between cheap relists of the runtime, which notice exited or removed "
                   "containers (default 2)")
    g.add_argument("--resync", type=_seconds, default=300.0, metavar="S",
                   help="seconds between full passes that re-read every manifest (default 300)")
    g.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="one logfmt (text) or JSON line per event on stderr (default text)")
    strict_option(g)
    g.add_argument("--build", action="store_true",
                   help="build the images whose last path element names a directory beside the manifests "
                   "holding a Containerfile (as up --build), when the manifests or a context change and at "
                   "every resync")
    timeout_options(g)
    g.add_argument("--down-on-exit", action="store_true",
                   help="on SIGTERM/SIGINT, remove the pods this source describes before exiting "
                   "(default: they keep running; they belong to the host)")


def register(sub, common) -> None:
    p = sub.add_parser("watch", parents=[common], help="keep the host converged to manifest files as they change",
                       description="Converge now, then again whenever a manifest changes (inotify, debounced), "
                       "whenever the runtime drifts (a container exited, a pod was removed), and on a periodic "
                       "resync. A file that becomes invalid keeps its last good version running. Runs in the "
                       "foreground with structured logs; SIGTERM leaves the pods running.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories")
    p.add_argument("--debounce", type=_seconds, default=0.3, metavar="S",
                   help="quiet time after a file event before a pass (default 0.3)")
    _keeper_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("sync", parents=[common], help="keep the host converged to a git branch (GitOps)",
                       description="Clone URL (file://, git://, https://, ssh) into a mirror under the storage root, "
                       "then converge to the manifests under --path at the branch's newest commit, fetching every "
                       "--interval seconds. A commit that is invalid, unsigned (with --verify) or fails to apply "
                       "is refused: the host stays on (or returns to) the last good commit. Works offline from "
                       "its local clone.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--branch", "-b", default=None, help="branch to follow (default: the remote's default branch)")
    p.add_argument("--path", "-p", default=".", help="directory of the manifests inside the repository")
    p.add_argument("--interval", type=_seconds, default=60.0, metavar="S",
                   help="seconds between fetches (default 60)")
    p.add_argument("--verify", action="store_true",
                   help="apply only commits with a valid signature (git verify-commit: GPG, or SSH with "
                   "gpg.ssh.allowedSignersFile in git's configuration)")
    p.add_argument("--once", action="store_true", help="fetch and converge once, then exit (no keeping)")
    _keeper_options(p)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", parents=[common], help="what watch/sync applied, and how every pod stands",
                       description="Each keeper's source, applied revision, last pass and errors (invalid files, "
                       "refused commits); each pod's state, restarts, back-off and last error.")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_status)


def _one_malloc_arena() -> None:
    """Have every thread of this process allocate from glibc's main arena.

    glibc gives each thread that calls malloc an arena of its own and keeps what was freed there
    for that arena's next use; a keeper's apply workers, probe and relist threads would each pin
    one (2.5 MB over 20 pods, measured). A keeper allocates little and rarely, so the contention
    that per-thread arenas avoid does not arise. Must run before the first thread starts; a no-op
    on a C library without mallopt.
    """
    import contextlib
    import ctypes

    m_arena_max = -8  # glibc's <malloc.h>
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(m_arena_max, 1)


def _open(ctx):
    from reconciler.host import open_drivers
    from reconciler.state import StateStore

    _one_malloc_arena()
    os.environ.setdefault("PODPLAY_COMMAND", " ".join(["podplay"] + sys.argv[1:]))
    kind = os.environ.get("PODPLAY_DRIVER", "host")
    return (lambda: open_drivers(ctx.paths, kind, isolate=True)), kind == "fake", StateStore(ctx.paths.state_db)


def _run_keeper(source, args, ctx, state, opener, reopen: bool, log) -> int:
    from reconciler.watch.keeper import Keeper, KeeperLock, KeeperOptions

    use_timeouts(args)  # the keeper's pulls run in forked children: they read the environment
    prepare = None
    if getattr(args, "build", False):
        def prepare(paths, manifests):
            from reconciler.build.kube import build_for_manifests
            from reconciler.cli.images import _store

            store = _store(args, ctx)
            try:
                return build_for_manifests(store, paths, manifests, lambda line: log.info("build", line=line))
            finally:
                store.close()
    options = KeeperOptions(relist=args.relist, resync=args.resync, down_on_exit=args.down_on_exit,
                            reopen_drivers=reopen, once=getattr(args, "once", False), prepare=prepare)
    keeper = Keeper(source, ctx.paths, state, opener, log, options)

    def on_signal(signum, frame) -> None:
        if keeper.stopping:  # a second signal: stop now; the journal makes that safe
            raise KeyboardInterrupt
        log.info("signal", signal=signal.Signals(signum).name)
        keeper.request_stop()

    with KeeperLock(ctx.paths, source.id):
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return keeper.run()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def cmd_watch(args, ctx) -> int:
    from reconciler.watch.dirs import DirSource
    from reconciler.watch.log import EventLog

    if "-" in args.paths:
        print("podplay watch reads files; '-' (stdin) cannot be watched", file=ctx.err)
        return EXIT_USAGE
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        for p in missing:
            print(f"{p}: no such file or directory", file=ctx.err)
        return EXIT_INVALID
    opener, reopen, state = _open(ctx)
    try:
        source = DirSource(args.paths, state, debounce=args.debounce, debounce_max=max(2.0, args.debounce),
                           isolate_parsing=True, strict=args.strict, contexts=getattr(args, "build", False))
        return _run_keeper(source, args, ctx, state, opener, reopen, EventLog(ctx.err, args.log_format))
    finally:
        state.close()


def cmd_sync(args, ctx) -> int:
    from reconciler.redact import redact_url
    from reconciler.watch.log import EventLog
    from reconciler.watch.sync import GitSource

    # The command line goes into the apply lock's holder line: not with a URL's credentials.
    os.environ.setdefault("PODPLAY_COMMAND", redact_url(" ".join(["podplay"] + sys.argv[1:])))
    log = EventLog(ctx.err, args.log_format)
    opener, reopen, state = _open(ctx)
    try:
        source = GitSource(args.url, ctx.paths, state, branch=args.branch, path=args.path, interval=args.interval,
                           retry=args.resync, verify=args.verify, log=log, isolate_parsing=not args.once,
                           strict=args.strict)
        return _run_keeper(source, args, ctx, state, opener, reopen, log)
    finally:
        state.close()


def cmd_status(args, ctx) -> int:
    from reconciler.errors import PodplayError
    from reconciler.host import open_drivers
    from reconciler.state import StateStore
    from reconciler.watch.status import collect_status, render_status

    state = StateStore(ctx.paths.state_db)
    drivers = None
    try:
        try:
            drivers = open_drivers(ctx.paths)
        except (PodplayError, OSError) as exc:
            print(f"warning: cannot open the container drivers: {exc}", file=ctx.err)
        st = collect_status(state, drivers)
    finally:
        if drivers is not None:
            drivers.close()
        state.close()
    if args.output == "json":
        json.dump(st, ctx.out, indent=2, default=str)
        print(file=ctx.out)
    else:
        print(render_status(st), file=ctx.out)
    return 0
