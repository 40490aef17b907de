"""Jobs on the real stack: a Job that fails twice then succeeds within backoffLimit (after the
pod-failure back-off), one that exhausts it (its pods and logs kept, not retried by the next
`up`), and parallel completions. `up --wait` follows a Job to its end."""

from __future__ import annotations

import json

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, '{script}']
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes:
      - name: data
        hostPath: {{path: {data}, type: DirectoryOrCreate}}
"""


def job(stack, name: str, script: str, *, completions=1, parallelism=1, backoff=6):
    data = stack.tmp / f"{name}-data"
    return stack.write(f"{name}.yaml", JOB.format(name=name, completions=completions, parallelism=parallelism,
                                                  backoff=backoff, script=script, data=data)), data


def jobs(stack) -> dict[str, dict]:
    return {j["job"]: j for j in json.loads(stack.run("jobs", "-o", "json").stdout)}


def exit_codes(stack, prefix: str) -> dict[str, int | None]:
    return {c.pod.split("/", 1)[1]: c.exit_code for c in stack.containers()
            if c.role == "app" and c.pod.startswith(f"default/{prefix}-")}


def test_job_fails_twice_then_succeeds_within_backoff_limit(stack):
    # Each attempt counts itself in a file on the host; the third one succeeds.
    m, data = job(stack, "flaky", 'n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; '
                  'echo attempt $n; [ $n -ge 3 ]', backoff=2)
    stack.run("up", "--wait", "--timeout", "150", str(m), timeout=240)
    j = jobs(stack)["default/flaky"]
    assert (j["phase"], j["succeeded"], j["failed"]) == ("Complete", 1, 2)
    assert exit_codes(stack, "flaky") == {"flaky-0": 1, "flaky-1": 1, "flaky-2": 0}
    assert stack.run("logs", "flaky-0").stdout.strip() == "attempt 1"
    assert (data / "n").read_text().strip() == "3"
    # The next `up` does not run the finished Job again.
    again = stack.run("up", str(m))
    assert "created" not in again.stdout
    assert (data / "n").read_text().strip() == "3"
    assert "flaky" in stack.run("status").stdout
    stack.run("down", str(m))
    assert not stack.containers()


def test_job_that_exhausts_its_backoff_limit_is_failed_and_not_retried(stack):
    m, data = job(stack, "doomed", 'echo failing >&2; echo x >> /data/runs; exit 3', backoff=1)
    res = stack.run("up", "--wait", "--timeout", "120", str(m), check=False, timeout=240)
    assert res.returncode != 0
    assert "BackoffLimitExceeded" in res.stdout + res.stderr
    j = jobs(stack)["default/doomed"]
    assert (j["phase"], j["reason"], j["failed"]) == ("Failed", "BackoffLimitExceeded", 2)
    assert exit_codes(stack, "doomed") == {"doomed-0": 3, "doomed-1": 3}
    assert stack.run("logs", "doomed-1").stderr.strip() == "failing"  # its pods' logs are kept
    stack.run("up", str(m), check=False)
    assert len((data / "runs").read_text().split()) == 2, "a failed Job is not retried by the next up"
    table = stack.run("jobs").stdout
    assert "doomed" in table and "Failed" in table and "BackoffLimitExceeded" in table
    stack.run("down", str(m))


def test_parallel_completions(stack):
    m, data = job(stack, "batch", 'date +%s.%N >> /data/starts; sleep 1; echo ok',
                  completions=4, parallelism=2)
    stack.run("up", "--wait", "--timeout", "150", str(m), timeout=240)
    j = jobs(stack)["default/batch"]
    assert (j["phase"], j["succeeded"], j["failed"]) == ("Complete", 4, 0)
    assert exit_codes(stack, "batch") == {f"batch-{i}": 0 for i in range(4)}
    assert len((data / "starts").read_text().split()) == 4
    stack.run("down", str(m))
    assert not stack.containers()


INDEXED = """
apiVersion: batch/v1
kind: Job
metadata: {{name: shards}}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  backoffLimitPerIndex: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: localhost/busybox:latest
        imagePullPolicy: Never
        env:
        - name: FROM_ANNOTATION
          valueFrom:
            fieldRef: {{fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
        # Index 1 fails its first attempt (the marker file is on the host), then succeeds.
        command: [sh, -c, 'echo "$JOB_COMPLETION_INDEX $FROM_ANNOTATION $(hostname)" >> /data/$JOB_COMPLETION_INDEX;
                  if [ "$JOB_COMPLETION_INDEX" = 1 ] && [ ! -f /data/once ]; then touch /data/once; exit 7; fi']
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes:
      - name: data
        hostPath: {{path: {data}, type: DirectoryOrCreate}}
"""


def test_indexed_job_gives_each_pod_its_index_and_retries_a_failed_index(stack):
    data = stack.tmp / "shards-data"
    m = stack.write("shards.yaml", INDEXED.format(data=data))
    stack.run("up", "--wait", "--timeout", "150", str(m), timeout=240)
    j = jobs(stack)["default/shards"]
    assert (j["phase"], j["succeeded"], j["failed"], j["completed_indexes"]) == ("Complete", 3, 1, "0-2")
    assert exit_codes(stack, "shards") == {"shards-0-0": 0, "shards-1-0": 7, "shards-1-1": 0, "shards-2-0": 0}
    seen = sorted(line for p in data.iterdir() if p.name[0].isdigit() for line in p.read_text().splitlines())
    assert seen == ["0 0 shards-0", "1 1 shards-1", "1 1 shards-1", "2 2 shards-2"], seen
    owners = {p["name"]: p["owner"] for p in json.loads(stack.run("pods", "-o", "json").stdout)}
    assert owners["shards-1-1"] == "Job/default/shards"
    assert "Job/shards" in stack.run("pods").stdout
    stack.run("down", str(m))
    assert not stack.containers()


FAIL_JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: strict}
spec:
  completions: 4
  parallelism: 2
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: work, operator: In, values: [42]}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, 'case $(hostname) in strict-0) exit 42;; *) trap "exit 0" TERM; sleep 300 & wait;; esac']
"""


def test_pod_failure_policy_fail_job_on_exit_code_42_ends_the_job_at_once(stack):
    m = stack.write("strict.yaml", FAIL_JOB)
    res = stack.run("up", "--wait", "--timeout", "120", str(m), check=False, timeout=240)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "PodFailurePolicy" in out and "exit" in out and "42" in out, out
    j = jobs(stack)["default/strict"]
    assert (j["phase"], j["reason"]) == ("Failed", "PodFailurePolicy")
    assert j["message"] == "container work of pod strict-0 exited with code 42, matching the FailJob rule at index 0"
    assert j["finished"] - j["started"] < 60, "at once, not after the back-off of 6 retries"
    assert exit_codes(stack, "strict") == {"strict-0": 42}, "the running pod went with the Job, the failed one stays"
    table = stack.run("jobs").stdout
    assert "PodFailurePolicy: container work of pod strict-0 exited with code 42" in table, table
    stack.run("down", str(m))
    assert not stack.containers()
