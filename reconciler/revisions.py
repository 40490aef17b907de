"""Deployment revisions, pins and rollout progress, kept in the state store.

* Every template a Deployment's manifest takes gets a revision number (its pod template as
  JSON, plus the ConfigMaps and Secrets it consumed, so that it can be run again exactly).
  A template that comes back is renumbered as the newest, as Kubernetes does.
* A *pin* makes the host run an older revision although the manifest says otherwise:
  ``podplay rollout undo`` sets one, and so does an automatic rollback. On Kubernetes
  ``kubectl rollout undo`` changes the Deployment object; on podplay the manifest is the
  source of truth, so a pin holds only while the manifest's template stays what it was when
  the pin was set. Edit the manifest and the pin is released: the new template rolls out.
* ``check_rollouts`` follows the revision the host should run: complete when every replica
  runs it and is available with no older instance left; failed when it makes no progress for
  progressDeadlineSeconds, and then rolled back to the previous revision that did not fail (a pin),
  unless the failing revision is itself a pin (no ping-pong).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.desired import DesiredPod, DesiredState, build_desired
from reconciler.diff import deployment_pods, health_lookup, instances_by_ref, replicas_of
from reconciler.errors import NotFoundError, PodplayError
from reconciler.model import codec
from reconciler.model.kube import ConfigMap, Deployment, PodTemplateSpec, Secret
from reconciler.model.source import Loaded
from reconciler.observed import ObservedHost, ObservedPod
from reconciler.probes import PodHealth
from reconciler.rollout import Progress, progress
from reconciler.state import Pin, Revision, StateStore


class Outcome(enum.StrEnum):
    """Where a revision's rollout stands (kept in the store as its string)."""

    PROGRESSING = "progressing"
    COMPLETE = "complete"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer template arrived before it completed


PROGRESSING, COMPLETE, FAILED, SUPERSEDED = Outcome  # the names every caller uses


class RolloutEvent(enum.StrEnum):
    """What one check_rollouts decided for a Deployment."""

    NONE = ""
    COMPLETE = "complete"
    FAILED = "failed"  # past its progress deadline, nothing to roll back to
    ROLLED_BACK = "rolled_back"  # past its progress deadline, pinned to the revision before


def manifest_hashes(desired: DesiredState) -> dict[str, str]:
    """Deployment ref → the spec hash of its first replica: the revision's identity (scaling
    does not change it; a template, ConfigMap or Secret change does)."""
    return {ref: pods[0].spec_hash for ref, pods in deployment_pods(desired).items() if pods}


def consumed(template: PodTemplateSpec) -> set[tuple[str, str]]:
    """(kind, name) of the ConfigMaps and Secrets a pod template reads."""
    spec = template.spec
    out: set[tuple[str, str]] = set()
    for v in spec.volumes:
        if v.config_map is not None:
            out.add(("ConfigMap", v.config_map.name))
        if v.secret is not None:
            out.add(("Secret", v.secret.secret_name))
    for c in spec.containers + spec.init_containers:
        for src in c.env_from:
            if src.config_map_ref is not None:
                out.add(("ConfigMap", src.config_map_ref.name))
            if src.secret_ref is not None:
                out.add(("Secret", src.secret_ref.name))
        for var in c.env:
            vf = var.value_from
            if vf is not None and vf.config_map_key_ref is not None:
                out.add(("ConfigMap", vf.config_map_key_ref.name))
            if vf is not None and vf.secret_key_ref is not None:
                out.add(("Secret", vf.secret_key_ref.name))
    for ref in spec.image_pull_secrets:
        out.add(("Secret", ref.name))
    return out


def _context(dep: Deployment, objects: Sequence[Loaded]) -> dict:
    wanted = consumed(dep.spec.template)
    ns = dep.metadata.namespace
    found = []
    for item in objects:
        o = item.obj
        if isinstance(o, ConfigMap | Secret) and o.metadata.namespace == ns and (o.kind, o.metadata.name) in wanted:
            found.append({"kind": o.kind, "data": codec.to_data(o)})
    return {"objects": sorted(found, key=lambda x: (x["kind"], x["data"]["metadata"]["name"]))}


def rebuild(loaded: Loaded, rev: Revision) -> dict[str, DesiredPod]:
    """The Deployment's pods as revision `rev` ran them, at the manifest's current replica count."""
    dep: Deployment = loaded.obj
    template = codec.from_data(PodTemplateSpec, rev.template)
    dep = replace(dep, spec=replace(dep.spec, template=template))
    objs = [Loaded(dep, loaded.file, loaded.line, loaded.column)]
    for item in rev.context.get("objects", []):
        kind = ConfigMap if item["kind"] == "ConfigMap" else Secret
        objs.append(Loaded(codec.from_data(kind, item["data"]), loaded.file))
    return build_desired(objs).pods


