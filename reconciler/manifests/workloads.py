"""The checks that belong to one workload kind beyond a replicated template's (``pods.check_replicated``)."""

from __future__ import annotations

import re
from dataclasses import replace

from reconciler.manifests.checker import Checker
from reconciler.manifests.fields import check_meta
from reconciler.manifests.hostfacts import HostFacts
from reconciler.manifests.pods import MAX_REPLICAS, check_pod_spec, check_replicated
from reconciler.model.workloads import CronJob, DaemonSet, Job, JobSpec, StatefulSet, with_claims

INT_OR_PERCENT = re.compile(r"^\d+%?$")


def check_daemon_set(chk: Checker, obj: DaemonSet, host: HostFacts) -> None:
    check_replicated(chk, obj, host)
    us = obj.spec.update_strategy
    path = ("spec", "updateStrategy")
    if us.type == "OnDelete":
        return  # the pod keeps its revision until it is deleted; rollingUpdate does not apply
    ru = us.rolling_update
    for fname, value in (("maxSurge", ru.max_surge), ("maxUnavailable", ru.max_unavailable)):
        if not INT_OR_PERCENT.match(str(value)):
            chk.error(path + ("rollingUpdate", fname), f"{value!r} must be a number or a percentage like 25%")
    if str(ru.max_surge) in ("0", "0%") and str(ru.max_unavailable) in ("0", "0%"):
        chk.error(path + ("rollingUpdate",), "maxSurge and maxUnavailable cannot both be 0")


def check_job(chk: Checker, obj: Job, host: HostFacts) -> None:
    check_meta(chk, obj.metadata, "job")
    if len(obj.metadata.name) > 240:
        chk.error(("metadata", "name"), "job names are limited to 240 characters (pod suffixes)")
    check_job_spec(chk, obj.spec, host)


def check_job_spec(chk, spec: JobSpec, host: HostFacts) -> None:
    """A Job's spec; paths are the Job's own (``spec.…``), a CronJob passes a checker under jobTemplate."""
    counts = (("completions", spec.completions), ("parallelism", spec.parallelism),
              ("backoffLimit", spec.backoff_limit), ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished))
    for fname, value in counts:
        if value is not None and value < 0:
            chk.error(("spec", fname), "must not be negative")
    if spec.active_deadline_seconds is not None and spec.active_deadline_seconds <= 0:
        chk.error(("spec", "activeDeadlineSeconds"), "must be a positive number of seconds")
    if spec.pod_limit > MAX_REPLICAS:
        what = ("completions × (backoffLimitPerIndex + 1)" if spec.backoff_limit_per_index is not None else
                "completions × (backoffLimit + 1)") if spec.indexed else "completions + backoffLimit + parallelism"
        chk.error(("spec",), f"{what} come to {spec.pod_limit} pods, more than podplay runs for one Job on one "
                  f"host (at most {MAX_REPLICAS})")
    _check_indexed(chk, spec)
    check_meta(chk, spec.template.metadata, "pod", ("spec", "template", "metadata"), named=False)
    tspec = spec.template.spec
    tpath = ("spec", "template", "spec")
    if tspec.restart_policy not in ("Never", "OnFailure"):
        chk.error(tpath + ("restartPolicy",), f"a Job's pods must have restartPolicy Never or OnFailure, not "
                  f"{tspec.restart_policy} (a pod that always restarts never completes)")
    if spec.pod_failure_policy is not None:
        _check_pod_failure_policy(chk, spec)
    check_pod_spec(chk, tspec, tpath, host)
    if spec.parallelism > 1:
        for i, c in enumerate(tspec.containers):
            for j, p in enumerate(c.ports):
                if p.host_port or tspec.host_network:
                    chk.error(tpath + ("containers", i, "ports", j, "hostPort" if p.host_port else "containerPort"),
                              f"parallelism {spec.parallelism} would run pods that all bind port "
                              f"{p.host_port or p.container_port} on the host; use parallelism 1")


