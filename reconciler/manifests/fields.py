"""Checks of the fields every kind has: names, labels, annotations, quantities; and the warnings
about fields podplay accepts but does not act on.

Each check takes the object's Checker and a field path relative to the object, and reports in
words that say what would be right.
"""

from __future__ import annotations

import re
from typing import Any

from reconciler.manifests.checker import Checker, close
from reconciler.manifests.positions import Path_
from reconciler.model import source as _source
from reconciler.model.quantity import parse_quantity
from reconciler.model.source import ANN_PORT_PER_REPLICA, ANNOTATION_PREFIX
from reconciler.model.workloads import REPLICATED

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUANTITY_UNITS = {"kb": "k", "mb": "M", "gb": "G", "tb": "T", "pb": "P", "eb": "E", "kib": "Ki", "mib": "Mi",
                   "gib": "Gi", "tib": "Ti", "pib": "Pi", "eib": "Ei"}

# Set by the API server, harmless in exported YAML: accepted without a warning.
SERVER_FIELDS = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds"}

# API defaults of fields podplay does not act on: `kubectl get -o yaml` writes them into every
# object, and a field left at its default asks for nothing that podplay would have to do.
UNUSED_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    "schedulerName": "default-scheduler", "serviceAccountName": "default",
    "serviceAccount": "default", "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
}

# podplay's own annotations (model.source.ANN_*), and the prefixes of podman's, which podplay ignores.
PODPLAY_ANNOTATIONS = tuple(sorted(v for k, v in vars(_source).items() if k.startswith("ANN_")))
PODMAN_ANNOTATION_PREFIXES = ("io.podman.annotations.", "io.containers.")

UNUSED_MESSAGE = "podplay accepts this field but does not act on it"

# The volume sources podplay runs (model.kube.Volume's fields, in Kubernetes' names), and why each
# other Kubernetes volume type cannot run on one host without a cluster. Such a volume is refused
# with that reason, once: never also "accepted but not acted on", never also "has no source".
VOLUME_SOURCES = ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected", "image",
                  "persistentVolumeClaim")
_CLOUD = "need a cloud provider"
_NETWORK = "need a network storage client on the host and the kubelet's volume plugin"
_DRIVER = "need a storage driver installed in a cluster"
OTHER_VOLUME_SOURCES = {
    "awsElasticBlockStore": _CLOUD, "azureDisk": _CLOUD, "azureFile": _CLOUD, "cinder": _CLOUD,
    "gcePersistentDisk": _CLOUD, "photonPersistentDisk": _CLOUD, "vsphereVolume": _CLOUD,
    "portworxVolume": _DRIVER, "scaleIO": _DRIVER, "storageos": _DRIVER, "quobyte": _DRIVER, "flocker": _DRIVER,
    "csi": _DRIVER, "ephemeral": _DRIVER + " (a generic ephemeral volume is a claim made by the API server)",
    "flexVolume": _DRIVER, "nfs": _NETWORK, "iscsi": _NETWORK, "cephfs": _NETWORK, "glusterfs": _NETWORK,
    "rbd": _NETWORK, "fc": _NETWORK,
    "gitRepo": "are deprecated and need git in the kubelet (clone into an emptyDir with an init container)",
}


def volume_sources_text() -> str:
    *most, last = VOLUME_SOURCES
    return f"{', '.join(most)} and {last}"


def refuse_volume_sources(chk: Checker, unused: list[Path_]) -> list[Path_]:
    """Volumes of a type podplay cannot run: one error each that says why and what runs. Returns
    the paths refused (warn_unused skips them; the loader drops "no volume source" about them)."""
    refused = []
    for path in unused:
        if len(path) >= 2 and path[-3:-2] == ("volumes",) and path[-1] in OTHER_VOLUME_SOURCES:
            chk.error(path, f"{path[-1]} volumes {OTHER_VOLUME_SOURCES[path[-1]]}; podplay runs "
                      + volume_sources_text(), key=True)
            refused.append(path)
    return refused
PODMAN_MESSAGE = "podman annotation: podplay does not act on it"


def _suggest(name: str, limit: int, dots: bool) -> str:
    allowed = "a-z0-9.-" if dots else "a-z0-9-"
    s = re.sub(f"[^{allowed}]+", "-", name.lower())
    s = re.sub(r"-{2,}", "-", s)[:limit].strip("-.")
    return s


def check_name(chk: Checker, path: Path_, name: str, what: str, label: bool) -> None:
    if not name:
        chk.error(path, f"{what} is missing")
        return
    pattern, limit = (DNS1123_LABEL, 63) if label else (DNS1123_SUBDOMAIN, 253)
    if len(name) <= limit and name != name.lower() and pattern.match(name.lower()):
        # podman takes any case ('testPod') and keeps it; so does podplay (the host does not mind).
        chk.dialect(path, f"{name!r} → {name.lower()!r} (names are lowercase in Kubernetes)")
    elif len(name) > limit or not pattern.match(name):
        chars = "digits and '-'" if label else "digits, '-' and '.'"
        fix = _suggest(name, limit, not label)
        hint = f"; e.g. {fix!r}" if fix and pattern.match(fix) and fix != name else ""
        chk.error(path, f"{name!r} is not a valid {what}: use at most {limit} lowercase letters, {chars}, "
                  f"starting and ending with a letter or digit{hint}")


