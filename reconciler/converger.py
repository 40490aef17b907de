"""The one loop that converges: every ``up``, ``up --wait``, rollout, ``watch`` and ``sync`` tick.

    tick:  lock → recover → view = look(goal)   # one observation of the host per tick
                          → probes (optional) → follow rollouts (a rollback re-decides, no new look)
                          → plan the changes the retry policy lets through → apply
           next tick = when the probes, the retry policy or the crash-loop back-off want one

``Converger.once`` is ``podplay up``/``down``: one tick, then (for ``up``) a look-only tick that
confirms the host settled and records the no-change fingerprint. ``Converger.run`` ticks until
every Deployment the first tick started to update has rolled out (or failed and rolled back)
and, with ``wait``, every pod runs and is ready. The keeper (``watch``/``sync``) calls ``tick``
from its event loop. All three share one ``RetryPolicy``: a pod whose change failed is tried
again after the crash-loop schedule (10 s doubling to 5 min), not at every tick.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from reconciler import converged
from reconciler.desired import DesiredState
from reconciler.diff import Action, Change, Reason, restart_delay
from reconciler.drivers.base import Drivers
from reconciler.errors import PodplayError
from reconciler.health import HealthMonitor, unready_pods
from reconciler.jobs import JobPhase
from reconciler.model.workloads import ROLLED_OUT_KINDS
from reconciler.observed import ContainerState, ObservedHost
from reconciler.paths import HostPaths
from reconciler.plan import Plan, TxnKind, make_plan
from reconciler.reconcile import (
    Goal,
    Mode,
    PassResult,
    View,
    apply_view,
    decide,
    diagnostics_text,
    locked,
    look,
    make_goal,
)
from reconciler.revisions import PROGRESSING, RolloutEvent, check_rollouts, record_revisions
from reconciler.state import StateStore
from reconciler.steps import PullImage

if TYPE_CHECKING:  # apply and the probes' machinery load when a tick applies or probes: `plan` needs neither
    from reconciler.apply import Failpoints, Reporter


class HealthHook(Protocol):
    """Runs the probes that are due against what the host should run and what it runs.
    Returns seconds until it wants the next tick, or None."""

    def __call__(self, desired: DesiredState, observed: ObservedHost, now: float) -> float | None:
        ...


# --- one back-off for every converger ---------------------------------------------------------------

class RetryPolicy:
    """When a pod whose change failed (an image that cannot be pulled, a port someone holds) may be
    tried again: after restart_delay(failures) — the crash-loop schedule — counted per pod
    instance. A new revision of the pod (another uid) is tried at once, and so is everything
    in a pass the user or a source asks for (``up``, a file change, a resync)."""

    def __init__(self, mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.mono, self.wall = mono, wall
        self.failing: dict[str, dict] = {}  # pod ref → {uid, count, at (mono), until (wall), error}

    def note(self, results) -> None:
        from reconciler.apply import TxnStatus

        now = self.mono()
        for r in results:
            if r.txn.kind in (TxnKind.SHARED, TxnKind.SERVICES):
                continue
            prev = self.failing.get(r.txn.key)
            same = prev is not None and prev["uid"] == r.txn.uid
            if r.status == TxnStatus.OK:
                if same:
                    del self.failing[r.txn.key]
                continue
            count = prev["count"] + 1 if same else 1
            delay = restart_delay(count)
            self.failing[r.txn.key] = {"uid": r.txn.uid, "count": count, "at": now + delay,
                                       "until": self.wall() + delay, "error": r.error}

    def holds(self, change: Change) -> bool:
        if change.key.kind == "Service":
            return False  # the Services' sync is retried at every tick (it is idempotent and cheap)
        f = self.failing.get(f"{change.key.namespace}/{change.key.name}")
        return f is not None and f["uid"] in (change.before, change.after) and self.mono() < f["at"]

    def next_at(self) -> float | None:
        """Monotonic time of the next retry, or None."""
        return min((f["at"] for f in self.failing.values()), default=None)

    def describe(self) -> dict:
        return {k: {x: v[x] for x in ("count", "until", "error")} for k, v in self.failing.items()}


def _recover(state: StateStore, drivers: Drivers) -> list[str]:
    from reconciler.apply import recover

    return recover(state, drivers)


# --- the converger ----------------------------------------------------------------------------------

_CONFIGURED = object()  # tick's lock_timeout: the converger's own (None, a real value, waits forever)

class Converger:
    def __init__(self, drivers: Drivers | Callable[[], Drivers], state: StateStore, host_paths: HostPaths, *,
                 clock: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
                 report: Reporter | None = None, on_plan: Callable[[Plan], None] | None = None,
                 probe: HealthHook | None = None, retry: RetryPolicy | None = None,
                 lock_timeout: float | None = None, failpoints: Failpoints | None = None):
        self._drivers = drivers
        self.state, self.paths = state, host_paths
        self.clock, self.mono = clock, mono
        self.report, self.on_plan = report, on_plan
        self.probe = probe or self._run_probes
        self.retry = retry or RetryPolicy(mono, clock)
        self.lock_timeout = lock_timeout
        self.failpoints = failpoints
        self.observations = 0  # host observations so far: one per tick
        self.current: Drivers | None = None

    def _open(self) -> Drivers:
        """The drivers for this tick (a keeper may open them afresh for every tick)."""
        self.current = self._drivers() if callable(self._drivers) else self._drivers
        return self.current

    def _run_probes(self, desired: DesiredState, observed: ObservedHost, now: float) -> float | None:
        return HealthMonitor(self.current, self.state, clock=self.clock).check(desired, observed, now).next_in

    def _look(self, goal: Goal, drivers: Drivers, now: float | None, write: bool) -> View:
        self.observations += 1
        return look(goal, drivers, self.state, now, write=write)

    def plan(self, goal: Goal) -> PassResult:
        """What a tick would do, changing nothing (``podplay plan``): no lock, no store writes."""
        view = self._look(goal, self._open(), None, write=False)
        return PassResult(goal.manifests, view.desired, make_plan(list(view.changes), view.desired, view.observed),
                          notes=list(view.notes), view=view)

    def tick(self, goal: Goal, *, now: float | None = None, apply: bool = True, everything: bool = True,
             probe: bool = False, lock_timeout: float | None | object = _CONFIGURED) -> PassResult:
        """One tick under the apply lock. `now` turns on crash-loop back-off (None restarts what
        exited at once, as `up` does); `everything` acts on changes the retry policy holds too;
        `probe` runs the due probes first; `apply=False` only looks (and follows rollouts)."""
        timeout = self.lock_timeout if lock_timeout is _CONFIGURED else lock_timeout
        prefetch = apply and everything and goal.mode == Mode.UP
        failed = self._prefetch(goal) if prefetch else {}
        checked: set[str] = set()  # Always images asked of their registry this tick, outside the lock
        while True:
            with locked(self.paths, timeout):
                drivers = self._open()
                if failed or checked:  # the plan's pull steps use these answers without asking again
                    drivers = dataclasses.replace(drivers, images=_Prefetched(drivers.images, failed, checked))
                recovered = _recover(self.state, drivers) if apply else []
                notes = record_revisions(self.state, goal.declared, list(goal.objects)) \
                    if apply and goal.mode == Mode.UP else []
                view = self._look(goal, drivers, now, write=True)
                # Ranges of hostUsers: false pods that vanished behind podplay's back (rarely any held).
                if apply and self.state.db.execute("SELECT 1 FROM idranges LIMIT 1").fetchone():
                    from reconciler.store.idranges import sweep_vanished

                    sweep_vanished(self.state.db, drivers.runtime, view.observed.pods)
                result = PassResult(goal.manifests, view.desired, Plan(changes=view.changes), recovered=recovered,
                                    notes=notes + list(view.notes), view=view)
                if goal.mode == Mode.UP:
                    view = self._health_and_rollouts(goal, view, result, probe)
                    result.view, result.desired = view, view.desired
                work = view.work if everything else [c for c in view.work if not self.retry.holds(c)]
                if not apply or not work:
                    result.plan = Plan(changes=view.changes)
                    return result
                keep = {id(c) for c in work}
                changes = [c for c in view.changes if c.action == Action.NOOP or id(c) in keep]
                recheck = {image: creds for image, creds in _always_pulls(changes, view, drivers).items()
                           if image not in checked} if prefetch else {}
                if not recheck:
                    result.plan, result.applied = apply_view(view, changes, drivers, self.state, report=self.report,
                                                             failpoints=self.failpoints, on_plan=self.on_plan)
                    self.retry.note(result.applied.results)
                    return result
            # An image with pull policy Always is asked of its registry when a container is made
            # from it: do that outside the lock too (a stalled registry holds nobody), then look again.
            for image, creds in sorted(recheck.items()):
                try:
                    drivers.images.ensure_image(image, "Always", creds)
                except PodplayError as exc:
                    failed[image] = exc
                checked.add(image)

    def _prefetch(self, goal: Goal) -> dict[str, PodplayError]:
        """Pull the images the goal needs and the store lacks before taking the apply lock: a
        slow or stalled registry must not hold every other podplay (and the keeper) waiting.
        Returns the failures, which the plan's journaled PullImage steps report per pod."""
        drivers = self._open()
        wanted: dict[str, tuple[str, list]] = {}
        for pod in goal.declared.pods.values():
            if goal.only and pod.ref not in goal.only:
                continue
            images = [(c.spec.image, c.pull_policy) for c in pod.init_containers + pod.containers]
            images += [(v.image, v.image_pull_policy) for v in pod.volumes if v.kind == "image"]
            for image, policy in images:
                if policy != "Never":
                    _, creds = wanted.setdefault(image, (policy, []))
                    creds.extend(pod.pull_secrets)
        failed: dict[str, PodplayError] = {}
        for image, (policy, creds) in sorted(wanted.items()):
            if drivers.images.get_image(image) is not None:
                continue  # present: an Always policy is checked under the lock, where it is cheap
            try:
                drivers.images.ensure_image(image, policy, creds)
            except PodplayError as exc:
                failed[image] = exc
        return failed

    def _health_and_rollouts(self, goal: Goal, view: View, result: PassResult, probe: bool) -> View:
        """Probes, then the rollouts' bookkeeping; each may change the decision, not the observation."""
        if probe:
            result.probe_in = self.probe(view.desired, view.observed, self.clock())
            view = decide(goal, view.observed, self.state, None if view.now is None else self.clock())
        now = self.clock()
        result.rollouts = check_rollouts(self.state, view.desired, view.observed, view.health, now)
        if any(s.event == RolloutEvent.ROLLED_BACK for s in result.rollouts):
            # The rollback's pin changed what the host should run: decide again from the same look.
            view = decide(goal, view.observed, self.state, view.now)
        return view

    # --- up and down ------------------------------------------------------------------------------

    def once(self, goal: Goal, *, now: float | None = None) -> PassResult:
        """`podplay up` / `down`: one tick; for a plain `up`, a look-only tick confirms the host
        settled and records the no-change fingerprint (reconciler.converged)."""
        first = self.tick(goal, now=now)
        paths, network = list(goal.paths), self.paths.default_network
        if goal.mode == Mode.DOWN:
            converged.forget(self.state, paths, network=network)
            return first
        if goal.only or goal.force:
            return first
        confirm = first if first.applied is None else self.tick(goal, now=now, apply=False) if first.ok else None
        if confirm is not None and confirm.settled:
            converged.record(self.state, paths, first.desired,
                             diagnostics_text(goal.manifests.warnings).splitlines(), network=network,
                             services=confirm.view.observed.services if confirm.view is not None else {},
                             quiet=confirm.view is not None and not confirm.view.notes
                             and all(c.reason == Reason.UNCHANGED for c in confirm.view.changes))
        else:
            converged.forget(self.state, paths, network=network)
        return first

    def run(self, goal: Goal, first: PassResult, *, wait: bool = False, timeout: float | None = None,
            progress: Callable[[str], None] = lambda line: None,
            sleep: Callable[[float], None] | None = None) -> Settled:
        """After `first` (an `up` tick), tick until every Deployment it started to update has
        rolled out — or failed its progressDeadlineSeconds and rolled back — and, with `wait`,
        until every pod runs and every container with a readiness probe is ready (at most
        `timeout` seconds). Probes run at every tick; a failed liveness probe restarts its
        container through the plan. Between ticks it rests on the running containers' exits
        (`sleep`, if given, replaces that rest: the engine tests' clock)."""
        out = Settled(first)
        follow = updating_deployments(first)
        # A StatefulSet's ordered start, stop and update go on pod by pod, like a rollout.
        ordered = bool(first.view is not None and first.view.waiting)
        if not follow and not wait and not ordered:
            return out
        goal = dataclasses.replace(goal, force=False)  # --replace recreated the pods once, in `first`
        started, seen = self.clock(), {}
        while True:
            r = self.tick(goal, now=self.clock(), everything=False, probe=True)
            if r.applied is not None:
                out.last = r
                out.apply_errors = [f"{x.txn.key}: {x.error}" for x in r.applied.failed]
            statuses = {s.deployment: s for s in r.rollouts}
            self._progress(follow, statuses, seen, out, progress)
            if r.applied is not None and not self._expired(wait, timeout, started):
                continue  # look again at once: the next wave may be due
            view = r.view
            problems: list[str] = []
            if wait:
                running_jobs, failed_jobs = job_problems(view.jobs)
                final = failed_for_good(view.desired, view.observed) + failed_jobs
                if final:
                    out.problems = final
                    return out
                problems = not_running(view.desired, view.observed) + \
                    unready_pods(view.desired, view.observed, view.health) + running_jobs
            rolling = [d for d in follow if d in statuses and statuses[d].outcome == PROGRESSING]
            out.rollouts = [statuses[d] for d in sorted(follow) if d in statuses]
            pending = list(view.waiting) if view is not None else []
            if not rolling and not problems and not pending:
                return out
            if self._expired(wait or bool(pending), timeout, started):
                problems += pending
                out.problems, out.timed_out = problems, True
                return out
            self._rest(r, sleep)

    def _expired(self, wait: bool, timeout: float | None, started: float) -> bool:
        return wait and timeout is not None and self.clock() - started >= timeout

    def _rest(self, r: PassResult, sleep: Callable[[float], None] | None) -> None:
        """Until the next tick is due (_pause), or until a container of the goal exits: a Job's
        pod that finished is seen at once (its next pod starts, or the Job completes), not at
        the next timed look."""
        pause = self._pause(r)
        if sleep is not None or self.current is None or r.view is None:
            (sleep or time.sleep)(pause)
            return
        uids = {p.uid for p in r.view.desired.pods.values()}
        running = [c.id for o in r.view.observed.pods.values() if o.uid in uids
                   for c in [*o.init_containers.values(), *o.containers.values()]
                   if c.state == ContainerState.RUNNING]
        if not running:
            time.sleep(pause)
            return
        try:
            self.current.runtime.wait_exits(running, pause)
        except PodplayError:
            time.sleep(pause)  # a container removed meanwhile: the next look sees what changed

    def _pause(self, r: PassResult) -> float:
        """Until the probes or a retry want the next tick: at least 50 ms, at most 0.5 s."""
        waits = [0.5] + ([r.probe_in] if r.probe_in is not None else [])
        retry = self.retry.next_at()
        if retry is not None:
            waits.append(retry - self.mono())
        return min(max(min(waits), 0.05), 0.5)

    @staticmethod
    def _progress(follow: set[str], statuses: dict, seen: dict, out: Settled, progress) -> None:
        for ref in sorted(follow):
            s = statuses.get(ref)
            if s is None:
                continue
            line = s.line()
            if seen.get(ref) != line:
                seen[ref] = line
                progress(line)
            if s.event in (RolloutEvent.FAILED, RolloutEvent.ROLLED_BACK):
                out.failed.append(s)
                verdict = f"rolling back to revision {s.rolled_back_to}" if s.rolled_back_to else "no rollback"
                progress(f"! rollout of deployment {ref} to revision {s.revision} failed: {s.message}; {verdict}")


