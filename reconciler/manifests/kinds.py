"""The checks of one object, by kind: the entry ``check_object``, and the checks of ConfigMaps,
Secrets and PersistentVolumeClaims (pods and Deployments are in ``pods``)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence

from reconciler.manifests.checker import Checker
from reconciler.manifests.fields import check_meta, check_quantity
from reconciler.manifests.hostfacts import HostFacts
from reconciler.manifests.pods import check_deployment, check_pod_spec, check_replicated
from reconciler.manifests.positions import Path_
from reconciler.manifests.services import check_service
from reconciler.manifests.workloads import check_cron_job, check_daemon_set, check_job, check_stateful_set
from reconciler.model.kube import ConfigMap, Deployment, PersistentVolumeClaim, Pod, Secret
from reconciler.model.service import Service
from reconciler.model.workloads import REPLICATED, CronJob, DaemonSet, Job, StatefulSet

CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_DATA = 1024 * 1024  # the API server's cap on a ConfigMap's or Secret's data (core.MaxSecretSize)


def check_object(chk: Checker, obj, host: HostFacts) -> None:
    if isinstance(obj, Pod):
        check_meta(chk, obj.metadata, "pod")
        check_pod_spec(chk, obj.spec, ("spec",), host)
    elif isinstance(obj, Deployment):
        check_deployment(chk, obj, host)
    elif isinstance(obj, CronJob):
        check_cron_job(chk, obj, host)
    elif isinstance(obj, Job):
        check_job(chk, obj, host)
    elif isinstance(obj, StatefulSet):
        check_stateful_set(chk, obj, host)
    elif isinstance(obj, DaemonSet):
        check_daemon_set(chk, obj, host)
    elif isinstance(obj, REPLICATED):
        check_replicated(chk, obj, host)
    elif isinstance(obj, ConfigMap | Secret):
        check_meta(chk, obj.metadata, obj.kind)
        _check_data_keys(chk, obj)
        _check_data_size(chk, obj)
        if isinstance(obj, Secret):
            _check_secret_type(chk, obj)
    elif isinstance(obj, PersistentVolumeClaim):
        _check_claim(chk, obj)
    elif isinstance(obj, Service):
        check_service(chk, obj)


def _check_data_keys(chk: Checker, obj: ConfigMap | Secret) -> None:
    data_fields = ("data", "binaryData") if isinstance(obj, ConfigMap) else ("data", "stringData")
    seen: set[str] = set()
    for fname in data_fields:
        table = {"data": obj.data, "binaryData": getattr(obj, "binary_data", {}),
                 "stringData": getattr(obj, "string_data", {})}[fname]
        for k in table:
            if not CONFIG_KEY.match(k) or len(k) > 253:
                chk.error((fname, k), f"{k!r} is not a valid key (letters, digits, '-', '_', '.')", key=True)
            if isinstance(obj, ConfigMap) and k in seen:
                chk.error((fname, k), f"key {k!r} is in both data and binaryData", key=True)
            seen.add(k)


def _check_data_size(chk: Checker, obj: ConfigMap | Secret) -> None:
    """The API server refuses a ConfigMap or Secret whose values add up to more than 1 MiB (it is
    kept whole in etcd and sent whole to every watcher): such a manifest would not apply there."""
    if isinstance(obj, ConfigMap):
        size = sum(len(v.encode()) for v in obj.data.values()) + sum(len(v) for v in obj.binary_data.values())
    else:
        size = sum(len(v) for v in obj.items().values())
    if size > MAX_DATA:
        where = next((f for f, table in (("data", obj.data), ("binaryData", getattr(obj, "binary_data", {})),
                                         ("stringData", getattr(obj, "string_data", {}))) if table), "data")
        chk.error((where,), f"the values add up to {size} bytes, more than the {MAX_DATA} (1 MiB) a {obj.kind} "
                  "may hold: split it into several, or put large files in a volume (hostPath or a claim)", key=True)


def _check_claim(chk: Checker, obj: PersistentVolumeClaim) -> None:
    check_meta(chk, obj.metadata, "PersistentVolumeClaim")
    if not obj.spec.access_modes:
        chk.error(("spec", "accessModes"), "needs at least one access mode, e.g. [ReadWriteOnce]")
    if "storage" not in obj.spec.resources.requests:
        chk.error(("spec", "resources", "requests", "storage"), "required field is missing (the size, e.g. 1Gi)")
    for res, value in obj.spec.resources.requests.items():
        check_quantity(chk, ("spec", "resources", "requests", res), value)


def _check_secret_type(chk: Checker, obj: Secret) -> None:
    needed = {"kubernetes.io/dockerconfigjson": ".dockerconfigjson", "kubernetes.io/dockercfg": ".dockercfg"}
    key = needed.get(obj.type)
    if key is None:
        return
    items = obj.items()
    if key not in items:
        chk.error(("data",), f"a Secret of type {obj.type} needs the key {key!r}")
        return
    where = ("stringData", key) if key in obj.string_data else ("data", key)
    try:
        doc = json.loads(items[key])
    except ValueError:
        chk.error(where, f"{key} is not valid JSON")
        return
    if not isinstance(doc, dict):
        chk.error(where, f"{key} must be a JSON object")


def decode_b64_fields(raw: dict, fields: Sequence[str], chk: Checker) -> list[Path_]:
    """Decode base64 maps in place (Secret.data, ConfigMap.binaryData); return the bad ones' paths."""
    bad = []
    for fname in fields:
        table = raw.get(fname)
        if not isinstance(table, dict):
            continue
        for k, v in list(table.items()):
            try:
                # Go's decoder skips line breaks (long values are often wrapped), nothing else.
                table[k] = base64.b64decode(str(v).replace("\n", "").replace("\r", ""), validate=True)
            except (binascii.Error, ValueError):
                hint = "put plain text under stringData" if fname == "data" else "encode the value with base64"
                chk.error((fname, k), f"value of {k!r} is not valid base64 ({hint})")
                table[k] = b""
                bad.append((fname, k))
    return bad

