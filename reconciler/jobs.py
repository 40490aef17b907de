"""PURE  the Job controller on one host: from a Job, the pods its run may create, what the host
shows of them and what the store remembers of the run, which pods the host should have now and
where the Job stands.

A run is the Job's pod template (its spec hash). Its pods are ``<job>-0``, ``<job>-1``… in
creation order; a name is never reused within a run, so a failed pod stays with its logs.
Each look decides afresh (level-triggered, like every rule of the converger):

* a pod whose app containers all exited 0 succeeded; with restartPolicy Never, a pod whose
  containers all exited and one failed, failed (OnFailure restarts the container in place
  through the ordinary crash-loop rule, and each restart counts as a failure, as the kubelet's
  do for the Job controller);
* more than ``backoffLimit`` failures fail the Job (BackoffLimitExceeded), and so does running
  longer than ``activeDeadlineSeconds`` (DeadlineExceeded); the pods still running go, the
  finished ones stay;
* ``completions`` successes complete it; until then up to ``parallelism`` pods run, a new one
  after a failure only once the pod-failure back-off (10 s doubling, at most 6 min) has passed;
* a finished Job's pods are held — never restarted, replaced or re-created — until
  ``ttlSecondsAfterFinished`` removes them; the record of the run keeps the Job finished, so
  the next pass does not run it again unless its template changes.

``completionMode: Indexed``: each index 0…completions-1 must succeed once. An index has at most
one pod at a time, ``<job>-<index>-<attempt>``, the lowest pending indexes first; a failed index
is retried (after the back-off) until its ``backoffLimitPerIndex`` is spent, and then it has
failed for good; more than ``maxFailedIndexes`` of those fail the Job at once, else the Job
fails (FailedIndexes) once every index has succeeded or failed.

``podFailurePolicy``: a failed pod's exit codes are matched against the rules in order; the
first that matches decides — FailJob ends the Job at once (reason PodFailurePolicy), FailIndex
fails the pod's index, Ignore does not count the failure (nor delay the next pod), Count counts
it as usual. ``onPodConditions`` never matches: no pod is disrupted on one host.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from reconciler.desired import DesiredPod
from reconciler.observed import ContainerState, ObservedPod

BACKOFF_BASE = 10.0  # the Job controller's pod-failure back-off: 10 s doubling…
BACKOFF_MAX = 360.0  # …capped at 6 minutes


class JobPhase(enum.StrEnum):
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    COMPLETE = "Complete"
    FAILED = "Failed"


class PodPhase(enum.StrEnum):
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobRecord:
    """What the store keeps of a Job's current run (JSON through to_json/from_json)."""

    template: str  # the spec hash of the run's pods
    started: float = 0.0
    finished: float = 0.0
    outcome: str = ""  # "" while it runs, else a JobPhase (Complete or Failed)
    reason: str = ""  # BackoffLimitExceeded | DeadlineExceeded | PodFailurePolicy | FailedIndexes | …
    succeeded: tuple[str, ...] = ()  # pod names seen succeeded
    failed: tuple[str, ...] = ()  # pod names seen failed (restartPolicy Never)
    restarts: dict[str, int] = field(default_factory=dict)  # pod name → container restarts seen (OnFailure)
    last_failure: float = 0.0
    cleaned: bool = False  # ttlSecondsAfterFinished removed its pods
    ignored: tuple[str, ...] = ()  # failed pods whose failure the podFailurePolicy ignores
    failed_indexes: tuple[int, ...] = ()  # Indexed: the indexes that failed for good
    message: str = ""  # why it finished as it did

    def to_json(self) -> dict:
        return {"template": self.template, "started": self.started, "finished": self.finished,
                "outcome": self.outcome, "reason": self.reason, "succeeded": list(self.succeeded),
                "failed": list(self.failed), "restarts": dict(self.restarts), "last_failure": self.last_failure,
                "cleaned": self.cleaned, "ignored": list(self.ignored), "failed_indexes": list(self.failed_indexes),
                "message": self.message}

    @classmethod
    def from_json(cls, d: dict) -> JobRecord:
        return cls(d.get("template", ""), d.get("started", 0.0), d.get("finished", 0.0), d.get("outcome", ""),
                   d.get("reason", ""), tuple(d.get("succeeded", ())), tuple(d.get("failed", ())),
                   dict(d.get("restarts", {})), d.get("last_failure", 0.0), d.get("cleaned", False),
                   tuple(d.get("ignored", ())), tuple(d.get("failed_indexes", ())), d.get("message", ""))


