"""Frozen dataclasses of the supported Kubernetes subset (see ``kube``) and small pure helpers."""

from reconciler.model.kube import *  # noqa: F403
from reconciler.model.kube import KINDS, KubeObject, ObjectKey, key_of  # noqa: F401
