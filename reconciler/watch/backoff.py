"""Crash-loop back-off as the keeper and `ps` see it: when will an exited container be restarted?

``compute_diff(now=…)`` decides whether a restart is due; this module answers the question it
does not: *when* the next one will be, so that the keeper wakes up exactly then and `status`/`ps`
can show "back-off 40s". Same rule (Kubernetes'): 10 s doubling up to 5 min, from the moment the
container exited; no delay once it had run 10 min.
"""

from __future__ import annotations

from reconciler.desired import DesiredState
from reconciler.diff import BACKOFF_RESET, restart_delay
from reconciler.observed import ContainerState, ObservedContainer, ObservedHost


def restart_at(container: ObservedContainer, restart_policy: str) -> float | None:
    """Wall-clock time at which an exited container may be restarted; None when it is not
    exited or its pod's restart policy leaves it stopped."""
    if container.state != ContainerState.EXITED:
        return None
    if restart_policy == "Never" or (restart_policy == "OnFailure" and container.exit_code == 0):
        return None
    ran = container.finished_at - container.started_at if container.started_at and container.finished_at else 0.0
    delay = 0.0 if ran >= BACKOFF_RESET else restart_delay(container.restart_count)
    return container.finished_at + delay


def backoff_schedule(desired: DesiredState, observed: ObservedHost, now: float) -> dict[str, dict]:
    """Every desired container that waits in back-off: container id → what `status` shows."""
    out: dict[str, dict] = {}
    for pod in observed.pods.values():
        d = desired.pods.get(pod.key)
        if d is None or d.uid != pod.uid:
            continue
        for c in d.containers:
            oc = pod.containers.get(c.name)
            if oc is None:
                continue
            at = restart_at(oc, d.spec.restart_policy)
            if at is not None and at > now:
                out[oc.id] = {"pod": pod.key, "container": c.name, "until": at, "restarts": oc.restart_count,
                              "exit_code": oc.exit_code}
    return out
