"""Indexed Jobs and podFailurePolicy on the fake host, with an injected clock: each index's pods,
its name, env, annotation and hostname; a failed index retried, backoffLimitPerIndex and
maxFailedIndexes; the policy's FailJob, FailIndex, Ignore and Count rules."""

from __future__ import annotations

import time

import pytest

from reconciler.desired import container_id
from reconciler.errors import ManifestError
from tests.engine.test_jobs import created, job_pods, status

INDEXED = """apiVersion: batch/v1
kind: Job
metadata:
  name: shard
spec:
  completions: {completions}
  parallelism: {parallelism}
  completionMode: Indexed{extra}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
        command: [sh, -c, "work on $JOB_COMPLETION_INDEX"]
"""


def indexed(completions=3, parallelism=3, extra="") -> str:
    return INDEXED.format(completions=completions, parallelism=parallelism, extra=extra)


def exits(engine, codes: dict[str, int], job: str = "default/shard") -> None:
    """The pod named `name` exits with codes[name] as soon as it starts."""
    pods = {d.name: d for d in engine.up(dry_run=True).desired.job_pods[job]}
    for name, code in codes.items():
        engine.host.exit_codes[container_id(pods[name].uid, "work")] = code


def test_each_index_gets_its_pod_env_annotation_and_hostname(engine):
    engine.write("job.yaml", indexed())
    exits(engine, {"shard-0-0": 0, "shard-1-0": 0, "shard-2-0": 0})
    r = engine.up(now=time.time())
    assert created(r) == ["shard-0-0", "shard-1-0", "shard-2-0"]
    pod = r.desired.pods["default/shard-1-0"]
    assert pod.hostname == "shard-1"
    assert pod.meta.annotations["batch.kubernetes.io/job-completion-index"] == "1"
    assert pod.meta.labels["batch.kubernetes.io/job-completion-index"] == "1"
    assert ("JOB_COMPLETION_INDEX", "1") in [(e.name, e.value) for e in pod.containers[0].env]
    s = status(engine.up(now=time.time()))
    assert (s.phase, s.succeeded, s.completed_indexes) == ("Complete", 3, "0-2")


def test_downward_api_reads_the_index_annotation(engine):
    engine.write("job.yaml", indexed(completions=2).replace(
        '        command: [sh, -c, "work on $JOB_COMPLETION_INDEX"]\n',
        "        env:\n        - name: IDX\n          valueFrom: {fieldRef: {fieldPath: \"metadata.annotations"
        "['batch.kubernetes.io/job-completion-index']\"}}\n"))
    r = engine.up(dry_run=True)
    env = {e.name: e.value for e in r.desired.job_pods["default/shard"][-1].containers[0].env}
    assert env["IDX"] == "1" == env["JOB_COMPLETION_INDEX"]


def test_a_failed_index_is_retried_under_a_new_name_and_completions_count_per_index(engine):
    engine.write("job.yaml", indexed(completions=3, parallelism=2))
    exits(engine, {"shard-0-0": 1, "shard-1-0": 0, "shard-0-1": 0, "shard-2-0": 0})
    t0 = time.time()
    assert created(engine.up(now=t0)) == ["shard-0-0", "shard-1-0"]
    r = engine.up(now=t0 + 1)  # index 0 failed: it waits its back-off; index 2 takes the free slot
    assert created(r) == ["shard-2-0"]
    s = status(r)
    assert (s.succeeded, s.failed, s.completed_indexes) == (1, 1, "1")
    assert created(engine.up(now=t0 + 11)) == ["shard-0-1"]
    s = status(engine.up(now=t0 + 12))
    assert (s.phase, s.succeeded, s.failed, s.completed_indexes) == ("Complete", 3, 1, "0-2")
    assert job_pods(engine)["default/shard-0-0"] == ("exited", 1), "the failed attempt stays, with its logs"


def test_backoff_limit_per_index_fails_the_index_and_the_job_once_every_index_is_done(engine):
    engine.write("job.yaml", indexed(extra="\n  backoffLimitPerIndex: 1"))
    exits(engine, {"shard-0-0": 0, "shard-1-0": 2, "shard-1-1": 2, "shard-2-0": 0})
    t0 = time.time()
    engine.up(now=t0)
    engine.up(now=t0 + 1)
    assert created(engine.up(now=t0 + 11)) == ["shard-1-1"]
    s = status(engine.up(now=t0 + 12))
    assert (s.phase, s.reason, s.completed_indexes, s.failed_indexes) == ("Failed", "FailedIndexes", "0,2", "1")


def test_max_failed_indexes_fails_the_job_as_soon_as_too_many_indexes_failed(engine):
    engine.write("job.yaml", indexed(completions=4, parallelism=2,
                                     extra="\n  backoffLimitPerIndex: 0\n  maxFailedIndexes: 0"))
    exits(engine, {"shard-0-0": 0, "shard-1-0": 5})
    t0 = time.time()
    engine.up(now=t0)
    s = status(engine.up(now=t0 + 1))
    assert (s.phase, s.reason, s.failed_indexes) == ("Failed", "MaxFailedIndexesExceeded", "1")
    assert "more than maxFailedIndexes 0" in s.message
    assert "default/shard-2-0" not in job_pods(engine), "no index starts after the Job failed"


