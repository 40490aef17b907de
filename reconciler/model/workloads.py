"""The workload kinds beyond Pod and Deployment: their frozen dataclasses, and the registry of
every kind the loader builds (``ALL_KINDS``, ``ALL_API_VERSIONS``: ``kube``'s own plus these).

They live beside ``kube`` rather than in it so that each kind's fields and rules stay together;
only the fields a kind acts on are declared (the loader warns about the others, as for every kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model import kube
from reconciler.model.kube import (
    Deployment,
    DeploymentStrategy,
    IntOrStr,
    LabelSelector,
    ObjectMeta,
    PersistentVolumeClaim,
    PodSpec,
    PodTemplateSpec,
    PVCSource,
    RollingUpdate,
    Volume,
)


@dataclass(frozen=True)
class ReplicaSetSpec:
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    replicas: int = 1
    selector: LabelSelector = field(default_factory=LabelSelector)


@dataclass(frozen=True)
class ReplicaSet:
    """Replicas of a template and nothing more: no revisions and no rolling update (a changed
    template replaces the replicas at once, as a Pod's change replaces that pod)."""

    metadata: ObjectMeta
    spec: ReplicaSetSpec
    api_version: str = "apps/v1"
    kind: str = "ReplicaSet"


@dataclass(frozen=True)
class ReplicationControllerSpec:
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    replicas: int = 1
    selector: dict[str, str] = field(default_factory=dict)  # a plain map here, not a LabelSelector


@dataclass(frozen=True)
class ReplicationController:
    metadata: ObjectMeta
    spec: ReplicationControllerSpec
    api_version: str = "v1"
    kind: str = "ReplicationController"


@dataclass(frozen=True)
class DaemonSetRollingUpdate:
    max_surge: IntOrStr = 0  # a DaemonSet's defaults: the old pod goes before the new one comes
    max_unavailable: IntOrStr = 1


@dataclass(frozen=True)
class DaemonSetUpdateStrategy:
    type: str = "RollingUpdate"  # or OnDelete: a template change waits for the pod to be deleted
    rolling_update: DaemonSetRollingUpdate = field(default_factory=DaemonSetRollingUpdate)


@dataclass(frozen=True)
class DaemonSetSpec:
    """One host is one node: a DaemonSet runs exactly one pod, `<name>-0`. The properties give
    it the shape of a one-replica Deployment, so that revisions, pins and the rolling-update
    planner serve both kinds rather than being copied."""

    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    selector: LabelSelector = field(default_factory=LabelSelector)
    update_strategy: DaemonSetUpdateStrategy = field(default_factory=DaemonSetUpdateStrategy)
    min_ready_seconds: int = 0
    revision_history_limit: int = 10

    @property
    def replicas(self) -> int:
        return 1

    @property
    def strategy(self) -> DeploymentStrategy:
        ru = self.update_strategy.rolling_update
        return DeploymentStrategy("RollingUpdate", RollingUpdate(ru.max_surge, ru.max_unavailable))

    @property
    def progress_deadline_seconds(self) -> int:
        return 600  # a DaemonSet has no such field; a Deployment's default bounds a stuck update


@dataclass(frozen=True)
class DaemonSet:
    metadata: ObjectMeta
    spec: DaemonSetSpec
    api_version: str = "apps/v1"
    kind: str = "DaemonSet"


@dataclass(frozen=True)
class PodFailurePolicyOnExitCodes:
    operator: str = "In"  # In | NotIn
    values: tuple[int, ...] = ()
    container_name: str | None = None


@dataclass(frozen=True)
class PodFailurePolicyOnPodCondition:
    type: str = ""
    status: str = "True"


@dataclass(frozen=True)
class PodFailurePolicyRule:
    action: str = ""  # FailJob | FailIndex | Ignore | Count
    on_exit_codes: PodFailurePolicyOnExitCodes | None = None
    on_pod_conditions: tuple[PodFailurePolicyOnPodCondition, ...] = ()


@dataclass(frozen=True)
class PodFailurePolicy:
    rules: tuple[PodFailurePolicyRule, ...] = ()


INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # also a label, as Kubernetes 1.28+ sets it


@dataclass(frozen=True)
class JobSpec:
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    completions: int | None = None  # unset: one pod's success completes the Job
    parallelism: int = 1
    backoff_limit: int | None = None  # unset: 6, or no limit with backoffLimitPerIndex (see `failure_limit`)
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    suspend: bool = False
    completion_mode: str = "NonIndexed"  # or Indexed: each index 0…completions-1 succeeds once
    backoff_limit_per_index: int | None = None  # Indexed: failures an index may have before it fails
    max_failed_indexes: int | None = None  # Indexed with backoffLimitPerIndex: more fail the Job at once
    pod_failure_policy: PodFailurePolicy | None = None

    @property
    def indexed(self) -> bool:
        return self.completion_mode == "Indexed"

    @property
    def wanted(self) -> int:
        """Successful pods that complete the Job."""
        return 1 if self.completions is None else self.completions

    @property
    def failure_limit(self) -> int | None:
        """The failures of the whole Job that fail it: backoffLimit, 6 by default — or none by
        default when each index has its own (backoffLimitPerIndex), as in Kubernetes."""
        if self.backoff_limit is not None:
            return self.backoff_limit
        return None if self.backoff_limit_per_index is not None else 6

    @property
    def attempts(self) -> int:
        """Indexed: the pods one index may ever have (its first and every retry its limit allows)."""
        if self.backoff_limit_per_index is not None:
            limit = self.backoff_limit_per_index
            if self.backoff_limit is not None:
                limit = min(limit, self.backoff_limit)
            return limit + 1
        return (self.failure_limit or 0) + 1

    @property
    def pod_limit(self) -> int:
        """Pods a run can ever create: every completion, every failure backoffLimit allows, and
        the ones still running when the last allowed failure happens (the names `<job>-<i>`
        are never reused within a run, so that a failed pod and its logs stay). Indexed, each
        index has its own names, `<job>-<index>-<attempt>`."""
        if self.indexed:
            return self.wanted * self.attempts
        return self.wanted + (self.failure_limit or 0) + max(self.parallelism, 1)


def job_pod_names(name: str, spec: JobSpec, limit: int | None = None) -> list[tuple[str, int]]:
    """(pod name, index) of every pod a run of Job `name` may create, in the order it creates
    them (the index is the pod's position for a NonIndexed Job, its completion index else)."""
    if spec.indexed:
        return [(f"{name}-{i}-{a}", i) for i in range(spec.wanted) for a in range(spec.attempts)][:limit]
    return [(f"{name}-{i}", i) for i in range(spec.pod_limit if limit is None else min(spec.pod_limit, limit))]


@dataclass(frozen=True)
class Job:
    metadata: ObjectMeta
    spec: JobSpec
    api_version: str = "batch/v1"
    kind: str = "Job"


@dataclass(frozen=True)
class StatefulSetRollingUpdate:
    partition: int = 0  # ordinals below it stay on the revision they run
    max_unavailable: IntOrStr = 1  # pods updated at once (each counts as unavailable meanwhile)


@dataclass(frozen=True)
class StatefulSetUpdateStrategy:
    type: str = "RollingUpdate"  # or OnDelete: a template change waits for each pod to be deleted
    rolling_update: StatefulSetRollingUpdate = field(default_factory=StatefulSetRollingUpdate)


@dataclass(frozen=True)
class ClaimRetentionPolicy:
    """What happens to a StatefulSet's claims (persistentVolumeClaimRetentionPolicy)."""

    when_deleted: str = "Retain"  # Retain | Delete: the set is removed (`down`, pruned)
    when_scaled: str = "Retain"  # Retain | Delete: its ordinals beyond replicas go


@dataclass(frozen=True)
class StatefulSetSpec:
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    replicas: int = 1
    selector: LabelSelector = field(default_factory=LabelSelector)
    service_name: str = ""  # each pod's DNS subdomain: <pod>.<serviceName>.<namespace>.svc.cluster.local
    pod_management_policy: str = "OrderedReady"  # or Parallel
    update_strategy: StatefulSetUpdateStrategy = field(default_factory=StatefulSetUpdateStrategy)
    volume_claim_templates: tuple[PersistentVolumeClaim, ...] = ()
    persistent_volume_claim_retention_policy: ClaimRetentionPolicy = field(default_factory=ClaimRetentionPolicy)


@dataclass(frozen=True)
class StatefulSet:
    """Pods `<name>-0…` with stable names, each with its own claims (`<template>-<name>-<i>`, kept
    when it is scaled away), started, stopped and updated one at a time (reconciler.statefulsets)."""

    metadata: ObjectMeta
    spec: StatefulSetSpec
    api_version: str = "apps/v1"
    kind: str = "StatefulSet"


@dataclass(frozen=True)
class JobTemplateSpec:
    metadata: ObjectMeta = field(default_factory=lambda: ObjectMeta(""))
    spec: JobSpec = field(default_factory=JobSpec)


@dataclass(frozen=True)
class CronJobSpec:
    schedule: str = ""
    job_template: JobTemplateSpec = field(default_factory=JobTemplateSpec)
    time_zone: str | None = None
    concurrency_policy: str = "Allow"  # Allow | Forbid | Replace
    suspend: bool = False
    starting_deadline_seconds: int | None = None
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 1


@dataclass(frozen=True)
class CronJob:
    metadata: ObjectMeta
    spec: CronJobSpec
    api_version: str = "batch/v1"
    kind: str = "CronJob"


# Kinds that expand to `<name>-<ordinal>` pods from spec.template and spec.replicas.
REPLICATED = (Deployment, ReplicaSet, ReplicationController, DaemonSet, StatefulSet)
# Kinds whose template changes roll out (revisions, pins, maxSurge/maxUnavailable waves):
# `desired.deployments` holds them, and the rollout code keys on these owner kinds.
ROLLED_OUT = (Deployment, DaemonSet)
ROLLED_OUT_KINDS = frozenset(k.__name__ for k in ROLLED_OUT)

# The kinds this module adds (each has a spec the loader requires).
WORKLOAD_KINDS = frozenset({"ReplicaSet", "ReplicationController", "DaemonSet", "Job", "CronJob", "StatefulSet"})

ALL_KINDS: dict[str, type] = {
    **kube.KINDS,
    "ReplicaSet": ReplicaSet,
    "ReplicationController": ReplicationController,
    "DaemonSet": DaemonSet,
    "Job": Job,
    "CronJob": CronJob,
    "StatefulSet": StatefulSet,
}

ALL_API_VERSIONS: dict[str, str] = {
    **kube.API_VERSIONS,
    "ReplicaSet": "apps/v1",
    "ReplicationController": "v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "StatefulSet": "apps/v1",
}


def selector_of(obj) -> dict[str, str]:
    """The labels a replicated object selects its pods by. A ReplicationController without a
    selector selects its template's labels (the API server defaults it so)."""
    if isinstance(obj, ReplicationController):
        return dict(obj.spec.selector or obj.spec.template.metadata.labels)
    return dict(obj.spec.selector.match_labels)


def claim_name(template: str, set_name: str, ordinal: int) -> str:
    """The claim of ordinal `ordinal` from a volume claim template, named as Kubernetes names it."""
    return f"{template}-{set_name}-{ordinal}"


def with_claims(sts: StatefulSet, ordinal: int) -> PodSpec:
    """The pod spec of ordinal `ordinal`: a volume per claim template, bound to that ordinal's own
    claim (a template volume of the same name gives way to it, as in Kubernetes)."""
    from dataclasses import replace

    spec = sts.spec.template.spec
    names = {t.metadata.name for t in sts.spec.volume_claim_templates if t.metadata.name}
    claims = tuple(Volume(t.metadata.name, persistent_volume_claim=PVCSource(
        claim_name(t.metadata.name, sts.metadata.name, ordinal))) for t in sts.spec.volume_claim_templates
        if t.metadata.name)
    return replace(spec, volumes=tuple(v for v in spec.volumes if v.name not in names) + claims)
