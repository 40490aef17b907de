"""One reconcile pass: load → build_desired → observe → compute_diff → make_plan → apply_plan → save.

The only module that sees every stage. ``up`` runs one pass, ``plan`` stops after make_plan,
``watch``/``sync`` run passes on events. ``open_drivers`` wires the real drivers (or the fake
one, for tests of the whole command line) for a set of host paths.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from reconciler import converged
from reconciler.apply import ApplyResult, Failpoints, Reporter, apply_plan, recover
from reconciler.desired import DesiredState, Loaded, build_desired
from reconciler.diff import Reason, Scope, compute_diff, compute_down
from reconciler.drivers.base import Drivers
from reconciler.errors import Diagnostic, ManifestError, Severity
from reconciler.health import health_view
from reconciler.host import open_drivers  # noqa: F401  (the CLI and tests reach it through here too)
from reconciler.manifests import ManifestSet, load_manifests
from reconciler.model.kube import Deployment, Pod
from reconciler.model.names import ANN_NETWORK
from reconciler.observe import observe_host
from reconciler.observed import ObservedHost
from reconciler.paths import HostPaths
from reconciler.plan import Plan, make_plan
from reconciler.revisions import apply_pins, record_revisions
from reconciler.state import ApplyLock, StateStore
from reconciler.steps import EnsureClaim, RemoveClaim


@dataclass
class PassResult:
    manifests: ManifestSet
    desired: DesiredState  # what the host should run: the manifests, with rollout pins applied
    plan: Plan
    applied: ApplyResult | None = None
    recovered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # pins held or released, new revisions

    @property
    def ok(self) -> bool:
        return self.applied is None or self.applied.ok


def absolute_sources(objects: Sequence[Loaded], host_paths: HostPaths | None = None) -> list[Loaded]:
    """The objects as a pass uses them. Sources are recorded as absolute paths, so that `up dir`
    and `up ./dir/x.yaml` agree. A host-wide default network (`--network`, $PODPLAY_NETWORK)
    becomes the podplay.io/network annotation of pods that name none: from there on it is part
    of the pods' spec, like any annotation of ours."""
    network = host_paths.default_network if host_paths is not None else ""
    out = []
    for o in objects:
        if o.file != "-":
            o = replace(o, file=os.path.abspath(o.file))
        if network and isinstance(o.obj, Pod | Deployment) and ANN_NETWORK not in o.obj.metadata.annotations:
            meta = o.obj.metadata
            o = replace(o, obj=replace(o.obj, metadata=replace(meta, annotations={**meta.annotations,
                                                                                 ANN_NETWORK: network})))
        out.append(o)
    return out


def make_scope(paths: Sequence[str], manifests: ManifestSet) -> Scope:
    return Scope(tuple(os.path.abspath(p) for p in paths if p != "-"), prune=manifests.ok)


def load_or_fail(paths: Sequence[str], *, down: bool = False, host_paths: HostPaths | None = None) -> ManifestSet:
    """Load manifests; any error stops the pass before anything is touched.

    ``down`` never fails on the manifests: podplay records which file created each pod, so
    `down` of a deleted, emptied or broken file still removes exactly what that file created.
    Its problems are kept as warnings for the user to see. With `host_paths`, documents that
    passed their schema before are not validated again (a cache under the storage root).
    """
    cache = host_paths.root / "cache" / "schema-valid" if host_paths is not None else None
    manifests = load_manifests(paths, schema_cache=cache)
    if down and manifests.errors:
        manifests.diagnostics = [replace(d, severity=Severity.WARNING) if d.severity == Severity.ERROR else d
                                 for d in manifests.diagnostics]
        manifests.unreadable = []
    if manifests.errors:
        raise ManifestError(manifests.diagnostics)
    return manifests


