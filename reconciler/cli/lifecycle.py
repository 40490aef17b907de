"""stop, start, rm: the commands that change single pods.

They go through the engine like ``up``: under the apply lock, after crash recovery, as journaled
transactions (``reconcile.apply_request``). What to do is decided by the pure planners of
``reconciler.podcmds`` on the host as it is under the lock; this module resolves names, loads
what `start` needs, and prints what happened.

What ``up`` (and ``watch``) does afterwards is convergence, not memory of these commands: a
stopped pod's containers are restarted by the next pass as its restartPolicy says (Always:
yes; OnFailure: yes, a stop signal is a failure; Never: no), and a removed pod is created again
while its manifest still describes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from reconciler.cli.hostpods import current_instance, find_pod_instances, read_host
from reconciler.errors import EXIT_APPLY_FAILED, ApplyError

if TYPE_CHECKING:
    from reconciler.observed import ObservedHost, ObservedPod
    from reconciler.podcmds import PodRequest


def _named_uids(observed: ObservedHost, names: Sequence[str], namespace: str | None) -> list[str]:
    """Every instance of each named pod in the observed host."""
    pods = [p for p in observed.pods.values() if p.key]
    chosen: dict[str, None] = {}
    for name in names:
        for p in find_pod_instances(pods, name, namespace):
            chosen[p.uid] = None
    return list(chosen)


def _run_request(ctx, plan_for: Callable[[ObservedHost], PodRequest], verbs: dict[str, str],
                 after: Callable[[object, object], None] | None = None) -> int:
    """Apply what ``plan_for(observed)`` plans, printing one line per pod done, then the notes
    about pods that needed nothing; ``after(plan, state)`` runs first, if given."""
    from reconciler.host import open_drivers
    from reconciler.plan import TxnKind
    from reconciler.reconcile import apply_request
    from reconciler.state import StateStore

    os.environ.setdefault("PODPLAY_COMMAND", " ".join(["podplay"] + sys.argv[1:]))
    drivers, state = open_drivers(ctx.paths), StateStore(ctx.paths.state_db)
    failed: list[str] = []
    notes: list[str] = []

    def decide(observed):
        request = plan_for(observed)
        notes.extend(request.notes)
        return request.plan

    def report(event: str, txn, message: str) -> None:
        if txn.kind in (TxnKind.SHARED, TxnKind.PREPARE) and event == "ok":  # part of what follows
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
    for note in notes:
        print(note, file=ctx.out)
    return EXIT_APPLY_FAILED if failed else 0


def cmd_stop(args, ctx) -> int:
    from reconciler.plan import TxnKind
    from reconciler.podcmds import plan_stop

    def warn_keepers(plan, state) -> None:
        stopped = {t.key for t in plan.txns}
        for rec in state.keepers.live().values():
            kept = stopped & set(rec.get("pods") or ())
            if kept:
                print(f"note: `podplay {rec.get('kind', 'watch')}` (pid {rec.get('pid')}) keeps "
                      f"{', '.join(sorted(kept))} converged: it restarts the containers as the restartPolicy "
                      "says; remove the pod from its manifests to keep it stopped", file=ctx.err)

    return _run_request(ctx, lambda observed: plan_stop(observed, _named_uids(observed, args.pods, args.namespace),
                                                        timeout=args.timeout),
                        {TxnKind.STOP: "stopped"}, after=warn_keepers)


def cmd_rm(args, ctx) -> int:
    from reconciler.plan import TxnKind
    from reconciler.podcmds import plan_rm

    return _run_request(ctx, lambda observed: plan_rm(observed, _named_uids(observed, args.pods, args.namespace),
                                                      force=args.force, timeout=args.timeout),
                        {TxnKind.DELETE: "removed"})


def cmd_start(args, ctx) -> int:
    from reconciler.plan import TxnKind
    from reconciler.podcmds import needs_start, plan_start

    # Resolve names and rebuild the pods' specs before taking the lock: loading manifests is slow
    # and touches nothing. Under the lock the planner looks at the host again.
    view = read_host(ctx)
    view.close()
    wanted: dict[str, ObservedPod] = {}
    for name in args.pods:
        inst = current_instance(find_pod_instances(view.pods, name, args.namespace))
        wanted[inst.uid] = inst
    desired = {uid: _load_desired_pod(inst, ctx.paths) for uid, inst in wanted.items() if needs_start(inst)}
    return _run_request(ctx, lambda observed: plan_start(observed, list(wanted.values()), desired),
                        {TxnKind.START: "started", TxnKind.CREATE: "started",
                         TxnKind.DELETE: "removed the broken instance of"})


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
