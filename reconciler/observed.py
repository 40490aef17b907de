"""PURE types of what is on the host, as the drivers report it (no handles, no I/O).

``observe.observe_host`` fills an ``ObservedHost`` from the drivers; ``diff`` compares it with
the desired state. Containers carry the labels podplay wrote when it created them, which is
how a relist groups them back into pods without trusting podplay's memory.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

# Labels podplay writes on every container it creates (OCI annotations in config.json).
LABEL_POD = "io.podplay.pod"  # "<namespace>/<name>"
LABEL_POD_UID = "io.podplay.pod-uid"
LABEL_CONTAINER = "io.podplay.container"  # container name in the pod spec; "" for infra
LABEL_ROLE = "io.podplay.role"  # infra | init | app
LABEL_SPEC_HASH = "io.podplay.spec-hash"
LABEL_OWNER = "io.podplay.owner"  # ObjectKey text of the manifest object (Pod or Deployment)
LABEL_SOURCE = "io.podplay.source"  # manifest file the pod came from
LABEL_SIDECAR = "io.podplay.sidecar"  # "true" on a native sidecar (an init container with restartPolicy Always)
LABEL_PRE_STOP = "io.podplay.pre-stop"  # the container's preStop handler (JSON), for whoever stops it
LABEL_GRACE = "io.podplay.termination-grace"  # terminationGracePeriodSeconds, for a later teardown
LABEL_STOP_SIGNAL = "io.podplay.stop-signal"  # resolved stop signal of the container
# "true" on an app container with a readiness or startup probe: it is not ready until a probe
# says so (`ps` reads this instead of the pod spec).
LABEL_PROBE_GATED = "io.podplay.probe-gated"


# --- images ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config that decide how a container runs."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerInfo:
    digest: str  # compressed blob digest, as in the manifest
    diff_id: str  # digest of the uncompressed tar, as in the config
    media_type: str
    size: int


@dataclass(frozen=True)
class ImageInfo:
    id: str  # config digest, "sha256:…"
    manifest_digest: str
    names: tuple[str, ...]
    config: ImageConfig
    layers: tuple[LayerInfo, ...]
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    size: int = 0
    created: str = ""


# --- containers and pods --------------------------------------------------------------------

class ContainerState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"
    UNKNOWN = "unknown"  # runc has no record (e.g. after a reboot) but podplay's files remain


@dataclass(frozen=True)
class ObservedContainer:
    id: str
    pod_uid: str
    pod: str  # "<namespace>/<name>"
    name: str  # "" for the infra container
    role: str  # infra | init | app
    state: ContainerState
    spec_hash: str = ""
    image: str = ""
    image_id: str = ""
    pid: int = 0
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass(frozen=True)
class NetworkStatus:
    """What a network attachment gave a pod."""

    network: str
    interface: str = "eth0"
    ip: str = ""
    prefix_length: int = 0
    gateway: str = ""
    mac: str = ""
    ports: tuple[PortMapping, ...] = ()


@dataclass(frozen=True)
class ObservedAttachment:
    pod_uid: str
    status: NetworkStatus
    netns: str = ""


@dataclass(frozen=True)
class ObservedSnapshot:
    key: str  # container id
    rootfs: str
    mounted: bool
    present: bool = True  # its directory under the storage root exists (False: deleted, mount left)


@dataclass(frozen=True)
class ObservedPod:
    """Everything on the host that carries one pod uid."""

    uid: str
    key: str  # "<namespace>/<name>"
    spec_hash: str = ""
    owner: str = ""
    source: str = ""
    infra: ObservedContainer | None = None
    containers: dict[str, ObservedContainer] = field(default_factory=dict)  # by spec name
    init_containers: dict[str, ObservedContainer] = field(default_factory=dict)
    network: ObservedAttachment | None = None
    snapshots: tuple[str, ...] = ()
    has_volumes: bool = False
    grace_period: int = 30
    # Keys of snapshots its containers run on that are gone: the directory deleted, the mount
    # gone, or both (see lost_snapshots).
    lost_snapshots: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def complete(self) -> bool:
        """Infra running (so the namespaces exist); says nothing about app containers."""
        return self.infra is not None and self.infra.state == ContainerState.RUNNING


@dataclass(frozen=True)
class ObservedHost:
    pods: dict[str, ObservedPod] = field(default_factory=dict)  # by uid
    claims: tuple[str, ...] = ()  # "<namespace>/<claim>" named volumes that exist
    images: dict[str, str] = field(default_factory=dict)  # reference → image id known locally
    services: dict[str, str] = field(default_factory=dict)  # Service ref → hash of the entry the host serves
    service_hosts: str = ""  # hash of the Services' names written into the pods' /etc/hosts
    cluster_ips_elsewhere: tuple[str, ...] = ()  # ClusterIPs other storage roots serve on this host

    def pods_named(self, key: str) -> list[ObservedPod]:
        return [p for p in self.pods.values() if p.key == key]


# --- grouping what the drivers list into pods ----------------------------------------------------

def snapshot_uid(key: str) -> str:
    """Snapshot keys are container ids, "<pod uid>.<container name>"."""
    return key.split(".", 1)[0]


def lost_snapshots(containers: Iterable[ObservedContainer], snapshots: Iterable[ObservedSnapshot]) -> list[str]:
    """Snapshot keys whose root filesystem is gone from under a container that uses it: the
    snapshot's directory deleted, its mount gone, or both (the container id is the key). A
    container that is not there any more, or is UNKNOWN (a reboot took every mount), is not
    counted: other repairs cover it."""
    snaps = {s.key: s for s in snapshots}
    lost = {s.key for s in snaps.values() if not s.present}
    for c in containers:
        if c.role == "infra" or c.state == ContainerState.UNKNOWN:
            continue
        s = snaps.get(c.id)
        if s is None or not s.mounted:
            lost.add(c.id)
    return sorted(lost)


def group_pods(containers: Iterable[ObservedContainer], attachments: Iterable[ObservedAttachment] = (),
               snapshots: Iterable[str] = (), pod_volumes: Iterable[str] = (),
               lost: Iterable[str] = ()) -> dict[str, ObservedPod]:
    """Pod instances by uid, from everything the drivers list that carries a pod uid.

    ``observe_host`` passes all four lists, so that leftovers of a crash (a snapshot without a
    container, an attachment without an infra) are pods to clean up; ``ps`` passes containers and
    attachments only (a pod it lists has containers). The pod's labels (owner, source, grace
    period) are read from its infra container, else from its first app or init container."""
    attachments = {a.pod_uid: a for a in attachments}
    pod_volumes = set(pod_volumes)
    infra: dict[str, ObservedContainer] = {}
    apps: dict[str, dict[str, ObservedContainer]] = {}
    inits: dict[str, dict[str, ObservedContainer]] = {}
    keys: dict[str, str] = {}
    for c in containers:
        keys.setdefault(c.pod_uid, c.pod)
        if c.role == "infra":
            infra[c.pod_uid] = c
        elif c.role == "init":
            inits.setdefault(c.pod_uid, {})[c.name] = c
        else:
            apps.setdefault(c.pod_uid, {})[c.name] = c
    by_uid: dict[str, list[str]] = {}
    for key in snapshots:
        by_uid.setdefault(snapshot_uid(key), []).append(key)
    lost_by_uid: dict[str, list[str]] = {}
    for key in lost:
        lost_by_uid.setdefault(snapshot_uid(key), []).append(key)

    pods = {}
    for uid in sorted(set(keys) | set(attachments) | set(by_uid) | pod_volumes):
        labelled = infra.get(uid) or next(iter({**apps.get(uid, {}), **inits.get(uid, {})}.values()), None)
        labels = labelled.labels if labelled is not None else {}
        first = infra.get(uid) or next(iter(apps.get(uid, {}).values()), None)
        try:
            grace = int(labels.get(LABEL_GRACE, "30"))
        except ValueError:
            grace = 30
        pods[uid] = ObservedPod(
            uid=uid, key=keys.get(uid, ""), spec_hash=first.spec_hash if first else "",
            owner=labels.get(LABEL_OWNER, ""), source=labels.get(LABEL_SOURCE, ""),
            infra=infra.get(uid), containers=apps.get(uid, {}), init_containers=inits.get(uid, {}),
            network=attachments.get(uid), snapshots=tuple(sorted(by_uid.get(uid, ()))),
            has_volumes=uid in pod_volumes, grace_period=grace,
            lost_snapshots=tuple(sorted(lost_by_uid.get(uid, ()))),
        )
    return pods
