"""PURE  changes → a Plan: transactions of ordered steps with explicit dependencies.

A transaction (Txn) is the unit of compensation: the steps of one pod's creation, teardown or
restart. Steps shared between pods (image pulls, claims) are transactions of their own. The
Plan serializes to JSON and is the only input of ``apply``; ``render`` shows it to people the
way terraform shows a plan.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, replace

from reconciler.desired import DesiredClaim, DesiredPod, DesiredState
from reconciler.diff import Action, Change
from reconciler.model.workloads import ROLLED_OUT_KINDS
from reconciler.observed import (
    LABEL_PRE_STOP,
    LABEL_SIDECAR,
    ContainerState,
    ObservedContainer,
    ObservedHost,
    ObservedPod,
)
from reconciler.rollout import Move
from reconciler.steps import (
    AttachNetwork,
    CheckFreeSpace,
    CreateContainer,
    CreateInfra,
    DetachNetwork,
    EnsureClaim,
    PrepareSnapshot,
    PrepareVolumes,
    PullImage,
    RemoveClaim,
    RemoveContainer,
    RemoveInfra,
    RemoveSnapshot,
    RemoveVolumes,
    RestartContainer,
    RunInitContainer,
    StartContainer,
    Step,
    StopContainers,
    SyncServices,
)

PLAN_VERSION = 1


class TxnKind(enum.StrEnum):
    """What a transaction does to its key; apply and crash recovery branch on it (a create is
    undone on failure, a delete rolled forward). The journal and a plan's JSON keep the value."""

    CREATE = "create"  # bring a pod instance up
    DELETE = "delete"  # tear a pod instance down
    START = "start"  # restart some containers of a pod instance
    SHARED = "shared"  # a step several pods need: an image pull, a claim
    STOP = "stop"  # stop a pod's containers and leave them (`podplay stop`)
    SERVICES = "services"  # the Services' rules and names, written after the tick's pods
    # What a replace's new instance needs, made while the old one still runs (undone like a
    # create; apply closes it when the new instance's CREATE commits, undoes it otherwise).
    PREPARE = "prepare"


@dataclass(frozen=True)
class PlannedStep:
    id: str
    step: Step
    depends_on: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"id": self.id, "step": self.step.to_json(), "depends_on": list(self.depends_on)}

    @classmethod
    def from_json(cls, d: dict) -> PlannedStep:
        return cls(d["id"], Step.from_json(d["step"]), tuple(d.get("depends_on", ())))


@dataclass(frozen=True)
class Owns:
    """What a transaction makes podplay own, or stop owning, when it commits. The journal keeps
    it as the transaction's record and applies it in the same database transaction that marks
    the commit (StateStore.journal.finish_txn): ownership is never recorded beside the journal."""

    pod: tuple[str, str, str, str, str] | None = None  # ref, uid, spec_hash, source, owner
    claims: tuple[tuple[str, str, bool], ...] = ()  # ref, source, declared
    forget_claims: tuple[str, ...] = ()
    services: str | None = None  # a Services' sync: the JSON list of the entries served from now on

    @classmethod
    def instance(cls, pod: DesiredPod) -> Owns:
        return cls(pod=(pod.ref, pod.uid, pod.spec_hash, pod.source, str(pod.owner)))

    def to_json(self) -> dict:
        out: dict = {}
        if self.pod is not None:
            out["pod"] = dict(zip(("ref", "uid", "spec_hash", "source", "owner"), self.pod, strict=True))
        if self.claims:
            out["claims"] = [{"ref": r, "source": s, "declared": d} for r, s, d in self.claims]
        if self.forget_claims:
            out["forget_claims"] = list(self.forget_claims)
        if self.services is not None:
            out["services"] = json.loads(self.services)
        return out

    @classmethod
    def from_json(cls, d: dict) -> Owns:
        pod = d.get("pod")
        return cls(tuple(pod[k] for k in ("ref", "uid", "spec_hash", "source", "owner")) if pod else None,
                   tuple((c["ref"], c["source"], bool(c["declared"])) for c in d.get("claims", ())),
                   tuple(d.get("forget_claims", ())),
                   json.dumps(d["services"]) if "services" in d else None)