@dataclass(frozen=True)
class JobStatus:
    """Where a Job stands, for pods/status/`podplay jobs` and for `up --wait`."""

    ref: str
    source: str
    phase: JobPhase
    completions: int
    parallelism: int
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    reason: str = ""
    message: str = ""
    started: float = 0.0
    finished: float = 0.0
    completed_indexes: str = ""  # Indexed: "0-2,4", as Kubernetes writes status.completedIndexes
    failed_indexes: str = ""

    @property
    def finished_ok(self) -> bool:
        return self.phase == JobPhase.COMPLETE

    def to_json(self) -> dict:
        return {"job": self.ref, "source": self.source, "phase": str(self.phase), "completions": self.completions,
                "parallelism": self.parallelism, "active": self.active, "succeeded": self.succeeded,
                "failed": self.failed, "reason": self.reason, "message": self.message,
                "started": self.started, "finished": self.finished,
                "completed_indexes": self.completed_indexes, "failed_indexes": self.failed_indexes}


@dataclass(frozen=True)
class JobDecision:
    pods: tuple[DesiredPod, ...]  # the pods the host should have now (finished ones held)
    record: JobRecord
    status: JobStatus
    wake_at: float | None = None  # when a back-off, the deadline or the ttl wants another look


def failure_backoff(failures: int) -> float:
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE * 2 ** min(failures - 1, 16), BACKOFF_MAX)


def index_ranges(indexes: Iterable[int]) -> str:
    """Indexes as Kubernetes writes them in a Job's status: "0-2,4,7-8"."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(indexes)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def pod_phase(d: DesiredPod, o: ObservedPod) -> tuple[PodPhase, float, int]:
    """(phase, when it finished, container restarts) of the run's pod `d` as instance `o` shows it."""
    never = d.spec.restart_policy == "Never"
    apps = [o.containers.get(c.name) for c in d.containers]
    inits = [o.init_containers.get(c.name) for c in d.init_containers]
    restarts = sum(c.restart_count for c in apps + inits if c is not None)
    if never and any(c is not None and c.state == ContainerState.EXITED and c.exit_code not in (0, None)
                     for c in inits):
        return PodPhase.FAILED, max(c.finished_at for c in inits if c is not None), restarts
    # An exit whose code conmon has not written yet is not an outcome: it is looked at again.
    if any(c is None or c.state != ContainerState.EXITED or c.exit_code is None for c in apps):
        return PodPhase.ACTIVE, 0.0, restarts
    done_at = max((c.finished_at for c in apps if c is not None), default=0.0)
    if all(c is not None and c.exit_code == 0 for c in apps):
        return PodPhase.SUCCEEDED, done_at, restarts
    # OnFailure: the failed container is restarted in place (the diff's restart rule), the pod stays active.
    return (PodPhase.FAILED if never else PodPhase.ACTIVE), done_at, restarts + (0 if never else 1)


class FailureAction(enum.StrEnum):
    """What a podFailurePolicy rule does with a failed pod."""

    FAIL_JOB = "FailJob"
    FAIL_INDEX = "FailIndex"
    IGNORE = "Ignore"
    COUNT = "Count"


