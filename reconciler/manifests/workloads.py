"""The checks that belong to one workload kind beyond a replicated template's (``pods.check_replicated``)."""

from __future__ import annotations

import re

from reconciler.manifests.checker import Checker
from reconciler.manifests.hostfacts import HostFacts
from reconciler.manifests.pods import check_replicated
from reconciler.model.workloads import DaemonSet

INT_OR_PERCENT = re.compile(r"^\d+%?$")


def check_daemon_set(chk: Checker, obj: DaemonSet, host: HostFacts) -> None:
    check_replicated(chk, obj, host)
    us = obj.spec.update_strategy
    path = ("spec", "updateStrategy")
    if us.type == "OnDelete":
        # OnDelete keeps the old pod until someone deletes it: podplay has no object to delete
        # apart from the pod its manifest describes, so the old template would have to be kept
        # as a pin. Refused rather than silently rolled out.
        chk.error(path + ("type",), "OnDelete is not supported by podplay: use RollingUpdate (the default; "
                  "maxSurge 0 replaces the pod when its template changes)")
        return
    ru = us.rolling_update
    for fname, value in (("maxSurge", ru.max_surge), ("maxUnavailable", ru.max_unavailable)):
        if not INT_OR_PERCENT.match(str(value)):
            chk.error(path + ("rollingUpdate", fname), f"{value!r} must be a number or a percentage like 25%")
    if str(ru.max_surge) in ("0", "0%") and str(ru.max_unavailable) in ("0", "0%"):
        chk.error(path + ("rollingUpdate",), "maxSurge and maxUnavailable cannot both be 0")
