"""The seams between the engine and the host, as Protocols.

The engine (``apply``, ``observe``) talks to the host only through these. ``drivers.fake``
implements every one in memory; the real implementations live in ``images``, ``storage``,
``runtime`` and ``network``. ``conformance/`` holds the suite every implementation passes.

Rules every implementation follows:

* Every mutating method is idempotent: creating what exists (with the same identity) or
  removing what is gone is not an error. Crash recovery relies on this.
* Failures raise a ``reconciler.errors.PodplayError`` subclass with a message for a user;
  never a bare OSError or CalledProcessError.
* Listing methods read the host (or the driver's own files), not a memory of past calls,
  so that a new process sees what an old one left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from reconciler.model import codec
from reconciler.observed import (
    LABEL_CONTAINER,
    LABEL_GRACE,
    LABEL_OWNER,
    LABEL_POD,
    LABEL_POD_UID,
    LABEL_PRE_STOP,
    LABEL_PROBE_GATED,
    LABEL_ROLE,
    LABEL_SIDECAR,
    LABEL_SOURCE,
    LABEL_SPEC_HASH,
    ImageInfo,
    NetworkStatus,
    ObservedAttachment,
    ObservedContainer,
    ObservedSnapshot,
)

if TYPE_CHECKING:
    from reconciler.desired import DesiredClaim, DesiredContainer, DesiredPod, DesiredVolume, RegistryCredential
    from reconciler.idmap import IdMap


def container_labels(pod: DesiredPod, container: DesiredContainer | None) -> dict[str, str]:
    """The labels every RuntimeDriver writes on a container of ``pod`` (None: its infra container);
    observe and `ps` read the host through them."""
    role = "infra" if container is None else "init" if container.init else "app"
    out = {LABEL_POD: pod.ref, LABEL_POD_UID: pod.uid, LABEL_CONTAINER: container.name if container else "",
           LABEL_ROLE: role, LABEL_SPEC_HASH: pod.spec_hash, LABEL_OWNER: str(pod.owner), LABEL_SOURCE: pod.source,
           LABEL_GRACE: str(pod.spec.termination_grace_period_seconds)}
    if container is not None and container.sidecar:
        out[LABEL_SIDECAR] = "true"
    lifecycle = container.spec.lifecycle if container is not None else None
    if lifecycle is not None and lifecycle.pre_stop is not None:
        # A container may be stopped by a process that no longer has its manifest (a deleted
        # file, `podplay stop`): the hook travels with the container.
        out[LABEL_PRE_STOP] = codec.canonical_json(lifecycle.pre_stop)
    if role == "app" and (container.spec.readiness_probe or container.spec.startup_probe):
        out[LABEL_PROBE_GATED] = "true"
    return out


@runtime_checkable
class ImageStore(Protocol):
    """Content-addressed image storage fed from registries.

    Example::

        info = images.ensure_image("busybox:1.36", "IfNotPresent", credentials=())
        images.get_image("busybox:1.36").id == info.id        # "sha256:…" config digest
        with images.open_blob(info.layers[0].digest) as f: …  # verified content only

    ``ensure_image`` applies the Kubernetes pull policy: ``Always`` asks the registry whether the
    tag moved (a HEAD) and pulls only what is missing; ``IfNotPresent`` pulls when the reference
    is not stored; ``Never`` raises ``ImageError`` when it is not stored.
    """

    def ensure_image(self, ref: str, policy: str, credentials: Sequence[RegistryCredential] = ()) -> ImageInfo:
        ...

    def get_image(self, ref_or_id: str) -> ImageInfo | None:
        ...

    def list_images(self) -> list[ImageInfo]:
        ...

    def open_blob(self, digest: str) -> BinaryIO:
        ...

    def remove_image(self, ref_or_id: str) -> None:
        ...


@runtime_checkable
class SnapshotDriver(Protocol):
    """Copy-on-write root filesystems for containers, keyed by container id.

    Example::

        rootfs = snapshots.prepare("3f2a…c1.web", image_info)   # mounted, writable
        snapshots.remove("3f2a…c1.web")                         # unmounted and deleted

    ``prepare`` unpacks any missing layers (reading blobs through an ImageStore), then mounts
    an overlay (or copies, where overlay is unavailable) and returns the rootfs path. Calling
    it again for an existing key returns the same path and keeps the writable layer.
    With ``id_map`` (a hostUsers: false pod's host ID range) the root filesystem is mounted so
    that the image's files are owned by the pod's root as seen from its user namespace.
    """

    def prepare(self, key: str, image: ImageInfo, id_map: IdMap | None = None) -> str:
        ...

    def remove(self, key: str) -> None:
        ...

    def list_snapshots(self) -> list[ObservedSnapshot]:
        ...


@runtime_checkable
class VolumeDriver(Protocol):
    """Pod volumes (emptyDir, hostPath, configMap, secret) and named claim volumes.

    Example::

        paths = volumes.prepare_pod_volumes("3f2a…c1", pod.volumes)   # {"config": "/run/…/config"}
        volumes.ensure_claim(DesiredClaim("default/data", "a.yaml", True))
        volumes.remove_pod_volumes("3f2a…c1")                         # claims survive

    ``prepare_pod_volumes`` returns the host path for each volume name; for a claim volume it
    is the claim's directory, which must exist (``ensure_claim`` runs first).
    """

    def prepare_pod_volumes(self, uid: str, volumes: Sequence[DesiredVolume]) -> dict[str, str]:
        ...

    def remove_pod_volumes(self, uid: str) -> None:
        ...

    def list_pod_volumes(self) -> list[str]:
        """Pod uids that have volumes on the host."""
        ...

    def ensure_claim(self, claim: DesiredClaim) -> str:
        ...

    def remove_claim(self, ref: str) -> None:
        ...

    def list_claims(self) -> list[str]:
        ...


@dataclass(frozen=True)
class InfraInfo:
    """Namespaces held by a pod's infra container: {"network": "/proc/123/ns/net", …}."""

    pid: int
    namespaces: Mapping[str, str]


@runtime_checkable
class RuntimeDriver(Protocol):
    """Containers on the host: an infra container per pod, app and init containers joining it.

    Example::

        infra = runtime.create_infra(pod)                 # catatonit holding net/ipc/uts(/pid)
        runtime.create_container(pod, pod.containers[0], rootfs=…, image=info,
                                 volumes={"data": "/var/lib/…"}, network=status)
        runtime.start_container(pod.containers[0].id)
        [c.state for c in runtime.list_containers()]      # relisted from runc and conmon files
        runtime.stop_container(cid, timeout=30)           # stop signal, grace, then SIGKILL
        runtime.remove_container(cid)                     # kills if needed; idempotent

    Containers carry the ``io.podplay.*`` labels from ``reconciler.observed`` so that
    ``list_containers`` can group them into pods again in a fresh process.
    """

    def create_infra(self, pod: DesiredPod) -> InfraInfo:
        ...

    def pod_id_map(self, uid: str) -> IdMap | None:
        """The host ID range of a hostUsers: false pod (None for any other pod)."""
        ...

    def infra_info(self, uid: str) -> InfraInfo | None:
        ...

    def remove_infra(self, uid: str) -> None:
        ...

    def create_container(self, pod: DesiredPod, container: DesiredContainer, *, rootfs: str,
                         image: ImageInfo, volumes: Mapping[str, str],
                         network: NetworkStatus | None) -> None:
        """``network``: the pod's attachment, or None while it is being attached (the container
        then learns no IP: its env must not ask for one)."""
        ...

    def address_pod(self, pod: DesiredPod, network: NetworkStatus) -> None:
        """The pod's network is attached: its hosts file names the pod's IP (rewritten in
        place, so that containers created before see it)."""
        ...

    def start_container(self, container_id: str) -> None:
        ...

    def wait_container(self, container_id: str, timeout: float | None = None) -> int:
        """Block until the container exits; its exit code. Raises on timeout."""
        ...

    def wait_exits(self, container_ids: Sequence[str], timeout: float) -> bool:
        """Block until one of the running containers has exited and its exit code is recorded,
        at most `timeout` seconds; True if one did (one not running answers at once). The
        converger rests on it between ticks, so that a Job's pod exit is seen as it happens."""
        ...

    def stop_container(self, container_id: str, timeout: int = 30, signal: str = "") -> None:
        ...

    def remove_container(self, container_id: str) -> None:
        ...

    def list_containers(self) -> list[ObservedContainer]:
        ...

    def exec_in(self, container_id: str, argv: Sequence[str], *, tty: bool = False, interactive: bool = False,
                env: Mapping[str, str] | None = None, timeout: float | None = None,
                output: BinaryIO | None = None) -> int:
        """Run a process in a running container with the caller's stdio; its exit code.
        ``output`` (a real file) takes its stdout and stderr instead: exec probes keep theirs."""
        ...

    def read_logs(self, container_id: str, *, follow: bool = False, tail: int | None = None,
                  since: float | None = None) -> Iterator[tuple[float, str, bytes]]:
        """(timestamp, stream, line) in CRI log order."""
        ...


@runtime_checkable
class NetworkDriver(Protocol):
    """Pod networking through CNI: one attachment per pod uid.

    Example::

        status = network.attach(pod, "/proc/123/ns/net")   # ADD, result cached
        network.check(pod.uid)                             # CHECK; raises NetworkError
        network.detach(pod.uid)                            # DEL, also when the netns is gone

    ``attach`` refuses a hostPort that is already taken (by another pod or process) with a
    NetworkError before it changes anything. ``detach`` releases the IP even after a crash.
    """

    def attach(self, pod: DesiredPod, netns: str) -> NetworkStatus:
        ...

    def detach(self, uid: str) -> None:
        ...

    def check(self, uid: str) -> None:
        ...

    def list_attachments(self) -> list[ObservedAttachment]:
        ...

    def port_conflicts(self, pod: DesiredPod) -> list[str]:
        """Human-readable conflicts of the pod's hostPorts with what holds them now."""
        ...


class ServiceDriver(Protocol):
    """Serves Services on the host: ClusterIP and nodePort forwarding to ready endpoints, and the
    Services' names in every pod's /etc/hosts.

    ``sync`` installs a whole ``reconciler.services.ServiceSync`` at once — every Service the host
    should serve, not a delta — so running it twice, or again after a crash part-way, is harmless;
    endpoints with an empty IP are pods created in the same tick, resolved from their network
    attachments. A sync with no entries removes every rule, chain and name it ever wrote.
    ``observe`` says what the host serves: Service ref → the entry hash it was written from
    (``reconciler.services.entry_hash``), and the hash of the names in the pods' hosts files.

        drivers.services.sync(ServiceSync(entries=(ServiceEntry("default/web", src, "ClusterIP",
                              "10.43.0.7", (ServicePortEntry("", "tcp", 80),), (Endpoint(uid, "default/web-0",
                              "10.129.3.5", (8080,)),)),), hosts=((uid, "default"),)))
        drivers.services.observe()  # → ({"default/web": "3f1c…"}, "9a0b…")

    ``addresses_elsewhere`` lists the ClusterIPs other storage roots serve on this host (a new
    root picks a Service range clear of them); it may answer from what ``observe`` just read.
    """

    def sync(self, sync) -> None: ...

    def observe(self) -> tuple[dict[str, str], str]: ...

    def addresses_elsewhere(self) -> list[str]: ...

    def remove_all(self) -> None: ...


@dataclass
class Drivers:
    """The set of drivers one reconcile pass uses. ``close`` releases what they hold."""

    images: ImageStore
    snapshots: SnapshotDriver
    volumes: VolumeDriver
    runtime: RuntimeDriver
    network: NetworkDriver
    close: Callable[[], None] = lambda: None
    services: ServiceDriver | None = None  # None: this host serves no Services
    # Answers probes instead of running them (the fake host's table): (container id, container
    # name, kind, probe) → (success, message). None: health probes run them for real.
    probe: Callable[[str, str, str, object], tuple[bool, str]] | None = None
