"""Where a model object came from, and podplay's own annotations (our knobs live under podplay.io/)."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model.kube import KubeObject, ObjectKey, key_of
from reconciler.model.names import ANN_NETWORK, ANN_PORT_PER_REPLICA, ANNOTATION_PREFIX  # noqa: F401


@dataclass(frozen=True)
class Loaded:
    """One object as read from a file, with where it came from."""

    obj: KubeObject
    file: str
    line: int = 0
    column: int = 0

    @property
    def key(self) -> ObjectKey:
        return key_of(self.obj)