def _check_indexed(chk, spec: JobSpec) -> None:
    if spec.completion_mode not in ("NonIndexed", "Indexed"):
        chk.error(("spec", "completionMode"), f"{spec.completion_mode!r} must be NonIndexed or Indexed")
    if spec.indexed and spec.completions is None:
        chk.error(("spec", "completionMode"), "an Indexed Job needs spec.completions (its indexes are 0 to "
                  "completions - 1)")
    if spec.backoff_limit_per_index is not None:
        if not spec.indexed:
            chk.error(("spec", "backoffLimitPerIndex"), "only an Indexed Job (completionMode: Indexed) has it")
        if spec.backoff_limit_per_index < 0:
            chk.error(("spec", "backoffLimitPerIndex"), "must not be negative")
    if spec.max_failed_indexes is not None:
        if spec.backoff_limit_per_index is None:
            chk.error(("spec", "maxFailedIndexes"), "needs spec.backoffLimitPerIndex (indexes fail one by one "
                      "only when each has its own limit)")
        if spec.max_failed_indexes < 0 or spec.max_failed_indexes > spec.wanted:
            chk.error(("spec", "maxFailedIndexes"), f"must be between 0 and completions ({spec.wanted})")


def _check_pod_failure_policy(chk, spec: JobSpec) -> None:
    path = ("spec", "podFailurePolicy")
    tspec = spec.template.spec
    if tspec.restart_policy != "Never":
        chk.error(("spec", "template", "spec", "restartPolicy"), "a Job with a podFailurePolicy needs restartPolicy "
                  f"Never, not {tspec.restart_policy} (a failed container restarted in place is no failed pod)")
    names = {c.name for c in tspec.containers + tspec.init_containers}
    actions = ("FailJob", "FailIndex", "Ignore", "Count")
    for i, rule in enumerate(spec.pod_failure_policy.rules):
        rpath = path + ("rules", i)
        if rule.action not in actions:
            chk.error(rpath + ("action",), f"{rule.action!r} must be one of {', '.join(actions)}")
        if rule.action == "FailIndex" and spec.backoff_limit_per_index is None:
            chk.error(rpath + ("action",), "FailIndex needs an Indexed Job with spec.backoffLimitPerIndex")
        if (rule.on_exit_codes is None) == (not rule.on_pod_conditions):
            chk.error(rpath, "a rule needs exactly one of onExitCodes and onPodConditions")
        if rule.on_pod_conditions:
            chk.warn(rpath + ("onPodConditions",), "never matches on podplay: no pod is ever disrupted here (no "
                     "eviction, preemption or node drain sets DisruptionTarget on one host), and a failed pod's "
                     "other conditions are not matched; use onExitCodes")
        codes = rule.on_exit_codes
        if codes is None:
            continue
        cpath = rpath + ("onExitCodes",)
        if codes.operator not in ("In", "NotIn"):
            chk.error(cpath + ("operator",), f"{codes.operator!r} must be In or NotIn")
        if not codes.values:
            chk.error(cpath + ("values",), "needs at least one exit code")
        if codes.operator == "In" and 0 in codes.values:
            chk.error(cpath + ("values",), "0 cannot be used with In: a container that exits 0 did not fail")
        if len(set(codes.values)) != len(codes.values):
            chk.error(cpath + ("values",), "lists an exit code twice")
        if codes.container_name is not None and codes.container_name not in names:
            chk.error(cpath + ("containerName",), f"no container {codes.container_name!r} in the pod template")


