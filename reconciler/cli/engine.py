"""validate, plan, up (play), down: the commands that drive the reconcile engine."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time

from reconciler.cli.pullopts import timeout_options
from reconciler.errors import EXIT_APPLY_FAILED, EXIT_INVALID, ManifestError, Severity

STRICT_HELP = ("refuse podman's dialect (camelCase names, imagePullPolicy: missing, protocol: udp, hostPort "
               "without containerPort, unnamed containers, a Deployment with restartPolicy Never): by default "
               "they run as podman runs them, with a warning that gives the Kubernetes spelling")


def strict_option(p) -> None:
    p.add_argument("--strict", action="store_true", help=STRICT_HELP)


def register(sub, common) -> None:
    p = sub.add_parser("validate", parents=[common], help="check manifest files and report every problem",
                       description="Check manifests: YAML syntax, the Kubernetes schema, and what podplay needs. "
                       "Reports every problem with file, line, column and field path.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories ('-' for stdin)")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    strict_option(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", parents=[common], help="show what `up` would change, without changing anything")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.add_argument("--verbose", "-v", action="store_true", help="list every step of every change")
    p.add_argument("--replace", action="store_true", help="plan as if --replace were given to up")
    p.add_argument("--down", action="store_true", help="plan what `down` would remove")
    strict_option(p)
    p.set_defaults(func=cmd_plan)

    for name, aliases in (("up", ["play"]),):
        p = sub.add_parser(name, aliases=aliases, parents=[common],
                           help="make the host match the manifests (create, replace, prune)",
                           description="Converge once: create what is missing, replace what changed, "
                           "prune what was removed from these paths, touch nothing else.")
        p.add_argument("paths", nargs="+", metavar="PATH")
        p.add_argument("--replace", action="store_true", help="recreate every pod even if unchanged")
        p.add_argument("--wait", action="store_true",
                       help="wait until every pod's containers are running and every container with a "
                       "readiness probe is ready (probes run meanwhile)")
        p.add_argument("--timeout", type=float, default=300, help="seconds to wait with --wait (default 300)")
        p.add_argument("--no-block", action="store_true",
                       help="fail at once if another podplay is applying, instead of waiting")
        p.add_argument("--only", action="append", default=[], metavar="POD",
                       help="limit the pass to this pod (name or namespace/name); repeatable")
        p.add_argument("--quiet", "-q", action="store_true",
                       help="print only problems (no pull progress, no per-pod lines)")
        timeout_options(p)
        strict_option(p)
        p.add_argument("--build", action="store_true",
                       help="first build the images whose last path element names a directory beside the "
                       "manifests holding a Containerfile or Dockerfile (as podman kube play --build)")
        p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", parents=[common], help="remove what these manifests created",
                       description="Remove the pods these manifests describe (and pods they created earlier); "
                       "claims (PVC volumes) are kept unless --volumes is given. Idempotent.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--volumes", action="store_true", help="also delete the PVC volumes they use")
    p.add_argument("--only", action="append", default=[], metavar="POD",
                   help="limit to this pod (name or namespace/name); repeatable")
    p.add_argument("--no-block", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--grace-period", type=int, default=-1, metavar="SECONDS",
                   help="seconds each pod's containers get to exit after their stop signal before they are "
                   "killed; negative (the default): the pod's terminationGracePeriodSeconds (30 unless set). "
                   "0 counts as 1 unless --force is given, as with kubectl delete")
    p.add_argument("--force", action="store_true",
                   help="kill the containers at once (grace period 0, no preStop hooks) unless --grace-period "
                   "says otherwise, as kubectl delete --force")
    p.set_defaults(func=cmd_down)


def grace_period(args) -> int | None:
    """`down`'s grace period as kubectl delete reads its flags: None for each pod's own."""
    seconds = getattr(args, "grace_period", -1)
    force = getattr(args, "force", False)
    if seconds == 0 and not force:
        seconds = 1  # kubectl's guard against an accidental immediate kill
    if force and seconds < 0:
        seconds = 0
    return seconds if seconds >= 0 else None


def _print_diagnostics(diags, err) -> None:
    from reconciler.reconcile import diagnostics_text

    text = diagnostics_text([d for d in diags if d.severity != Severity.INFO])
    if text:
        print(text, file=err)


def cmd_validate(args, ctx) -> int:
    from reconciler.manifests import load_manifests

    result = load_manifests(args.paths, strict=args.strict)
    if args.output == "json":
        json.dump({"valid": result.ok, "files": result.files,
                   "objects": [{"kind": o.obj.kind, "namespace": o.obj.metadata.namespace,
                                "name": o.obj.metadata.name, "file": o.file, "line": o.line} for o in result.objects],
                   "diagnostics": [d.to_json() for d in result.diagnostics]}, ctx.out, indent=2)
        print(file=ctx.out)
        return 0 if result.ok else EXIT_INVALID
    _print_diagnostics(result.diagnostics, ctx.err)
    if not result.ok:
        n = len(result.errors)
        print(f"{n} error{'s' if n != 1 else ''} in {len(result.files)} file{'s' if len(result.files) != 1 else ''}.",
              file=ctx.err)
        return EXIT_INVALID
    kinds: dict[str, int] = {}
    for o in result.objects:
        kinds[o.obj.kind] = kinds.get(o.obj.kind, 0) + 1
    summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(kinds.items()))
    print(f"valid: {summary} in {len(result.files)} file{'s' if len(result.files) != 1 else ''}", file=ctx.out)
    return 0


def _engine(ctx):
    from reconciler.host import open_drivers
    from reconciler.state import StateStore

    os.environ.setdefault("PODPLAY_COMMAND", " ".join(["podplay"] + sys.argv[1:]))
    state = StateStore(ctx.paths.state_db)
    if state.db.notice:
        print(f"warning: {state.db.notice}", file=ctx.err)
    return open_drivers(ctx.paths), state


def cmd_plan(args, ctx) -> int:
    engine: list = []  # (drivers, state) once opened
    try:
        return _plan(args, ctx, engine)
    finally:
        if engine:
            engine[0].close()
            engine[1].close()


def _plan(args, ctx, engine: list) -> int:
    # A plain text plan of paths that `up` converged, on a host that still matches them, is the
    # no-change answer `up` gives (reconciler.converged), read without loading the engine.
    if args.output == "text" and not args.down and _unchanged(args, ctx, engine, quiet=True):
        return 0
    from reconciler.converger import Converger
    from reconciler.reconcile import load_or_fail, make_goal

    try:
        manifests = load_or_fail(args.paths, down=args.down, host_paths=ctx.paths, strict=args.strict)
    except ManifestError as exc:
        _print_diagnostics(exc.diagnostics, ctx.err)
        return EXIT_INVALID
    _print_diagnostics(manifests.warnings, ctx.err)
    if not engine:
        engine[:] = _engine(ctx)
    drivers, state = engine
    goal = make_goal(args.paths, manifests, ctx.paths, mode="down" if args.down else "up", force=args.replace)
    result = Converger(drivers, state, ctx.paths).plan(goal)
    if args.output == "json":
        print(result.plan.dumps(redact=True), file=ctx.out)
    else:
        print(result.plan.render(verbose=args.verbose), file=ctx.out)
        for note in result.notes:
            print(f"note: {note}", file=ctx.out)
    return 0


class Progress:
    """Prints one line per finished transaction, in the plan's vocabulary."""

    def __init__(self, plan_ref, out, err, quiet: bool, countdown: Countdown | None = None):
        self.plan_ref = plan_ref
        self.out, self.err, self.quiet = out, err, quiet
        self.countdown = countdown

    def __call__(self, event: str, txn, message: str) -> None:
        if self.countdown is None:
            self._print(event, txn, message)
        elif event == "begin":
            self.countdown.begin(txn)
        else:
            with self.countdown.lock:  # no status line redrawn in the middle of this one
                self.countdown.end(txn)
                self._print(event, txn, message)

    def _print(self, event: str, txn, message: str) -> None:
        if event == "begin":
            return
        if event in ("failed", "skipped"):
            what = txn.key if txn.kind == "shared" else f"{txn.kind} {txn.key}"
            print(f"! {what}: {message}", file=self.err)
            return
        if txn.kind == "services":
            for done in [] if self.quiet else self.plan_ref().service_outcomes(txn):
                c = done.change
                why = f"{c.reason}: {c.detail}" if c.detail else str(c.reason)
                print(f"{done.symbol} {done.verb} service {c.key.namespace}/{c.key.name} ({why})", file=self.out)
            return
        done = None if self.quiet else self.plan_ref().outcome(txn)
        if done is None:
            return
        c = done.change
        containers = f" [{', '.join(c.containers)}]" if done.verb in ("restarted", "stopped") else ""
        noun = "" if done.verb in ("restarted", "stopped") else "pod "
        why = f"{c.reason}: {c.detail}" if c.detail else str(c.reason)
        print(f"{done.symbol} {done.verb} {noun}{txn.key}{containers} ({why})", file=self.out)