def failure_rule(policy, d: DesiredPod, o: ObservedPod) -> tuple[FailureAction, str]:
    """The action of the first rule of `policy` (a PodFailurePolicy, or None) that the failed pod
    matches, and what matched; Count and "" when none does. A rule matches when a container (init
    containers first, then the others, in the template's order) exited with a code other than 0
    that is In (or NotIn) its values; onPodConditions rules never match here."""
    if policy is None:
        return FailureAction.COUNT, ""
    exited = []
    for c in d.init_containers + d.containers:
        oc = o.init_containers.get(c.name) if c.init else o.containers.get(c.name)
        if oc is not None and oc.state == ContainerState.EXITED and oc.exit_code not in (0, None):
            exited.append((c.name, oc.exit_code))
    for i, rule in enumerate(policy.rules):
        codes = rule.on_exit_codes
        if codes is None:
            continue
        for name, code in exited:
            if codes.container_name not in (None, name):
                continue
            if (code in codes.values) == (codes.operator == "In"):
                return FailureAction(rule.action), (f"container {name} of pod {d.name} exited with code {code}, "
                                                    f"matching the {rule.action} rule at index {i}")
    return FailureAction.COUNT, ""


def decide_job(ref: str, spec, candidates: Sequence[DesiredPod], instances: Iterable[ObservedPod],
               record: JobRecord | None, now: float) -> JobDecision:
    """`spec` is the Job's JobSpec; `candidates` the pods its run may create, in index order
    (Indexed: each pod's ordinal is its completion index); `instances` what the host runs under
    those pod names (any template)."""
    template = candidates[0].spec_hash if candidates else ""
    source = candidates[0].source if candidates else ""
    if record is None or record.template != template:
        record = JobRecord(template)
    by_name = {d.name: d for d in candidates}
    index_of = {d.name: d.ordinal or 0 for d in candidates}
    current: dict[str, ObservedPod] = {}
    for o in instances:
        d = by_name.get(o.name)
        if d is not None and o.uid == d.uid:
            current[d.name] = o

    succeeded, failed = set(record.succeeded), set(record.failed)
    ignored, failed_indexes = set(record.ignored), set(record.failed_indexes)
    restarts = dict(record.restarts)
    active: list[DesiredPod] = []
    last_failure = record.last_failure
    fail_job = ""  # what a FailJob rule matched
    for name, o in current.items():
        if name in succeeded or name in failed:
            continue
        phase, at, n = pod_phase(by_name[name], o)
        restarts[name] = max(restarts.get(name, 0), n) if n else restarts.get(name, 0)
        if phase == PodPhase.SUCCEEDED:
            succeeded.add(name)
        elif phase == PodPhase.FAILED:
            failed.add(name)
            action, why = failure_rule(spec.pod_failure_policy, by_name[name], o)
            if action == FailureAction.IGNORE:
                ignored.add(name)
                continue
            last_failure = max(last_failure, at)
            if action == FailureAction.FAIL_INDEX:
                failed_indexes.add(index_of[name])
            elif action == FailureAction.FAIL_JOB and not fail_job:
                fail_job = why
        else:
            active.append(by_name[name])
    counted = failed - ignored
    failures = len(counted) + sum(restarts.values())
    done_indexes = {index_of[n] for n in succeeded} if spec.indexed else set()
    index_failures: Counter[int] = Counter()
    if spec.indexed:
        for n in counted:
            index_failures[index_of[n]] += 1
        for n, k in restarts.items():
            if n in index_of:
                index_failures[index_of[n]] += k
        if spec.backoff_limit_per_index is not None:
            failed_indexes |= {i for i, k in index_failures.items() if k > spec.backoff_limit_per_index}
        failed_indexes -= done_indexes
    completed = len(done_indexes) if spec.indexed else len(succeeded)
    started = record.started or now  # the run starts at its first look
    record = replace(record, succeeded=tuple(sorted(succeeded)), failed=tuple(sorted(failed)), restarts=restarts,
                     last_failure=last_failure, started=started, ignored=tuple(sorted(ignored)),
                     failed_indexes=tuple(sorted(failed_indexes)))

    if not record.outcome:
        outcome, reason, message = _outcome(spec, completed, failures, done_indexes, failed_indexes, fail_job,
                                            started, now)
        if outcome:
            record = replace(record, outcome=str(outcome), reason=reason, message=message, finished=now)

    def status(phase: JobPhase, n_active: int) -> JobStatus:
        return JobStatus(ref, source, phase, spec.wanted, spec.parallelism, n_active, completed, failures,
                         record.reason, record.message, record.started, record.finished,
                         index_ranges(done_indexes), index_ranges(failed_indexes))

    held = tuple(replace(by_name[n], hold=True) for n in sorted(succeeded | failed) if n in current)
    if record.outcome:
        ttl = spec.ttl_seconds_after_finished
        if ttl is not None and now >= record.finished + ttl:
            record = replace(record, cleaned=True)
        wake = None if ttl is None or record.cleaned else record.finished + ttl
        # A finished Job keeps its finished pods (not the running ones: they go, as the
        # controller deletes a failed Job's active pods) until the ttl removes them all.
        return JobDecision(() if record.cleaned else held, record, status(JobPhase(record.outcome), 0), wake)

    if spec.suspend:
        return JobDecision(held, record, status(JobPhase.SUSPENDED, 0))

    keep = [*held, *active]
    used = succeeded | failed | set(current)
    if spec.indexed:
        fresh, wake = _next_indexes(spec, candidates, active, used, done_indexes, failed_indexes, index_failures,
                                    last_failure, now)
    else:
        fresh, wake = [], None
        want = min(spec.parallelism - len(active), spec.wanted - len(succeeded) - len(active))
        if want > 0 and counted:
            ready_at = last_failure + failure_backoff(len(counted))
            if now < ready_at:
                want, wake = 0, ready_at
        if want > 0:
            fresh = [d for d in candidates if d.name not in used][:want]
    keep += fresh
    active += fresh
    if spec.active_deadline_seconds and started:
        deadline = started + spec.active_deadline_seconds
        wake = deadline if wake is None else min(wake, deadline)
    return JobDecision(tuple(keep), record, status(JobPhase.RUNNING, len(active)), wake)