class _Under:
    """The checker of an object seen from a part of it: every path is prefixed (a CronJob's
    jobTemplate is checked by the Job's own rules, its findings placed under jobTemplate)."""

    def __init__(self, chk: Checker, prefix: tuple):
        self.chk, self.prefix = chk, prefix

    def error(self, path, message: str, key: bool = False) -> None:
        self.chk.error(self.prefix + tuple(path), message, key)

    def warn(self, path, message: str, key: bool = False) -> None:
        self.chk.warn(self.prefix + tuple(path), message, key)

    def warn_once(self, path, message: str, key: bool = False, same: str = "") -> None:
        self.chk.warn_once(self.prefix + tuple(path), message, key, same)

    def at(self, path) -> tuple[int, int]:
        return self.chk.at(self.prefix + tuple(path))

    @property
    def failed(self) -> bool:
        return self.chk.failed


CRON_NAME_MAX = 52  # the API server's limit: a run's Job is named <cronjob>-<minutes since the epoch>


def check_cron_job(chk: Checker, obj: CronJob, host: HostFacts) -> None:
    check_meta(chk, obj.metadata, "cronjob")
    spec = obj.spec
    if len(obj.metadata.name) > CRON_NAME_MAX:
        chk.error(("metadata", "name"), f"cronjob names are limited to {CRON_NAME_MAX} characters (each run's "
                  "Job adds the schedule time to it)")
    from reconciler.cron import schedule_problem, zone_problem

    if "TZ=" in spec.schedule:
        chk.error(("spec", "schedule"), "a time zone in the schedule (CRON_TZ=, TZ=) is not accepted: use "
                  "spec.timeZone")
    elif problem := schedule_problem(spec.schedule):
        chk.error(("spec", "schedule"), problem)
    if spec.time_zone is not None and (problem := zone_problem(spec.time_zone)):
        chk.error(("spec", "timeZone"), problem)
    for fname, value in (("startingDeadlineSeconds", spec.starting_deadline_seconds),
                         ("successfulJobsHistoryLimit", spec.successful_jobs_history_limit),
                         ("failedJobsHistoryLimit", spec.failed_jobs_history_limit)):
        if value is not None and value < 0:
            chk.error(("spec", fname), "must not be negative")
    check_meta(chk, spec.job_template.metadata, "job", ("spec", "jobTemplate", "metadata"), named=False)
    check_job_spec(_Under(chk, ("spec", "jobTemplate")), spec.job_template.spec, host)


def check_stateful_set(chk: Checker, obj: StatefulSet, host: HostFacts) -> None:
    # The template's mounts of claim templates name volumes that each pod gets from its claims.
    tmpl = obj.spec.template
    check_replicated(chk, replace(obj, spec=replace(obj.spec, template=replace(tmpl, spec=with_claims(obj, 0)))),
                     host)
    spec = obj.spec
    ru = spec.update_strategy.rolling_update
    ru_path = ("spec", "updateStrategy", "rollingUpdate")
    if ru.partition < 0:
        chk.error(ru_path + ("partition",), "must not be negative")
    if not INT_OR_PERCENT.match(str(ru.max_unavailable)) or str(ru.max_unavailable) in ("0", "0%"):
        chk.error(ru_path + ("maxUnavailable",), f"{ru.max_unavailable!r} must be a number or a percentage like "
                  "25%, and more than 0")
    policy = spec.persistent_volume_claim_retention_policy
    for fname, value in (("whenDeleted", policy.when_deleted), ("whenScaled", policy.when_scaled)):
        if value not in ("Retain", "Delete"):
            chk.error(("spec", "persistentVolumeClaimRetentionPolicy", fname),
                      f"{value!r} must be Retain or Delete")
    names: set[str] = set()
    for i, t in enumerate(spec.volume_claim_templates):
        path = ("spec", "volumeClaimTemplates", i, "metadata", "name")
        name = t.metadata.name
        if not name:
            chk.error(path[:-1], "a volume claim template needs metadata.name (the volume name its pods mount)")
            continue
        if name in names:
            chk.error(path, f"two volume claim templates are named {name!r}")
        names.add(name)
        if not any(m.name == name for c in spec.template.spec.containers + spec.template.spec.init_containers
                   for m in c.volume_mounts):
            chk.warn(path, f"no container mounts {name!r}: its claims are made but not used")
