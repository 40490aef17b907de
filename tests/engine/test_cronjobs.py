"""CronJobs on the fake host with an injected clock: runs at the schedule as Jobs named
<cronjob>-<minutes>, concurrencyPolicy Forbid/Replace/Allow, suspend, history limits, and no
run for schedules missed before the CronJob existed."""

from __future__ import annotations

import time

CRON = """apiVersion: batch/v1
kind: CronJob
metadata: {{name: backup}}
spec:
  schedule: "*/5 * * * *"
  timeZone: Etc/UTC
  concurrencyPolicy: {policy}
  successfulJobsHistoryLimit: {keep}
  suspend: {suspend}
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: work
            image: busybox:1.36
            command: [sh, -c, "backup"]
"""


def cron(policy="Forbid", keep=3, suspend="false") -> str:
    return CRON.format(policy=policy, keep=keep, suspend=suspend)


def base() -> float:
    """70 s after the last */5 mark (past the first-sight minute): the next run is due at base + 230."""
    return (time.time() // 300) * 300 + 70


def run_pods(engine) -> dict[str, str]:
    return {c.pod: str(c.state) for c in engine.drivers.runtime.list_containers() if c.role == "app"}


def finish_all(engine, code: int = 0) -> None:
    for c in engine.drivers.runtime.list_containers():
        if c.role == "app" and str(c.state) == "running":
            engine.host.exit_container(c.id, code)


def job_names(result) -> list[str]:
    return [s.ref for s in result.view.jobs]


def test_runs_at_the_schedule_and_forbid_skips_a_run_while_one_is_active(engine):
    engine.write("cron.yaml", cron())
    t0 = base()
    first = engine.up(now=t0)
    assert first.plan.empty and run_pods(engine) == {}, "no run for a schedule missed before it existed"
    assert first.view.wake_at == t0 + 230

    r = engine.up(now=t0 + 231)
    minute = int((t0 + 230) // 60)
    assert job_names(r) == [f"default/backup-{minute}"]
    assert run_pods(engine) == {f"default/backup-{minute}-0": "running"}
    # The next schedule while the run is still active: Forbid skips it.
    r = engine.up(now=t0 + 531)
    assert job_names(r) == [f"default/backup-{minute}"] and len(run_pods(engine)) == 1
    assert engine.state.workloads.get("CronJob/default/backup")["skipped"] == 1
    finish_all(engine)
    assert [s.phase for s in engine.up(now=t0 + 600).view.jobs] == ["Complete"]
    r = engine.up(now=t0 + 891)
    assert len(job_names(r)) == 2 and len(run_pods(engine)) == 2


def test_replace_stops_the_active_run_for_the_new_one(engine):
    engine.write("cron.yaml", cron(policy="Replace"))
    t0 = base()
    engine.up(now=t0)
    engine.up(now=t0 + 231)
    old = set(run_pods(engine))
    engine.up(now=t0 + 531)
    new = set(run_pods(engine))
    assert len(new) == 1 and new != old


def test_allow_runs_concurrently_and_history_limits_prune_finished_runs(engine):
    engine.write("cron.yaml", cron(policy="Allow", keep=1))
    t0 = base()
    engine.up(now=t0)
    engine.up(now=t0 + 231)
    engine.up(now=t0 + 531)
    assert len(run_pods(engine)) == 2, "Allow: the second run starts beside the first"
    finish_all(engine)
    engine.up(now=t0 + 592)  # both runs complete
    r = engine.up(now=t0 + 593)
    assert len(job_names(r)) == 1 and len(run_pods(engine)) == 1, "successfulJobsHistoryLimit 1"


def test_suspend_starts_no_run_and_down_forgets_the_schedule(engine):
    engine.write("cron.yaml", cron(suspend="true"))
    t0 = base()
    engine.up(now=t0)
    assert engine.up(now=t0 + 231).plan.empty and run_pods(engine) == {}
    engine.write("cron.yaml", cron())
    # As Kubernetes does without startingDeadlineSeconds: the run missed while suspended starts
    # at once when the CronJob is resumed (one run, however many schedules were missed).
    engine.up(now=t0 + 900)
    assert len(run_pods(engine)) == 1
    engine.down()
    assert engine.empty() and engine.state.workloads.all() == {}


def test_a_cronjob_first_seen_within_a_minute_of_a_schedule_runs_it(engine):
    """That is how the first firing of its systemd timer (`up` at the schedule time) finds it."""
    engine.write("cron.yaml", cron())
    mark = (time.time() // 300) * 300
    engine.up(now=mark + 2)
    assert len(run_pods(engine)) == 1
