"""jobs: where each Job stands, as the last pass (`up`, `watch`, `sync`) saw it."""

from __future__ import annotations

import json
import time


def register(sub, common) -> None:
    p = sub.add_parser("jobs", parents=[common], help="list Jobs: completions, running, failed, outcome",
                       description="Each Job's status as the last pass saw it (`podplay up` or a running "
                       "`watch`/`sync` moves Jobs on): completed/wanted, running and failed pods, the outcome "
                       "and why a Job failed.")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_jobs)


def _duration(j: dict, now: float) -> str:
    if not j.get("started"):
        return "-"
    d = (j.get("finished") or now) - j["started"]
    return f"{d:.0f}s" if d < 120 else f"{d / 60:.0f}m" if d < 7200 else f"{d / 3600:.0f}h"


def cmd_jobs(args, ctx) -> int:
    from reconciler.state import StateStore

    state = StateStore(ctx.paths.state_db)
    try:
        jobs = state.workloads.job_statuses()
    finally:
        state.close()
    if args.output == "json":
        json.dump(jobs, ctx.out, indent=2)
        print(file=ctx.out)
        return 0
    if not jobs:
        print("No Jobs.", file=ctx.out)
        return 0
    now = time.time()
    rows = [("NAME", "STATUS", "COMPLETIONS", "RUNNING", "FAILED", "DURATION", "REASON")]
    for j in jobs:
        reason = f"{j['reason']}: {j['message']}" if j["message"] else j["reason"]
        rows.append((j["job"], j["phase"], f"{j['succeeded']}/{j['completions']}", str(j["active"]),
                     str(j["failed"]), _duration(j, now), reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1], file=ctx.out)
    return 0
