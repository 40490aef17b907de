"""The no-change check: is the host still exactly as the last converged pass over these paths left it?

Most `podplay up` runs find nothing to do, and on a small device the full pipeline (YAML, the
schema, the model, the diff) costs several times what answering that question needs. So when
a pass verifies that nothing is left to do, it records a fingerprint: the content digest of
every manifest file under the paths, the pod instances (uid, app containers, network) and
claims that make up the converged host, and the state that shapes desired pods beyond the
files (rollout pins). The next `up` of the same paths first relists the host: if the files
hash the same, no transaction is open, every recorded pod's infra and app containers run on
their mounted snapshots, its network attachment and claims exist, no probe has an opinion about
it, no other pod from these paths is on the host, and the host still serves each of their
Services from the rules it was last written (a flush of the iptables chains, or a reboot, is
noticed), then the full pass would plan nothing, and `up` says so. Paths with an ExternalName
Service always take the full pass: its name is looked up again at every pass. The pod-security
policy in force is part of the fingerprint too (it decides whether the files are admitted and
what they are warned of). `podplay plan` answers from the fingerprint as well, when the pass that
recorded it had nothing to say about any pod (no pod held, pinned or backing off: `quiet`).
Anything else — a changed byte, a crashed container, a leftover instance — takes the full pass.

This module stays light (no YAML, no schema, no model): that is its whole point.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from reconciler import sha
from reconciler.observed import LABEL_SOURCE, ContainerState, lost_snapshots
from reconciler.sources import find_manifest_files

if TYPE_CHECKING:
    from reconciler.desired import DesiredState
    from reconciler.drivers.base import Drivers
    from reconciler.state import StateStore

FORMAT = 3  # 2: the Services the host serves are part of the fingerprint; 3: the policy, quiet


def _key(paths: Sequence[str], network: str) -> str:
    """Per set of paths and host-wide default network (which the pods' specs depend on)."""
    return "converged:" + json.dumps([sorted(os.path.abspath(p) for p in paths), network])


def _scope(paths: Sequence[str]) -> tuple[str, ...]:
    return tuple(os.path.abspath(p).rstrip("/") or "/" for p in paths)


def _in_scope(source: str, scope: tuple[str, ...]) -> bool:
    return any(source == p or source.startswith(p + "/") for p in scope)


def file_digests(paths: Sequence[str]) -> dict[str, str] | None:
    """Absolute file → sha256 of its content, or None when a path cannot be fingerprinted."""
    if "-" in paths:
        return None
    files, problems = find_manifest_files(paths)
    if problems:
        return None
    out = {}
    for f in files:
        try:
            with open(f, "rb") as fh:
                out[os.path.abspath(f)] = sha.sha256(fh.read()).hexdigest()
        except OSError:
            return None
    return out


def _state_digest(state: StateStore) -> str:
    from reconciler import __version__

    pins = [[ref, p.revision, p.manifest_hash] for ref, p in sorted(state.rollouts.pins().items())]
    return sha.sha256(json.dumps([__version__, FORMAT, pins]).encode()).hexdigest()


def _policy() -> str:
    """The pod-security policy in force (reconciler.admission), as text; "" when none is. A process
    that never loaded admission has none in force."""
    admission = sys.modules.get("reconciler.admission")
    policy = admission.in_force() if admission is not None else None
    return "" if policy is None else repr(policy)


def record(state: StateStore, paths: Sequence[str], desired: DesiredState, warnings: Sequence[str] = (), *,
           network: str = "", services: Mapping[str, str] | None = None, quiet: bool = False) -> None:
    """Remember that the host matched `desired` for `paths` (call it only after a pass that
    verified every change was a no-op). `warnings` are the manifests' warnings, which a later
    no-change `up` shows again without reading the manifests; `services` what the host served
    then (Service ref → entry hash, ServiceDriver.observe); `quiet` that the pass had no note
    about any pod (every change "unchanged", no pin notes), so that `plan` may answer from it."""
    files = file_digests(paths)
    if any(s.spec.type == "ExternalName" for s in desired.services.values()):
        files = None
    if files is None:
        forget(state, paths, network=network)
        return
    pods = {p.uid: {"ref": p.ref, "containers": sorted(c.id for c in p.containers), "network": bool(p.network),
                    # Readiness is the probes' to say: `up --wait` must run them.
                    "probes": any(c.spec.readiness_probe or c.spec.startup_probe for c in p.containers)}
            for p in desired.pods.values()}
    served = {ref: h for ref, h in (services or {}).items() if ref in desired.services}
    fingerprint = {"files": files, "pods": pods, "claims": sorted(desired.claims), "state": _state_digest(state),
                   "warnings": list(warnings), "services": served, "policy": _policy(), "quiet": quiet}
    state.meta.set(_key(paths, network), json.dumps(fingerprint, sort_keys=True))


def forget(state: StateStore, paths: Sequence[str], *, network: str = "") -> None:
    state.meta.forget(_key(paths, network))


def unchanged(state: StateStore, paths: Sequence[str], drivers: Drivers, *, network: str = "",
              wait: bool = False, quiet: bool = False) -> list[str] | None:
    """The manifests' warnings when a full `up` of `paths` would find nothing to do (see the
    module docstring); None when the full pass must run. With `wait` (``up --wait``), pods with
    readiness or startup probes always take the full pass, which runs the probes. With `quiet`
    (``plan``), only a fingerprint recorded by a quiet pass answers."""
    raw = state.meta.get(_key(paths, network))
    if not raw:
        return None
    fp = json.loads(raw)
    if (quiet and not fp.get("quiet")) or fp.get("policy") != _policy():
        return None
    if state.journal.has_open_txns():
        return None
    if fp.get("state") != _state_digest(state) or fp.get("files") != file_digests(paths):
        return None
    pods: dict[str, dict] = fp["pods"]
    if wait and any(p.get("probes", True) for p in pods.values()):
        return None
    if state.keepers.any_probed(pods):
        return None
    scope = _scope(paths)
    running: dict[str, set[str]] = {uid: set() for uid in pods}
    containers = drivers.runtime.list_containers()
    for c in containers:
        if c.pod_uid not in pods:
            if _in_scope(c.labels.get(LABEL_SOURCE, ""), scope):
                return None  # another instance from these paths: the full pass removes it
            continue
        if c.state != ContainerState.RUNNING:
            if c.role != "init":
                return None
            continue
        running[c.pod_uid].add("" if c.role == "infra" else c.id)
    for uid, pod in pods.items():
        if running[uid] != {"", *pod["containers"]}:
            return None
    ours = [c for c in containers if c.pod_uid in pods]
    if lost_snapshots(ours, [s for s in drivers.snapshots.list_snapshots() if s.key.split(".", 1)[0] in pods]):
        return None  # a root filesystem deleted or unmounted under a running container
    attached = {a.pod_uid for a in drivers.network.list_attachments()}
    if any(pod["network"] and uid not in attached for uid, pod in pods.items()):
        return None
    if not set(fp["claims"]) <= set(drivers.volumes.list_claims()):
        return None
    served = fp.get("services") or {}
    if served:
        if drivers.services is None:
            return None
        now = drivers.services.observe()[0]
        if any(now.get(ref) != h for ref, h in served.items()):
            return None  # the rules are gone or not the ones written: the full pass restores them
    return list(fp.get("warnings", ()))
