"""What `podplay status` reports: each keeper (source, applied revision, last pass, files that are
invalid, commits that were refused), and each pod podplay owns (state, restarts, back-off, last
error). The same dict is printed as text or, with ``--output json``, for a fleet tool to collect.
"""

from __future__ import annotations

import time

from reconciler.drivers.base import Drivers
from reconciler.errors import PodplayError
from reconciler.health import readiness
from reconciler.observe import observe_host
from reconciler.observed import ContainerState, ObservedHost, ObservedPod
from reconciler.redact import redact_urls_in
from reconciler.revisions import summary as revision_summary
from reconciler.state import StateStore
from reconciler.store.journal import COMMITTED
from reconciler.store.keepers import keeper_alive

STATUS_VERSION = 1


def _pod_state(o: ObservedPod | None, backoff: dict[str, dict], now: float) -> str:
    if o is None:
        return "missing"
    if o.infra is None or o.infra.state != ContainerState.RUNNING:
        return "broken"
    states = {c.state for c in o.containers.values()}
    if any(c.id in backoff and backoff[c.id]["until"] > now for c in o.containers.values()):
        return "backing off"
    if states <= {ContainerState.RUNNING} and o.containers:
        return "running"
    if ContainerState.EXITED in states:
        return "exited" if ContainerState.RUNNING not in states else "degraded"
    return "starting"


def _last_errors(state: StateStore) -> dict[str, dict]:
    """Per key, the newest error or warning that no later successful change superseded."""
    ok_at: dict[str, float] = {}
    for t in state.journal.recent_txns(limit=500):
        if t["status"] == COMMITTED and t["finished"]:
            ok_at[t["key"]] = max(ok_at.get(t["key"], 0.0), t["finished"])
    out: dict[str, dict] = {}
    for ts, level, key, message in state.keepers.events(limit=500):
        if level not in ("error", "warning") or key in out or ts < ok_at.get(key, 0.0):
            continue
        out[key] = {"at": ts, "level": level, "message": message}
    return out


def collect_status(state: StateStore, drivers: Drivers | None, *, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    keepers = []
    backoff: dict[str, dict] = {}
    for sid, rec in state.keepers.sources().items():
        # A record written by an older podplay may hold a URL with its credentials.
        rec = dict(redact_urls_in(rec), id=sid)
        rec["running"] = bool(rec.get("running")) and keeper_alive(int(rec.get("pid", 0)))
        if rec["running"]:
            backoff.update(rec.get("backoff") or {})
        keepers.append(rec)

    observed: ObservedHost | None = None
    observe_error = ""
    if drivers is not None:
        try:
            observed = observe_host(drivers)
        except PodplayError as exc:
            observe_error = str(exc)
    last = state.owned.last_applied()
    errors = _last_errors(state)
    refs = set(last.pods) | ({o.key for o in observed.pods.values() if o.key} if observed else set())
    pods = []
    for ref in sorted(refs):
        applied = last.pods.get(ref)
        instances = observed.pods_named(ref) if observed else []
        current = next((o for o in instances if applied and o.uid == applied.uid), instances[0] if instances else None)
        entry = {
            "pod": ref, "uid": current.uid if current else (applied.uid if applied else ""),
            "source": (applied.source if applied else "") or (current.source if current else ""),
            "owner": applied.owner if applied else (current.owner if current else ""),
            "managed": applied is not None,
            "state": _pod_state(current, backoff, now) if observed else "unknown",
            "instances": len(instances),
            "containers": [],
            "last_error": errors.get(ref),
        }
        ready = readiness(state, current.uid, current.containers.values()) if current else {}
        for name, c in sorted((current.containers if current else {}).items()):
            b = backoff.get(c.id)
            entry["containers"].append({
                "name": name, "state": str(c.state), "restarts": c.restart_count, "exit_code": c.exit_code,
                "backoff_until": b["until"] if b and b["until"] > now else None, "ready": ready.get(name),
            })
        pods.append(entry)
    return {"version": STATUS_VERSION, "at": now, "keepers": keepers, "pods": pods,
            "observe_error": observe_error or None, "deployments": revision_summary(state),
            "jobs": state.workloads.job_statuses(), "cronjobs": state.workloads.cron_statuses()}


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    d = max(0.0, now - ts)
    if d < 120:
        return f"{d:.0f}s ago"
    if d < 7200:
        return f"{d / 60:.0f}m ago"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def render_status(st: dict) -> str:
    now = st["at"]
    lines: list[str] = []
    if not st["keepers"]:
        lines.append("No `podplay watch` or `podplay sync` has run on this host.")
    for k in st["keepers"]:
        lines += _keeper_lines(k, now)
    if st.get("observe_error"):
        lines.append(f"! cannot read the host: {st['observe_error']}")
    if st["pods"]:
        lines.append("")
        lines += _pod_lines(st["pods"], now)
    elif st["keepers"] or st.get("observe_error") is None:
        lines.append("No pods.")
    for d in st.get("deployments") or []:
        if d["outcome"] == "complete" and not d["pinned"]:
            continue  # nothing to say beyond the pods above
        text = f"deployment {d['deployment']}: revision {d['revision']} {d['outcome']}"
        if d["message"]:
            text += f" ({d['message']})"
        if d["pinned"]:
            text += f"; pinned to revision {d['pinned']}: {d['pin_reason']}"
        lines.append(text)
    for j in st.get("jobs") or []:
        text = f"job {j['job']}: {j['phase']}, {j['succeeded']}/{j['completions']} completed"
        if j["active"]:
            text += f", {j['active']} running"
        if j["failed"]:
            text += f", {j['failed']} failed"
        if j["reason"]:
            text += f" ({j['reason']}: {j['message']})" if j["message"] else f" ({j['reason']})"
        lines.append(text)
    for c in st.get("cronjobs") or []:
        nxt = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["next_schedule"]))
        text = f"cronjob {c['cronjob']}: {c['schedule']}, next run {nxt}" + (" (suspended)" if c["suspend"] else "")
        lines.append(text + (f"; {c['note']}" if c["note"] else ""))
    return "\n".join(lines)


