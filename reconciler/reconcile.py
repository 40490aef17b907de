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

from reconciler.apply import ApplyResult, Failpoints, Reporter, apply_plan, recover
from reconciler.desired import DesiredState, Loaded, build_desired
from reconciler.diff import Scope, compute_diff, compute_down
from reconciler.drivers.base import Drivers
from reconciler.errors import Diagnostic, ManifestError, Severity
from reconciler.health import health_view
from reconciler.manifests import ManifestSet, load_manifests
from reconciler.observe import observe_host
from reconciler.observed import ObservedHost
from reconciler.paths import HostPaths
from reconciler.plan import Plan, make_plan
from reconciler.revisions import apply_pins, record_revisions
from reconciler.state import ApplyLock, StateStore
from reconciler.steps import EnsureClaim, RemoveClaim


def open_drivers(paths: HostPaths, kind: str | None = None) -> Drivers:
    """The drivers for this host. ``kind="fake"`` (or $PODPLAY_DRIVER=fake) gives the in-memory
    fake persisted under the storage root: the engine's crash tests run real processes on it."""
    kind = kind or os.environ.get("PODPLAY_DRIVER", "host")
    if kind == "fake":
        from reconciler.drivers.fake import FakeHost, fake_drivers

        host = FakeHost(paths.root / "fakehost.json")
        if os.environ.get("PODPLAY_FAKE_REGISTRY"):
            host.registry |= set(os.environ["PODPLAY_FAKE_REGISTRY"].split(","))
        return fake_drivers(host)
    from reconciler.images.driver import LocalImageStore
    from reconciler.network.driver import CniNetwork
    from reconciler.runtime.driver import RuncRuntime
    from reconciler.storage.snapshots import OverlaySnapshotter
    from reconciler.storage.volumes import HostVolumes

    images = LocalImageStore(paths)
    return Drivers(images=images, snapshots=OverlaySnapshotter(paths, images), volumes=HostVolumes(paths),
                   runtime=RuncRuntime(paths), network=CniNetwork(paths))


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


def absolute_sources(objects: Sequence[Loaded]) -> list[Loaded]:
    """Sources are recorded as absolute paths, so that `up dir` and `up ./dir/x.yaml` agree."""
    return [replace(o, file=os.path.abspath(o.file)) if o.file != "-" else o for o in objects]


def make_scope(paths: Sequence[str], manifests: ManifestSet) -> Scope:
    return Scope(tuple(os.path.abspath(p) for p in paths if p != "-"), prune=manifests.ok)


def load_or_fail(paths: Sequence[str], *, down: bool = False) -> ManifestSet:
    """Load manifests; any error stops the pass before anything is touched.

    ``down`` never fails on the manifests: podplay records which file created each pod, so
    `down` of a deleted, emptied or broken file still removes exactly what that file created.
    Its problems are kept as warnings for the user to see.
    """
    manifests = load_manifests(paths)
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
    manifests = manifests or load_or_fail(paths, down=mode == "down")
    objects = absolute_sources(manifests.objects)
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
    return result


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
