"""A Job under `podplay watch` on the file-backed fake host: the relists move it on pod by pod
(parallelism 1) to Complete, and the status the keeper records says so."""

from __future__ import annotations

from tests.engine.watch.conftest import eventually

JOB = """apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 3
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
        command: [sleep, "1000"]
"""


def test_watch_runs_a_job_to_completion_one_pod_at_a_time(site):
    site.write("job.yaml", JOB)
    w = site.watch()
    for i in range(3):
        ref = f"default/batch-{i}"
        eventually(lambda ref=ref: site.running() == {ref: {"work"}}, f"{ref} to run (and no other)")
        with site.mutate() as h:
            cid = next(c for c, rec in h.containers.items() if rec["pod"] == ref and rec["role"] == "app")
            h.exit_container(cid, 0)

    def complete():
        jobs = site.status().get("jobs") or []
        return jobs and jobs[0]["phase"] == "Complete" and jobs[0]["succeeded"] == 3
    eventually(complete, "the Job to complete")
    assert site.running() == {}
    assert w.stop() == 0