def run_pass(paths: Sequence[str], drivers: Drivers, state: StateStore, host_paths: HostPaths, *,
             mode: str = "up", force: bool = False, remove_volumes: bool = False, dry_run: bool = False,
             lock_timeout: float | None = None, report: Reporter | None = None, now: float | None = None,
             manifests: ManifestSet | None = None, failpoints: Failpoints | None = None,
             on_plan: Callable[[Plan], None] | None = None, locked: bool = False,
             only: Sequence[str] = ()) -> PassResult:
    """One pass over `paths`. Raises ManifestError (nothing touched) for invalid manifests.

    `locked`: the caller already holds the ApplyLock (``watch`` takes it before it opens the
    drivers, so that what they read cannot change before the pass applies).
    `only`: pod names ("name" or "namespace/name") that limit the pass, creation and pruning
    alike, to those pods (a systemd unit per pod uses it)."""
    manifests = manifests or load_or_fail(paths, down=mode == "down", host_paths=host_paths)
    objects = absolute_sources(manifests.objects, host_paths)
    declared = build_desired(objects)
    scope = make_scope(paths, manifests)
    wanted = {n if "/" in n else f"default/{n}" for n in only}
    notes: list[str] = []
    desired = declared
    if mode != "down":
        desired, notes = apply_pins(state, declared, write=not dry_run)
    if wanted:
        desired = select_pods(desired, wanted)

    def compute(recovered: list[str]) -> PassResult:
        observed = observe_host(drivers)
        if wanted:
            observed = replace(observed, pods={u: p for u, p in observed.pods.items() if p.key in wanted})
        last = state.last_applied()
        if mode == "down":
            changes = compute_down(desired, observed, last, scope, remove_volumes=remove_volumes)
        else:
            view = health_view(state, desired, observed, now)
            changes = compute_diff(desired, observed, last, scope, force=force, now=now, health=view)
        return PassResult(manifests, desired, make_plan(changes, desired, observed), recovered=recovered,
                          notes=notes)

    if dry_run:
        return compute([])
    with contextlib.nullcontext() if locked else ApplyLock(host_paths.lock_file, lock_timeout):
        if mode != "down":
            notes += record_revisions(state, declared, objects)
        result = compute(recover(state, drivers))
        if on_plan:
            on_plan(result.plan)
        result.applied = apply_plan(result.plan, drivers, state, report=report, failpoints=failpoints)
        _record_claims(result, state)
        _record_survivors(result, state)
        if mode == "up" and not wanted and not force:
            _fingerprint(result, paths, compute, state, host_paths.default_network)
        elif mode == "down":
            converged.forget(state, paths, network=host_paths.default_network)
    return result


def _fingerprint(result: PassResult, paths: Sequence[str], compute: Callable, state: StateStore, network: str) -> None:
    """Record the converged fingerprint when the host now matches the manifests exactly: the pass
    planned nothing, or applied its changes and a fresh relist plans nothing (see converged)."""
    def settled(plan: Plan) -> bool:
        return all(c.reason == Reason.UNCHANGED for c in plan.changes)

    if result.ok and (settled(result.plan) if result.plan.empty else settled(compute([]).plan)):
        converged.record(state, paths, result.desired, diagnostics_text(result.manifests.warnings).splitlines(),
                         network=network)
    else:
        converged.forget(state, paths, network=network)


def _record_survivors(result: PassResult, state: StateStore) -> None:
    """A rollout that removed an older instance keeps the pod's remaining instance recorded as
    podplay's (after a rollback the instance dropped may be the one recorded last)."""
    ok = {r.txn.id for r in result.applied.results if r.status == "ok"} if result.applied else set()
    last = state.last_applied().pods
    for txn in result.plan.txns:
        if txn.id not in ok or txn.kind != "delete":
            continue
        change = next((c for c in result.plan.changes if c.reason == "rolling update" and c.before == txn.uid), None)
        d = result.desired.pods.get(txn.key)
        if change is None or d is None or d.uid != change.after:
            continue
        if txn.key not in last or last[txn.key].uid != d.uid:
            state.record_pod(d.ref, d.uid, d.spec_hash, d.source, str(d.owner))


@dataclass
class RequestResult:
    plan: Plan
    applied: ApplyResult
    recovered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.applied.ok


def apply_request(drivers: Drivers, state: StateStore, host_paths: HostPaths,
                  decide: Callable[[ObservedHost], Plan], *, lock_timeout: float | None = None,
                  report: Reporter | None = None) -> RequestResult:
    """Apply a plan a command builds from the host as it is now (``podplay stop/start/rm``), with
    the same guarantees as a pass: under the ApplyLock, after crash recovery, journaled.

    ``decide`` runs under the lock, so what it observed cannot change before its plan runs; it
    may raise a PodplayError to refuse, and then nothing is touched."""
    with ApplyLock(host_paths.lock_file, lock_timeout):
        recovered = recover(state, drivers)
        plan = decide(observe_host(drivers))
        applied = apply_plan(plan, drivers, state, report=report) if plan.txns else ApplyResult()
    return RequestResult(plan, applied, recovered)