def check_qualified_key(chk: Checker, path: Path_, key: str, what: str) -> bool:
    prefix, _, name = key.rpartition("/")
    ok = (bool(name) and len(name) <= 63 and QUALIFIED_NAME.match(name) is not None
          and (not prefix or ("/" not in key[:-len(name) - 1] and len(prefix) <= 253
                              and DNS1123_SUBDOMAIN.match(prefix) is not None)))
    if not ok:
        chk.error(path, f"{key!r} is not a valid {what} key: [prefix/]name, the name at most 63 letters, digits, "
                  "'-', '_' or '.', starting and ending with a letter or digit", key=True)
    return ok


def check_labels(chk: Checker, path: Path_, labels: dict[str, str]) -> None:
    for k, v in labels.items():
        check_qualified_key(chk, path + (k,), k, "label")
        if len(v) > 63 or not LABEL_VALUE.match(v):
            chk.error(path + (k,), f"{v!r} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', "
                      "starting and ending with a letter or digit")


def check_meta(chk: Checker, meta, kind: str, path: Path_ = ("metadata",), named: bool = True) -> None:
    if named:
        check_name(chk, path + ("name",), meta.name, f"{kind} name", label=False)
        if meta.namespace and (len(meta.namespace) > 63 or not DNS1123_LABEL.match(meta.namespace)):
            chk.error(path + ("namespace",), f"{meta.namespace!r} is not a valid namespace: use at most 63 "
                      "lowercase letters, digits and '-'")
    check_labels(chk, path + ("labels",), meta.labels)
    for k, v in meta.annotations.items():
        ap = path + ("annotations", k)
        if not check_qualified_key(chk, ap, k, "annotation"):
            continue
        if k.startswith(ANNOTATION_PREFIX) and k not in PODPLAY_ANNOTATIONS:
            hint = close(k, PODPLAY_ANNOTATIONS)
            chk.warn(ap, "unknown podplay annotation, ignored" + (f" (did you mean {hint!r}?)" if hint else
                                                                 f"; podplay knows {', '.join(PODPLAY_ANNOTATIONS)}"),
                     key=True)
        elif k == ANN_PORT_PER_REPLICA and v.lower() not in ("true", "false"):
            chk.error(ap, f"{v!r} is not a boolean: use \"true\" or \"false\"")


def check_quantity(chk: Checker, path: Path_, value) -> Any:
    try:
        q = parse_quantity(value)
    except ValueError:
        m = re.match(r"^\s*([+-]?[\d.]+)\s*([A-Za-z]+)\s*$", str(value))
        unit = _QUANTITY_UNITS.get(m.group(2).lower()) if m else None
        hint = f"; did you mean {m.group(1) + unit!r}?" if unit else " (e.g. 500m, 128Mi, 1.5, 2e3)"
        chk.error(path, f"{value!r} is not a quantity{hint}")
        return None
    if q < 0:
        chk.error(path, f"{value!r} must not be negative")
        return None
    return q



# --- what the model has no place for ---------------------------------------------------------------

def _get(data: Any, path: Path_) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def warn_unused(chk: Checker, unused: list[Path_], raw: dict, refused: list[Path_] = ()) -> None:
    """Fields Kubernetes accepts that podplay does not act on: said once per load for each field.
    `refused`: reported as errors already (a field is run, refused or warned about, one of them)."""
    for path in unused:
        if path in refused:
            continue
        if path and path[0] == "status":
            continue
        if len(path) == 2 and path[0] == "metadata" and path[1] in SERVER_FIELDS:
            continue
        value = _get(raw, path)
        if value in ({}, [], "", None) or (path[-1] in UNUSED_DEFAULTS and value == UNUSED_DEFAULTS[path[-1]]):
            continue  # an empty or default value asks for nothing (exported YAML is full of them)
        chk.warn_once(path, UNUSED_MESSAGE, key=True)


def warn_podman_annotations(chk: Checker, obj) -> None:
    """podman's own annotations: said once per load for each annotation, wherever it is."""
    metas = [(("metadata",), obj.metadata)]
    if isinstance(obj, REPLICATED):
        metas.append((("spec", "template", "metadata"), obj.spec.template.metadata))
    for path, meta in metas:
        for k in meta.annotations:
            if k.startswith(PODMAN_ANNOTATION_PREFIXES):
                chk.warn_once(path + ("annotations", k), PODMAN_MESSAGE, key=True, same=k)
