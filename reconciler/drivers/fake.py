"""An in-memory host that implements every driver Protocol, for the engine tests.

It records what it did (``host.log``), can be told to fail an operation
(``host.fail_on("create_container", "web")``), can make containers exit
(``host.exit_container(id, code)``), and can persist itself to a JSON file so that a real
``podplay`` process (``--driver fake``) can be killed at a failpoint and a later process sees
what it left — the same crash the real drivers must survive.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from reconciler.desired import (
    DesiredClaim,
    DesiredContainer,
    DesiredPod,
    DesiredVolume,
    RegistryCredential,
)
from reconciler.drivers.base import Drivers, InfraInfo, container_labels
from reconciler.errors import ContainerRuntimeError, ImageError, NetworkError, NotFoundError, StorageError
from reconciler.fsutil import atomic_write
from reconciler.idmap import IdMap
from reconciler.model import codec
from reconciler.observed import (
    LABEL_SPEC_HASH,
    ContainerState,
    ImageConfig,
    ImageInfo,
    LayerInfo,
    NetworkStatus,
    ObservedAttachment,
    ObservedContainer,
    ObservedSnapshot,
    PortMapping,
)


def fake_image(ref: str) -> ImageInfo:
    """A deterministic image for a reference, as the fake registry serves it."""
    import hashlib

    digest = "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
    layer = "sha256:" + hashlib.sha256(b"layer:" + ref.encode()).hexdigest()
    return ImageInfo(id=digest, manifest_digest=digest, names=(ref,),
                     config=ImageConfig(cmd=("sh",), env=("PATH=/usr/bin:/bin",)),
                     layers=(LayerInfo(layer, layer, "application/vnd.oci.image.layer.v1.tar", 0),))


class FakeHost:
    """The shared in-memory (optionally file-backed) state of every fake driver."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.lock = threading.RLock()
        self.registry: set[str] = set()  # references the fake registry can serve; "*" = any
        self.images: dict[str, dict] = {}  # ref → ImageInfo data
        self.snapshots: dict[str, str] = {}  # key → rootfs
        self.pod_volumes: dict[str, dict[str, str]] = {}
        self.claims: set[str] = set()
        self.containers: dict[str, dict] = {}
        self.attachments: dict[str, dict] = {}
        self.restarts: dict[str, int] = {}
        self.exit_codes: dict[str, int] = {}  # container name or id → exit code when it runs to completion
        self.failures: list[list[str]] = []  # [operation, target]
        self.log: list[str] = []
        self.next_ip = 2
        self.host_ports_in_use: set[int] = set()  # ports "held by another process"
        # Probe answers: "<container id or name>[:<startup|liveness|readiness>]" → success; unlisted pass.
        self.probe_results: dict[str, bool] = {}
        self.services: dict[str, dict] = {}  # Service ref → {"hash": entry hash, "entry": ServiceEntry JSON}
        self.service_hosts = ""
        self.cluster_ips_elsewhere: list[str] = []  # ClusterIPs "another storage root" serves
        if self.path and self.path.exists():
            self.__dict__.update(json.loads(self.path.read_text()))
            self.path = Path(path)
            self.registry = set(self.registry)
            self.claims = set(self.claims)
            self.host_ports_in_use = set(self.host_ports_in_use)

    # --- test controls -----------------------------------------------------------------------------

    def fail_on(self, operation: str, target: str = "*") -> None:
        self.failures.append([operation, target])
        self.save()

    def exit_container(self, cid: str, code: int, *, at: float | None = None) -> None:
        c = self.containers[cid]
        c.update(state="exited", exit_code=code, finished_at=at if at is not None else time.time())
        self.save()

    def set_probe(self, target: str, ok: bool, kind: str = "") -> None:
        """Make the probes of a container (id or name; one kind or all) succeed or fail."""
        self.probe_results[f"{target}:{kind}" if kind else target] = ok
        self.save()

    def probe(self, container_id: str, name: str, kind: str, probe: object) -> tuple[bool, str]:
        if self.path is not None and self.path.exists():
            # Another process (a test) may have changed the table since this one loaded it.
            self.probe_results = json.loads(self.path.read_text()).get("probe_results", self.probe_results)
        for key in (f"{container_id}:{kind}", container_id, f"{name}:{kind}", name):
            if key in self.probe_results:
                ok = bool(self.probe_results[key])
                return ok, "" if ok else "fake probe failure"
        return True, ""

    def save(self) -> None:
        if self.path is None:
            return
        data = {k: (sorted(v) if isinstance(v, set) else v) for k, v in self.__dict__.items()
                if k not in ("path", "lock")}
        atomic_write(self.path, json.dumps(data))

    def _op(self, operation: str, *targets: str) -> None:
        for op, target in self.failures:
            if op == operation and (target == "*" or target in targets):
                raise _ERRORS.get(operation.rsplit("_", maxsplit=1)[-1], ContainerRuntimeError)(
                    f"injected failure: {operation} {targets[0] if targets else ''}")
        self.log.append(f"{operation} {' '.join(targets[:1])}".strip())