@dataclass(frozen=True)
class Txn:
    id: str
    kind: TxnKind
    key: str  # pod ref, image reference or claim ref
    uid: str = ""
    steps: tuple[PlannedStep, ...] = ()
    owns: Owns = Owns()

    def __post_init__(self) -> None:
        # A bare string (an older caller, a journal row) becomes the enum; an unknown kind fails here.
        object.__setattr__(self, "kind", TxnKind(self.kind))

    @property
    def step_ids(self) -> set[str]:
        return {s.id for s in self.steps}

    def external_deps(self) -> set[str]:
        own = self.step_ids
        return {d for s in self.steps for d in s.depends_on if d not in own}

    def to_json(self) -> dict:
        out = {"id": self.id, "kind": str(self.kind), "key": self.key, "uid": self.uid,
               "steps": [s.to_json() for s in self.steps]}
        owns = self.owns.to_json()
        if owns:
            out["owns"] = owns
        return out

    @classmethod
    def from_json(cls, d: dict) -> Txn:
        return cls(d["id"], TxnKind(d["kind"]), d["key"], d.get("uid", ""),
                   tuple(PlannedStep.from_json(s) for s in d["steps"]), Owns.from_json(d.get("owns", {})))


@dataclass(frozen=True)
class Outcome:
    verb: str  # created | replaced | deleted | restarted
    change: Change

    @property
    def symbol(self) -> str:
        return {"created": "+", "replaced": "~", "deleted": "-", "restarted": ">", "updated": "~",
                "stopped": "."}[self.verb]


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    txns: tuple[Txn, ...] = ()
    pods: dict[str, DesiredPod] = field(default_factory=dict)  # desired instances by uid
    claims: dict[str, DesiredClaim] = field(default_factory=dict)
    service_env: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # namespace → links

    @property
    def empty(self) -> bool:
        return not self.txns

    @property
    def effective_changes(self) -> list[Change]:
        return [c for c in self.changes if c.action != Action.NOOP]

    def to_json(self, *, redact: bool = False) -> dict:
        pods = {uid: p.to_json() for uid, p in self.pods.items()}
        if redact:
            pods = {uid: _redact(p) for uid, p in pods.items()}
        out = {
            "version": PLAN_VERSION,
            "changes": [c.to_json() for c in self.changes],
            "transactions": [t.to_json() for t in self.txns],
            "pods": pods,
            "claims": {ref: {"ref": c.ref, "source": c.source, "declared": c.declared}
                       for ref, c in self.claims.items()},
        }
        if self.service_env:
            out["service_env"] = {ns: [list(kv) for kv in env] for ns, env in self.service_env.items()}
        return out

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {d.get('version')!r} is not supported (expected {PLAN_VERSION})")
        return cls(
            changes=tuple(Change.from_json(c) for c in d["changes"]),
            txns=tuple(Txn.from_json(t) for t in d["transactions"]),
            pods={uid: DesiredPod.from_json(p) for uid, p in d["pods"].items()},
            claims={ref: DesiredClaim(c["ref"], c["source"], c["declared"]) for ref, c in d["claims"].items()},
            service_env={ns: tuple(tuple(kv) for kv in env) for ns, env in d.get("service_env", {}).items()},
        )

    def outcome(self, txn: Txn) -> Outcome | None:
        """What a finished transaction did to its pod, for people (progress lines, the keeper's
        log); None for transactions that are part of another's outcome or not about a pod."""
        change = next((c for c in self.changes if f"{c.key.namespace}/{c.key.name}" == txn.key
                       and txn.uid and txn.uid in (c.before, c.after)), None)
        if change is None:
            return None
        verb = {TxnKind.CREATE: "replaced" if change.action == Action.REPLACE else "created",
                TxnKind.DELETE: "" if change.action == Action.REPLACE else "deleted",  # a replace says it once
                TxnKind.START: "restarted", TxnKind.STOP: "stopped"}.get(txn.kind, "")
        return Outcome(verb, change) if verb else None

    def service_outcomes(self, txn: Txn) -> list[Outcome]:
        """What a Services' sync did, one Outcome per Service it created, updated or deleted."""
        if txn.kind != TxnKind.SERVICES:
            return []
        verbs = {Action.CREATE: "created", Action.REPLACE: "updated", Action.DELETE: "deleted"}
        return [Outcome(verbs[c.action], c) for c in self.changes if c.key.kind == "Service" and c.action in verbs]

    def dumps(self, *, redact: bool = False) -> str:
        return json.dumps(self.to_json(redact=redact), indent=2, sort_keys=True)

    def render(self, *, verbose: bool = False) -> str:
        return render(self, verbose=verbose)