class Countdown:
    """On a terminal, while pods are given their grace period to stop: one status line on stderr
    saying which and how long until their containers are killed, refreshed every second and
    cleared when they are gone (or on any other line of progress). Shown after the first second,
    so that containers that exit on their stop signal do not make it flicker."""

    DELAY = 1.0

    def __init__(self, err, hint: str = ""):
        self.err, self.hint = err, hint
        self.lock = threading.Lock()
        self.waiting: dict[str, tuple[str, float, float]] = {}  # txn id → (pod, started, deadline)
        self.shown = False
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def begin(self, txn) -> None:
        stops = [ps.step for ps in txn.steps if ps.step.verb == "StopContainers"]
        if not stops:
            return
        now = time.monotonic()
        with self.lock:
            self.waiting[txn.id] = (txn.key, now, now + max(s.timeout for s in stops))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="countdown", daemon=True)
                self.thread.start()

    def end(self, txn) -> None:
        """With the lock held."""
        self.waiting.pop(txn.id, None)
        self._clear()

    def close(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        with self.lock:
            self._clear()

    def _clear(self) -> None:
        if self.shown:
            self.err.write("\r\033[K")
            self.err.flush()
            self.shown = False

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            now = time.monotonic()
            with self.lock:
                due = [(pod, deadline) for pod, started, deadline in self.waiting.values()
                       if now - started >= self.DELAY]
                if not due:
                    self._clear()
                    continue
                pods = sorted(pod for pod, _ in due)
                left = max(0, math.ceil(max(deadline for _, deadline in due) - now))
                what = pods[0] if len(pods) == 1 else f"{len(pods)} pods ({', '.join(pods)})"
                self.err.write(f"\r\033[Kwaiting for {what} to stop: {left}s before the containers are killed"
                               + (f" ({self.hint})" if self.hint else ""))
                self.err.flush()
                self.shown = True


def _unchanged(args, ctx, engine: list, *, quiet: bool = False) -> bool:
    """The no-change check (reconciler.converged): answers most `up`s (and `plan`s: `quiet`)
    without loading the engine. Only for a plain `up` of paths podplay converged before. The
    drivers and the state store it opens are left in `engine` for the full pass to use (opened
    once per command)."""
    if args.replace or getattr(args, "only", None) or args.strict or not ctx.paths.state_db.exists():
        # --strict must read the files: a converged host says nothing about their dialect
        return False
    from reconciler.converged import unchanged

    engine[:] = _engine(ctx)
    drivers, state = engine
    warnings = unchanged(state, args.paths, drivers, network=ctx.paths.default_network,
                         wait=getattr(args, "wait", False), quiet=quiet)
    if warnings is None:
        return False
    for line in warnings:
        print(line, file=ctx.err)
    if quiet or not args.quiet:
        print("No changes. The host matches the manifests.", file=ctx.out)
    return True


def _converge(args, ctx, mode: str) -> int:
    engine: list = []  # (drivers, state) once opened
    try:
        return _converge_with(args, ctx, mode, engine)
    finally:
        if engine:
            engine[0].close()
            engine[1].close()


def _converge_with(args, ctx, mode: str, engine: list) -> int:
    building = mode == "up" and getattr(args, "build", False)
    # A build may change an image without changing a file: no shortcut then.
    if mode == "up" and not building and _unchanged(args, ctx, engine):
        return 0
    from reconciler.converger import Converger
    from reconciler.reconcile import load_or_fail, make_goal

    try:
        manifests = load_or_fail(args.paths, down=mode == "down", host_paths=ctx.paths,
                                 strict=getattr(args, "strict", False))
    except ManifestError as exc:
        _print_diagnostics(exc.diagnostics, ctx.err)
        return EXIT_INVALID
    _print_diagnostics(manifests.warnings, ctx.err)
    if building:
        manifests = _build_images(args, ctx, manifests)
    goal = make_goal(args.paths, manifests, ctx.paths, mode=mode, force=getattr(args, "replace", False),
                     remove_volumes=getattr(args, "volumes", False), only=args.only, grace_period=grace_period(args))
    if not engine:
        engine[:] = _engine(ctx)
    drivers, state = engine
    holder: dict = {}
    countdown = None
    if not args.quiet and ctx.err.isatty():
        countdown = Countdown(ctx.err, "`down --force` kills at once" if mode == "down" else "")
    progress = Progress(lambda: holder["plan"], ctx.out, ctx.err, args.quiet, countdown)
    conv = Converger(drivers, state, ctx.paths, report=progress, on_plan=lambda plan: holder.__setitem__("plan", plan),
                     lock_timeout=0 if args.no_block else None)
    started = time.monotonic()
    try:
        result = conv.once(goal)
    finally:
        if countdown is not None:
            countdown.close()
    code = _report_once(args, ctx, mode, result)
    if code is None and mode == "up":
        code = _follow(args, ctx, conv, goal, result)
    if code:
        return code
    if not args.quiet and result.plan.effective_changes:
        print(f"done in {time.monotonic() - started:.2f}s", file=ctx.out)
    return 0


def _report_once(args, ctx, mode: str, result) -> int | None:
    """Print what the first tick did; an exit code when `up` ends here, else None."""
    from reconciler.converger import updating_deployments

    for note in result.recovered:
        print(f"recovered: {note}", file=ctx.err)
    if not args.quiet:
        for note in result.notes:
            print(f"note: {note}", file=ctx.out)
    if not result.plan.effective_changes and not args.quiet:
        print("No changes. The host matches the manifests.", file=ctx.out)
    if result.ok:
        return None
    n = len(result.applied.failed)
    print(f"{n} change{'s' if n != 1 else ''} failed; the host keeps what was running before for those pods.",
          file=ctx.err)
    # A Deployment update goes on: retried until it succeeds or its progress deadline passes
    # and it is rolled back.
    return None if mode == "up" and updating_deployments(result) else EXIT_APPLY_FAILED


def _follow(args, ctx, conv, goal, result) -> int:
    """Like `kubectl rollout status`: a Deployment update is followed to its end (or its
    rollback); --wait also waits for every pod to run and be ready."""
    done = conv.run(goal, result, wait=args.wait, timeout=args.timeout,
                    progress=lambda line: None if args.quiet else print(line, file=ctx.out, flush=True))
    for s in done.failed:
        back = f"; rolled back to revision {s.rolled_back_to}" if s.rolled_back_to else ""
        print(f"! rollout of deployment {s.deployment} to revision {s.revision} failed: {s.message}{back}",
              file=ctx.err)
    if done.timed_out:
        print(f"! not ready after {args.timeout:g}s:", file=ctx.err)
    for p in done.problems:
        print(f"! {p}", file=ctx.err)
    return 0 if done.ok else EXIT_APPLY_FAILED


def _build_images(args, ctx, manifests):
    """Build what the manifests' images name beside them (reconciler.build.kube)."""
    from reconciler.build.kube import build_for_manifests
    from reconciler.cli.images import _store

    store = _store(args, ctx)
    try:
        return build_for_manifests(store, args.paths, manifests,
                                   (lambda line: None) if args.quiet else (lambda line: print(line, file=ctx.err)))
    finally:
        store.close()


def cmd_up(args, ctx) -> int:
    from reconciler.cli.pullopts import use_timeouts
    from reconciler.images.progress import for_stream, used_by_default

    use_timeouts(args)
    # The images a pass needs are pulled (before the apply lock) by the drivers' image store:
    # it shows what the `pull` command would, on stderr.
    with used_by_default(lambda: for_stream(ctx.err, args.quiet)):
        return _converge(args, ctx, "up")


def cmd_down(args, ctx) -> int:
    return _converge(args, ctx, "down")

