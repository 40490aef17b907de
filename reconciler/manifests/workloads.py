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
        chk.error(("spec",), f"completions + backoffLimit + parallelism come to {spec.pod_limit} pods, more than "
                  f"podplay runs for one Job on one host (at most {MAX_REPLICAS})")
    if spec.completion_mode == "Indexed":
        chk.error(("spec", "completionMode"), "Indexed is not supported by podplay: use NonIndexed (the default)")
    check_meta(chk, spec.template.metadata, "pod", ("spec", "template", "metadata"), named=False)
    tspec = spec.template.spec
    tpath = ("spec", "template", "spec")
    if tspec.restart_policy not in ("Never", "OnFailure"):
        chk.error(tpath + ("restartPolicy",), f"a Job's pods must have restartPolicy Never or OnFailure, not "
                  f"{tspec.restart_policy} (a pod that always restarts never completes)")
    check_pod_spec(chk, tspec, tpath, host)
    if spec.parallelism > 1:
        for i, c in enumerate(tspec.containers):
            for j, p in enumerate(c.ports):
                if p.host_port or tspec.host_network:
                    chk.error(tpath + ("containers", i, "ports", j, "hostPort" if p.host_port else "containerPort"),
                              f"parallelism {spec.parallelism} would run pods that all bind port "
                              f"{p.host_port or p.container_port} on the host; use parallelism 1")


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