_ERRORS = {"image": ImageError, "snapshot": StorageError, "volumes": StorageError, "claim": StorageError,
           "network": NetworkError, "attach": NetworkError, "detach": NetworkError}


def _serialized(cls):
    """Every public method holds the host's lock: apply runs transactions in threads, and the
    fake's dictionaries (and its JSON file) must change one operation at a time."""
    for name, fn in list(vars(cls).items()):
        if callable(fn) and not name.startswith("_"):
            def wrap(fn):
                @functools.wraps(fn)
                def locked(self, *a, **kw):
                    with self.h.lock:
                        return fn(self, *a, **kw)
                return locked
            setattr(cls, name, wrap(fn))
    return cls


@_serialized
class FakeImages:
    def __init__(self, host: FakeHost):
        self.h = host

    def ensure_image(self, ref: str, policy: str, credentials: Sequence[RegistryCredential] = ()) -> ImageInfo:
        local = self.get_image(ref)
        if policy == "Never":
            if local is None:
                raise ImageError(f"image {ref} is not present and its pull policy is Never")
            return local
        if local is not None and policy == "IfNotPresent":
            return local
        if "*" not in self.h.registry and ref not in self.h.registry:
            raise ImageError(f"{ref}: manifest unknown to the registry")
        self.h._op("pull_image", ref)
        info = fake_image(ref)
        self.h.images[ref] = codec.to_data(info)
        self.h.save()
        return info

    def get_image(self, ref_or_id: str) -> ImageInfo | None:
        for ref, data in self.h.images.items():
            info = codec.from_data(ImageInfo, data)
            if ref_or_id in (ref, info.id):
                return info
        return None

    def list_images(self) -> list[ImageInfo]:
        return [codec.from_data(ImageInfo, d) for d in self.h.images.values()]

    def open_blob(self, digest: str):
        for info in self.list_images():
            if any(layer.digest == digest for layer in info.layers):
                return io.BytesIO(b"")
        raise ImageError(f"blob {digest} not found")

    def remove_image(self, ref_or_id: str) -> None:
        info = self.get_image(ref_or_id)
        if info is not None:
            self.h.images = {r: d for r, d in self.h.images.items() if d["id"] != info.id}
            self.h.save()


@_serialized
class FakeSnapshots:
    def __init__(self, host: FakeHost):
        self.h = host

    def prepare(self, key: str, image: ImageInfo, id_map: IdMap | None = None) -> str:
        if key not in self.h.snapshots:
            self.h._op("prepare_snapshot", key)
            self.h.snapshots[key] = f"/fake/rootfs/{key}"
            self.h.save()
        return self.h.snapshots[key]

    def remove(self, key: str) -> None:
        if key in self.h.snapshots:
            self.h._op("remove_snapshot", key)
            del self.h.snapshots[key]
            self.h.save()

    def list_snapshots(self) -> list[ObservedSnapshot]:
        return [ObservedSnapshot(k, v, True) for k, v in sorted(self.h.snapshots.items())]


@_serialized
class FakeVolumes:
    def __init__(self, host: FakeHost):
        self.h = host

    def prepare_pod_volumes(self, uid: str, volumes: Sequence[DesiredVolume]) -> dict[str, str]:
        for v in volumes:
            if v.claim and v.claim not in self.h.claims:
                raise StorageError(f"claim {v.claim} does not exist")
        self.h._op("prepare_volumes", uid)
        paths = {v.name: f"/fake/volumes/{uid}/{v.name}" for v in volumes}
        self.h.pod_volumes[uid] = paths
        self.h.save()
        return paths

    def remove_pod_volumes(self, uid: str) -> None:
        if uid in self.h.pod_volumes:
            self.h._op("remove_volumes", uid)
            del self.h.pod_volumes[uid]
            self.h.save()

    def list_pod_volumes(self) -> list[str]:
        return sorted(self.h.pod_volumes)

    def ensure_claim(self, claim: DesiredClaim) -> str:
        if claim.ref not in self.h.claims:
            self.h._op("ensure_claim", claim.ref)
            self.h.claims.add(claim.ref)
            self.h.save()
        return f"/fake/claims/{claim.ref}"

    def remove_claim(self, ref: str) -> None:
        if ref in self.h.claims:
            self.h._op("remove_claim", ref)
            self.h.claims.discard(ref)
            self.h.save()

    def list_claims(self) -> list[str]:
        return sorted(self.h.claims)