class _Prefetched:
    """An image store for a tick whose pulls were done before the apply lock: the pulls that
    failed answer with the same error at once, and the Always images already asked of their
    registry are not asked again."""

    def __init__(self, images, failed: dict[str, PodplayError], checked: set[str]):
        self._images, self._failed, self._checked = images, failed, checked

    def ensure_image(self, ref: str, policy: str, credentials=()):
        if ref in self._failed:
            raise self._failed[ref]
        if ref in self._checked:
            policy = "IfNotPresent"
        return self._images.ensure_image(ref, policy, credentials)

    def __getattr__(self, name: str):
        return getattr(self._images, name)


def _always_pulls(changes: Sequence[Change], view: View, drivers: Drivers) -> dict[str, list]:
    """The images with pull policy Always that applying `changes` would ask their registry about
    (those already in the store; a missing one was pulled before the lock), with the pull
    secrets of the pods that use them."""
    wanted: dict[str, list] = {}
    policies = {c.pull_policy for p in view.desired.pods.values() for c in p.init_containers + p.containers}
    policies |= {v.image_pull_policy for p in view.desired.pods.values() for v in p.volumes if v.kind == "image"}
    if "Always" not in policies:
        return wanted  # the common case: no pull step could ask a registry (and no second plan is made)
    plan = make_plan(list(changes), view.desired, view.observed)
    refs = {p.ref: p for p in view.desired.pods.values()}
    for txn in plan.txns:
        for step in (planned.step for planned in txn.steps):
            if isinstance(step, PullImage) and step.policy == "Always":
                creds = wanted.setdefault(step.image, [])
                creds.extend(s for r in step.credentials_from if r in refs for s in refs[r].pull_secrets)
    return {image: creds for image, creds in wanted.items() if drivers.images.get_image(image) is not None}