REDACTED = "<redacted>"
_CREDENTIAL_FIELDS = ("password", "identity_token", "auth", "token")


def _redact(pod: dict) -> dict:
    """Secret values must not reach a terminal or a CI log through `podplay plan`: secret volume
    files, every env value (resolved from a Secret or written inline, in the desired containers
    and in the pod's spec alike) and imagePullSecrets' passwords and tokens. Walks the whole
    document, so a field that moves inside the pod's JSON stays redacted."""
    pod = json.loads(json.dumps(pod))

    def walk(node, key: str = "") -> None:
        if isinstance(node, list):
            for item in node:
                if key == "env" and isinstance(item, dict) and "value" in item:
                    item["value"] = REDACTED
                elif key == "pull_secrets" and isinstance(item, dict):
                    for f in _CREDENTIAL_FIELDS:
                        if item.get(f):
                            item[f] = REDACTED
                walk(item, key)
        elif isinstance(node, dict):
            if node.get("kind") == "secret":
                for f in node.get("files", []):
                    if isinstance(f, dict) and "data" in f:
                        f["data"] = REDACTED
            for k, v in node.items():
                walk(v, k)

    walk(pod)
    return pod


class _Builder:
    def __init__(self):
        self.n = 0
        self.txns: list[Txn] = []
        self.pulls: dict[str, str] = {}  # image → step id
        self.claims: dict[str, str] = {}  # claim → step id
        self.pull_creds: dict[str, list[str]] = {}

    def sid(self) -> str:
        self.n += 1
        return f"s{self.n}"

    def add(self, kind: TxnKind, key: str, uid: str, steps: list[PlannedStep], owns: Owns = Owns()) -> Txn:
        txn = Txn(f"t{len(self.txns) + 1}", kind, key, uid, tuple(steps), owns)
        self.txns.append(txn)
        return txn


def _teardown(b: _Builder, o: ObservedPod, after: tuple[str, ...] = ()) -> list[PlannedStep]:
    """Steps that remove every trace of an observed pod instance, in reverse order of creation."""
    pod, uid = o.key, o.uid
    steps: list[PlannedStep] = []
    prev: tuple[str, ...] = after

    def add(step: Step) -> None:
        nonlocal prev
        ps = PlannedStep(b.sid(), step, prev)
        steps.append(ps)
        prev = (ps.id,)

    apps = sorted(o.containers.values(), key=lambda c: c.name)
    inits = sorted(o.init_containers.values(), key=lambda c: c.name)
    stop = stop_step(pod, uid, [c for c in apps + inits if c.state in (ContainerState.RUNNING, ContainerState.PAUSED)],
                     o.grace_period, o.network.status.ip if o.network is not None else "")
    if stop is not None:
        add(stop)
    for c in apps + inits:
        add(RemoveContainer(pod, uid, container_id=c.id))
    if o.network is not None:
        add(DetachNetwork(pod, uid, network=o.network.status.network))
    if o.infra is not None:
        add(RemoveInfra(pod, uid))
    for key in o.snapshots:
        add(RemoveSnapshot(pod, uid, key=key))
    if o.has_volumes:
        add(RemoveVolumes(pod, uid))
    return steps