POLICY_JOB = """apiVersion: batch/v1
kind: Job
metadata:
  name: crunch
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  podFailurePolicy:
    rules:
{rules}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
        command: [sh, -c, "do the work"]
"""


def policy_job(rules: str, completions=1, parallelism=1, backoff=6) -> str:
    return POLICY_JOB.format(rules=rules, completions=completions, parallelism=parallelism, backoff=backoff)


def test_fail_job_on_an_exit_code_ends_the_job_at_once_with_its_reason(engine):
    engine.write("job.yaml", policy_job("    - {action: FailJob, onExitCodes: {operator: In, values: [42]}}",
                                        completions=3, parallelism=2))
    exits(engine, {"crunch-0": 42}, "default/crunch")
    t0 = time.time()
    engine.up(now=t0)
    r = engine.up(now=t0 + 1)
    s = status(r)
    assert (s.phase, s.reason) == ("Failed", "PodFailurePolicy")
    assert s.message == "container work of pod crunch-0 exited with code 42, matching the FailJob rule at index 0"
    assert job_pods(engine) == {"default/crunch-0": ("exited", 42)}, "the running pod goes, the failed one stays"
    assert status(engine.up(now=t0 + 100)).message == s.message, "the reason stays with the finished Job"


def test_ignore_does_not_count_the_failure_nor_wait_a_back_off(engine):
    engine.write("job.yaml", policy_job("    - {action: Ignore, onExitCodes: {operator: In, values: [137]}}",
                                        backoff=0))
    exits(engine, {"crunch-0": 137, "crunch-1": 0}, "default/crunch")
    t0 = time.time()
    engine.up(now=t0)
    r = engine.up(now=t0 + 1)
    assert created(r) == ["crunch-1"] and status(r).failed == 0
    assert status(engine.up(now=t0 + 2)).phase == "Complete"


def test_count_and_not_in_with_a_container_name_fall_through_to_the_backoff_limit(engine):
    rules = ("    - {action: Count, onExitCodes: {containerName: work, operator: NotIn, values: [1, 2]}}\n"
             "    - {action: FailJob, onExitCodes: {operator: In, values: [3]}}")
    engine.write("job.yaml", policy_job(rules, backoff=0))
    exits(engine, {"crunch-0": 3}, "default/crunch")
    t0 = time.time()
    engine.up(now=t0)
    s = status(engine.up(now=t0 + 1))
    assert (s.phase, s.reason) == ("Failed", "BackoffLimitExceeded"), "3 is NotIn [1, 2]: Count matched first"


def test_fail_index_fails_only_that_index(engine):
    engine.write("job.yaml", indexed(extra="""
  backoffLimitPerIndex: 3
  podFailurePolicy:
    rules:
    - {action: FailIndex, onExitCodes: {operator: In, values: [9]}}"""))
    exits(engine, {"shard-0-0": 0, "shard-1-0": 9, "shard-2-0": 0})
    t0 = time.time()
    engine.up(now=t0)
    s = status(engine.up(now=t0 + 1))
    assert (s.phase, s.reason, s.failed_indexes, s.completed_indexes) == ("Failed", "FailedIndexes", "1", "0,2")
    assert "default/shard-1-1" not in job_pods(engine), "a failed index is not retried"


def test_policy_checks_name_their_fields(engine):
    engine.write("job.yaml", policy_job(
        "    - {action: FailIndex, onExitCodes: {operator: In, values: [0, 1], containerName: nope}}\n"
        "    - {action: Ignore, onPodConditions: [{type: DisruptionTarget, status: 'True'}]}").replace(
        "restartPolicy: Never", "restartPolicy: OnFailure"))
    with pytest.raises(ManifestError) as err:
        engine.up()
    text = str(err.value)
    assert "spec.template.spec.restartPolicy: a Job with a podFailurePolicy needs restartPolicy Never" in text
    assert "spec.podFailurePolicy.rules[0].action: FailIndex needs an Indexed Job" in text
    assert "spec.podFailurePolicy.rules[0].onExitCodes.values: 0 cannot be used with In" in text
    assert "spec.podFailurePolicy.rules[0].onExitCodes.containerName: no container 'nope'" in text


def test_on_pod_conditions_is_accepted_with_a_warning_that_it_never_matches(engine):
    engine.write("job.yaml", policy_job("    - {action: Ignore, onPodConditions: "
                                        "[{type: DisruptionTarget, status: 'True'}]}"))
    exits(engine, {"crunch-0": 1}, "default/crunch")
    r = engine.up(now=time.time())
    [warning] = [str(d) for d in r.manifests.warnings if "onPodConditions" in str(d)]
    assert "spec.podFailurePolicy.rules[0].onPodConditions: never matches on podplay" in warning
    assert "DisruptionTarget" in warning
    assert status(engine.up(now=time.time() + 1)).failed == 1, "the failure is counted: no rule matched"


def test_indexed_checks_name_their_fields(engine):
    engine.write("job.yaml", """apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimitPerIndex: 1
  maxFailedIndexes: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{name: work, image: busybox:1.36}]
""")
    with pytest.raises(ManifestError) as err:
        engine.up()
    text = str(err.value)
    assert "spec.backoffLimitPerIndex: only an Indexed Job" in text
    assert "spec.maxFailedIndexes: must be between 0 and completions (1)" in text
