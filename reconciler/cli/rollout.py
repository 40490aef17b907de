"""rollout history | undo | status: a Deployment's revisions, and going back to one.

podplay's manifests are the source of truth, so ``rollout undo`` does not edit them: it *pins*
the Deployment to the older revision, which holds until the manifest's pod template (or a
ConfigMap or Secret it consumes) changes; then that new template rolls out. ``rollout undo
--to-revision N`` with the manifest's own revision releases the pin.
"""

from __future__ import annotations

import sys
import time

from reconciler.cli.table import stamp
from reconciler.errors import EXIT_APPLY_FAILED, ManifestError, NotFoundError


def register(sub, common) -> None:
    p = sub.add_parser("rollout", parents=[common], help="Deployment revisions: history, undo, status",
                       description="Show a Deployment's revisions, roll back to one, or follow a rollout.")
    rsub = p.add_subparsers(dest="rollout_command", metavar="COMMAND")
    rsub.required = True

    def deployment_arg(q) -> None:
        q.add_argument("deployment", metavar="DEPLOYMENT", help="name or namespace/name")
        q.add_argument("--namespace", "-n", default="default")

    q = rsub.add_parser("history", parents=[common], help="list the revisions podplay recorded")
    deployment_arg(q)
    q.add_argument("--revision", type=int, default=0, help="show the pod template of this revision")
    q.set_defaults(func=cmd_history)

    q = rsub.add_parser("undo", parents=[common], help="run an earlier revision (until the manifest changes)",
                        description="Pin the Deployment to the previous revision (or --to-revision N) and roll "
                        "it out, waiting like `up` does. The pin holds until the manifest's template changes; "
                        "`podplay plan` and `podplay status` show it.")
    deployment_arg(q)
    q.add_argument("--to-revision", type=int, default=0, metavar="N")
    q.add_argument("--quiet", "-q", action="store_true")
    q.set_defaults(func=cmd_undo)

    q = rsub.add_parser("status", parents=[common], help="where the Deployment's rollout stands")
    deployment_arg(q)
    q.set_defaults(func=cmd_status)


def _ref(args) -> str:
    return args.deployment if "/" in args.deployment else f"{args.namespace}/{args.deployment}"


def _state(ctx):
    from reconciler.state import StateStore

    return StateStore(ctx.paths.state_db)


def _revisions(state, ref: str) -> list:
    revs = state.rollouts.revisions(ref)
    if not revs:
        raise NotFoundError(f"no revisions recorded for deployment {ref} (has `podplay up` run it?)")
    return revs


def _images(template: dict) -> str:
    ctrs = template.get("spec", {}).get("containers", [])
    return ", ".join(f"{c.get('name')}={c.get('image', '')}" for c in ctrs)


def cmd_history(args, ctx) -> int:
    import json

    state = _state(ctx)
    try:
        ref = _ref(args)
        revs = _revisions(state, ref)
        pin = state.rollouts.pin(ref)
    finally:
        state.close()
    if args.revision:
        rev = next((r for r in revs if r.revision == args.revision), None)
        if rev is None:
            raise NotFoundError(f"deployment {ref} has no revision {args.revision} "
                                f"(kept: {', '.join(str(r.revision) for r in revs)})")
        print(json.dumps(rev.template, indent=2, sort_keys=True), file=ctx.out)
        return 0
    print(f"deployment {ref}", file=ctx.out)
    print(f"{'REVISION':>8}  {'OUTCOME':<12} {'APPLIED':<19}  CONTAINERS", file=ctx.out)
    for r in revs:
        mark = " (pinned)" if pin and pin.revision == r.revision else ""
        print(f"{r.revision:>8}  {r.outcome:<12} {stamp(r.applied_at):<19}  {_images(r.template)}{mark}", file=ctx.out)
        if r.message:
            print(f"{'':>8}  {r.message}", file=ctx.out)
    if pin:
        print(f"pinned to revision {pin.revision}: {pin.reason} (holds until the manifest's template changes)",
              file=ctx.out)
    return 0


def _load(source: str, ref: str, host_paths):
    """The converger's goal for the manifest that holds the Deployment."""
    from reconciler.reconcile import load_or_fail, make_goal

    try:
        manifests = load_or_fail([source])
    except ManifestError as exc:
        raise ManifestError(exc.diagnostics) from None
    goal = make_goal([source], manifests, host_paths)
    if ref not in goal.declared.deployments:
        raise NotFoundError(f"deployment {ref} is no longer in {source}")
    return goal


def cmd_undo(args, ctx) -> int:
    import os

    from reconciler.converger import Converger
    from reconciler.host import open_drivers
    from reconciler.revisions import undo

    os.environ.setdefault("PODPLAY_COMMAND", " ".join(["podplay"] + sys.argv[1:]))
    ref = _ref(args)
    state = _state(ctx)
    drivers = None
    try:
        goal = _load(_revisions(state, ref)[-1].source, ref, ctx.paths)
        print(undo(state, ref, goal.declared, args.to_revision, time.time()), file=ctx.out)
        drivers = open_drivers(ctx.paths)
        conv = Converger(drivers, state, ctx.paths)
        first = conv.once(goal)
        if not first.ok:
            for r in first.applied.failed:
                print(f"! {r.txn.key}: {r.error}", file=ctx.err)
            return EXIT_APPLY_FAILED
        done = conv.run(goal, first,
                        progress=lambda line: None if args.quiet else print(line, file=ctx.out, flush=True))
        for s in done.failed:
            print(f"! rollout of deployment {s.deployment} to revision {s.revision} failed: {s.message}", file=ctx.err)
        return 0 if done.ok else EXIT_APPLY_FAILED
    finally:
        if drivers is not None:
            drivers.close()
        state.close()


def cmd_status(args, ctx) -> int:
    from reconciler.host import open_drivers
    from reconciler.reconcile import look
    from reconciler.revisions import FAILED, check_rollouts

    ref = _ref(args)
    state = _state(ctx)
    drivers = None
    try:
        revs = _revisions(state, ref)
        pin = state.rollouts.pin(ref)
        goal = _load(revs[-1].source, ref, ctx.paths)
        drivers = open_drivers(ctx.paths)
        view = look(goal, drivers, state, time.time(), write=False)
        found = [s for s in check_rollouts(state, view.desired, view.observed, view.health, write=False)
                 if s.deployment == ref]
    finally:
        if drivers is not None:
            drivers.close()
        state.close()
    if not found:
        print(f"deployment {ref}: no recorded revision matches what it should run", file=ctx.out)
        return EXIT_APPLY_FAILED
    s = found[0]
    print(s.line(), file=ctx.out)
    if s.message:
        print(f"  {s.message}", file=ctx.out)
    if pin:
        print(f"  pinned: {pin.reason} (holds until the manifest's template changes)", file=ctx.out)
    newest = revs[-1]
    if newest.outcome == FAILED and newest.revision != s.revision:
        print(f"  ! revision {newest.revision} failed: {newest.message}", file=ctx.out)
        return EXIT_APPLY_FAILED
    return EXIT_APPLY_FAILED if s.outcome == FAILED else 0