def stop_step(pod: str, uid: str, containers: list[ObservedContainer], timeout: int,
              pod_ip: str = "") -> StopContainers | None:
    """One step that stops these containers of a pod: the app containers (and any init container)
    together, then the native sidecars, as the kubelet stops them, each after its preStop hook;
    None when there is none."""
    first = tuple(c.id for c in containers if c.labels.get(LABEL_SIDECAR) != "true")
    then = tuple(c.id for c in containers if c.labels.get(LABEL_SIDECAR) == "true")
    if not first and not then:
        return None
    hooks = tuple((c.id, c.labels[LABEL_PRE_STOP]) for c in containers
                  if c.labels.get(LABEL_PRE_STOP) and c.state == ContainerState.RUNNING)
    return StopContainers(pod, uid, container_ids=first or then, timeout=timeout, then_ids=then if first else (),
                          pre_stop=hooks, pod_ip=pod_ip if hooks else "")


def _bring_up(b: _Builder, d: DesiredPod, after: tuple[str, ...] = ()) -> list[PlannedStep]:
    pod, uid = d.ref, d.uid
    steps: list[PlannedStep] = []

    def add(step: Step, deps: tuple[str, ...]) -> str:
        ps = PlannedStep(b.sid(), step, tuple(dict.fromkeys(deps)))
        steps.append(ps)
        return ps.id

    vol_deps = tuple(b.claims[v.claim] for v in d.volumes if v.claim and v.claim in b.claims)
    # An image volume is a snapshot of its image (undone like a container's), mounted read-only.
    vol_deps += tuple(add(PrepareSnapshot(pod, uid, container=f"volume {v.name}", key=v.snapshot_key(uid),
                                          image=v.image), (b.pulls[v.image],) + after)
                      for v in d.volumes if v.kind == "image")
    volumes = add(PrepareVolumes(pod, uid), vol_deps + after) if d.volumes else None
    snaps: dict[str, str] = {}
    for c in d.init_containers + d.containers:
        snaps[c.name] = add(PrepareSnapshot(pod, uid, container=c.name, key=c.id, image=c.spec.image),
                            (b.pulls[c.spec.image],) + after)
    infra = add(CreateInfra(pod, uid), after)
    ready = add(AttachNetwork(pod, uid, network=d.network), (infra,)) if d.network else infra
    base = (ready,) + ((volumes,) if volumes else ())
    prev = base
    # The init containers in their declared order: each runs to completion before the next, and
    # a native sidecar among them is started in its place and left running (the ones after it,
    # and the app containers, start once it has started).
    sidecars = {c.name: c for c in d.containers if c.sidecar}
    for spec in d.spec.init_containers:
        c = sidecars.get(spec.name)
        if c is not None:
            created = add(CreateContainer(pod, uid, container=c.name, container_id=c.id), prev + (snaps[c.name],))
            sid = add(StartContainer(pod, uid, container=c.name, container_id=c.id), (created,))
        else:
            c = d.container(spec.name)
            sid = add(RunInitContainer(pod, uid, container=c.name, container_id=c.id), prev + (snaps[c.name],))
        prev = base + (sid,)
    # An app container that does not ask for the pod's IP (status.podIP in its env) is created
    # while the network is being attached: runc joins the sandbox's namespaces by path, and the
    # pod's hosts file is rewritten in place. It starts once the network is there.
    early = (infra,) + ((volumes,) if volumes else ()) if prev == base else prev
    for c in d.containers:
        if c.sidecar:
            continue
        created = add(CreateContainer(pod, uid, container=c.name, container_id=c.id),
                      (prev if uses_pod_ip(c) else early) + (snaps[c.name],))
        add(StartContainer(pod, uid, container=c.name, container_id=c.id), (created, ready))
    return steps