@dataclass
class Settled:
    """How `Converger.run` ended."""

    last: PassResult
    rollouts: list = field(default_factory=list)  # the final RolloutStatus of each followed Deployment
    failed: list = field(default_factory=list)  # RolloutStatus of rollouts that failed (and maybe rolled back)
    problems: list[str] = field(default_factory=list)  # what is still not running or not ready (--wait)
    timed_out: bool = False
    apply_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.problems or self.timed_out)


# --- what a View says about pods ---------------------------------------------------------------------

def updating_deployments(first: PassResult) -> set[str]:
    """Deployments whose rollout is under way: a replica the first tick saw has a rollout move
    (a surge, a replacement, an old instance to drop, a wait for availability, a hold)."""
    out = set()
    for c in first.plan.changes:
        d = first.desired.pods.get(f"{c.key.namespace}/{c.key.name}")
        if c.key.kind == "Pod" and c.move is not None and d is not None and d.owner.kind in ROLLED_OUT_KINDS:
            out.add(f"{d.owner.namespace}/{d.owner.name}")
    return out


def not_running(desired: DesiredState, observed: ObservedHost) -> list[str]:
    """'<pod>/<container>: why' for every app container that neither runs nor finished as its
    restart policy allows."""
    problems = []
    for pod in desired.pods.values():
        if pod.owner.kind == "Job":
            continue  # its Job says how it stands (job_problems)
        instance = observed.pods.get(pod.uid)
        for c in pod.containers:
            oc = instance.containers.get(c.name) if instance is not None else None
            if oc is None:
                problems.append(f"{pod.ref}/{c.name}: not created")
            elif oc.state == ContainerState.EXITED and not (pod.spec.restart_policy != "Always" and oc.exit_code == 0):
                problems.append(f"{pod.ref}/{c.name}: exited with code {oc.exit_code}"
                                f"{' (OOM killed)' if oc.oom_killed else ''}")
            elif oc.state not in (ContainerState.RUNNING, ContainerState.EXITED):
                problems.append(f"{pod.ref}/{c.name}: {oc.state}")
    return problems