@_serialized
class FakeRuntime:
    def __init__(self, host: FakeHost):
        self.h = host

    def create_infra(self, pod: DesiredPod) -> InfraInfo:
        if pod.uid not in self.h.containers:
            self.h._op("create_infra", pod.uid, pod.name)
            self.h.containers[pod.uid] = {"pod_uid": pod.uid, "pod": pod.ref, "name": "", "role": "infra",
                                          "state": "running", "started_at": time.time(),
                                          "labels": container_labels(pod, None), "image": ""}
            self.h.save()
        return self.infra_info(pod.uid)

    def pod_id_map(self, uid: str) -> IdMap | None:
        return None  # the fake's pods share the host's IDs

    def infra_info(self, uid: str) -> InfraInfo | None:
        c = self.h.containers.get(uid)
        if c is None or c["state"] != "running":
            return None
        return InfraInfo(pid=1000, namespaces={"network": f"/fake/netns/{uid}", "ipc": f"/fake/ipc/{uid}",
                                               "uts": f"/fake/uts/{uid}"})

    def remove_infra(self, uid: str) -> None:
        if uid in self.h.containers:
            self.h._op("remove_infra", uid)
            del self.h.containers[uid]
            self.h.save()

    def address_pod(self, pod: DesiredPod, network: NetworkStatus) -> None:
        self.h._op("address_pod", pod.uid, network.ip)

    def create_container(self, pod: DesiredPod, container: DesiredContainer, *, rootfs: str, image: ImageInfo,
                         volumes: Mapping[str, str], network: NetworkStatus | None) -> None:
        if self.infra_info(pod.uid) is None:
            raise ContainerRuntimeError(f"pod {pod.ref} has no running infra container")
        if rootfs not in self.h.snapshots.values():
            raise ContainerRuntimeError(f"rootfs {rootfs} does not exist")
        for m in container.spec.volume_mounts:
            if m.name not in volumes:
                raise ContainerRuntimeError(f"volume {m.name} has no host path")
        if container.id in self.h.containers:
            return
        self.h._op("create_container", container.id, container.name)
        restarts = self.h.restarts.get(container.id)
        self.h.restarts[container.id] = 0 if restarts is None else restarts + 1
        self.h.containers[container.id] = {
            "pod_uid": pod.uid, "pod": pod.ref, "name": container.name,
            "role": "init" if container.init else "app", "state": "created", "image": container.spec.image,
            "labels": container_labels(pod, container),
        }
        self.h.save()

    def _get(self, cid: str) -> dict:
        try:
            return self.h.containers[cid]
        except KeyError:
            raise NotFoundError(f"no container {cid}") from None

    def start_container(self, container_id: str) -> None:
        c = self._get(container_id)
        if c["state"] == "running":
            return
        self.h._op("start_container", container_id, c["name"])
        c.update(state="running", started_at=time.time())
        code = self.h.exit_codes.get(container_id, self.h.exit_codes.get(c["name"]))
        if c["role"] == "init" or code is not None:
            c.update(state="exited", exit_code=code or 0, finished_at=time.time())
        self.h.save()

    def wait_container(self, container_id: str, timeout: float | None = None) -> int:
        c = self._get(container_id)
        if c["state"] != "exited":
            raise ContainerRuntimeError(f"container {container_id} did not exit within {timeout}s")
        return c.get("exit_code", 0)

    def wait_exits(self, container_ids: Sequence[str], timeout: float) -> bool:
        # Fake containers exit only when a test says so: nothing to wait for but the time.
        if any(self.h.containers.get(cid, {}).get("state") != "running" for cid in container_ids):
            return True
        time.sleep(max(timeout, 0.0))
        return False

    def stop_container(self, container_id: str, timeout: int = 30, signal: str = "") -> None:
        c = self.h.containers.get(container_id)
        if c is None or c["state"] != "running":
            return
        self.h._op("stop_container", container_id, c["name"])
        c.update(state="exited", exit_code=143, finished_at=time.time())
        self.h.save()

    def remove_container(self, container_id: str) -> None:
        if container_id in self.h.containers:
            self.h._op("remove_container", container_id, self.h.containers[container_id]["name"])
            del self.h.containers[container_id]
            self.h.save()

    def list_containers(self) -> list[ObservedContainer]:
        out = []
        for cid, c in sorted(self.h.containers.items()):
            out.append(ObservedContainer(
                id=cid, pod_uid=c["pod_uid"], pod=c["pod"], name=c["name"], role=c["role"],
                state=ContainerState(c["state"]), spec_hash=c["labels"].get(LABEL_SPEC_HASH, ""),
                image=c.get("image", ""), exit_code=c.get("exit_code"), started_at=c.get("started_at", 0.0),
                finished_at=c.get("finished_at", 0.0), restart_count=self.h.restarts.get(cid, 0),
                labels=c["labels"]))
        return out

    def exec_in(self, container_id: str, argv: Sequence[str], *, tty: bool = False, interactive: bool = False,
                env: Mapping[str, str] | None = None, timeout: float | None = None, output=None) -> int:
        c = self._get(container_id)
        if c["state"] != "running":
            raise ContainerRuntimeError(f"container {container_id} is not running")
        self.h._op("exec", container_id, " ".join(argv))
        return 0

    def read_logs(self, container_id: str, *, follow: bool = False, tail: int | None = None,
                  since: float | None = None) -> Iterator[tuple[float, str, bytes]]:
        self._get(container_id)
        return iter(())


