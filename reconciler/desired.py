"""PURE  model → desired state: what should run on this host.

Deployments expand to ``<name>-<ordinal>`` pods; ConfigMap and Secret values are resolved into
the pods that consume them; every pod gets a spec hash that changes exactly when something
the running pod depends on changes, and a uid derived from its name and that hash (so that an
old and a new revision of the same pod can coexist during a rollout).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from reconciler import sha
from reconciler.errors import Diagnostic, ManifestError, Severity
from reconciler.model import codec
from reconciler.model.kube import (
    ConfigMap,
    Container,
    EnvVar,
    ObjectKey,
    ObjectMeta,
    PersistentVolumeClaim,
    Pod,
    PodSpec,
    Secret,
    key_of,
)
from reconciler.model.names import DEFAULT_NETWORK  # noqa: E402,F401
from reconciler.model.quantity import NODE_RESOURCE_MARK, to_bytes
from reconciler.model.service import Service, ServiceSpec
from reconciler.model.source import ANN_NETWORK, ANN_PORT_PER_REPLICA, ANNOTATION_PREFIX, Loaded
from reconciler.model.workloads import (
    INDEX_ANNOTATION,
    REPLICATED,
    ROLLED_OUT,
    CronJob,
    Job,
    StatefulSet,
    job_pod_names,
    with_claims,
)

# Values that a container only learns once its pod runs; the runtime fills them in.
DEFERRED_FIELDS = ("status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs")


@dataclass(frozen=True)
class EnvEntry:
    """One environment variable. ``deferred`` names a value known only at run time
    (``status.podIP``, or ``resource:limits.memory`` when no limit is set)."""

    name: str
    value: str = ""
    deferred: str = ""


@dataclass(frozen=True)
class VolumeFile:
    path: str  # relative to the volume root
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class DesiredVolume:
    name: str
    kind: str  # emptyDir | hostPath | configMap | secret | persistentVolumeClaim
    medium: str = ""  # emptyDir: "" or "Memory"
    size_limit: int = 0  # emptyDir bytes, 0 = unbounded
    path: str = ""  # hostPath
    path_type: str = ""  # hostPath type
    claim: str = ""  # persistentVolumeClaim: "<namespace>/<claimName>"
    files: tuple[VolumeFile, ...] = ()  # configMap / secret contents
    read_only: bool = False
    fs_group: int | None = None
    owner_uid: int | None = None
    image: str = ""  # image: the reference, pulled like a container's and mounted read-only
    image_pull_policy: str = ""

    def snapshot_key(self, pod_uid: str) -> str:
        """An image volume's snapshot: '_' keeps it apart from any container's (names have none)."""
        return f"{pod_uid}.vol_{self.name}"


@dataclass(frozen=True)
class DesiredContainer:
    name: str
    id: str  # runtime container id
    spec: Container
    pull_policy: str  # Always | IfNotPresent | Never
    env: tuple[EnvEntry, ...] = ()
    init: bool = False
    # A native sidecar (initContainers[] with restartPolicy: Always): runs beside the app
    # containers (so it is one of DesiredPod.containers: probed, counted in readiness, restarted
    # whatever the pod's restartPolicy), started in its place among the init containers, and
    # stopped after the app containers.
    sidecar: bool = False



@dataclass(frozen=True)
class RegistryCredential:
    """From an imagePullSecret of type kubernetes.io/dockerconfigjson or dockercfg."""

    registry: str
    username: str = ""
    password: str = ""
    identity_token: str = ""


@dataclass(frozen=True)
class DesiredService:
    """A Service as the host should serve it (reconciler.services decides addresses and endpoints)."""

    ref: str  # "<namespace>/<name>"
    source: str
    line: int
    spec: ServiceSpec

    @property
    def namespace(self) -> str:
        return self.ref.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.ref.split("/", 1)[1]


@dataclass(frozen=True)
class DesiredPod:
    key: ObjectKey  # kind is always "Pod"
    owner: ObjectKey  # the manifest object: a Pod or a Deployment
    source: str
    meta: ObjectMeta
    spec: PodSpec
    spec_hash: str
    uid: str
    hostname: str
    network: str  # CNI network name; "" with hostNetwork
    containers: tuple[DesiredContainer, ...] = ()
    init_containers: tuple[DesiredContainer, ...] = ()
    volumes: tuple[DesiredVolume, ...] = ()
    pull_secrets: tuple[RegistryCredential, ...] = ()
    ordinal: int | None = None
    # Kept as the host has it, never restarted, replaced or re-created: a finished Job's pod (for
    # its logs and exit code), or a StatefulSet's pod waiting its turn to be updated or removed.
    # Not part of the spec hash: holding a pod does not change it.
    hold: bool = False
    # A StatefulSet pod's DNS subdomain (its serviceName): /etc/hosts names the pod
    # <hostname>.<subdomain>.<namespace>.svc.cluster.local too, as the kubelet does.
    subdomain: str = ""

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def ref(self) -> str:
        """"<namespace>/<name>": how pods are named across the engine."""
        return f"{self.key.namespace}/{self.key.name}"

    @property
    def infra_id(self) -> str:
        return self.uid

    def container(self, name: str) -> DesiredContainer:
        for c in self.init_containers + self.containers:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict:
        return codec.to_data(self)

    @classmethod
    def from_json(cls, data: dict) -> DesiredPod:
        return codec.from_data(cls, data)


@dataclass(frozen=True)
class DesiredClaim:
    ref: str  # "<namespace>/<claimName>"
    source: str
    declared: bool  # a PersistentVolumeClaim object exists (otherwise made on first use)


@dataclass(frozen=True)
class DesiredState:
    pods: dict[str, DesiredPod] = field(default_factory=dict)  # by "<namespace>/<name>"
    claims: dict[str, DesiredClaim] = field(default_factory=dict)
    deployments: dict[str, Loaded] = field(default_factory=dict)  # by "<namespace>/<name>"
    services: dict[str, DesiredService] = field(default_factory=dict)  # by "<namespace>/<name>"
    # The Service rules and names this tick installs (set by the diff, read by the plan).
    service_sync: object | None = None
    # The kubelet's service links (FOO_SERVICE_HOST…) by namespace, given to containers as they
    # are created (not part of a pod's spec hash: a new Service does not restart pods).
    service_env: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # Jobs, by "<namespace>/<name>", and every pod a run of each may create (`<job>-<i>`, in
    # index order). Which of them belong in `pods` depends on what the host shows of the run:
    # reconciler.jobs decides that at each look, after observing.
    jobs: dict[str, Loaded] = field(default_factory=dict)
    job_pods: dict[str, tuple[DesiredPod, ...]] = field(default_factory=dict)
    # CronJobs, by "<namespace>/<name>": their runs are Jobs that each look adds to `jobs`.
    crons: dict[str, Loaded] = field(default_factory=dict)
    # StatefulSets, by "<namespace>/<name>": their pods are in `pods`; reconciler.statefulsets
    # holds some back at each look (ordered start and stop, one update at a time).
    statefulsets: dict[str, Loaded] = field(default_factory=dict)


# --- helpers ----------------------------------------------------------------------------------

def pod_uid(namespace: str, name: str, spec_hash: str) -> str:
    return sha.sha256(f"{namespace}/{name}/{spec_hash}".encode()).hexdigest()[:12]


def container_id(uid: str, name: str) -> str:
    return f"{uid}.{name}"


def default_pull_policy(image: str) -> str:
    """Kubernetes: ``:latest`` or no tag (and no digest) → Always, else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _fail(loaded: Loaded, path: str, message: str) -> ManifestError:
    return ManifestError([Diagnostic(Severity.ERROR, loaded.file, loaded.line, loaded.column, path, message)])