def select_pods(desired: DesiredState, refs: set[str]) -> DesiredState:
    """The desired state reduced to some pods and the claims they use."""
    pods = {r: p for r, p in desired.pods.items() if r in refs}
    used = {v.claim for p in pods.values() for v in p.volumes if v.claim}
    return replace(desired, pods=pods, claims={r: c for r, c in desired.claims.items() if r in used})


def _record_claims(result: PassResult, state: StateStore) -> None:
    ok = {r.txn.id for r in result.applied.results if r.status == "ok"}
    for txn in result.plan.txns:
        if txn.id not in ok:
            continue
        for ps in txn.steps:
            if isinstance(ps.step, EnsureClaim):
                claim = result.plan.claims[ps.step.claim]
                state.record_claim(claim.ref, claim.source, claim.declared)
            elif isinstance(ps.step, RemoveClaim):
                state.forget_claim(ps.step.claim)


def diagnostics_text(diags: Sequence[Diagnostic]) -> str:
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return "\n".join(str(d) for d in sorted(diags, key=lambda d: (order[d.severity], d.file, d.line, d.column)))


def wait_for_pods(drivers: Drivers, desired: DesiredState, *, timeout: float = 300, interval: float = 0.1) -> list[str]:
    """Block until every desired pod's app containers run (or finished successfully when the
    restart policy lets them stop). Returns what is still wrong when `timeout` runs out."""
    import time

    from reconciler.observed import ContainerState

    deadline = time.monotonic() + timeout
    while True:
        by_id = {c.id: c for c in drivers.runtime.list_containers()}
        problems = []
        for pod in desired.pods.values():
            for c in pod.containers:
                oc = by_id.get(c.id)
                if oc is None:
                    problems.append(f"{pod.ref}/{c.name}: not created")
                elif oc.state == ContainerState.EXITED and not (
                        pod.spec.restart_policy != "Always" and oc.exit_code == 0):
                    problems.append(f"{pod.ref}/{c.name}: exited with code {oc.exit_code}"
                                    f"{' (OOM killed)' if oc.oom_killed else ''}")
                elif oc.state not in (ContainerState.RUNNING, ContainerState.EXITED):
                    problems.append(f"{pod.ref}/{c.name}: {oc.state}")
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(interval)


def failed_for_good(desired: DesiredState, observed: ObservedHost) -> list[str]:
    """App containers that exited with an error under restartPolicy Never: nothing will start
    them again, so `up --wait` reports them at once instead of waiting out its timeout."""
    from reconciler.observed import ContainerState

    out = []
    for pod in desired.pods.values():
        instance = observed.pods.get(pod.uid)
        if pod.spec.restart_policy != "Never" or instance is None:
            continue
        for c in pod.containers:
            oc = instance.containers.get(c.name)
            if oc is not None and oc.state == ContainerState.EXITED and oc.exit_code not in (None, 0):
                out.append(f"{pod.ref}/{c.name}: exited with code {oc.exit_code}"
                           f"{' (OOM killed)' if oc.oom_killed else ''}")
    return out


# --- rollouts and readiness: `up` blocks while a Deployment rolls out, `up --wait` until ready ------

@dataclass
class Settled:
    """How `settle` ended."""

    last: PassResult
    rollouts: list = field(default_factory=list)  # the final RolloutStatus of each followed Deployment
    failed: list = field(default_factory=list)  # RolloutStatus of rollouts that failed (and maybe rolled back)
    problems: list[str] = field(default_factory=list)  # what is still not running or not ready (--wait)
    timed_out: bool = False
    apply_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.problems or self.timed_out)


def updating_deployments(first: PassResult) -> set[str]:
    """Deployments this pass started (or continues) to roll from one revision to another."""
    out = set()
    for c in first.plan.changes:
        d = first.desired.pods.get(f"{c.key.namespace}/{c.key.name}")
        if d is None or d.owner.kind != "Deployment":
            continue
        rolling = (c.action == "replace" and c.before != c.after) or c.reason in ("rolling update", "rollout waiting") \
            or (c.action == "create" and c.detail.startswith("new revision"))
        if rolling:
            out.add(f"{d.owner.namespace}/{d.owner.name}")
    return out