@_serialized
class FakeNetwork:
    def __init__(self, host: FakeHost):
        self.h = host

    def _ports(self, pod: DesiredPod) -> list[PortMapping]:
        return [PortMapping(p.host_port, p.container_port, p.protocol.lower(), p.host_ip)
                for c in pod.containers for p in c.spec.ports if p.host_port]

    def attach(self, pod: DesiredPod, netns: str) -> NetworkStatus:
        existing = self.h.attachments.get(pod.uid)
        if existing:
            return codec.from_data(NetworkStatus, existing["status"])
        conflicts = self.port_conflicts(pod)
        if conflicts:
            raise NetworkError("; ".join(conflicts))
        self.h._op("attach_network", pod.uid, pod.name)
        status = NetworkStatus(pod.network, "eth0", f"10.99.0.{self.h.next_ip}", 24, "10.99.0.1",
                               ports=tuple(self._ports(pod)))
        self.h.next_ip += 1
        self.h.attachments[pod.uid] = {"status": codec.to_data(status), "netns": netns}
        self.h.save()
        return status

    def detach(self, uid: str) -> None:
        if uid in self.h.attachments:
            self.h._op("detach_network", uid)
            del self.h.attachments[uid]
            self.h.save()

    def check(self, uid: str) -> None:
        if uid not in self.h.attachments:
            raise NetworkError(f"pod {uid} is not attached")

    def list_attachments(self) -> list[ObservedAttachment]:
        return [ObservedAttachment(uid, codec.from_data(NetworkStatus, a["status"]), a["netns"])
                for uid, a in sorted(self.h.attachments.items())]

    def port_conflicts(self, pod: DesiredPod) -> list[str]:
        out = []
        for m in self._ports(pod):
            if m.host_port in self.h.host_ports_in_use:
                out.append(f"{m.host_port}/{m.protocol} is held by another process")
            for uid, a in self.h.attachments.items():
                if uid == pod.uid:
                    continue
                st = codec.from_data(NetworkStatus, a["status"])
                if any(p.host_port == m.host_port and p.protocol == m.protocol for p in st.ports):
                    out.append(f"{m.host_port}/{m.protocol} is held by pod {uid}")
        return out


@_serialized
class FakeServices:
    """What the host serves, as a table: the same resolution of endpoints made in the tick."""

    def __init__(self, host: FakeHost):
        self.h = host

    def sync(self, sync) -> None:
        from reconciler.services import ServiceEntry, entry_hash, hosts_hash

        self.h._op("sync_services")
        ips = {uid: a["status"]["ip"] for uid, a in self.h.attachments.items()}
        served = {}
        for e in sync.entries:
            eps = tuple(x if x.ip else dataclasses.replace(x, ip=ips.get(x.uid, "")) for x in e.endpoints)
            e = dataclasses.replace(e, endpoints=tuple(x for x in eps if x.ip))
            served[e.ref] = {"hash": entry_hash(e), "entry": e.to_json()}
        pods = [uid for uid, _ in sync.hosts if uid in self.h.attachments]
        self.h.services = served
        self.h.service_hosts = hosts_hash([ServiceEntry.from_json(v["entry"]) for v in served.values()],
                                          pods) if served else ""
        self.h.save()

    def observe(self) -> tuple[dict[str, str], str]:
        return {ref: v["hash"] for ref, v in self.h.services.items()}, self.h.service_hosts

    def addresses_elsewhere(self) -> list[str]:
        return list(self.h.cluster_ips_elsewhere)

    def remove_all(self) -> None:
        self.h.services, self.h.service_hosts = {}, ""
        self.h.save()


def fake_drivers(host: FakeHost | None = None) -> Drivers:
    host = host or FakeHost()
    return Drivers(images=FakeImages(host), snapshots=FakeSnapshots(host), volumes=FakeVolumes(host),
                   runtime=FakeRuntime(host), network=FakeNetwork(host), probe=host.probe,
                   services=FakeServices(host))
