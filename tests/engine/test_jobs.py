"""Jobs on the fake host, with an injected clock: completions and parallelism, backoffLimit with
the pod-failure back-off, activeDeadlineSeconds, ttlSecondsAfterFinished, and a finished Job
that the next pass does not run again."""

from __future__ import annotations

import time

from reconciler.desired import container_id, pod_uid

JOB = """apiVersion: batch/v1
kind: Job
metadata:
  name: crunch
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}{extra}
  template:
    spec:
      restartPolicy: {policy}
      containers:
      - name: work
        image: {image}
        command: [sh, -c, "do the work"]
"""


def job(completions=1, parallelism=1, backoff=6, policy="Never", extra="", image="busybox:1.36") -> str:
    return JOB.format(completions=completions, parallelism=parallelism, backoff=backoff, policy=policy,
                      extra=extra, image=image)


def exits(engine, codes: dict[int, int]) -> None:
    """Pod crunch-<i>'s container exits with codes[i] as soon as it starts."""
    desired = engine.up(dry_run=True).desired
    for i, code in codes.items():
        d = desired.job_pods["default/crunch"][i]
        assert d.uid == pod_uid("default", d.name, d.spec_hash)
        engine.host.exit_codes[container_id(d.uid, "work")] = code


def status(result):
    [s] = result.view.jobs
    return s


def job_pods(engine) -> dict[str, tuple[str, int | None]]:
    return {c.pod: (str(c.state), c.exit_code) for c in engine.drivers.runtime.list_containers() if c.role == "app"}


def created(result) -> list[str]:
    return sorted(c.key.name for c in result.plan.changes if str(c.action) in ("create", "replace"))


def test_job_fails_twice_then_succeeds_within_backoff_limit_and_is_not_run_again(engine):
    engine.write("job.yaml", job(backoff=2))
    exits(engine, {0: 1, 1: 1, 2: 0})
    t0 = time.time()
    first = engine.up(now=t0)
    assert created(first) == ["crunch-0"]
    assert job_pods(engine) == {"default/crunch-0": ("exited", 1)}

    waiting = engine.up(now=t0 + 5)  # the pod-failure back-off: 10 s after the first failure
    assert created(waiting) == [] and status(waiting).phase == "Running" and status(waiting).failed == 1
    assert created(engine.up(now=t0 + 11)) == ["crunch-1"]
    # The fake's containers exit at the real time they start (≈ t0): 20 s after the second failure.
    assert created(engine.up(now=t0 + 15)) == []
    assert created(engine.up(now=t0 + 21)) == ["crunch-2"]

    done = engine.up(now=t0 + 36)
    s = status(done)
    assert (s.phase, s.succeeded, s.failed) == ("Complete", 1, 2)
    # The failed pods stay, with their exit codes (and logs), as Kubernetes keeps them.
    assert job_pods(engine) == {"default/crunch-0": ("exited", 1), "default/crunch-1": ("exited", 1),
                                "default/crunch-2": ("exited", 0)}
    ops = list(engine.host.log)
    again = engine.up(now=t0 + 1000)
    assert again.plan.empty and status(again).phase == "Complete"
    assert engine.host.log == ops, "a finished Job is not run again, nor are its pods touched"


def test_job_that_exhausts_its_backoff_limit_fails_keeps_its_pods_and_is_not_retried(engine):
    engine.write("job.yaml", job(backoff=1))
    exits(engine, {0: 3, 1: 3, 2: 0})
    t0 = time.time()
    engine.up(now=t0)
    engine.up(now=t0 + 11)
    failed = engine.up(now=t0 + 12)
    s = status(failed)
    assert (s.phase, s.reason, s.failed) == ("Failed", "BackoffLimitExceeded", 2)
    assert job_pods(engine) == {"default/crunch-0": ("exited", 3), "default/crunch-1": ("exited", 3)}
    later = engine.up(now=t0 + 5000)
    assert later.plan.empty and created(later) == []
    assert status(later).phase == "Failed"


def test_parallel_completions_run_at_most_parallelism_pods_at_once(engine):
    engine.write("job.yaml", job(completions=5, parallelism=2))
    t0 = time.time()
    rounds = []
    for i in range(6):
        r = engine.up(now=t0 + i)
        rounds.append(created(r))
        if status(r).phase == "Complete":
            break
    # The fake's containers run until told to exit: finish the running ones between passes.
        for c in engine.drivers.runtime.list_containers():
            if c.role == "app" and str(c.state) == "running":
                engine.host.exit_container(c.id, 0)
    assert rounds[:3] == [["crunch-0", "crunch-1"], ["crunch-2", "crunch-3"], ["crunch-4"]]
    assert status(engine.up(now=t0 + 10)).succeeded == 5
    assert len(job_pods(engine)) == 5


def test_active_deadline_fails_the_job_and_removes_its_running_pods(engine):
    engine.write("job.yaml", job(extra="\n  activeDeadlineSeconds: 30"))
    t0 = time.time()
    engine.up(now=t0)
    assert job_pods(engine) == {"default/crunch-0": ("running", None)}
    r = engine.up(now=t0 + 31)
    s = status(r)
    assert (s.phase, s.reason) == ("Failed", "DeadlineExceeded")
    assert job_pods(engine) == {}
    assert created(engine.up(now=t0 + 100)) == []


def test_ttl_after_finished_removes_the_pods_and_the_job_stays_done(engine):
    engine.write("job.yaml", job(extra="\n  ttlSecondsAfterFinished: 60"))
    exits(engine, {0: 0})
    t0 = time.time()
    engine.up(now=t0)
    assert status(engine.up(now=t0 + 1)).phase == "Complete"
    assert len(job_pods(engine)) == 1
    r = engine.up(now=t0 + 120)
    assert job_pods(engine) == {} and status(r).phase == "Complete"
    assert created(engine.up(now=t0 + 200)) == []


