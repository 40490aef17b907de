"""A moment of the host, and one pass over it: Goal → look → View → make_plan → apply_plan.

The only module that sees every stage. A ``Goal`` is what to converge to (the manifests over
the paths the user named, and how: up or down, forced, limited to some pods). ``look``
observes the host once and ``decide`` turns that observation into a ``View``: the desired
state with rollout pins applied, what runs, the pods' health and the changes between them.
``apply_view`` plans a View's changes and applies them as journaled transactions.

The loop that calls these — once for ``up``, until settled for ``up --wait`` and rollouts,
forever for ``watch``/``sync`` — is ``reconciler.converger``.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from reconciler.desired import DesiredPod, DesiredState, Loaded, build_desired, cron_run, run_pods
from reconciler.diff import Action, Change, LastApplied, Reason, Scope, compute_diff, compute_down, instances_by_ref
from reconciler.drivers.base import Drivers
from reconciler.errors import Diagnostic, ManifestError, PodplayError, Severity
from reconciler.health import health_view
from reconciler.host import open_drivers  # noqa: F401  (the CLI and tests reach it through here too)
from reconciler.jobs import CronRecord, JobRecord, JobStatus, decide_cron, decide_job, run_name
from reconciler.manifests import ManifestSet, load_manifests
from reconciler.model.kube import ObjectKey, Pod
from reconciler.model.names import ANN_NETWORK
from reconciler.model.workloads import REPLICATED, CronJob, DaemonSet, Job, StatefulSet
from reconciler.observe import observe_host
from reconciler.observed import ObservedHost
from reconciler.paths import HostPaths
from reconciler.plan import Plan, make_plan
from reconciler.probes import PodHealth
from reconciler.revisions import apply_pins
from reconciler.state import ApplyLock, StateStore
from reconciler.statefulsets import ClaimOwner, claims_to_delete, held_old, order_set, outdated_note

if TYPE_CHECKING:  # apply (threads, signals) is imported by the passes that apply: `plan` never loads it
    from reconciler.apply import ApplyResult, Failpoints, Reporter


class Mode(enum.StrEnum):
    UP = "up"
    DOWN = "down"


# --- what to converge to ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Goal:
    """What a pass converges to. Built once per set of manifests, used by every tick over them."""

    manifests: ManifestSet
    objects: tuple[Loaded, ...]  # as the pass uses them (absolute sources, default network applied)
    declared: DesiredState  # the manifests' own desired state, before rollout pins
    scope: Scope  # which owned pods this goal may prune
    mode: Mode = Mode.UP
    force: bool = False  # recreate every pod (up --replace)
    remove_volumes: bool = False  # down --volumes
    only: frozenset[str] = frozenset()  # "namespace/name" of the pods the pass is limited to
    service_cidr: str = ""  # podplay's Service range ("" = the root's own: reconciler.services.service_range)
    root_tag: str = ""  # the storage root's tag (HostPaths.tag), which picks the root's Service range
    grace_period: int | None = None  # down --grace-period/--force: seconds before SIGKILL, for every pod

    @property
    def paths(self) -> tuple[str, ...]:
        return self.scope.paths


def make_goal(paths: Sequence[str], manifests: ManifestSet, host_paths: HostPaths | None = None, *,
              mode: Mode | str = Mode.UP, force: bool = False, remove_volumes: bool = False,
              only: Sequence[str] = (), scope: Scope | None = None, declared: DesiredState | None = None,
              grace_period: int | None = None) -> Goal:
    """`scope` and `declared` may come from a source that built them already (the keeper's)."""
    objects = tuple(absolute_sources(manifests.objects, host_paths))
    return Goal(manifests, objects, declared if declared is not None else build_desired(list(objects)),
                scope if scope is not None else make_scope(paths, manifests), Mode(mode), force, remove_volumes,
                frozenset(n if "/" in n else f"default/{n}" for n in only),
                host_paths.service_cidr if host_paths is not None else "",
                host_paths.tag if host_paths is not None else "", grace_period)


POD_MAKERS = (Pod, *REPLICATED, Job, CronJob)  # every kind whose pods take the host-wide default network


def absolute_sources(objects: Sequence[Loaded], host_paths: HostPaths | None = None) -> list[Loaded]:
    """The objects as a pass uses them. Sources are recorded as absolute paths, so that `up dir`
    and `up ./dir/x.yaml` agree. A host-wide default network (`--network`, $PODPLAY_NETWORK)
    becomes the podplay.io/network annotation of pods that name none: from there on it is part
    of the pods' spec, like any annotation of ours."""
    network = host_paths.default_network if host_paths is not None else ""
    out = []
    for o in objects:
        if o.file != "-":
            o = replace(o, file=os.path.abspath(o.file))
        if network and isinstance(o.obj, POD_MAKERS) and ANN_NETWORK not in o.obj.metadata.annotations:
            meta = o.obj.metadata
            o = replace(o, obj=replace(o.obj, metadata=replace(meta, annotations={**meta.annotations,
                                                                                 ANN_NETWORK: network})))
        out.append(o)
    return out


def make_scope(paths: Sequence[str], manifests: ManifestSet) -> Scope:
    return Scope(tuple(os.path.abspath(p) for p in paths if p != "-"), prune=manifests.ok)


def load_or_fail(paths: Sequence[str], *, down: bool = False, host_paths: HostPaths | None = None,
                 strict: bool = False) -> ManifestSet:
    """Load manifests; any error stops the pass before anything is touched.

    ``down`` never fails on the manifests: podplay records which file created each pod, so
    `down` of a deleted, emptied or broken file still removes exactly what that file created.
    Its problems are kept as warnings for the user to see. With `host_paths`, documents that
    passed their schema before are not validated again (a cache under the storage root).
    """
    cache = host_paths.root / "cache" / "schema-valid" if host_paths is not None else None
    manifests = load_manifests(paths, schema_cache=cache, strict=strict)
    if down and manifests.errors:
        manifests.diagnostics = [replace(d, severity=Severity.WARNING) if d.severity == Severity.ERROR else d
                                 for d in manifests.diagnostics]
        manifests.unreadable = []
    if manifests.errors:
        raise ManifestError(manifests.diagnostics)
    return manifests


def select_pods(desired: DesiredState, refs: set[str] | frozenset[str]) -> DesiredState:
    """The desired state reduced to some pods and the claims they use."""
    pods = {r: p for r, p in desired.pods.items() if r in refs}
    used = {v.claim for p in pods.values() for v in p.volumes if v.claim}
    return replace(desired, pods=pods, claims={r: c for r, c in desired.claims.items() if r in used})


# --- a moment: look once, decide from what was seen -------------------------------------------------

@dataclass(frozen=True)
class View:
    """What the host should run and what it runs at one moment, and the changes between."""

    goal: Goal
    desired: DesiredState  # the goal with rollout pins applied (and reduced to `only`)
    observed: ObservedHost
    last: LastApplied
    health: dict[str, PodHealth]  # by pod uid
    changes: tuple[Change, ...]
    now: float | None  # the clock the diff used (None: no crash-loop back-off, `up`'s first pass)
    notes: tuple[str, ...] = ()  # pins held or released
    jobs: tuple[JobStatus, ...] = ()  # where each Job stands (reconciler.jobs)
    wake_at: float | None = None  # when a Job's back-off, deadline or ttl wants another look
    waiting: tuple[str, ...] = ()  # StatefulSets' ordered work still to come (reconciler.statefulsets)

    @property
    def work(self) -> list[Change]:
        return [c for c in self.changes if c.action != Action.NOOP]


def look(goal: Goal, drivers: Drivers, state: StateStore, now: float | None, *, write: bool = True) -> View:
    """Observe the host (once) and decide. `write` lets pins be released in the store."""
    return decide(goal, observe_host(drivers), state, now, write=write)


def decide(goal: Goal, observed: ObservedHost, state: StateStore, now: float | None, *,
           write: bool = True) -> View:
    """The View of an observation. Pure but for reading the store (pins, probe records, what
    podplay owns): after probes ran or a pin changed, deciding again needs no new observation."""
    desired, notes = goal.declared, []
    if goal.mode == Mode.UP:
        desired, notes = apply_pins(state, goal.declared, write=write)
    jobs: tuple[JobStatus, ...] = ()
    wake_at = None
    waiting: tuple[str, ...] = ()
    only = goal.only
    clock = time.time() if now is None else now
    cron_wake = None
    if desired.crons:
        if only:
            desired = replace(desired, crons={r: c for r, c in desired.crons.items() if r in only})
        standalone = set(desired.jobs)
        if goal.mode == Mode.UP:
            desired, cron_wake = decide_crons(desired, goal.objects, state, clock, write=write)
        if only:  # `--only CRONJOB` names its runs' Jobs (a CronJob's timer unit runs it so)
            only = only | (set(desired.jobs) - standalone)
    if goal.mode == Mode.DOWN and write:
        for ref in desired.crons:
            state.workloads.forget(f"CronJob/{ref}")
        prefixes = [f"Job/{ref}-" for ref in desired.crons]
        for key in state.workloads.all("Job/"):
            if any(key.startswith(p) and key[len(p):].isdigit() for p in prefixes):
                state.workloads.forget(key)
    if only:
        # `--only JOB` names a Job: its pods, whichever exist now (a Job's unit runs it so).
        only_jobs = only & set(desired.jobs)
        desired = replace(desired, jobs={r: j for r, j in desired.jobs.items() if r in only_jobs})
        only = only | {p.key for p in observed.pods.values() if p.owner.split("/", 1)[-1] in only_jobs
                       and p.owner.startswith("Job/")}
    if goal.mode == Mode.UP:
        # "Kind/namespace/name" → (its pods kept on an old revision, why): OnDelete, a partition
        desired, outdated = hold_on_delete(desired, observed, state)
        desired, jobs, wake_at = decide_jobs(desired, observed, state, clock, write=write)
        if cron_wake is not None:
            wake_at = cron_wake if wake_at is None else min(wake_at, cron_wake)
        if desired.statefulsets:
            desired, waiting, sts_outdated = decide_statefulsets(desired, observed, state, clock, goal.objects,
                                                                 write=write)
            outdated.update(sts_outdated)
        notes += [outdated_note(key.split("/", 1)[0].lower(), key.split("/", 1)[1], names, why)
                  for key, (names, why) in sorted(outdated.items())]
        if write and not goal.only:
            record_sets(goal.objects, state, {key: names for key, (names, _) in outdated.items()})
    elif write:
        for ref in desired.jobs:  # a Job taken down runs again when it comes back, as a re-created one does
            state.workloads.forget(f"Job/{ref}")
        if not goal.only:
            for o in goal.objects:
                if isinstance(o.obj, REPLICATED):
                    state.workloads.forget(f"Set/{o.obj.kind}/{o.obj.metadata.namespace}/{o.obj.metadata.name}")
                if isinstance(o.obj, StatefulSet):
                    state.workloads.forget(f"Templates/StatefulSet/{o.obj.metadata.namespace}/{o.obj.metadata.name}")
    if only:
        only = only | {p.ref for p in desired.pods.values() if p.owner.kind == "Job"
                       and f"{p.owner.namespace}/{p.owner.name}" in desired.jobs}
        desired = select_pods(desired, only)
        observed = replace(observed, pods={u: p for u, p in observed.pods.items() if p.key in only})
    last = state.owned.last_applied()
    health = health_view(state, desired, observed, now) if goal.mode == Mode.UP else {}
    if goal.mode == Mode.DOWN:
        changes = compute_down(desired, observed, last, goal.scope, remove_volumes=goal.remove_volumes)
    else:
        changes = compute_diff(desired, observed, last, goal.scope, force=goal.force, now=now, health=health)
    if not goal.only:
        changes = list(changes) + claim_retention(goal, desired, observed, last, changes, state, write=write)
        desired, changes = decide_services(goal, desired, observed, health, changes, state, write=write)
    return View(goal, desired, observed, last, health, tuple(changes), now, tuple(notes), jobs, wake_at, waiting)


def record_sets(objects: Sequence[Loaded], state: StateStore,
                outdated: dict[str, tuple[str, ...]] | None = None) -> None:
    """How many pods each replicated object wants, and which of its pods OnDelete or a partition
    keeps on an old revision, for `podplay get` (which reads no manifests)."""
    outdated = outdated or {}
    for o in objects:
        if isinstance(o.obj, REPLICATED):
            ref = f"{o.obj.metadata.namespace}/{o.obj.metadata.name}"
            rec = {"kind": o.obj.kind, "ref": ref, "desired": o.obj.spec.replicas, "source": o.file,
                   "outdated": list(outdated.get(f"{o.obj.kind}/{ref}", ()))}
            if isinstance(o.obj, StatefulSet):  # what its claims become once it is deleted
                rec["claims"] = claim_owner(o.obj, None).to_json()
            if state.workloads.get(f"Set/{o.obj.kind}/{ref}") != rec:
                state.workloads.put(f"Set/{o.obj.kind}/{ref}", rec)


def claim_owner(sts: StatefulSet, replicas: int | None) -> ClaimOwner:
    policy = sts.spec.persistent_volume_claim_retention_policy
    return ClaimOwner(f"{sts.metadata.namespace}/{sts.metadata.name}",
                      tuple(t.metadata.name for t in sts.spec.volume_claim_templates if t.metadata.name),
                      policy.when_deleted, policy.when_scaled, replicas)


def claim_retention(goal: Goal, desired: DesiredState, observed: ObservedHost, last: LastApplied,
                    changes: Sequence[Change], state: StateStore, *, write: bool) -> list[Change]:
    """The StatefulSets' claims their persistentVolumeClaimRetentionPolicy removes in this tick:
    whenScaled Delete, those of the ordinals scaled away; whenDeleted Delete, all of them when the
    set is taken `down` or its manifest is gone (pruned: the store's record of the set says its
    policy). A claim goes only after its pod, only if podplay made it and nothing desired uses it.
    The record of a deleted set is forgotten once nothing of it is left for the policy."""
    owners: list[ClaimOwner] = []
    declared = set()
    for o in goal.objects:
        if isinstance(o.obj, StatefulSet):
            owner = claim_owner(o.obj, o.obj.spec.replicas if goal.mode == Mode.UP else None)
            owners.append(owner)
            declared.add(owner.ref)
    gone_sets = []
    if goal.scope.prune:
        for key, rec in state.workloads.all("Set/StatefulSet/").items():
            if rec.get("ref") not in declared and goal.scope.covers(rec.get("source", "")):
                owners.append(ClaimOwner.from_record(rec["ref"], rec))
                gone_sets.append(key)
    if not owners:
        return []
    deleted = {c.before for c in changes if c.key.kind == "Pod" and c.action == Action.DELETE}
    already = {f"{c.key.namespace}/{c.key.name}" for c in changes if c.key.kind == "PersistentVolumeClaim"}
    by_ref = instances_by_ref(observed)
    # `down` takes every pod of its manifests away: what they desired is not a use that keeps a claim.
    in_use = set() if goal.mode == Mode.DOWN else set(desired.claims)
    candidates = [r for r in observed.claims if r in last.claims and r not in in_use and r not in already]

    def gone(pod_ref: str) -> bool:
        return all(o.uid in deleted for o in by_ref.get(pod_ref, ()))

    out = []
    for owner in owners:
        why = "whenDeleted: Delete" if owner.replicas is None else "whenScaled: Delete"
        for ref in claims_to_delete(owner, candidates, gone):
            ns, name = ref.split("/", 1)
            out.append(Change(ObjectKey("PersistentVolumeClaim", ns, name), Action.DELETE,
                              Reason.REQUESTED if goal.mode == Mode.DOWN else Reason.ORPHANED,
                              detail=f"statefulset {owner.ref}: persistentVolumeClaimRetentionPolicy {why}"))
    if write:
        for key in gone_sets:
            owner = ClaimOwner.from_record(key.split("/", 2)[2], state.workloads.get(key) or {})
            pods_left = any(o.owner == f"StatefulSet/{owner.ref}" for o in observed.pods.values())
            if not pods_left and not claims_to_delete(owner, candidates, lambda _: True):
                state.workloads.forget(key)
                state.workloads.forget(f"Templates/StatefulSet/{owner.ref}")
    return out


def hold_on_delete(desired: DesiredState, observed: ObservedHost, state: StateStore
                   ) -> tuple[DesiredState, dict[str, tuple[tuple[str, ...], str]]]:
    """`desired` with the pods of each DaemonSet with updateStrategy OnDelete kept on the
    revision they run (reconciler.statefulsets.held_old), and those pods by "DaemonSet/<ref>".
    A kept pod runs on as its revision (rebuilt from the store's revisions, so its containers
    restart as its restartPolicy says); held as it is if that revision is no longer kept."""
    from reconciler.diff import deployment_pods
    from reconciler.revisions import rebuild

    sets = {ref: o for ref, o in desired.deployments.items()
            if isinstance(o.obj, DaemonSet) and o.obj.spec.update_strategy.type == "OnDelete"}
    if not sets:
        return desired, {}
    by_ref = instances_by_ref(observed)
    pods = dict(desired.pods)
    outdated = {}
    for ref, mine in deployment_pods(desired).items():
        if ref not in sets:
            continue
        kept, held = held_old(mine, by_ref)
        for p in kept:
            if p.hold:
                rev = next((r for r in state.rollouts.revisions(ref) if r.template_hash == p.spec_hash), None)
                try:
                    old = rebuild(sets[ref], rev).get(p.ref) if rev is not None else None
                except PodplayError:
                    old = None
                if old is not None and old.uid == p.uid:
                    p = old
            pods[p.ref] = p
        if held:
            outdated[f"DaemonSet/{ref}"] = (tuple(held), "updateStrategy OnDelete: delete it (podplay rm) "
                                            "to update it")
    return replace(desired, pods=pods), outdated


SET_TEMPLATES_KEPT = 10  # a StatefulSet's earlier templates the store keeps, to run its old pods as they are


def set_template(loaded: Loaded, objects: Sequence[Loaded]) -> dict:
    """A StatefulSet's pod template as the store keeps it: the template and the ConfigMaps and
    Secrets it reads, enough to build its pods again exactly (and their digest, its identity)."""
    from reconciler.model import codec
    from reconciler.model.kube import ConfigMap, Secret
    from reconciler.revisions import consumed

    sts = loaded.obj
    wanted = consumed(sts.spec.template)
    found = sorted(({"kind": o.obj.kind, "data": codec.to_data(o.obj)} for o in objects
                    if isinstance(o.obj, ConfigMap | Secret) and o.obj.metadata.namespace == sts.metadata.namespace
                    and (o.obj.kind, o.obj.metadata.name) in wanted),
                   key=lambda x: (x["kind"], x["data"]["metadata"]["name"]))
    entry = {"template": codec.to_data(sts.spec.template), "objects": found}
    return {**entry, "digest": codec.digest(entry)}


def set_pods(loaded: Loaded, entry: dict) -> dict[str, DesiredPod]:
    """The StatefulSet's pods (at its current replica count) as template `entry` builds them."""
    from reconciler.model import codec
    from reconciler.model.kube import ConfigMap, PodTemplateSpec, Secret

    sts = loaded.obj
    obj = replace(sts, spec=replace(sts.spec, template=codec.from_data(PodTemplateSpec, entry["template"])))
    objs = [replace(loaded, obj=obj)] + [Loaded(codec.from_data(ConfigMap if x["kind"] == "ConfigMap" else Secret,
                                                                x["data"]), loaded.file) for x in entry["objects"]]
    return build_desired(objs).pods


def decide_statefulsets(desired: DesiredState, observed: ObservedHost, state: StateStore, now: float,
                        objects: Sequence[Loaded] = (), *, write: bool = False
                        ) -> tuple[DesiredState, tuple[str, ...], dict[str, tuple[tuple[str, ...], str]]]:
    """`desired` with each StatefulSet's pods in order (reconciler.statefulsets), what each
    set still waits for, and its pods OnDelete or the partition keep on an old revision.
    Readiness is the probes' view of the host as it is. The store keeps each set's recent
    templates (`Templates/StatefulSet/<ref>`) and which one every pod ran last (its current
    revision): a pod kept on an old revision runs on as that template (its containers restart
    as its restartPolicy says), and one below the partition that is deleted comes back as the
    current revision."""
    view = health_view(state, desired, observed, now)
    by_ref = instances_by_ref(observed)
    pods = dict(desired.pods)
    waiting = []
    outdated = {}
    for ref, loaded in sorted(desired.statefulsets.items()):
        owner = f"StatefulSet/{ref}"
        mine = sorted((p for p in desired.pods.values() if str(p.owner) == owner), key=lambda p: p.ordinal or 0)
        extras = []
        for o in observed.pods.values():
            suffix = o.key.rsplit("-", 1)[-1]
            if o.owner == owner and o.key == f"{ref}-{suffix}" and suffix.isdigit() \
                    and int(suffix) >= loaded.obj.spec.replicas:
                extras.append((int(suffix), o))
        memory = state.workloads.get(f"Templates/StatefulSet/{ref}") or {"templates": [], "current": ""}
        entry = set_template(loaded, objects) if objects else None
        known = [t for t in memory["templates"] if entry is None or t["digest"] != entry["digest"]]
        built: dict[str, dict[str, DesiredPod]] = {}

        def pods_of(t: dict, loaded: Loaded = loaded, built: dict = built) -> dict[str, DesiredPod]:
            if t["digest"] not in built:
                try:
                    built[t["digest"]] = set_pods(loaded, t)
                except PodplayError:
                    built[t["digest"]] = {}
            return built[t["digest"]]

        def old(d: DesiredPod, o, known: list = known, pods_of=pods_of) -> DesiredPod | None:
            for t in reversed(known):
                p = pods_of(t).get(d.ref)
                if p is not None and p.uid == o.uid:
                    return p
            return None

        current = next((t for t in known if t["digest"] == memory["current"]), None)
        decision = order_set(loaded.obj.spec, mine, by_ref, extras,
                             lambda o: (h := view.get(o.uid)) is not None and h.ready and o.complete,
                             old, pods_of(current) if current is not None else None)
        for p in mine:
            pods.pop(p.ref, None)
        pods.update({p.ref: p for p in decision.pods})
        if write and entry is not None:
            updated = all(any(o.uid == p.uid for o in by_ref.get(p.ref, ())) for p in mine) and not extras
            # The current template goes last; the current revision is never dropped for room.
            kept = [t for t in known if t["digest"] == memory["current"]] + \
                [t for t in known if t["digest"] != memory["current"]][-(SET_TEMPLATES_KEPT - 2):]
            kept = sorted(kept, key=known.index) + [entry]
            new = {"templates": kept, "current": entry["digest"] if updated else memory["current"]}
            if new != memory:
                state.workloads.put(f"Templates/StatefulSet/{ref}", new)
        if decision.pending:
            waiting.append(f"statefulset {ref}: {decision.pending}")
        if decision.outdated:
            us = loaded.obj.spec.update_strategy
            why = ("updateStrategy OnDelete: delete a pod (podplay rm) to update it" if us.type == "OnDelete" else
                   f"below the partition {us.rolling_update.partition}")
            outdated[f"StatefulSet/{ref}"] = (decision.outdated, why)
    return replace(desired, pods=pods), tuple(waiting), outdated


def decide_crons(desired: DesiredState, objects: Sequence[Loaded], state: StateStore, now: float, *, write: bool
                 ) -> tuple[DesiredState, float | None]:
    """`desired` with each CronJob's runs as Jobs (reconciler.jobs.decide_cron decides which runs
    exist); a run removed by the history limits or Replace loses its record, and its pods go
    with it (no longer desired). Returns the time the next schedule is due."""
    jobs, job_pods = dict(desired.jobs), dict(desired.job_pods)
    wakes = []
    for ref, loaded in sorted(desired.crons.items()):
        spec = loaded.obj.spec
        raw = state.workloads.get(f"CronJob/{ref}")
        record = CronRecord.from_json(raw) if raw else None
        phases = {}
        for t in record.runs if record else ():
            run_raw = state.workloads.get(f"Job/{ref.split('/')[0]}/{run_name(loaded.obj.metadata.name, t)}")
            phases[t] = (run_raw or {}).get("outcome", "")
        decision = decide_cron(spec, record, phases, now)
        out = {**decision.record.to_json(), "status": {
            "cronjob": ref, "source": loaded.file, "schedule": spec.schedule, "time_zone": spec.time_zone or "",
            "suspend": spec.suspend, "concurrency_policy": spec.concurrency_policy,
            "last_schedule": decision.record.last if decision.record.runs or raw else 0.0,
            "next_schedule": decision.wake_at, "runs": len(decision.runs),
            "active": sum(1 for t in decision.runs if not phases.get(t)), "skipped": decision.record.skipped,
            "note": decision.note}}
        if write:
            if out != raw:
                state.workloads.put(f"CronJob/{ref}", out)
            for t in decision.dropped:
                state.workloads.forget(f"Job/{ref.split('/')[0]}/{run_name(loaded.obj.metadata.name, t)}")
        for t in decision.runs:
            run = cron_run(loaded, run_name(loaded.obj.metadata.name, t))
            run_ref = f"{run.obj.metadata.namespace}/{run.obj.metadata.name}"
            jobs[run_ref] = run
            job_pods[run_ref] = run_pods(run, objects)
        wakes.append(decision.wake_at)
    return replace(desired, jobs=jobs, job_pods=job_pods), min(wakes, default=None)


def decide_jobs(desired: DesiredState, observed: ObservedHost, state: StateStore, now: float, *, write: bool
                ) -> tuple[DesiredState, tuple[JobStatus, ...], float | None]:
    """`desired` with the pods each Job should have now (reconciler.jobs decides from the host
    and the run's record, which `write` keeps up to date in the store)."""
    if not desired.jobs:
        return desired, (), None
    pods = dict(desired.pods)
    by_ref = instances_by_ref(observed)
    statuses, wakes = [], []
    for ref, loaded in sorted(desired.jobs.items()):
        candidates = desired.job_pods.get(ref, ())
        instances = [o for d in candidates for o in by_ref.get(d.ref, ())]
        raw = state.workloads.get(f"Job/{ref}")
        decision = decide_job(ref, loaded.obj.spec, candidates, instances,
                              JobRecord.from_json(raw) if raw else None, now)
        # The record carries the status too, for `podplay jobs` and `status` (they read no manifests).
        record = {**decision.record.to_json(), "status": decision.status.to_json()}
        if write and record != raw:
            state.workloads.put(f"Job/{ref}", record)
        pods.update({p.ref: p for p in decision.pods})
        statuses.append(decision.status)
        if decision.wake_at is not None:
            wakes.append(decision.wake_at)
    return replace(desired, pods=pods), tuple(statuses), min(wakes, default=None)


def decide_services(goal: Goal, desired: DesiredState, observed: ObservedHost, health, changes: list[Change],
                    state: StateStore, *, write: bool = True) -> tuple[DesiredState, list[Change]]:
    """The Services' changes, after the pods' (their endpoints follow the pods this tick makes
    and removes). Addresses that cannot be allocated stop the pass before anything changes."""
    from reconciler import services

    sockets = []
    up = goal.mode == Mode.UP
    if up and any(s.spec.type in services.PUBLISHED_TYPES for s in desired.services.values()):
        from reconciler.network.ports import host_sockets

        sockets = [(s.protocol, s.port) for s in host_sockets()]
    recorded = state.owned.service_records()
    node_ip = ""
    if up and any(not p.network and services.selects(s.spec.selector, p)
                  for s in desired.services.values() for p in desired.pods.values()):
        node_ip = next(iter(host_addresses()), "")
    resolved = {}
    if up:
        names = {s.spec.external_name.rstrip(".").lower() for s in desired.services.values()
                 if s.spec.type == "ExternalName"}
        resolved = {n: resolve_ipv4(n) for n in sorted(names)}
    keep = write and up and bool(desired.services)
    cidr = goal.service_cidr or service_range(goal, observed, state, recorded, write=keep)
    d = services.decide_services(desired, observed, health, changes, recorded, cidr,
                                 prune=goal.scope.prune, covers=goal.scope.covers, down=goal.mode == Mode.DOWN,
                                 sockets=sockets, node_ip=node_ip, resolved=resolved)
    if d.errors:
        raise ManifestError(d.errors)
    return replace(desired, service_sync=d.sync, service_env=d.env), list(changes) + d.changes


SERVICE_RANGE_KEY = "service-range"


def service_range(goal: Goal, observed: ObservedHost, state: StateStore, recorded, *, write: bool) -> str:
    """This storage root's Service range: the one recorded at its first Service, else a fresh
    one clear of the host's routes and of other roots' ClusterIPs (recorded when `write`). A
    root that has ClusterIPs from before ranges were per root keeps the old shared range."""
    from reconciler import services

    cidr = state.meta.get(SERVICE_RANGE_KEY)
    if cidr:
        return cidr
    import ipaddress

    shared = ipaddress.ip_network(services.LEGACY_SERVICE_CIDR)
    legacy = any(e.cluster_ip and ipaddress.ip_address(e.cluster_ip) in shared for e in recorded.values())
    taken: list[str] = list(observed.cluster_ips_elsewhere)
    if not legacy:
        from reconciler.network.config import routed_networks

        taken += [str(n) for n in routed_networks()]
    cidr = services.service_range(goal.root_tag or "podplay", taken, legacy=legacy)
    if write:
        state.meta.set(SERVICE_RANGE_KEY, cidr)
    return cidr


RESOLVE_TTL = 30.0  # seconds a lookup answers the ticks of a keeper (as a DNS cache would)
_resolved: dict[str, tuple[float, tuple[str, ...]]] = {}


def resolve_ipv4(name: str, timeout: float = 3.0) -> tuple[str, ...]:
    """The IPv4 addresses the host resolves `name` to (its /etc/hosts, then DNS, as nsswitch.conf
    says: `getent ahostsv4`, which a timeout can stop); () when it does not resolve in time.
    Answers, failures included, are reused for RESOLVE_TTL: a keeper ticking every second does
    not wait on a slow resolver every second."""
    now = time.monotonic()
    hit = _resolved.get(name)
    if hit is not None and now - hit[0] < RESOLVE_TTL:
        return hit[1]
    got = _lookup_ipv4(name, timeout)
    _resolved[name] = (now, got)
    return got


def _lookup_ipv4(name: str, timeout: float) -> tuple[str, ...]:
    import ipaddress
    import subprocess

    try:
        res = subprocess.run(["getent", "ahostsv4", name], capture_output=True, text=True, timeout=timeout,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    out = set()
    for line in res.stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        try:
            out.add(str(ipaddress.IPv4Address(word)))
        except ValueError:
            continue
    return tuple(sorted(out))


def services_status(drivers: Drivers, state: StateStore) -> list[dict]:
    """What `podplay services` shows: the Services podplay serves, their addresses and endpoints,
    and whether the host's rules still match (reconciler.services.status_rows)."""
    from reconciler import services

    serving = drivers.services.observe()[0] if drivers.services is not None else {}
    ips = {a.pod_uid: a.status.ip for a in drivers.network.list_attachments()}
    entries = [replace(e, endpoints=tuple(replace(x, ip=x.ip or ips.get(x.uid, "")) for x in e.endpoints))
               for e in state.owned.service_records().values()]
    return services.status_rows(entries, serving, host_addresses())


def host_addresses() -> list[str]:
    """The addresses of the host's default-route interfaces: what a LoadBalancer's status shows (as
    k3s shows the node's address; it answers on every address of the host, 127.0.0.1 included)."""
    import json
    import subprocess

    def ip(*argv: str) -> list:
        try:
            res = subprocess.run(["ip", "-j", "-4", *argv], capture_output=True, text=True, timeout=10, check=False)
            return json.loads(res.stdout or "[]")
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return []

    devs = {r.get("dev") for r in ip("route", "show", "default")}
    out = [a["local"] for link in ip("addr", "show", "scope", "global") if link.get("ifname") in devs
           for a in link.get("addr_info", []) if a.get("local")]
    return sorted(set(out))


# --- one pass: plan a View's changes and apply them ---------------------------------------------------

@dataclass
class PassResult:
    manifests: ManifestSet
    desired: DesiredState  # what the host should run: the manifests, with rollout pins applied
    plan: Plan
    applied: ApplyResult | None = None
    recovered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # pins held or released, new revisions
    view: View | None = None
    rollouts: list = field(default_factory=list)  # RolloutStatus of every Deployment the tick followed
    probe_in: float | None = None  # seconds until the probes want the next tick (None: no probes due)

    @property
    def ok(self) -> bool:
        return self.applied is None or self.applied.ok

    @property
    def settled(self) -> bool:
        """The host matched the goal exactly when it was looked at (nothing to do, nothing waiting).
        A StatefulSet with ordered work to come, or a CronJob (its next run is a matter of time),
        is never settled: the no-change fingerprint must not answer the next `up` for them."""
        return self.view is not None and all(c.settled for c in self.view.changes) \
            and not self.view.waiting and not self.view.desired.crons


def apply_view(view: View, changes: Sequence[Change], drivers: Drivers, state: StateStore, *,
               report: Reporter | None = None, failpoints: Failpoints | None = None,
               on_plan: Callable[[Plan], None] | None = None) -> tuple[Plan, ApplyResult]:
    """Plan `changes` (those of `view` this pass may act on) and apply them. What podplay owns
    afterwards is recorded by the journal as each transaction commits (plan.Owns)."""
    observed = view.observed
    if view.goal.grace_period is not None:
        # The user's grace period stands in for each pod's terminationGracePeriodSeconds.
        observed = replace(observed, pods={uid: replace(p, grace_period=view.goal.grace_period)
                                           for uid, p in observed.pods.items()})
    plan = make_plan(list(changes), view.desired, observed)
    if on_plan:
        on_plan(plan)
    from reconciler.apply import apply_plan

    return plan, apply_plan(plan, drivers, state, report=report, failpoints=failpoints)


def locked(host_paths: HostPaths, timeout: float | None):
    return ApplyLock(host_paths.lock_file, timeout)


# --- requests on single pods (podplay stop/start/rm) --------------------------------------------------

@dataclass
class RequestResult:
    plan: Plan
    applied: ApplyResult
    recovered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.applied.ok


def apply_request(drivers: Drivers, state: StateStore, host_paths: HostPaths,
                  decide_plan: Callable[[ObservedHost], Plan], *, lock_timeout: float | None = None,
                  report: Reporter | None = None) -> RequestResult:
    """Apply a plan a command builds from the host as it is now (``podplay stop/start/rm``), with
    the same guarantees as a pass: under the ApplyLock, after crash recovery, journaled.

    ``decide_plan`` runs under the lock, so what it observed cannot change before its plan runs;
    it may raise a PodplayError to refuse, and then nothing is touched."""
    from reconciler.apply import ApplyResult, apply_plan, recover

    with locked(host_paths, lock_timeout):
        recovered = recover(state, drivers)
        plan = decide_plan(observe_host(drivers))
        applied = apply_plan(plan, drivers, state, report=report) if plan.txns else ApplyResult()
    return RequestResult(plan, applied, recovered)


def diagnostics_text(diags: Sequence[Diagnostic]) -> str:
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return "\n".join(str(d) for d in sorted(diags, key=lambda d: (order[d.severity], d.file, d.line, d.column)))
