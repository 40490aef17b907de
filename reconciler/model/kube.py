"""The subset of the Kubernetes API that podplay acts on, as frozen dataclasses.

Defaults are the API server's defaults, so a model object means the same thing a cluster
would make of the same YAML. A field missing here is a field podplay does not act on; the
loader warns about such fields once (see ``convert.build``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model.convert import json_name

IntOrStr = int | str


@dataclass(frozen=True, order=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        kind, namespace, name = text.split("/", 2)
        return cls(kind, namespace, name)


@dataclass(frozen=True)
class ObjectMeta:
    name: str = ""
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


# --- environment ---------------------------------------------------------------------------

@dataclass(frozen=True)
class KeySelector:
    name: str = ""
    key: str = ""
    optional: bool = False


@dataclass(frozen=True)
class ObjectFieldSelector:
    field_path: str = ""
    api_version: str = "v1"


@dataclass(frozen=True)
class ResourceFieldSelector:
    resource: str = ""
    container_name: str = ""
    divisor: IntOrStr = "1"


@dataclass(frozen=True)
class EnvVarSource:
    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


@dataclass(frozen=True)
class RefSource:
    name: str = ""
    optional: bool = False


@dataclass(frozen=True)
class EnvFromSource:
    prefix: str = ""
    config_map_ref: RefSource | None = None
    secret_ref: RefSource | None = None


# --- container ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    host_port: int | None = None
    protocol: str = "TCP"
    host_ip: str = json_name("hostIP", default="")
    name: str = ""


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class ResourceRequirements:
    limits: dict[str, IntOrStr] = field(default_factory=dict)
    requests: dict[str, IntOrStr] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    add: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeccompProfile:
    type: str = "RuntimeDefault"
    localhost_profile: str = ""


@dataclass(frozen=True)
class SecurityContext:
    privileged: bool | None = None
    allow_privilege_escalation: bool | None = None
    capabilities: Capabilities | None = None
    read_only_root_filesystem: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    seccomp_profile: SeccompProfile | None = None


@dataclass(frozen=True)
class ExecAction:
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class HTTPHeader:
    name: str
    value: str


@dataclass(frozen=True)
class HTTPGetAction:
    port: IntOrStr
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    http_headers: tuple[HTTPHeader, ...] = ()


@dataclass(frozen=True)
class TCPSocketAction:
    port: IntOrStr
    host: str = ""


@dataclass(frozen=True)
class GRPCAction:
    port: int
    service: str = ""


@dataclass(frozen=True)
class Probe:
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class SleepAction:
    seconds: int = 0


@dataclass(frozen=True)
class LifecycleHandler:
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    sleep: SleepAction | None = None
    tcp_socket: TCPSocketAction | None = None  # accepted by the API, never run by the kubelet: refused


@dataclass(frozen=True)
class Lifecycle:
    stop_signal: str = ""
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


@dataclass(frozen=True)
class Container:
    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    volume_mounts: tuple[VolumeMount, ...] = ()
    resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    security_context: SecurityContext | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Lifecycle | None = None
    image_pull_policy: str = ""
    restart_policy: str = ""  # an init container's "Always": a native sidecar (started, kept running)
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False


# --- volumes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class EmptyDirSource:
    medium: str = ""
    size_limit: IntOrStr | None = None


@dataclass(frozen=True)
class HostPathSource:
    path: str
    type: str = ""


@dataclass(frozen=True)
class ConfigMapVolumeSource:
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool = False


@dataclass(frozen=True)
class SecretVolumeSource:
    secret_name: str = ""
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool = False


@dataclass(frozen=True)
class DownwardAPIVolumeFile:
    path: str
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    mode: int | None = None


@dataclass(frozen=True)
class DownwardAPIVolumeSource:
    items: tuple[DownwardAPIVolumeFile, ...] = ()
    default_mode: int | None = None


@dataclass(frozen=True)
class ConfigMapProjection:
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class SecretProjection:
    name: str = ""
    items: tuple[KeyToPath, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class DownwardAPIProjection:
    items: tuple[DownwardAPIVolumeFile, ...] = ()


@dataclass(frozen=True)
class ServiceAccountTokenProjection:
    """Modelled to be refused by name: minting a token needs an API server."""

    path: str = ""
    audience: str = ""
    expiration_seconds: int = 3600


@dataclass(frozen=True)
class VolumeProjection:
    config_map: ConfigMapProjection | None = None
    secret: SecretProjection | None = None
    downward_api: DownwardAPIProjection | None = json_name("downwardAPI", default=None)
    service_account_token: ServiceAccountTokenProjection | None = None


@dataclass(frozen=True)
class ProjectedVolumeSource:
    sources: tuple[VolumeProjection, ...] = ()
    default_mode: int | None = None


@dataclass(frozen=True)
class ImageVolumeSource:
    reference: str = ""
    pull_policy: str = ""


@dataclass(frozen=True)
class PVCSource:
    claim_name: str
    read_only: bool = False


@dataclass(frozen=True)
class Volume:
    name: str
    empty_dir: EmptyDirSource | None = None
    host_path: HostPathSource | None = None
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    persistent_volume_claim: PVCSource | None = None
    downward_api: DownwardAPIVolumeSource | None = json_name("downwardAPI", default=None)
    projected: ProjectedVolumeSource | None = None
    image: ImageVolumeSource | None = None


# --- pod ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sysctl:
    name: str
    value: str


@dataclass(frozen=True)
class PodSecurityContext:
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    sysctls: tuple[Sysctl, ...] = ()
    seccomp_profile: SeccompProfile | None = None


@dataclass(frozen=True)
class HostAlias:
    ip: str
    hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodDNSConfigOption:
    name: str
    value: str | None = None


@dataclass(frozen=True)
class PodDNSConfig:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[PodDNSConfigOption, ...] = ()


@dataclass(frozen=True)
class LocalObjectReference:
    name: str = ""


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    restart_policy: str = "Always"
    termination_grace_period_seconds: int = 30
    host_network: bool = False
    host_pid: bool = json_name("hostPID", default=False)
    host_ipc: bool = json_name("hostIPC", default=False)
    host_users: bool = True
    share_process_namespace: bool = False
    hostname: str = ""
    host_aliases: tuple[HostAlias, ...] = ()
    dns_policy: str = "ClusterFirst"
    dns_config: PodDNSConfig | None = None
    security_context: PodSecurityContext = field(default_factory=PodSecurityContext)
    image_pull_secrets: tuple[LocalObjectReference, ...] = ()
    enable_service_links: bool = True  # the kubelet's FOO_SERVICE_HOST… variables of the namespace's Services


@dataclass(frozen=True)
class Pod:
    metadata: ObjectMeta
    spec: PodSpec
    api_version: str = "v1"
    kind: str = "Pod"


# --- workloads and config -------------------------------------------------------------------

@dataclass(frozen=True)
class LabelSelector:
    match_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodTemplateSpec:
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PodSpec = field(default_factory=PodSpec)


@dataclass(frozen=True)
class RollingUpdate:
    max_surge: IntOrStr = "25%"
    max_unavailable: IntOrStr = "25%"


@dataclass(frozen=True)
class DeploymentStrategy:
    type: str = "RollingUpdate"
    rolling_update: RollingUpdate = field(default_factory=RollingUpdate)


@dataclass(frozen=True)
class DeploymentSpec:
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    replicas: int = 1
    selector: LabelSelector = field(default_factory=LabelSelector)
    strategy: DeploymentStrategy = field(default_factory=DeploymentStrategy)
    min_ready_seconds: int = 0
    revision_history_limit: int = 10
    progress_deadline_seconds: int = 600
    paused: bool = False


@dataclass(frozen=True)
class Deployment:
    metadata: ObjectMeta
    spec: DeploymentSpec
    api_version: str = "apps/v1"
    kind: str = "Deployment"


@dataclass(frozen=True)
class ConfigMap:
    metadata: ObjectMeta
    data: dict[str, str] = field(default_factory=dict)
    binary_data: dict[str, bytes] = field(default_factory=dict)
    immutable: bool = False
    api_version: str = "v1"
    kind: str = "ConfigMap"

    def items(self) -> dict[str, bytes]:
        """Every key with its bytes (text keys UTF-8 encoded)."""
        out = {k: v.encode() for k, v in self.data.items()}
        out.update(self.binary_data)
        return out


@dataclass(frozen=True)
class Secret:
    metadata: ObjectMeta
    data: dict[str, bytes] = field(default_factory=dict)
    string_data: dict[str, str] = field(default_factory=dict)
    type: str = "Opaque"
    immutable: bool = False
    api_version: str = "v1"
    kind: str = "Secret"

    def items(self) -> dict[str, bytes]:
        """Every key with its bytes; stringData wins over data, as the API server merges it."""
        out = dict(self.data)
        out.update({k: v.encode() for k, v in self.string_data.items()})
        return out


@dataclass(frozen=True)
class PVCResources:
    requests: dict[str, IntOrStr] = field(default_factory=dict)


@dataclass(frozen=True)
class PVCSpec:
    access_modes: tuple[str, ...] = ()
    resources: PVCResources = field(default_factory=PVCResources)
    storage_class_name: str | None = None
    volume_mode: str = "Filesystem"


@dataclass(frozen=True)
class PersistentVolumeClaim:
    metadata: ObjectMeta
    spec: PVCSpec = field(default_factory=PVCSpec)
    api_version: str = "v1"
    kind: str = "PersistentVolumeClaim"


KubeObject = Pod | Deployment | ConfigMap | Secret | PersistentVolumeClaim

KINDS: dict[str, type] = {
    "Pod": Pod,
    "Deployment": Deployment,
    "ConfigMap": ConfigMap,
    "Secret": Secret,
    "PersistentVolumeClaim": PersistentVolumeClaim,
}

API_VERSIONS = {
    "Pod": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
}


def key_of(obj: KubeObject) -> ObjectKey:
    return ObjectKey(obj.kind, obj.metadata.namespace or "default", obj.metadata.name)


# Kinds that live in their own modules register here (they import ObjectMeta from this one).
from reconciler.model.service import Service  # noqa: E402

KINDS["Service"] = Service
API_VERSIONS["Service"] = "v1"