def settle(first: PassResult, paths: Sequence[str], drivers: Drivers, state: StateStore, host_paths: HostPaths, *,
           wait: bool = False, timeout: float | None = None, only: Sequence[str] = (),
           report: Reporter | None = None, on_plan: Callable[[Plan], None] | None = None,
           progress: Callable[[str], None] = lambda line: None, clock: Callable[[], float] | None = None,
           sleep: Callable[[float], None] | None = None, lock_timeout: float | None = None) -> Settled:
    """After `first` (an `up` pass), keep converging until every Deployment it started to
    update has rolled out — or failed its progressDeadlineSeconds and rolled back — and, with
    `wait`, until every pod runs and every container with a readiness probe is ready (at most
    `timeout` seconds). Probes run in this process meanwhile; a wave runs whenever readiness
    lets the rollout go on, a failed liveness probe restarts its container."""
    import time

    from reconciler.health import HealthMonitor, unready_pods
    from reconciler.revisions import PROGRESSING, check_rollouts

    clock = clock or time.time
    sleep = sleep or time.sleep
    manifests = first.manifests
    follow = updating_deployments(first)
    started = clock()
    out = Settled(first)
    monitor = HealthMonitor(drivers, state, clock=clock)
    scope = make_scope(paths, manifests)
    declared = build_desired(absolute_sources(manifests.objects, host_paths))
    wanted = {n if "/" in n else f"default/{n}" for n in only}
    seen: dict[str, str] = {}
    retry_at, failures = 0.0, 0
    if not follow and not wait:
        if wanted:
            return out  # a few pods of a Deployment say nothing about its rollout
        # Nothing to wait for; still note a revision that is already complete (pods without
        # readiness probes are ready once they run).
        desired, _ = apply_pins(state, declared)
        observed = observe_host(drivers)
        check_rollouts(state, desired, observed, health_view(state, desired, observed, clock()), clock())
        return out
    while True:
        desired, _ = apply_pins(state, declared)
        if wanted:
            desired = select_pods(desired, wanted)
        now = clock()
        observed = observe_host(drivers)
        checked = monitor.check(desired, observed, now)
        now = clock()  # after the probes: a container that just became ready counts as ready now
        view = health_view(state, desired, observed, now)
        statuses = {s.deployment: s for s in check_rollouts(state, desired, observed, view, now)}
        for ref in sorted(follow):
            s = statuses.get(ref)
            if s is None:
                continue
            line = s.line()
            if seen.get(ref) != line:
                seen[ref] = line
                progress(line)
            if s.event in ("failed", "rolled_back"):
                out.failed.append(s)
                verdict = f"rolling back to revision {s.rolled_back_to}" if s.rolled_back_to else "no rollback"
                progress(f"! rollout of deployment {ref} to revision {s.revision} failed: {s.message}; {verdict}")
        if any(s.event == "rolled_back" for s in statuses.values()):
            continue  # the pin changed what the host should run: plan again at once
        changes = compute_diff(desired, observed, state.last_applied(), scope, now=now, health=view)
        if any(c.action != "noop" for c in changes) and now >= retry_at:
            result = run_pass(paths, drivers, state, host_paths, manifests=manifests, now=now, report=report,
                              on_plan=on_plan, only=only, lock_timeout=lock_timeout)
            out.last = result
            if result.applied is not None and not result.applied.ok:
                failures += 1
                retry_at = clock() + min(2.0 * 2 ** (failures - 1), 30.0)
                out.apply_errors = [f"{r.txn.key}: {r.error}" for r in result.applied.failed]
            else:
                failures, retry_at = 0, 0.0
                out.apply_errors = []
            continue
        rolling = [r for r in follow if r in statuses and statuses[r].outcome == PROGRESSING]
        problems: list[str] = []
        if wait:
            problems = wait_for_pods(drivers, desired, timeout=0) + unready_pods(desired, observed, view)
            final = failed_for_good(desired, observed)
            if final:
                out.problems = final
                return out
        if not rolling and not problems:
            out.rollouts = [statuses[r] for r in sorted(follow) if r in statuses]
            return out
        if timeout is not None and wait and clock() - started >= timeout:
            out.problems, out.timed_out = problems, True
            out.rollouts = [statuses[r] for r in sorted(follow) if r in statuses]
            return out
        pause = 0.5 if checked.next_in is None else min(max(checked.next_in, 0.05), 0.5)
        sleep(pause)