def uses_pod_ip(c) -> bool:
    """Whether the container's env asks for the pod's IP (known once its network is attached)."""
    return any(e.deferred in ("status.podIP", "status.podIPs") for e in c.env)


# What a container's writable layer is promised at least when its pod is replaced (its
# ephemeral-storage request, when larger): a replacement is refused while the storage root
# cannot hold this much beside the instance it replaces.
WRITABLE_MIN = 1 << 20


def writable_need(d: DesiredPod) -> int:
    """Bytes of free space a new instance of `d` needs for its containers' writable layers."""
    from reconciler.model.quantity import to_bytes

    need = 0
    for c in d.init_containers + d.containers:
        request = c.spec.resources.requests.get("ephemeral-storage") \
            or c.spec.resources.limits.get("ephemeral-storage")
        try:
            asked = to_bytes(request) if request is not None else 0
        except (ValueError, ZeroDivisionError):
            asked = 0
        need += max(asked, WRITABLE_MIN)
    return need


def _prepare(b: _Builder, d: DesiredPod, old: ObservedPod, after: tuple[str, ...]) -> list[PlannedStep]:
    """A replace's make-before-break: check the free space, then make the new instance's
    snapshots beside the old instance. A snapshot key the old instance also has (the same uid
    replaced: --replace, a broken instance) is left to the bring-up: undoing it here would take
    the running instance's root filesystem."""
    first = PlannedStep(b.sid(), CheckFreeSpace(d.ref, d.uid, need=writable_need(d)), after)
    steps, prev = [first], (first.id,)
    keys = [(f"volume {v.name}", v.snapshot_key(d.uid), v.image) for v in d.volumes if v.kind == "image"]
    keys += [(c.name, c.id, c.spec.image) for c in d.init_containers + d.containers]
    for name, key, image in keys:
        if key in old.snapshots:
            continue
        ps = PlannedStep(b.sid(), PrepareSnapshot(d.ref, d.uid, container=name, key=key, image=image), prev)
        steps.append(ps)
        prev = (ps.id,)
    return steps


def make_plan(changes: list[Change], desired: DesiredState, observed: ObservedHost) -> Plan:
    """Order: claims and image pulls first (a failed pull leaves the old pod running), then per
    pod its teardown and/or bring-up. A replacement tears the old instance down only after the
    new instance's images are pulled."""
    b = _Builder()
    pods: dict[str, DesiredPod] = {}
    claims: dict[str, DesiredClaim] = {}
    effective = [c for c in changes if c.action != Action.NOOP]
    for c in effective:
        if c.key.kind == "PersistentVolumeClaim" and c.action == Action.CREATE:
            ref = f"{c.key.namespace}/{c.key.name}"
            claim = claims[ref] = desired.claims[ref]
            sid = b.claims[ref] = b.sid()
            b.add(TxnKind.SHARED, ref, "", [PlannedStep(sid, EnsureClaim(claim=ref))],
                  Owns(claims=((ref, claim.source, claim.declared),)))
    _pulls(b, effective, desired)
    for c in effective:
        if c.key.kind == "Pod":
            _pod_txns(b, c, desired, observed, pods)
    for c in effective:
        if c.key.kind == "PersistentVolumeClaim" and c.action == Action.DELETE:
            ref = f"{c.key.namespace}/{c.key.name}"
            after = tuple(t.steps[-1].id for t in b.txns if t.kind == TxnKind.DELETE and t.steps)
            b.add(TxnKind.SHARED, ref, "", [PlannedStep(b.sid(), RemoveClaim(claim=ref), after)],
                  Owns(forget_claims=(ref,)))
    _services(b, effective, desired)
    txns = _owners_delete_first(b.txns, pods, observed)
    return Plan(changes=tuple(changes), txns=txns, pods=pods, claims=claims,
                service_env=desired.service_env if pods else {})