def _keeper_lines(k: dict, now: float) -> list[str]:
    src = k.get("source", {})
    what = src.get("url") or " ".join(src.get("paths", [])) or k["id"]
    if src.get("url"):
        what += f" (branch {src.get('branch') or '?'}, path {src.get('path') or '.'})"
    run = (f"running (pid {k.get('pid')}) since {_ago(k.get('started'), now)}" if k["running"]
           else f"not running (last ran {_ago(k.get('updated'), now)})")
    lines = [f"{k['kind']} {what}: {run}"]
    if k["kind"] == "sync":
        lines.append(f"  applied commit: {src.get('applied') or 'none'}"
                     + (f" (last good {src.get('last_good')})" if src.get("last_good") not in (None, src.get(
                         "applied")) else ""))
        if src.get("fetch_error"):
            lines.append(f"  fetch failed {_ago(src.get('fetch_failed_at'), now)}: {src['fetch_error']}")
        elif src.get("fetched_at"):
            lines.append(f"  fetched {_ago(src.get('fetched_at'), now)}")
        if src.get("problem"):
            lines.append(f"  ! {src['problem']}")
    else:
        lines.append(f"  revision: {k.get('revision') or 'none'} ({k.get('file_count', 0)} files)")
    p = k.get("last_pass") or {}
    if p:
        state = "failed" if p.get("failed") or p.get("errors") else "ok"
        lines.append(f"  last pass: {_ago(p.get('at'), now)} ({p.get('trigger')}), {p.get('changes', 0)} "
                     f"change{'s' if p.get('changes') != 1 else ''}, {state}")
        for e in p.get("errors", [])[:5]:
            lines.append(f"    ! {e}")
    nothing_yet = k["kind"] == "sync" and not src.get("applied")  # the problem line says why
    if k.get("held") and not nothing_yet:
        lines.append(f"  ! held: {k['held']}")
    if not k.get("prune", True) and not nothing_yet:
        lines.append("  ! deletes are held until every file can be read")
    for f in k.get("files", []):
        using = {"last good": "its last good version stays in use",
                 "nothing": "nothing from it is applied or pruned"}.get(f["using"], f["using"])
        lines.append(f"  ! {f['path']}: {f['state']} since {_ago(f.get('since'), now)}; {using}")
        for e in f.get("errors", [])[:3]:
            lines.append(f"      {e}")
    return lines


def _pod_lines(pods: list[dict], now: float) -> list[str]:
    width = max(len(p["pod"]) for p in pods)
    lines = [f"{'POD':<{width}}  {'STATE':<12} {'RESTARTS':>8}  CONTAINERS"]
    for p in pods:
        restarts = sum(c["restarts"] for c in p["containers"])
        ctrs = []
        for c in p["containers"]:
            text = f"{c['name']}={c['state']}"
            if c["exit_code"] not in (None, 0) or c["state"] == "exited":
                text += f"({c['exit_code']})"
            if c.get("ready") is False and c["state"] == "running":
                text += " not ready"
            if c["backoff_until"]:
                text += f" back-off {max(0.0, c['backoff_until'] - now):.0f}s"
            ctrs.append(text)
        lines.append(f"{p['pod']:<{width}}  {p['state']:<12} {restarts:>8}  {', '.join(ctrs)}")
        if p.get("last_error"):
            e = p["last_error"]
            lines.append(f"{'':<{width}}  ! {_ago(e['at'], now)}: {e['message']}")
    return lines


def collect_workloads(state: StateStore, drivers: Drivers | None, kind: str) -> list[dict]:
    """Each replicated object of `kind` (Deployment, ReplicaSet, ReplicationController, DaemonSet,
    StatefulSet) that a pass recorded: its desired pods, and how many of its pods run and are ready
    on the host now (an instance of any revision counts, as READY does in kubectl)."""
    observed = observe_host(drivers) if drivers is not None else ObservedHost()
    out = []
    for key, rec in state.workloads.all(f"Set/{kind}/").items():
        owner = f"{kind}/{rec['ref']}"
        mine = [o for o in observed.pods.values() if o.owner == owner]
        names = {o.key for o in mine}
        ready_names = set()
        for o in mine:
            running = o.containers and all(c.state == ContainerState.RUNNING for c in o.containers.values())
            probes = readiness(state, o.uid, o.containers.values())
            if running and all(probes.values()):
                ready_names.add(o.key)
        # Kept on an old revision (OnDelete, a StatefulSet's partition), as the last pass saw them.
        outdated = sorted(set(rec.get("outdated", ())) & {n.split("/", 1)[1] for n in names})
        out.append({"kind": kind, "name": rec["ref"], "desired": rec["desired"], "current": len(names),
                    "ready": len(ready_names), "up_to_date": len(names) - len(outdated), "outdated": outdated,
                    "source": rec["source"], "key": key})
    return out