def record_revisions(state: StateStore, desired: DesiredState, objects: Sequence[Loaded]) -> list[str]:
    """Give each Deployment template the manifests now describe a revision. `desired` must be
    the manifests' own (before pins). Returns notes for the user."""
    notes = []
    for ref, h in manifest_hashes(desired).items():
        revs = state.rollouts.revisions(ref)
        if revs and revs[-1].template_hash == h:
            continue
        loaded = desired.deployments[ref]
        dep: Deployment = loaded.obj
        if revs and revs[-1].outcome == PROGRESSING:
            state.rollouts.update_revision(ref, revs[-1].revision, outcome=SUPERSEDED, finished_at=time.time(),
                                           message="a newer template arrived before it completed")
        number = state.rollouts.add_revision(ref, h, codec.to_data(dep.spec.template), _context(dep, objects),
                                             loaded.file, PROGRESSING, keep=dep.spec.revision_history_limit)
        if revs:
            notes.append(f"deployment {ref}: new revision {number}")
            state.keepers.add_event("info", ref, f"revision {number}: the pod template changed")
    return notes


def apply_pins(state: StateStore, desired: DesiredState, *, write: bool = True) -> tuple[DesiredState, list[str]]:
    """`desired` with pinned Deployments running their pinned revision. A pin whose manifest
    changed since is released (with `write`; a dry run only ignores it)."""
    pins = state.rollouts.pins()
    if not pins:
        return desired, []
    hashes = manifest_hashes(desired)
    pods = dict(desired.pods)
    notes = []
    for ref, pin in pins.items():
        if ref not in hashes:
            continue  # not in these manifests (or no replicas): nothing to run either way
        rev = next((r for r in state.rollouts.revisions(ref) if r.revision == pin.revision), None)
        if hashes[ref] != pin.manifest_hash or rev is None:
            why = "the manifest changed" if rev is not None else f"revision {pin.revision} is no longer kept"
            notes.append(f"deployment {ref}: pin to revision {pin.revision} released ({why})")
            if write:
                state.rollouts.clear_pin(ref)
                state.keepers.add_event("info", ref, notes[-1])
            continue
        try:
            rebuilt = rebuild(desired.deployments[ref], rev)
        except PodplayError as exc:
            notes.append(f"deployment {ref}: cannot rebuild revision {pin.revision}: {exc}")
            continue
        for d in deployment_pods(desired)[ref]:
            if d.ref in rebuilt:
                pods[d.ref] = rebuilt[d.ref]
        notes.append(f"deployment {ref}: pinned to revision {pin.revision} ({pin.reason}); "
                     "edit the manifest to roll out something else")
    return replace(desired, pods=pods), notes


def undo(state: StateStore, ref: str, declared: DesiredState, to_revision: int, now: float) -> str:
    """`podplay rollout undo`: pin the Deployment to revision `to_revision` (0: the one before
    the revision it runs now), or release the pin when that is the manifest's own revision.
    Marks the target progressing. Returns what was done, for the user."""
    revs = state.rollouts.revisions(ref)
    manifest_hash = manifest_hashes(declared).get(ref)
    if manifest_hash is None:
        raise NotFoundError(f"deployment {ref} has no replicas to roll back")
    pin = state.rollouts.pin(ref)
    current = pin.revision if pin else next((r.revision for r in reversed(revs)
                                             if r.template_hash == manifest_hash), revs[-1].revision)
    kept = ", ".join(str(r.revision) for r in revs)
    if to_revision:
        target = next((r for r in revs if r.revision == to_revision), None)
        if target is None:
            raise NotFoundError(f"deployment {ref} has no revision {to_revision} (kept: {kept})")
    else:
        target = next((r for r in reversed(revs) if r.revision < current), None)
        if target is None:
            raise NotFoundError(f"deployment {ref} has no revision before {current} to go back to")
    for r in revs:
        if r.outcome == PROGRESSING and r.revision != target.revision:
            state.rollouts.update_revision(ref, r.revision, outcome=SUPERSEDED, finished_at=now, message="rollout undo")
    state.rollouts.update_revision(ref, target.revision, outcome=PROGRESSING, progress=0, progress_at=now,
                                   finished_at=None, message=f"rollout undo from revision {current}")
    if target.template_hash == manifest_hash:
        state.rollouts.clear_pin(ref)
        say = f"deployment {ref}: back to revision {target.revision}, the one the manifest describes (pin released)"
    else:
        state.rollouts.set_pin(ref, target.revision, manifest_hash, f"rollout undo from revision {current}")
        say = f"deployment {ref}: pinned to revision {target.revision}; it holds until the manifest's template changes"
    state.keepers.add_event("info", ref, say)
    return say


# --- progress ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RolloutStatus:
    deployment: str
    revision: int
    progress: Progress
    outcome: str
    message: str = ""
    pin: Pin | None = None
    event: RolloutEvent = RolloutEvent.NONE  # what this check decided
    rolled_back_to: int = 0

    def line(self) -> str:
        pinned = f", pinned to revision {self.pin.revision}" if self.pin else ""
        return f"deployment {self.deployment} revision {self.revision} ({self.outcome}{pinned}): " \
               f"{self.progress.describe()}"