def _pulls(b: _Builder, effective: list[Change], desired: DesiredState) -> None:
    """One pull per image the plan's creates and restarts need, with the strictest policy."""
    images: dict[str, str] = {}
    creds: dict[str, list[str]] = {}
    rank = {"Always": 2, "IfNotPresent": 1, "Never": 0}
    for c in effective:
        if c.key.kind == "Pod" and c.action in (Action.CREATE, Action.REPLACE, Action.START):
            d = desired.pods[f"{c.key.namespace}/{c.key.name}"]
            wanted = [(ctr.spec.image, ctr.pull_policy) for ctr in d.init_containers + d.containers
                      if c.action != Action.START or ctr.name in c.containers]
            if c.action != Action.START:  # image volumes are pulled like the containers' images
                wanted += [(v.image, v.image_pull_policy) for v in d.volumes if v.kind == "image"]
            for image, pull_policy in wanted:
                # The strictest policy wins when pods disagree: Always > IfNotPresent > Never.
                policy = images.get(image)
                if policy is None or rank[pull_policy] > rank[policy]:
                    images[image] = pull_policy
                if d.pull_secrets:
                    creds.setdefault(image, []).append(d.ref)
    for image in sorted(images):
        sid = b.pulls[image] = b.sid()
        step = PullImage(image=image, policy=images[image], credentials_from=tuple(sorted(set(creds.get(image, ())))))
        b.add(TxnKind.SHARED, image, "", [PlannedStep(sid, step)])


def _pod_txns(b: _Builder, c: Change, desired: DesiredState, observed: ObservedHost,
              pods: dict[str, DesiredPod]) -> None:
    """The transactions of one pod's change; `pods` collects the desired instances they need."""
    ref = f"{c.key.namespace}/{c.key.name}"
    if c.action == Action.DELETE:
        # A rollout that drops an older instance keeps the replica's remaining one owned.
        d = desired.pods.get(ref)
        keeps = Owns.instance(d) if c.move == Move.DROP and d is not None and d.uid == c.after else Owns()
        b.add(TxnKind.DELETE, ref, c.before, _teardown(b, observed.pods[c.before]), keeps)
        return
    d = pods[desired.pods[ref].uid] = desired.pods[ref]
    if c.action == Action.CREATE:
        b.add(TxnKind.CREATE, ref, d.uid, _bring_up(b, d), Owns.instance(d))
    elif c.action == Action.REPLACE:
        pulls = tuple(dict.fromkeys([b.pulls[x.spec.image] for x in d.init_containers + d.containers]
                                    + [b.pulls[v.image] for v in d.volumes if v.kind == "image"]))
        o = observed.pods[c.before]
        prep = b.add(TxnKind.PREPARE, ref, d.uid, _prepare(b, d, o, after=pulls))
        old = b.add(TxnKind.DELETE, ref, c.before, _teardown(b, o, after=(prep.steps[-1].id,)))
        last = (old.steps[-1].id,) if old.steps else ()
        b.add(TxnKind.CREATE, ref, d.uid, _bring_up(b, d, after=last), Owns.instance(d))
    elif c.action == Action.STOP:
        o = observed.pods[c.before]
        step = stop_step(ref, o.uid, [o.containers[n] for n in c.containers if n in o.containers], o.grace_period,
                         o.network.status.ip if o.network is not None else "")
        if step is not None:
            b.add(TxnKind.STOP, ref, o.uid, [PlannedStep(b.sid(), step)])
    elif c.action == Action.START:
        steps = []
        for name in c.containers:
            ctr = d.container(name)
            step = RestartContainer(ref, d.uid, container=name, container_id=ctr.id,
                                    reason=f"{c.reason}: {c.detail}" if c.detail else str(c.reason))
            steps.append(PlannedStep(b.sid(), step, (b.pulls[ctr.spec.image],)))
        b.add(TxnKind.START, ref, d.uid, steps)