def failed_for_good(desired: DesiredState, observed: ObservedHost) -> list[str]:
    """App containers that exited with an error under restartPolicy Never: nothing will start
    them again, so `up --wait` reports them at once instead of waiting out its timeout."""
    out = []
    for pod in desired.pods.values():
        instance = observed.pods.get(pod.uid)
        if pod.spec.restart_policy != "Never" or instance is None or pod.owner.kind == "Job":
            continue
        for c in pod.containers:
            oc = instance.containers.get(c.name)
            if oc is not None and oc.state == ContainerState.EXITED and oc.exit_code not in (None, 0):
                out.append(f"{pod.ref}/{c.name}: exited with code {oc.exit_code}"
                           f"{' (OOM killed)' if oc.oom_killed else ''}")
    return out


def job_problems(jobs) -> tuple[list[str], list[str]]:
    """(Jobs still running, Jobs that failed) as `up --wait` reports them: it waits for the
    first, and a failed Job is final (its backoffLimit or deadline is spent)."""
    running, failed = [], []
    for s in jobs:
        if s.phase == JobPhase.FAILED:
            failed.append(f"job {s.ref}: failed ({s.reason}: {s.message or 'see its pods'})")
        elif s.phase == JobPhase.RUNNING:
            running.append(f"job {s.ref}: {s.succeeded}/{s.completions} completed, {s.active} running")
    return running, failed


