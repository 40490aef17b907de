"""PURE  the verbs of an apply: one frozen dataclass per step, each naming what undoes it.

A step carries only identifiers (pod ref, pod uid, container id, image reference), never
handles, so it can be written to the journal and replayed or undone by a later process.
Every step must be idempotent in its driver: running it twice, or undoing something that
never happened, is not an error. That is what makes crash recovery a simple replay.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Step:
    pod: str = ""  # "<namespace>/<name>"; "" for steps shared between pods
    uid: str = ""  # pod instance uid

    verb: ClassVar[str] = ""

    def undo(self) -> Step | None:
        """The step that reverses this one, or None when nothing needs reversing."""
        return None

    @property
    def target(self) -> str:
        return self.pod

    def describe(self) -> str:
        return f"{self.verb} {self.target}".rstrip()

    def to_json(self) -> dict:
        data = {"verb": self.verb}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @staticmethod
    def from_json(data: dict) -> Step:
        data = dict(data)
        cls = STEP_TYPES[data.pop("verb")]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return cls(**kwargs)


STEP_TYPES: dict[str, type[Step]] = {}


def _step(cls):
    cls = dataclass(frozen=True)(cls)
    cls.verb = cls.__name__
    STEP_TYPES[cls.__name__] = cls
    return cls


# --- shared -----------------------------------------------------------------------------------

@_step
class PullImage(Step):
    image: str = ""
    policy: str = "IfNotPresent"
    credentials_from: tuple[str, ...] = ()  # pod refs whose imagePullSecrets may be used

    @property
    def target(self) -> str:
        return self.image


@_step
class EnsureClaim(Step):
    claim: str = ""  # "<namespace>/<claimName>"

    @property
    def target(self) -> str:
        return self.claim


@_step
class RemoveClaim(Step):
    claim: str = ""

    @property
    def target(self) -> str:
        return self.claim


@_step
class SyncServices(Step):
    """Serve exactly these Services (a reconciler.services.ServiceSync as JSON): rules and names."""

    sync: str = ""

    @property
    def target(self) -> str:
        return "services"


# --- teardown ---------------------------------------------------------------------------------

@_step
class StopContainer(Step):
    container_id: str = ""
    timeout: int = 30
    signal: str = ""  # "" = the container's configured stop signal

    @property
    def target(self) -> str:
        return self.container_id


@_step
class StopContainers(Step):
    """Stop a pod's running containers together: one grace period for all, as the kubelet does.
    ``then_ids`` (native sidecars) are stopped after them, with what is left of the period."""

    container_ids: tuple[str, ...] = ()
    timeout: int = 30
    then_ids: tuple[str, ...] = ()
    # (container id, preStop handler as JSON): run before that container is signalled, within
    # the grace period; `pod_ip` is an httpGet hook's default host.
    pre_stop: tuple[tuple[str, str], ...] = ()
    pod_ip: str = ""

    @property
    def target(self) -> str:
        return f"{self.pod} ({len(self.container_ids)} container{'s' if len(self.container_ids) != 1 else ''})"


@_step
class RemoveContainer(Step):
    container_id: str = ""

    @property
    def target(self) -> str:
        return self.container_id


@_step
class RemoveSnapshot(Step):
    key: str = ""

    @property
    def target(self) -> str:
        return self.key


@_step
class DetachNetwork(Step):
    network: str = ""

    @property
    def target(self) -> str:
        return f"{self.pod} from {self.network}"


@_step
class RemoveInfra(Step):
    pass


@_step
class RemoveVolumes(Step):
    pass


# --- bring-up ---------------------------------------------------------------------------------

@_step
class CheckFreeSpace(Step):
    """Refuse (NoSpaceError, nothing changed) unless the storage root has ``need`` bytes free
    beyond the state store's reserve: room for a new instance's writable layers and the journal
    of its bring-up. A replace checks before its old instance is touched."""

    need: int = 0

    @property
    def target(self) -> str:
        return f"{self.pod} ({self.need / 1e6:.1f} MB)"


@_step
class PrepareVolumes(Step):
    def undo(self) -> Step:
        return RemoveVolumes(self.pod, self.uid)


@_step
class PrepareSnapshot(Step):
    container: str = ""
    key: str = ""
    image: str = ""

    @property
    def target(self) -> str:
        return f"{self.pod}/{self.container}"

    def undo(self) -> Step:
        return RemoveSnapshot(self.pod, self.uid, key=self.key)


@_step
class CreateInfra(Step):
    def undo(self) -> Step:
        return RemoveInfra(self.pod, self.uid)


@_step
class AttachNetwork(Step):
    network: str = ""

    @property
    def target(self) -> str:
        return f"{self.pod} to {self.network}"

    def undo(self) -> Step:
        return DetachNetwork(self.pod, self.uid, network=self.network)


@dataclass(frozen=True)
class _ContainerStep(Step):
    """A step on one container of a pod."""

    container: str = ""
    container_id: str = ""

    @property
    def target(self) -> str:
        return f"{self.pod}/{self.container}"

    def _remove(self) -> Step:
        return RemoveContainer(self.pod, self.uid, container_id=self.container_id)


@_step
class RunInitContainer(_ContainerStep):
    """Create, start and wait for an init container; fails unless it exits 0."""

    def undo(self) -> Step:
        return self._remove()


@_step
class CreateContainer(_ContainerStep):
    def undo(self) -> Step:
        return self._remove()


@_step
class StartContainer(_ContainerStep):
    def undo(self) -> Step:
        return StopContainer(self.pod, self.uid, container_id=self.container_id, timeout=0)


@_step
class RestartContainer(_ContainerStep):
    """Replace an exited container of a running pod with a fresh one from the same spec (or a
    running one whose liveness probe failed: ``reason`` says why, for the journal)."""

    reason: str = ""