def _outcome(spec, completed: int, failures: int, done_indexes: set[int], failed_indexes: set[int],
             fail_job: str, started: float, now: float) -> tuple[JobPhase | None, str, str]:
    """(phase, reason, message) when the run ends at this look, else (None, "", "")."""
    limit = spec.failure_limit
    if fail_job:
        return JobPhase.FAILED, "PodFailurePolicy", fail_job
    if spec.max_failed_indexes is not None and len(failed_indexes) > spec.max_failed_indexes:
        return (JobPhase.FAILED, "MaxFailedIndexesExceeded", f"indexes {index_ranges(failed_indexes)} failed, "
                f"more than maxFailedIndexes {spec.max_failed_indexes}")
    if completed >= spec.wanted:
        return JobPhase.COMPLETE, "", ""
    if spec.indexed and failed_indexes and len(done_indexes | failed_indexes) >= spec.wanted:
        return JobPhase.FAILED, "FailedIndexes", f"indexes {index_ranges(failed_indexes)} failed"
    if limit is not None and failures > limit:
        return JobPhase.FAILED, "BackoffLimitExceeded", f"{failures} failures, more than backoffLimit {limit}"
    if spec.active_deadline_seconds and started and now - started >= spec.active_deadline_seconds:
        return (JobPhase.FAILED, "DeadlineExceeded",
                f"ran longer than activeDeadlineSeconds {spec.active_deadline_seconds}")
    return None, "", ""


