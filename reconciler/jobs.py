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
"""

from __future__ import annotations

import enum
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
    reason: str = ""  # BackoffLimitExceeded | DeadlineExceeded
    succeeded: tuple[str, ...] = ()  # pod names seen succeeded
    failed: tuple[str, ...] = ()  # pod names seen failed (restartPolicy Never)
    restarts: dict[str, int] = field(default_factory=dict)  # pod name → container restarts seen (OnFailure)
    last_failure: float = 0.0
    cleaned: bool = False  # ttlSecondsAfterFinished removed its pods

    def to_json(self) -> dict:
        return {"template": self.template, "started": self.started, "finished": self.finished,
                "outcome": self.outcome, "reason": self.reason, "succeeded": list(self.succeeded),
                "failed": list(self.failed), "restarts": dict(self.restarts), "last_failure": self.last_failure,
                "cleaned": self.cleaned}

    @classmethod
    def from_json(cls, d: dict) -> JobRecord:
        return cls(d.get("template", ""), d.get("started", 0.0), d.get("finished", 0.0), d.get("outcome", ""),
                   d.get("reason", ""), tuple(d.get("succeeded", ())), tuple(d.get("failed", ())),
                   dict(d.get("restarts", {})), d.get("last_failure", 0.0), d.get("cleaned", False))


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

    @property
    def finished_ok(self) -> bool:
        return self.phase == JobPhase.COMPLETE

    def to_json(self) -> dict:
        return {"job": self.ref, "source": self.source, "phase": str(self.phase), "completions": self.completions,
                "parallelism": self.parallelism, "active": self.active, "succeeded": self.succeeded,
                "failed": self.failed, "reason": self.reason, "message": self.message,
                "started": self.started, "finished": self.finished}


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


def decide_job(ref: str, spec, candidates: Sequence[DesiredPod], instances: Iterable[ObservedPod],
               record: JobRecord | None, now: float) -> JobDecision:
    """`spec` is the Job's JobSpec; `candidates` the pods its run may create, in index order;
    `instances` what the host runs under those pod names (any template)."""
    template = candidates[0].spec_hash if candidates else ""
    source = candidates[0].source if candidates else ""
    if record is None or record.template != template:
        record = JobRecord(template)
    by_name = {d.name: d for d in candidates}
    current: dict[str, ObservedPod] = {}
    for o in instances:
        d = by_name.get(o.name)
        if d is not None and o.uid == d.uid:
            current[d.name] = o

    succeeded, failed = set(record.succeeded), set(record.failed)
    restarts = dict(record.restarts)
    active: list[DesiredPod] = []
    last_failure = record.last_failure
    for name, o in current.items():
        if name in succeeded or name in failed:
            continue
        phase, at, n = pod_phase(by_name[name], o)
        restarts[name] = max(restarts.get(name, 0), n) if n else restarts.get(name, 0)
        if phase == PodPhase.SUCCEEDED:
            succeeded.add(name)
        elif phase == PodPhase.FAILED:
            failed.add(name)
            last_failure = max(last_failure, at)
        else:
            active.append(by_name[name])
    failures = len(failed) + sum(restarts.values())
    started = record.started or now  # the run starts at its first look
    record = replace(record, succeeded=tuple(sorted(succeeded)), failed=tuple(sorted(failed)), restarts=restarts,
                     last_failure=last_failure, started=started)

    outcome, reason, message = record.outcome, record.reason, ""
    if not outcome:
        if len(succeeded) >= spec.wanted:
            outcome = JobPhase.COMPLETE
        elif failures > spec.backoff_limit:
            outcome, reason = JobPhase.FAILED, "BackoffLimitExceeded"
            message = f"{failures} failures, more than backoffLimit {spec.backoff_limit}"
        elif spec.active_deadline_seconds and started and now - started >= spec.active_deadline_seconds:
            outcome, reason = JobPhase.FAILED, "DeadlineExceeded"
            message = f"ran longer than activeDeadlineSeconds {spec.active_deadline_seconds}"
        if outcome:
            record = replace(record, outcome=str(outcome), reason=reason, finished=now)

    def status(phase: JobPhase, n_active: int) -> JobStatus:
        return JobStatus(ref, source, phase, spec.wanted, spec.parallelism, n_active, len(succeeded), failures,
                         record.reason, message, record.started, record.finished)

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
    wake = None
    want = min(spec.parallelism - len(active), spec.wanted - len(succeeded) - len(active))
    if want > 0 and failed:
        ready_at = last_failure + failure_backoff(len(failed))
        if now < ready_at:
            want, wake = 0, ready_at
    if want > 0:
        used = succeeded | failed | set(current)
        fresh = [d for d in candidates if d.name not in used][:want]
        keep += fresh
        active += fresh
    if spec.active_deadline_seconds and started:
        deadline = started + spec.active_deadline_seconds
        wake = deadline if wake is None else min(wake, deadline)
    return JobDecision(tuple(keep), record, status(JobPhase.RUNNING, len(active)), wake)


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
