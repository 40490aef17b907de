"""The workload kinds beyond Pod and Deployment: their frozen dataclasses, and the registry of
every kind the loader builds (``ALL_KINDS``, ``ALL_API_VERSIONS``: ``kube``'s own plus these).

They live beside ``kube`` rather than in it so that each kind's fields and rules stay together;
only the fields a kind acts on are declared (the loader warns about the others, as for every kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model import kube
from reconciler.model.kube import Deployment, LabelSelector, ObjectMeta, PodTemplateSpec


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


# Kinds that expand to `<name>-<ordinal>` pods from spec.template and spec.replicas.
REPLICATED = (Deployment, ReplicaSet, ReplicationController)

ALL_KINDS: dict[str, type] = {
    **kube.KINDS,
    "ReplicaSet": ReplicaSet,
    "ReplicationController": ReplicationController,
}

ALL_API_VERSIONS: dict[str, str] = {
    **kube.API_VERSIONS,
    "ReplicaSet": "apps/v1",
    "ReplicationController": "v1",
}


def selector_of(obj) -> dict[str, str]:
    """The labels a replicated object selects its pods by. A ReplicationController without a
    selector selects its template's labels (the API server defaults it so)."""
    if isinstance(obj, ReplicationController):
        return dict(obj.spec.selector or obj.spec.template.metadata.labels)
    return dict(obj.spec.selector.match_labels)