def target_revision(state: StateStore, ref: str, effective_hash: str) -> Revision | None:
    revs = state.rollouts.revisions(ref)
    pin = state.rollouts.pin(ref)
    if pin is not None:
        found = next((r for r in revs if r.revision == pin.revision), None)
        if found is not None and found.template_hash == effective_hash:
            return found
    return next((r for r in reversed(revs) if r.template_hash == effective_hash), None)


def _why_stuck(state: StateStore, pods: list[DesiredPod], by_ref: Mapping[str, list[ObservedPod]],
               health_of) -> str:
    for d in pods:
        new = next((o for o in by_ref.get(d.ref, []) if o.uid == d.uid), None)
        if new is not None:
            h = health_of(new)
            if not h.available:
                return f"{d.name}: {h.detail or 'not available'}"
    refs = {d.ref for d in pods}
    uids = {d.uid for d in pods}
    images = {c.spec.image for d in pods for c in d.init_containers + d.containers}
    for t in state.journal.recent_txns(50):
        if not t["error"]:
            continue
        if t["key"] in refs and t["uid"] in uids:
            return f"{t['key'].split('/', 1)[1]}: {t['error']}"
        if t["kind"] == "shared" and t["key"] in images:
            return f"image {t['key']}: {t['error']}"
    return "no new replica became available"


def check_rollouts(state: StateStore, desired: DesiredState, observed: ObservedHost,
                   health: Mapping[str, PodHealth] | None = None, now: float | None = None, *,
                   write: bool = True) -> list[RolloutStatus]:
    """Follow every Deployment's rollout; mark completions and failures, roll back past the
    deadline (with `write`). `desired` is the effective one (pins applied)."""
    now = time.time() if now is None else now
    by_ref = instances_by_ref(observed)
    health_of = health_lookup(health)
    out = []
    for ref, pods in sorted(deployment_pods(desired).items()):
        rev = target_revision(state, ref, pods[0].spec_hash)
        if rev is None:
            continue
        pin = state.rollouts.pin(ref)
        prog = progress(replicas_of(pods, by_ref, health_of))
        status = RolloutStatus(ref, rev.revision, prog, rev.outcome, rev.message, pin)
        if prog.complete:
            if rev.outcome != COMPLETE and write:
                state.rollouts.update_revision(ref, rev.revision, outcome=COMPLETE, finished_at=now,
                                               progress=prog.replicas, progress_at=now, message="")
                state.keepers.add_event("info", ref, f"rollout to revision {rev.revision} complete")
                status = replace(status, outcome=COMPLETE, message="", event=RolloutEvent.COMPLETE)
            out.append(status)
            continue
        if rev.outcome != PROGRESSING:
            out.append(status)
            continue
        if prog.updated_available > rev.progress:
            if write:
                state.rollouts.update_revision(ref, rev.revision, progress=prog.updated_available, progress_at=now)
            out.append(status)
            continue
        deadline = desired.deployments[ref].obj.spec.progress_deadline_seconds
        if now - rev.progress_at <= deadline:
            out.append(status)
            continue
        why = f"no progress for {deadline}s ({prog.describe()}): {_why_stuck(state, pods, by_ref, health_of)}"
        if not write:
            out.append(replace(status, message=why))
            continue
        state.rollouts.update_revision(ref, rev.revision, outcome=FAILED, finished_at=now, message=why)
        # The revision before it, as `kubectl rollout undo` takes it (one that failed itself is skipped).
        previous = next((r for r in reversed(state.rollouts.revisions(ref))
                         if r.revision < rev.revision and r.outcome != FAILED), None)
        if previous is None or (pin is not None and pin.revision == rev.revision):
            state.keepers.add_event("error", ref, f"rollout to revision {rev.revision} failed: {why}")
            out.append(replace(status, outcome=FAILED, message=why, event=RolloutEvent.FAILED))
            continue
        manifest_hash = pin.manifest_hash if pin is not None else rev.template_hash
        reason = f"rolled back from revision {rev.revision}: progress deadline exceeded"
        state.rollouts.set_pin(ref, previous.revision, manifest_hash, reason)
        state.rollouts.update_revision(ref, previous.revision, outcome=PROGRESSING, progress=0, progress_at=now,
                                       finished_at=None, message=f"rollback from revision {rev.revision}")
        state.keepers.add_event("error", ref, f"rollout to revision {rev.revision} failed: {why}; "
                                              f"rolling back to revision {previous.revision}")
        out.append(replace(status, outcome=FAILED, message=why, pin=state.rollouts.pin(ref),
                           event=RolloutEvent.ROLLED_BACK, rolled_back_to=previous.revision))
    return out


def summary(state: StateStore) -> list[dict]:
    """Each Deployment's newest revision and pin, for `podplay status`."""
    out = []
    for ref in state.rollouts.revision_deployments():
        revs = state.rollouts.revisions(ref)
        if not revs:
            continue
        newest, pin = revs[-1], state.rollouts.pin(ref)
        out.append({"deployment": ref, "revision": newest.revision, "outcome": newest.outcome,
                    "message": newest.message, "pinned": pin.revision if pin else None,
                    "pin_reason": pin.reason if pin else None})
    return out