def test_a_changed_template_runs_the_job_again(engine):
    engine.write("job.yaml", job())
    exits(engine, {0: 0})
    t0 = time.time()
    engine.up(now=t0)
    assert status(engine.up(now=t0 + 1)).phase == "Complete"
    engine.write("job.yaml", job(image="busybox:1.37"))
    r = engine.up(now=t0 + 2)
    assert created(r) == ["crunch-0"] and status(r).phase == "Running"


def test_on_failure_restarts_in_place_and_counts_restarts_against_the_backoff_limit(engine):
    engine.write("job.yaml", job(policy="OnFailure", backoff=2))
    exits(engine, {0: 1})
    t0 = time.time()
    engine.up(now=t0)
    for i in range(1, 8):
        r = engine.up(now=t0 + 400 * i)
        if status(r).phase != "Running":
            break
    s = status(r)
    assert (s.phase, s.reason) == ("Failed", "BackoffLimitExceeded")
    assert created(r) == []
    assert "default/crunch-1" not in job_pods(engine), "OnFailure restarts the pod's container; no new pod"


def test_down_forgets_the_run_and_a_job_brought_back_runs_again(engine):
    engine.write("job.yaml", job())
    exits(engine, {0: 0})
    t0 = time.time()
    engine.up(now=t0)
    engine.up(now=t0 + 1)
    engine.down()
    assert engine.empty()
    assert created(engine.up(now=t0 + 2)) == ["crunch-0"]


def _work_starts(engine) -> int:
    return sum(1 for op in engine.host.log if op.startswith("start_container") and "work" in op)


def test_kill_at_every_step_boundary_of_a_job_run_never_runs_a_completed_job_again(tmp_path):
    """A 3-completion Job takes three passes (one pod each). Die at every step boundary of
    each pass; the passes after the crash finish the run, and once the Job is complete no pass
    starts its work again."""
    import pytest

    from reconciler.apply import Failpoints
    from reconciler.state import StateStore
    from tests.engine.conftest import Engine
    from tests.engine.test_crash import Crash, count_steps, crash

    def setup(e):
        e.write("job.yaml", job(completions=3))
        e.host.exit_codes["work"] = 0

    probe = Engine(tmp_path / "probe")
    setup(probe)
    steps = count_steps(probe)
    probe.state.close()
    assert steps >= 5
    for before in range(3):  # passes that ran to their end before the one that dies
        for when in ("before", "after"):
            for n in range(1, steps + 1):
                engine = Engine(tmp_path / f"{before}-{when}-{n}")
                setup(engine)
                for _ in range(before):
                    engine.up()
                with pytest.raises(Crash):
                    engine.up(failpoints=Failpoints(f"{when}:#{n}", action=crash))
                engine.state.close()
                engine.state = StateStore(engine.paths.state_db)
                for _ in range(8):
                    r = engine.up()
                    assert r.ok, [x.error for x in r.applied.failed]
                    if status(r).phase == "Complete":
                        break
                assert (status(r).phase, status(r).succeeded) == ("Complete", 3), (before, when, n)
                assert not engine.state.journal.open_txns()
                starts = _work_starts(engine)
                assert engine.up().plan.empty and _work_starts(engine) == starts, (before, when, n)
                assert set(job_pods(engine)) == {"default/crunch-0", "default/crunch-1", "default/crunch-2"}
                engine.down()
                assert engine.empty()
                engine.state.close()


def test_sigkilled_podplay_mid_job_is_recovered_and_the_completed_job_is_not_run_again(tmp_path):
    """A real `podplay up` killed with SIGKILL at a step of a Job's run (file-backed fake host)."""
    import json
    import os
    import signal

    from tests.engine.test_crash import run_podplay

    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "job.yaml").write_text(job(completions=2))
    root = tmp_path / "root"
    root.mkdir()
    (root / "fakehost.json").write_text(json.dumps({"exit_codes": {"work": 0}}))
    env = {**os.environ, "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
           "PODPLAY_ROOT": str(root), "PODPLAY_RUNROOT": str(tmp_path / "run")}
    for failpoint in ("after:CreateInfra", "before:StartContainer", "after:StartContainer"):
        killed = run_podplay(["up", str(manifests)], {**env, "PODPLAY_FAILPOINT": failpoint})
        assert killed.returncode == -signal.SIGKILL, (failpoint, killed.stderr)
    for _ in range(4):
        assert run_podplay(["up", str(manifests)], env).returncode == 0
    jobs = json.loads(run_podplay(["jobs", "-o", "json"], env).stdout)
    assert [(j["phase"], j["succeeded"]) for j in jobs] == [("Complete", 2)]
    starts = [op for op in json.loads((root / "fakehost.json").read_text())["log"] if op.startswith("start_container")]
    assert run_podplay(["up", str(manifests)], env).returncode == 0
    again = [op for op in json.loads((root / "fakehost.json").read_text())["log"] if op.startswith("start_container")]
    assert again == starts, "a completed Job is not run again"


def test_an_exit_whose_code_is_not_written_yet_is_no_outcome(engine):
    """The container is gone but conmon has not written its exit code yet: the Job waits for the
    code rather than count a failure (under load the window is real)."""
    engine.write("job.yaml", job(backoff=0))
    t0 = time.time()
    engine.up(now=t0)
    [cid] = [c.id for c in engine.drivers.runtime.list_containers() if c.role == "app"]
    engine.host.exit_container(cid, None)
    pending = engine.up(now=t0 + 1)
    assert status(pending).phase == "Running" and status(pending).failed == 0
    engine.host.exit_container(cid, 0)
    assert status(engine.up(now=t0 + 2)).phase == "Complete"