class _Refs:
    """ConfigMaps and Secrets by namespace/name."""

    def __init__(self, objects: Iterable[Loaded]):
        self.config_maps: dict[str, ConfigMap] = {}
        self.secrets: dict[str, Secret] = {}
        for item in objects:
            o = item.obj
            ref = f"{o.metadata.namespace}/{o.metadata.name}"
            if isinstance(o, ConfigMap):
                self.config_maps[ref] = o
            elif isinstance(o, Secret):
                self.secrets[ref] = o

    def data(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
        table = self.config_maps if kind == "ConfigMap" else self.secrets
        obj = table.get(f"{namespace}/{name}")
        return obj.items() if obj is not None else None


def _resolve_env(loaded: Loaded, pod_meta: ObjectMeta, c: Container, refs: _Refs, where: str,
                 pod_name: str) -> tuple[EnvEntry, ...]:
    ns = pod_meta.namespace
    env: dict[str, EnvEntry] = {}
    for i, src in enumerate(c.env_from):
        kind, ref = ("ConfigMap", src.config_map_ref) if src.config_map_ref else ("Secret", src.secret_ref)
        if ref is None:
            continue
        data = refs.data(kind, ns, ref.name)
        if data is None:
            if ref.optional:
                continue
            raise _fail(loaded, f"{where}.envFrom[{i}]", f"{kind} {ref.name!r} not found")
        for k in sorted(data):
            name = src.prefix + k
            if _ENV_NAME.match(name):
                env[name] = EnvEntry(name, data[k].decode(errors="replace"))
    for i, var in enumerate(c.env):
        vf = var.value_from
        if vf is None:
            env[var.name] = EnvEntry(var.name, var.value or "")
            continue
        sel = vf.config_map_key_ref or vf.secret_key_ref
        if sel is not None:
            kind = "ConfigMap" if vf.config_map_key_ref else "Secret"
            data = refs.data(kind, ns, sel.name)
            if data is None or sel.key not in data:
                if sel.optional:
                    continue
                what = f"{kind} {sel.name!r}" if data is None else f"key {sel.key!r} in {kind} {sel.name!r}"
                raise _fail(loaded, f"{where}.env[{i}].valueFrom", f"{what} not found")
            env[var.name] = EnvEntry(var.name, data[sel.key].decode(errors="replace"))
        elif vf.field_ref is not None:
            env[var.name] = _field_env(var.name, vf.field_ref.field_path, pod_meta, pod_name)
        elif vf.resource_field_ref is not None:
            env[var.name] = _resource_env(var.name, c, vf.resource_field_ref)
    return tuple(env.values())


def _field_env(name: str, path: str, meta: ObjectMeta, pod_name: str) -> EnvEntry:
    if path == "metadata.name":
        return EnvEntry(name, pod_name)
    if path == "metadata.namespace":
        return EnvEntry(name, meta.namespace)
    if path in ("spec.nodeName",):
        return EnvEntry(name, "", deferred="spec.nodeName")
    if path == "spec.serviceAccountName":
        return EnvEntry(name, "default")
    m = _FIELD_LABEL.match(path)
    if m:
        table = meta.labels if m.group(1) == "labels" else meta.annotations
        return EnvEntry(name, table.get(m.group(2), ""))
    if path == "metadata.labels":
        return EnvEntry(name, "\n".join(f'{k}="{v}"' for k, v in sorted(meta.labels.items())))
    if path == "metadata.annotations":
        return EnvEntry(name, "\n".join(f'{k}="{v}"' for k, v in sorted(meta.annotations.items())))
    # metadata.uid and the status fields are only known once the pod exists.
    return EnvEntry(name, "", deferred=path)


def _resource_env(name: str, c: Container, ref) -> EnvEntry:
    section, _, resource = ref.resource.partition(".")
    table = c.resources.limits if section == "limits" else c.resources.requests
    if resource not in table and section == "requests":
        table = c.resources.limits  # requests default to limits
    if resource in table:
        from reconciler.model.quantity import parse_quantity

        value = parse_quantity(table[resource]) / parse_quantity(ref.divisor or "1")
        as_int = -(-value.numerator // value.denominator)  # the kubelet rounds up
        return EnvEntry(name, str(max(as_int, 1) if value > 0 else 0))
    return EnvEntry(name, "", deferred=f"resource:{ref.resource}:{ref.divisor}")


def _volume_files(loaded: Loaded, kind: str, ns: str, name: str, items, default_mode: int | None,
                  optional: bool, refs: _Refs, where: str) -> tuple[VolumeFile, ...] | None:
    data = refs.data(kind, ns, name)
    if data is None:
        if optional:
            return None
        raise _fail(loaded, where, f"{kind} {name!r} not found")
    mode = default_mode if default_mode is not None else 0o644
    if items:
        out = []
        for i, item in enumerate(items):
            if item.key not in data:
                if optional:
                    continue
                raise _fail(loaded, f"{where}.items[{i}].key", f"key {item.key!r} not in {kind} {name!r}")
            out.append(VolumeFile(item.path, data[item.key], item.mode if item.mode is not None else mode))
        return tuple(out)
    return tuple(VolumeFile(k, data[k], mode) for k in sorted(data))


# A downwardAPI file's metadata.uid is the pod's uid, which is made from the spec hash, which is
# made from the volumes: the file holds this mark until the uid is known (see _build_pod).
_UID_MARK = b"\0podplay:metadata.uid\0"


def _downward_files(loaded: Loaded, meta: ObjectMeta, spec: PodSpec, items, default_mode: int, where: str,
                    pod_name: str) -> list[VolumeFile]:
    out = []
    for j, item in enumerate(items):
        mode = item.mode if item.mode is not None else default_mode
        if item.field_ref is not None:
            path = item.field_ref.field_path
            if path == "metadata.uid":
                data = _UID_MARK
            else:
                data = _field_env("", path, meta, pod_name).value.encode()
        else:
            rf = item.resource_field_ref
            c = next((c for c in spec.init_containers + spec.containers if c.name == rf.container_name), None)
            if c is None:
                raise _fail(loaded, f"{where}.items[{j}].resourceFieldRef",
                            f"no container {rf.container_name!r} in this pod")
            entry = _resource_env("", c, rf)
            # Not set by the container: the node's allocatable, which the volume driver writes.
            data = NODE_RESOURCE_MARK + f"{rf.resource}:{rf.divisor or '1'}".encode() if entry.deferred \
                else entry.value.encode()
        out.append(VolumeFile(item.path, data, mode))
    return out


def _projected(loaded: Loaded, meta: ObjectMeta, spec: PodSpec, proj, refs: _Refs, where: str, pod_name: str
               ) -> tuple[tuple[VolumeFile, ...], bool]:
    """A projected volume's files, and whether any came from a Secret (then it is laid out and
    redacted as a secret volume: tmpfs, owner-only files by default)."""
    files: list[VolumeFile] = []
    secret = any(s.secret is not None for s in proj.sources)
    for i, src in enumerate(proj.sources):
        sw = f"{where}.sources[{i}]"
        if src.config_map is not None or src.secret is not None:
            kind, ref = ("ConfigMap", src.config_map) if src.config_map is not None else ("Secret", src.secret)
            # podplay's secret files are owner-only unless a mode is given (see the secret volume).
            mode = proj.default_mode if proj.default_mode is not None else 0o400 if kind == "Secret" else 0o644
            files += _volume_files(loaded, kind, meta.namespace, ref.name, ref.items, mode, ref.optional, refs,
                                   f"{sw}.{'configMap' if kind == 'ConfigMap' else 'secret'}") or ()
        elif src.downward_api is not None:
            mode = proj.default_mode if proj.default_mode is not None else 0o644
            files += _downward_files(loaded, meta, spec, src.downward_api.items, mode, f"{sw}.downwardAPI", pod_name)
    return tuple(files), secret


def _volumes(loaded: Loaded, meta: ObjectMeta, spec: PodSpec, refs: _Refs, where: str, pod_name: str = ""
             ) -> tuple[DesiredVolume, ...]:
    ns = meta.namespace
    sc = spec.security_context
    out = []
    for i, v in enumerate(spec.volumes):
        vw = f"{where}.volumes[{i}]"
        if v.empty_dir is not None:
            limit = to_bytes(v.empty_dir.size_limit) if v.empty_dir.size_limit is not None else 0
            out.append(DesiredVolume(v.name, "emptyDir", medium=v.empty_dir.medium, size_limit=limit,
                                     fs_group=sc.fs_group))
        elif v.host_path is not None:
            out.append(DesiredVolume(v.name, "hostPath", path=v.host_path.path, path_type=v.host_path.type))
        elif v.config_map is not None:
            cm = v.config_map
            files = _volume_files(loaded, "ConfigMap", ns, cm.name, cm.items, cm.default_mode, cm.optional,
                                  refs, f"{vw}.configMap")
            out.append(DesiredVolume(v.name, "configMap", files=files or (), read_only=True,
                                     fs_group=sc.fs_group))
        elif v.secret is not None:
            s = v.secret
            # podplay's default for secret files is 0400 (owner-only), tighter than the API's 0644.
            mode = s.default_mode if s.default_mode is not None else 0o400
            files = _volume_files(loaded, "Secret", ns, s.secret_name, s.items, mode, s.optional, refs,
                                  f"{vw}.secret")
            out.append(DesiredVolume(v.name, "secret", files=files or (), read_only=True,
                                     fs_group=sc.fs_group, owner_uid=sc.run_as_user))
        elif v.persistent_volume_claim is not None:
            pvc = v.persistent_volume_claim
            out.append(DesiredVolume(v.name, "persistentVolumeClaim", claim=f"{ns}/{pvc.claim_name}",
                                     read_only=pvc.read_only))
        # downwardAPI and projected volumes are files made here, laid out as a configMap volume's
        # (or, holding secret data, as a secret volume's): the volume driver needs no new kind.
        elif v.downward_api is not None:
            dm = v.downward_api.default_mode if v.downward_api.default_mode is not None else 0o644
            files = _downward_files(loaded, meta, spec, v.downward_api.items, dm, f"{vw}.downwardAPI", pod_name)
            out.append(DesiredVolume(v.name, "configMap", files=tuple(files), read_only=True, fs_group=sc.fs_group))
        elif v.image is not None:
            ref = v.image.reference
            out.append(DesiredVolume(v.name, "image", image=ref, read_only=True,
                                     image_pull_policy=v.image.pull_policy or default_pull_policy(ref)))
        elif v.projected is not None:
            files, secret = _projected(loaded, meta, spec, v.projected, refs, f"{vw}.projected", pod_name)
            out.append(DesiredVolume(v.name, "secret" if secret else "configMap", files=files, read_only=True,
                                     fs_group=sc.fs_group, owner_uid=sc.run_as_user if secret else None))
    return tuple(out)


def _pull_secrets(spec: PodSpec, ns: str, refs: _Refs) -> tuple[RegistryCredential, ...]:
    import base64

    out = []
    for ref in spec.image_pull_secrets:
        secret = refs.secrets.get(f"{ns}/{ref.name}")
        if secret is None:
            continue  # Kubernetes ignores a missing pull secret too; the pull may still work
        items = secret.items()
        raw = items.get(".dockerconfigjson") or items.get(".dockercfg")
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        auths = doc.get("auths", doc) if isinstance(doc, dict) else {}
        for registry, entry in sorted(auths.items()):
            if not isinstance(entry, dict):
                continue
            user, password = entry.get("username", ""), entry.get("password", "")
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
            out.append(RegistryCredential(registry, user, password, entry.get("identitytoken", "")))
    return tuple(out)


def _hash_input(meta: ObjectMeta, spec: PodSpec, containers, init_containers, volumes, network: str) -> dict:
    # Labels and most annotations do not change how the pod runs; they reach the containers
    # only through fieldRef env, which is part of the resolved env below. The pod's name is not
    # part of it either, so that every replica of a Deployment carries the template's hash.
    annotations = {k: v for k, v in meta.annotations.items() if k.startswith(ANNOTATION_PREFIX)}
    return {
        "spec": codec.to_data(spec),
        "env": {c.name: codec.to_data(c.env) for c in init_containers + containers},
        "volumes": codec.to_data(volumes),
        "annotations": annotations,
        "network": network,
    }


def _build_pod(loaded: Loaded, owner: ObjectKey, meta: ObjectMeta, spec: PodSpec, refs: _Refs, where: str,
               ordinal: int | None, subdomain: str = "") -> DesiredPod:
    name = meta.name
    hostname = (spec.hostname or name)[:63]
    network = "" if spec.host_network else meta.annotations.get(ANN_NETWORK, DEFAULT_NETWORK)
    volumes = _volumes(loaded, meta, spec, refs, where, name)

    def containers(specs: tuple[Container, ...], init: bool, field_name: str) -> list[DesiredContainer]:
        out = []
        for i, c in enumerate(specs):
            env = _resolve_env(loaded, meta, c, refs, f"{where}.{field_name}[{i}]", name)
            policy = c.image_pull_policy or default_pull_policy(c.image)
            sidecar = init and c.restart_policy == "Always"
            out.append(DesiredContainer(c.name, "", c, policy, env, init and not sidecar, sidecar))
        return out

    # Sidecars first, in their init order: the plan starts them in their place among the inits.
    declared = containers(spec.init_containers, True, "initContainers")
    inits = [c for c in declared if not c.sidecar]
    apps = [c for c in declared if c.sidecar] + containers(spec.containers, False, "containers")
    hashed = _hash_input(meta, spec, tuple(apps), tuple(inits), volumes, network)
    if subdomain:  # only when set: every other pod keeps the hash it had
        hashed["subdomain"] = subdomain
    spec_hash = codec.digest(hashed)
    uid = pod_uid(meta.namespace, name, spec_hash)
    volumes = tuple(replace(v, files=tuple(replace(f, data=f.data.replace(_UID_MARK, uid.encode()))
                                           for f in v.files)) if any(_UID_MARK in f.data for f in v.files) else v
                    for v in volumes)
    apps = [replace(c, id=container_id(uid, c.name)) for c in apps]
    inits = [replace(c, id=container_id(uid, c.name)) for c in inits]
    return DesiredPod(
        key=ObjectKey("Pod", meta.namespace, name),
        owner=owner,
        source=loaded.file,
        meta=meta,
        spec=spec,
        spec_hash=spec_hash,
        uid=uid,
        hostname=hostname,
        network=network,
        containers=tuple(apps),
        init_containers=tuple(inits),
        volumes=volumes,
        pull_secrets=_pull_secrets(spec, meta.namespace, refs),
        ordinal=ordinal,
        subdomain=subdomain,
    )


def replica_spec(spec: PodSpec, ordinal: int, per_replica_ports: bool) -> PodSpec:
    """A replica's pod spec: with the per-replica annotation, hostPort N becomes N + ordinal."""
    if not per_replica_ports or ordinal == 0:
        return spec

    def shift(c: Container) -> Container:
        ports = tuple(replace(p, host_port=p.host_port + ordinal) if p.host_port else p for p in c.ports)
        return replace(c, ports=ports)

    return replace(spec, containers=tuple(shift(c) for c in spec.containers))


def build_desired(objects: Iterable[Loaded]) -> DesiredState:
    """Expand the loaded objects into the pods and claims this host should have.

    The loader has already checked references; a dangling one here still raises a
    ManifestError (never a KeyError) so that library callers get the same clean error.
    """
    objects = list(objects)
    refs = _Refs(objects)
    pods: dict[str, DesiredPod] = {}
    claims: dict[str, DesiredClaim] = {}
    deployments: dict[str, Loaded] = {}
    services: dict[str, DesiredService] = {}
    jobs: dict[str, Loaded] = {}
    job_pods: dict[str, tuple[DesiredPod, ...]] = {}
    crons: dict[str, Loaded] = {}
    statefulsets: dict[str, Loaded] = {}
    for item in objects:
        o = item.obj
        if isinstance(o, Pod):
            pod = _build_pod(item, key_of(o), o.metadata, o.spec, refs, "spec", None)
            pods[pod.ref] = pod
        elif isinstance(o, StatefulSet):
            statefulsets[f"{o.metadata.namespace}/{o.metadata.name}"] = item
            tmpl = o.spec.template
            annotations = {**o.metadata.annotations, **tmpl.metadata.annotations}
            for i in range(o.spec.replicas):
                meta = ObjectMeta(f"{o.metadata.name}-{i}", o.metadata.namespace, {**tmpl.metadata.labels}, annotations)
                pod = _build_pod(item, key_of(o), meta, with_claims(o, i), refs, "spec.template.spec", i,
                                 subdomain=o.spec.service_name)
                pods[pod.ref] = pod
        elif isinstance(o, REPLICATED):
            if isinstance(o, ROLLED_OUT):  # revisions and a rolling update: Deployment, DaemonSet
                deployments[f"{o.metadata.namespace}/{o.metadata.name}"] = item
            tmpl = o.spec.template
            labels = {**tmpl.metadata.labels}
            annotations = {**o.metadata.annotations, **tmpl.metadata.annotations}
            per_replica = annotations.get(ANN_PORT_PER_REPLICA, "").lower() == "true"
            for i in range(o.spec.replicas):
                name = f"{o.metadata.name}-{i}"
                meta = ObjectMeta(name, o.metadata.namespace, labels, annotations)
                spec = replica_spec(tmpl.spec, i, per_replica)
                pod = _build_pod(item, key_of(o), meta, spec, refs, "spec.template.spec", i)
                pods[pod.ref] = pod
        elif isinstance(o, Job):
            ref = f"{o.metadata.namespace}/{o.metadata.name}"
            jobs[ref] = item
            job_pods[ref] = _job_pods(item, refs)
        elif isinstance(o, CronJob):
            crons[f"{o.metadata.namespace}/{o.metadata.name}"] = item
        elif isinstance(o, PersistentVolumeClaim):
            ref = f"{o.metadata.namespace}/{o.metadata.name}"
            claims[ref] = DesiredClaim(ref, item.file, True)
        elif isinstance(o, Service):
            ref = f"{o.metadata.namespace}/{o.metadata.name}"
            # clusterIPs' first entry is the clusterIP (the API server keeps them equal).
            spec = replace(o.spec, cluster_ip=o.spec.address) if o.spec.address != o.spec.cluster_ip else o.spec
            services[ref] = DesiredService(ref, item.file, item.line, spec)
    for pod in [*pods.values(), *(p for run in job_pods.values() for p in run[:1])]:
        for v in pod.volumes:
            if v.kind == "persistentVolumeClaim" and v.claim not in claims:
                claims[v.claim] = DesiredClaim(v.claim, pod.source, False)
    return DesiredState(pods=pods, claims=claims, deployments=deployments, services=services, jobs=jobs,
                        job_pods=job_pods, crons=crons, statefulsets=statefulsets)


def _job_pods(item: Loaded, refs: _Refs, where: str = "spec.template.spec") -> tuple[DesiredPod, ...]:
    o: Job = item.obj
    tmpl = o.spec.template
    annotations = {**o.metadata.annotations, **tmpl.metadata.annotations}
    if not o.spec.indexed:
        return tuple(_build_pod(item, key_of(o), ObjectMeta(name, o.metadata.namespace, {**tmpl.metadata.labels},
                                                            annotations), tmpl.spec, refs, where, i)
                     for name, i in job_pod_names(o.metadata.name, o.spec))
    # Indexed: each pod knows its index as Kubernetes gives it — the annotation and label (for the
    # downward API), JOB_COMPLETION_INDEX in every container, and the hostname <job>-<index>.
    out = []
    for name, i in job_pod_names(o.metadata.name, o.spec):
        meta = ObjectMeta(name, o.metadata.namespace, {**tmpl.metadata.labels, INDEX_ANNOTATION: str(i)},
                          {**annotations, INDEX_ANNOTATION: str(i)})
        out.append(_build_pod(item, key_of(o), meta, indexed_spec(tmpl.spec, f"{o.metadata.name}-{i}", i), refs,
                              where, i))
    return tuple(out)


def indexed_spec(spec: PodSpec, hostname: str, index: int) -> PodSpec:
    """An Indexed Job's pod spec for one index: JOB_COMPLETION_INDEX in each container (unless it
    sets its own) and the hostname `<job>-<index>` (unless the template names one)."""
    def with_index(c: Container) -> Container:
        if any(e.name == "JOB_COMPLETION_INDEX" for e in c.env):
            return c
        return replace(c, env=(*c.env, EnvVar("JOB_COMPLETION_INDEX", str(index))))

    return replace(spec, hostname=spec.hostname or hostname[:63],
                   containers=tuple(with_index(c) for c in spec.containers),
                   init_containers=tuple(with_index(c) for c in spec.init_containers))


def cron_run(cron: Loaded, name: str) -> Loaded:
    """A CronJob's run as the Job it is: named `name`, from the jobTemplate, in the CronJob's file."""
    c: CronJob = cron.obj
    t = c.spec.job_template
    meta = ObjectMeta(name, c.metadata.namespace, {**t.metadata.labels}, {**c.metadata.annotations,
                                                                         **t.metadata.annotations})
    return replace(cron, obj=Job(meta, t.spec))


def run_pods(run: Loaded, objects: Iterable[Loaded]) -> tuple[DesiredPod, ...]:
    """The pods a CronJob's run may create (`objects`: the load, for the ConfigMaps and Secrets)."""
    return _job_pods(run, _Refs(list(objects)), "spec.jobTemplate.spec.template.spec")