def _next_indexes(spec, candidates: Sequence[DesiredPod], active: Sequence[DesiredPod], used: set[str],
                  done: set[int], failed: set[int], failures: Counter[int], last_failure: float, now: float
                  ) -> tuple[list[DesiredPod], float | None]:
    """An Indexed Job's new pods: the lowest indexes with no pod running, not done and not failed,
    up to parallelism; an index that failed before waits out the back-off first."""
    busy = {d.ordinal or 0 for d in active}
    slots = spec.parallelism - len(active)
    fresh: list[DesiredPod] = []
    wake = None
    for i in range(spec.wanted):
        if len(fresh) >= slots:
            break
        if i in done or i in failed or i in busy:
            continue
        if failures[i]:
            ready_at = last_failure + failure_backoff(failures[i])
            if now < ready_at:
                wake = ready_at if wake is None else min(wake, ready_at)
                continue
        d = next((c for c in candidates if (c.ordinal or 0) == i and c.name not in used), None)
        if d is not None:
            fresh.append(d)
    return fresh, wake


# --- CronJob ---------------------------------------------------------------------------------------

FIRST_SIGHT_GRACE = 60.0


@dataclass(frozen=True)
class CronRecord:
    """What the store keeps of a CronJob: the last schedule time it acted on and the runs
    (scheduled times, each a Job ``<cronjob>-<minutes since the epoch>``) that still exist."""

    last: float
    runs: tuple[float, ...] = ()
    skipped: int = 0  # runs Forbid skipped (for status)

    def to_json(self) -> dict:
        return {"last": self.last, "runs": list(self.runs), "skipped": self.skipped}

    @classmethod
    def from_json(cls, d: dict) -> CronRecord:
        return cls(d.get("last", 0.0), tuple(d.get("runs", ())), d.get("skipped", 0))


@dataclass(frozen=True)
class CronDecision:
    record: CronRecord
    runs: tuple[float, ...]  # the runs whose Jobs exist now (new ones included)
    dropped: tuple[float, ...]  # runs removed (history limits, Replace): their Jobs and pods go
    wake_at: float
    note: str = ""


def run_name(cron_name: str, scheduled: float) -> str:
    """A run's Job name, as the CronJob controller names it: the schedule time in minutes."""
    return f"{cron_name}-{int(scheduled // 60)}"


def decide_cron(spec, record: CronRecord | None, phases: dict[float, str], now: float) -> CronDecision:
    """`spec` is the CronJob's CronJobSpec; `phases` each existing run's JobPhase ("" if unknown yet)."""
    from reconciler import cron

    if record is None:
        # A new CronJob does not run the schedules it missed before it existed — except one due
        # in the last minute: that is how its systemd timer's first firing finds it.
        record = CronRecord(last=now - FIRST_SIGHT_GRACE)
    runs = list(record.runs)
    dropped: list[float] = []
    finished = (str(JobPhase.COMPLETE), str(JobPhase.FAILED))
    active = [t for t in runs if phases.get(t, "") not in finished]
    due = cron.last_due(spec.schedule, spec.time_zone, now)
    note = ""
    if not spec.suspend and due > record.last:
        late = spec.starting_deadline_seconds is not None and now - due > spec.starting_deadline_seconds
        record = replace(record, last=due)
        if late:
            note = f"missed the run of {due:.0f} by more than startingDeadlineSeconds"
        elif spec.concurrency_policy == "Forbid" and active:
            record = replace(record, skipped=record.skipped + 1)
            note = "skipped a run: the previous one is still running (concurrencyPolicy Forbid)"
        else:
            if spec.concurrency_policy == "Replace":
                dropped += active
                runs = [t for t in runs if t not in active]
            runs.append(due)
    for phase, limit in ((str(JobPhase.COMPLETE), spec.successful_jobs_history_limit),
                         (str(JobPhase.FAILED), spec.failed_jobs_history_limit)):
        done = sorted(t for t in runs if phases.get(t) == phase)
        old = done[:len(done) - limit] if limit < len(done) else []
        dropped += old
        runs = [t for t in runs if t not in old]
    record = replace(record, runs=tuple(runs))
    return CronDecision(record, tuple(runs), tuple(dropped), cron.next_due(spec.schedule, spec.time_zone, now), note)