def _services(b: _Builder, effective: list[Change], desired: DesiredState) -> None:
    """One transaction writes every Service at once, after the tick's pods were created or
    removed (apply runs it even when some of them failed: it waits, it does not depend)."""
    if desired.service_sync is None or not any(c.key.kind == "Service" for c in effective):
        return
    after = tuple(t.steps[-1].id for t in b.txns if t.steps)
    sync = desired.service_sync
    b.add(TxnKind.SERVICES, "services", "", [PlannedStep(b.sid(), SyncServices(sync=sync.dumps()), after)],
          Owns(services=json.dumps([e.to_json() for e in sync.entries])))


def _owners_delete_first(txns: list[Txn], pods: dict[str, DesiredPod], observed: ObservedHost) -> tuple[Txn, ...]:
    """A Deployment's new pods are created after its removed pods are gone.

    A rollout's surge budget counts the instances this plan deletes as gone; transactions of
    different pods run in parallel, so without this a create could finish first and the
    Deployment would briefly have more instances than maxSurge allows."""
    deletes: dict[str, list[str]] = {}
    for t in txns:
        o = observed.pods.get(t.uid) if t.kind == TxnKind.DELETE else None
        if o is not None and o.owner.split("/", 1)[0] in ROLLED_OUT_KINDS and t.steps:
            deletes.setdefault(o.owner, []).append(t.steps[-1].id)
    out = []
    for t in txns:
        after = deletes.get(str(pods[t.uid].owner), ()) if t.kind == TxnKind.CREATE and t.uid in pods else ()
        after = tuple(d for d in after if d not in t.step_ids)
        if after and t.steps:
            first = t.steps[0]
            t = replace(t, steps=(replace(first, depends_on=first.depends_on + after), *t.steps[1:]))
        out.append(t)
    return tuple(out)


# --- rendering ------------------------------------------------------------------------------------

_SYMBOL = {Action.CREATE: "+", Action.REPLACE: "~", Action.DELETE: "-", Action.START: ">", Action.STOP: ".",
           Action.NOOP: "="}


def render(plan: Plan, *, verbose: bool = False) -> str:
    lines = []
    effective = plan.effective_changes
    if not effective:
        lines.append("No changes. The host matches the manifests.")
    for c in effective:
        what = f"{c.key.kind.lower() if c.key.kind != 'PersistentVolumeClaim' else 'claim'} " \
               f"{c.key.namespace}/{c.key.name}"
        extra = f" [{', '.join(c.containers)}]" if c.containers else ""
        detail = f": {c.detail}" if c.detail else ""
        lines.append(f"  {_SYMBOL[c.action]} {c.action} {what}{extra} ({c.reason}{detail})")
        if verbose:
            for t in plan.txns:
                if t.key == f"{c.key.namespace}/{c.key.name}" and t.uid in (c.before, c.after):
                    for s in t.steps:
                        lines.append(f"      {s.id}: {s.step.describe()}")
    noops = [c for c in plan.changes if c.action == Action.NOOP]
    counts = {a: sum(1 for c in effective if c.action == a) for a in
              (Action.CREATE, Action.REPLACE, Action.DELETE, Action.START)}
    if effective:
        lines.append("")
        lines.append(f"Plan: {counts[Action.CREATE]} to create, {counts[Action.REPLACE]} to replace, "
                     f"{counts[Action.START]} to restart, {counts[Action.DELETE]} to delete, "
                     f"{len(noops)} unchanged.")
    for c in noops:
        if c.reason != "unchanged":
            lines.append(f"  = {c.key.namespace}/{c.key.name} ({c.reason}: {c.detail})")
    return "\n".join(lines)
