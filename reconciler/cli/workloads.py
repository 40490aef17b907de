"""jobs, cronjobs: where each Job and CronJob stands, as the last pass (`up`, `watch`, `sync`) saw it."""

from __future__ import annotations

import json
import os
import time

from reconciler.cli.table import render_table, stamp


def register(sub, common) -> None:
    p = sub.add_parser("jobs", parents=[common], help="list Jobs: completions, running, failed, outcome",
                       description="Each Job's status as the last pass saw it (`podplay up` or a running "
                       "`watch`/`sync` moves Jobs on): completed/wanted, running and failed pods, the outcome "
                       "and why a Job failed.")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("cronjobs", parents=[common], help="list CronJobs: schedule, last and next run",
                       description="Each CronJob's schedule, the last schedule time it acted on, the next one, "
                       "its runs (Jobs: see `podplay jobs`) and runs concurrencyPolicy Forbid skipped.")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_cronjobs)

    p = sub.add_parser("get", parents=[common], help="list workloads of a kind: desired, current and ready pods",
                       description="Deployments, ReplicaSets, ReplicationControllers, DaemonSets and "
                       "StatefulSets with the pods they want (as the last pass recorded) and the pods of "
                       "theirs that run and are ready on the host now; jobs and cronjobs as `podplay jobs` "
                       "and `podplay cronjobs` show them.")
    p.add_argument("kind", metavar="KIND", help="deployments|replicasets|replicationcontrollers|daemonsets|"
                   "statefulsets|jobs|cronjobs (or deploy, rs, rc, ds, sts, cj)")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_get)


KINDS = {  # what `podplay get` takes, as kubectl spells it → the kind
    "deployments": "Deployment", "deployment": "Deployment", "deploy": "Deployment",
    "replicasets": "ReplicaSet", "replicaset": "ReplicaSet", "rs": "ReplicaSet",
    "replicationcontrollers": "ReplicationController", "replicationcontroller": "ReplicationController",
    "rc": "ReplicationController",
    "daemonsets": "DaemonSet", "daemonset": "DaemonSet", "ds": "DaemonSet",
    "statefulsets": "StatefulSet", "statefulset": "StatefulSet", "sts": "StatefulSet",
    "jobs": "Job", "job": "Job", "cronjobs": "CronJob", "cronjob": "CronJob", "cj": "CronJob",
}


def _duration(j: dict, now: float) -> str:
    if not j.get("started"):
        return "-"
    d = (j.get("finished") or now) - j["started"]
    return f"{d:.0f}s" if d < 120 else f"{d / 60:.0f}m" if d < 7200 else f"{d / 3600:.0f}h"


def _listing(args, ctx, items: list[dict], empty: str, headers: tuple[str, ...], rows) -> int:
    """The listing commands' output: JSON as read, or a table (`rows` makes its lines)."""
    if args.output == "json":
        json.dump(items, ctx.out, indent=2)
        print(file=ctx.out)
    elif not items:
        print(empty, file=ctx.out)
    else:
        print(render_table(headers, rows(items)), file=ctx.out)
    return 0


def cmd_jobs(args, ctx) -> int:
    now = time.time()

    def rows(jobs):
        for j in jobs:
            reason = f"{j['reason']}: {j['message']}" if j["message"] else j["reason"]
            yield (j["job"], j["phase"], f"{j['succeeded']}/{j['completions']}", str(j["active"]),
                   str(j["failed"]), _duration(j, now), reason)
    return _listing(args, ctx, _read(ctx, lambda state: state.workloads.job_statuses()), "No Jobs.",
                    ("NAME", "STATUS", "COMPLETIONS", "RUNNING", "FAILED", "DURATION", "REASON"), rows)


def cmd_cronjobs(args, ctx) -> int:
    def rows(crons):
        for c in crons:
            sched = c["schedule"] + (f" ({c['time_zone']})" if c["time_zone"] else "")
            yield (c["cronjob"], sched, str(c["suspend"]).lower(), str(c["active"]), stamp(c["last_schedule"]),
                   stamp(c["next_schedule"]), str(c["skipped"]))
    return _listing(args, ctx, _read(ctx, lambda state: state.workloads.cron_statuses()), "No CronJobs.",
                    ("NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "NEXT", "SKIPPED"), rows)


def _read(ctx, query):
    from reconciler.state import StateStore

    state = StateStore(ctx.paths.state_db)
    try:
        return query(state)
    finally:
        state.close()


def cmd_get(args, ctx) -> int:
    from reconciler.errors import InputError, PodplayError

    kind = KINDS.get(args.kind.lower())
    if kind is None:
        raise InputError(f"unknown kind {args.kind!r}: use one of deployments, replicasets, "
                         "replicationcontrollers, daemonsets, statefulsets, jobs, cronjobs")
    if kind == "Job":
        return cmd_jobs(args, ctx)
    if kind == "CronJob":
        return cmd_cronjobs(args, ctx)
    from reconciler.host import open_drivers
    from reconciler.state import StateStore
    from reconciler.watch.status import collect_workloads

    state = StateStore(ctx.paths.state_db)
    drivers = None
    try:
        try:
            drivers = open_drivers(ctx.paths)
        except (PodplayError, OSError) as exc:
            print(f"warning: cannot open the container drivers: {exc}", file=ctx.err)
        rows = collect_workloads(state, drivers, kind)
    finally:
        if drivers is not None:
            drivers.close()
        state.close()
    items = [{k: v for k, v in r.items() if k != "key"} for r in rows]
    code = _listing(args, ctx, items, f"No {kind}s.", ("NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE",
                                                        "SOURCE"),
                    lambda items: ((r["name"], str(r["desired"]), str(r["current"]), str(r["ready"]),
                                    str(r["up_to_date"]), os.path.basename(r["source"])) for r in items))
    if args.output != "json":
        for r in items:
            if r["outdated"]:
                n = len(r["outdated"])
                print(f"{r['name']}: {n} pod{'s' if n != 1 else ''} on an old revision ({', '.join(r['outdated'])}), "
                      "kept by updateStrategy OnDelete or rollingUpdate.partition", file=ctx.out)
    return code