# --- entry points with the signatures the CLI and the tests use ---------------------------------------

def run_pass(paths: Sequence[str], drivers: Drivers, state: StateStore, host_paths: HostPaths, *,
             mode: str = "up", force: bool = False, remove_volumes: bool = False, dry_run: bool = False,
             lock_timeout: float | None = None, report: Reporter | None = None, now: float | None = None,
             manifests=None, failpoints: Failpoints | None = None,
             on_plan: Callable[[Plan], None] | None = None, only: Sequence[str] = ()) -> PassResult:
    """`podplay up`/`down`/`plan` of `paths`: Converger.once (or .plan with `dry_run`).
    Raises ManifestError (nothing touched) for invalid manifests."""
    from reconciler.reconcile import load_or_fail

    manifests = manifests or load_or_fail(paths, down=mode == "down", host_paths=host_paths)
    goal = make_goal(paths, manifests, host_paths, mode=mode, force=force, remove_volumes=remove_volumes, only=only)
    conv = Converger(drivers, state, host_paths, report=report, on_plan=on_plan, lock_timeout=lock_timeout,
                     failpoints=failpoints)
    return conv.plan(goal) if dry_run else conv.once(goal, now=now)


def settle(first: PassResult, paths: Sequence[str], drivers: Drivers, state: StateStore, host_paths: HostPaths, *,
           wait: bool = False, timeout: float | None = None, only: Sequence[str] = (),
           report: Reporter | None = None, on_plan: Callable[[Plan], None] | None = None,
           progress: Callable[[str], None] = lambda line: None, clock: Callable[[], float] | None = None,
           sleep: Callable[[float], None] | None = None, lock_timeout: float | None = None) -> Settled:
    """Converger.run after `first`, over the same manifests."""
    goal = make_goal(paths, first.manifests, host_paths, only=only)
    conv = Converger(drivers, state, host_paths, clock=clock or time.time, report=report, on_plan=on_plan,
                     lock_timeout=lock_timeout)
    return conv.run(goal, first, wait=wait, timeout=timeout, progress=progress, sleep=sleep)

