"""generate systemd: write systemd units that run pods, a watcher or a git sync at boot."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from reconciler.errors import EXIT_INVALID, EXIT_USAGE, InputError, ManifestError


def register(sub, common) -> None:
    gen = sub.add_parser("generate", help="generate files from manifests (systemd units)",
                         description="Generate files that run podplay from other tools.")
    gen.set_defaults(func=lambda args, ctx: _usage(gen, ctx))
    gsub = gen.add_subparsers(dest="generate_what", metavar="WHAT")
    p = gsub.add_parser(
        "systemd", parents=[common], help="systemd units that run pods, a watcher or a git sync",
        description="Print (or write with --files) systemd service units. By default one unit per pod: "
        "it runs `podplay up` on start and `podplay down` on stop for the pod's manifest file. "
        "A file that yields several pods (a Deployment's replicas) gives each its own unit (`up --only`). "
        "With --watch, one unit per PATH runs `podplay watch PATH`; --sync adds a unit running `podplay sync`.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories")
    p.add_argument("--per-file", action="store_true", help="one unit per manifest file, named after the file")
    p.add_argument("--watch", action="store_true",
                   help="instead of converging once, generate a unit per PATH that runs `podplay watch PATH`")
    p.add_argument("--sync", metavar="URL", help="also generate a unit that runs `podplay sync URL`")
    p.add_argument("--branch", default="", help="with --sync: the branch to follow")
    p.add_argument("--sync-path", default="", metavar="P", help="with --sync: the manifest path inside the repository")
    p.add_argument("--interval", type=float, default=None, metavar="S", help="with --sync: seconds between fetches")
    p.add_argument("--files", metavar="DIR",
                   help="write each unit to DIR/<unit name> (created if missing) instead of printing them")
    p.add_argument("--executable", metavar="PATH",
                   help="the podplay the units run (default: this podplay, by absolute path)")
    p.add_argument("--wanted-by", default=None, metavar="TARGET",
                   help="the target that starts the units when enabled (default multi-user.target, "
                   "with --user default.target)")
    p.add_argument("--user", action="store_true",
                   help="units for your own service manager (systemctl --user), run without root: your "
                   "storage paths, WantedBy=default.target (needs an unprivileged user)")
    p.set_defaults(func=cmd_generate_systemd)


def _usage(parser, ctx) -> int:
    parser.print_help(ctx.err)
    return EXIT_USAGE


def resolve_executable(explicit: str | None = None, argv0: str | None = None) -> tuple[str, ...]:
    """The absolute command line that runs this podplay: the console script when we were started
    through it, else this interpreter with ``-m reconciler``. Never a bare name: a unit runs with
    systemd's PATH, not the user's."""
    if explicit:
        if not os.path.isabs(explicit):
            raise InputError(f"--executable {explicit!r} must be an absolute path")
        return (os.path.normpath(explicit),)
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0) == "podplay" and os.sep in argv0:
        path = os.path.abspath(argv0)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return (path,)
    return (os.path.abspath(sys.executable), "-m", "reconciler")


def build_units(args, host_paths, *, load: Callable[[Sequence[str]], object] | None = None):
    """The UnitSet for parsed ``generate systemd`` arguments. ``load`` reads manifests
    (load_manifests by default; the golden tests map fixture paths through it)."""
    from reconciler.desired import build_desired
    from reconciler.units import UnitOptions, UnitSet, pod_units, sync_unit, watch_unit

    if not args.paths and not args.sync:
        raise InputError("name manifest files or directories (PATH…), or a repository with --sync URL")
    if "-" in args.paths:
        raise InputError("a unit needs manifest files on disk; '-' (stdin) cannot be used here")
    if not args.sync and (args.branch or args.sync_path or args.interval is not None):
        raise InputError("--branch, --sync-path and --interval go with --sync URL")
    user = bool(getattr(args, "user", False))
    wanted_by = args.wanted_by or ("default.target" if user else "multi-user.target")
    options = UnitOptions(executable=resolve_executable(args.executable), paths=host_paths,
                          per_file=args.per_file, wanted_by=wanted_by, user=user)
    paths = [os.path.abspath(p) for p in args.paths]
    result = UnitSet()
    if args.watch:
        result.units.extend(watch_unit(p, options) for p in dict.fromkeys(paths))
    elif paths:
        if load is None:
            from reconciler.manifests import load_manifests as load
        manifests = load(paths)
        if manifests.errors:
            raise ManifestError(manifests.diagnostics)
        result.notes.extend(str(d) for d in manifests.warnings)
        desired = build_desired(manifests.objects)
        generated = pod_units(manifests.objects, desired, options)
        result.units.extend(generated.units)
        result.notes.extend(generated.notes)
        if user:
            result.notes.extend(f"{pod.source}: {pod.ref} has hostUsers: false, which podplay refuses without "
                                "root; its unit will fail" for pod in desired.pods.values() if not pod.spec.host_users)
    if args.sync:
        result.units.append(sync_unit(args.sync, options, branch=args.branch, path=args.sync_path,
                                      interval=args.interval))
    names = [u.name for u in result.units]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"two units would be named {dup}")
    if not result.units:
        raise InputError("no pods in " + ", ".join(args.paths) + ": nothing to generate")
    if not os.path.exists(options.executable[0]):
        result.notes.append(f"{options.executable[0]} does not exist on this host; the units will fail here")
    return result


def render_stdout(units) -> str:
    return "\n".join(f"# {u.name}\n{u.text}" for u in units)


def cmd_generate_systemd(args, ctx) -> int:
    from reconciler.reconcile import diagnostics_text

    if args.user and os.geteuid() == 0:
        # root's user manager would run root's pods under a login session; they belong in system units.
        raise InputError("--user makes units for an unprivileged user's own systemd (systemctl --user); "
                         "root's pods belong in system units: leave out --user, or run this command as the "
                         "user who will run the pods")

    try:
        result = build_units(args, ctx.paths)
    except ManifestError as exc:
        print(diagnostics_text(exc.diagnostics), file=ctx.err)
        return EXIT_INVALID
    for note in result.notes:
        print(f"note: {note}", file=ctx.err)
    if not args.files:
        ctx.out.write(render_stdout(result.units))
        return 0
    from pathlib import Path

    from reconciler.fsutil import atomic_write

    target = Path(args.files).absolute()
    try:
        target.mkdir(parents=True, exist_ok=True)
        for u in result.units:
            atomic_write(target / u.name, u.text, 0o644)
            print(target / u.name, file=ctx.out)
    except OSError as exc:
        raise InputError(f"cannot write units to {target}: {exc.strerror or exc}") from None
    names = " ".join(u.name if "\\" not in u.name else f"'{u.name}'" for u in result.units)
    if getattr(args, "user", False):
        print(f"next: systemctl --user daemon-reload && systemctl --user enable --now {names}", file=ctx.err)
        print("(the units are found in ~/.config/systemd/user; `loginctl enable-linger` starts them at boot "
              "without a login)", file=ctx.err)
    else:
        print(f"next: systemctl daemon-reload && systemctl enable --now {names}", file=ctx.err)
    return 0
