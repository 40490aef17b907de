"""Runs a Plan through the drivers as journaled transactions, and recovers after a crash.

Journal, then act: each transaction is written to the state store (every step pending, with
the step that undoes it) before its first step runs, and each step is marked started and done
around its driver call. When a step of a *create* fails, the steps already done (and the one
that failed, whose undo is idempotent) are undone in reverse; other pods are unaffected. After
a crash, ``recover`` finds open transactions and finishes them: creates are undone (the next
diff creates the pod again from scratch), teardowns are rolled forward, and an interrupted
restart is closed as aborted (it needs the desired pod, which only a plan has: the next diff
sees the container still exited, or gone, and restarts it again).

Make-before-break (plan.TxnKind.PREPARE): a replace's PREPARE runs like a create but stays open
when it succeeds; the new instance's CREATE closes it as it commits (in the same database
transaction). When the CREATE does not commit (the teardown before it failed, or it failed
itself), apply undoes the PREPARE; after a crash, recovery undoes an open PREPARE last, after
the transactions that used what it made.

A full disk: the journal holds a reserve (reconciler.store.journal) that apply releases before
it undoes anything on a nearly full disk, and that a journal write gives back when it finds the
disk full, so that a compensation never fails on its own bookkeeping. A transaction
that fails for lack of space (its free-space check, a snapshot, the journal) fails like any
other, and once the plan has run apply raises that NoSpaceError: one clear message (and exit
code) instead of one line per transaction it held back.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from reconciler.desired import DesiredPod
from reconciler.drivers.base import Drivers
from reconciler.errors import ContainerRuntimeError, NetworkError, NoSpaceError, PodplayError, as_no_space
from reconciler.observed import NetworkStatus
from reconciler.plan import Plan, Txn, TxnKind, uses_pod_ip
from reconciler.state import ABORTED, COMMITTED, DONE, FAILED, OPEN, ROLLED_BACK, STARTED, UNDONE, StateStore
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
    StopContainer,
    StopContainers,
    SyncServices,
)

FAILPOINT_ENV = "PODPLAY_FAILPOINT"
INIT_TIMEOUT = None  # init containers may run as long as they need (Kubernetes has no limit either)


# --- failpoints -----------------------------------------------------------------------------------

class Failpoints:
    """Die at a named step boundary, to test crash recovery at every one of them.

    ``PODPLAY_FAILPOINT=after:CreateInfra`` kills the process (SIGKILL, like ``kill -9``) right
    after the first CreateInfra step is journaled done; ``before:#3`` before the third step
    this process runs; ``ran:SyncServices`` once the step acted but before the journal says so
    (the host changed, the record did not). ``action`` can be replaced in-process by tests.
    """

    def __init__(self, spec: str | None = None, action: Callable[[], None] | None = None):
        spec = spec if spec is not None else os.environ.get(FAILPOINT_ENV, "")
        self.when, _, self.what = spec.partition(":")
        self.count = 0
        self.lock = threading.Lock()
        self.action = action or (lambda: os.kill(os.getpid(), signal.SIGKILL))

    def before(self, step: Step) -> int:
        """Count the step (steps of parallel transactions are counted in the order they start)
        and die here if the failpoint says so. Returns the step's number for ``after``."""
        with self.lock:
            self.count += 1
            n = self.count
        self._check("before", step, n)
        return n

    def after(self, step: Step, n: int) -> None:
        self._check("after", step, n)

    def ran(self, step: Step, n: int) -> None:
        self._check("ran", step, n)

    def _check(self, when: str, step: Step, n: int) -> None:
        if when != self.when:
            return
        if self.what.startswith("#"):
            if n == int(self.what[1:]):
                self.action()
        elif self.what in (step.verb, f"{step.verb}:{step.target}"):
            self.action()


# --- results --------------------------------------------------------------------------------------

class TxnStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # a step failed: a create was compensated, a teardown left for the next pass
    SKIPPED = "skipped"  # never started: a transaction it depends on failed, or its host port is taken


@dataclass
class TxnResult:
    txn: Txn
    status: TxnStatus
    error: str = ""
    cause: PodplayError | None = None  # the error that failed it (or that failed what it waited on)


@dataclass
class ApplyResult:
    results: list[TxnResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status == TxnStatus.OK for r in self.results)

    @property
    def failed(self) -> list[TxnResult]:
        return [r for r in self.results if r.status != TxnStatus.OK]

    @property
    def no_space(self) -> NoSpaceError | None:
        """The first failure that was a full disk, if any."""
        return next((r.cause for r in self.results if isinstance(r.cause, NoSpaceError)), None)


Reporter = Callable[[str, Txn, str], None]  # (event, txn, message): event in begin|ok|failed|skipped


# --- running steps --------------------------------------------------------------------------------

class _Runner:
    """Maps each step to driver calls; caches what later steps of the same pod need."""

    def __init__(self, drivers: Drivers, plan: Plan, state: StateStore | None = None):
        self.d = drivers
        self.plan = plan
        self.state = state
        self.volume_paths: dict[str, dict[str, str]] = {}
        self.network: dict[str, NetworkStatus | None] = {}
        self.lock = threading.RLock()

    def pod(self, step: Step) -> DesiredPod:
        try:
            return self.plan.pods[step.uid]
        except KeyError:
            raise ContainerRuntimeError(f"plan has no desired pod {step.pod} ({step.uid})") from None

    def _volumes(self, pod: DesiredPod) -> dict[str, str]:
        with self.lock:  # a pod's containers are created side by side
            return self._volumes_locked(pod)

    def _volumes_locked(self, pod: DesiredPod) -> dict[str, str]:
        if pod.uid not in self.volume_paths:
            kept = tuple(v for v in pod.volumes if v.kind != "image")
            self.volume_paths[pod.uid] = self.d.volumes.prepare_pod_volumes(pod.uid, kept) if kept else {}
        # Image volumes are snapshots (made by their PrepareSnapshot step; prepare is idempotent
        # and gives the mounted root; asked each time: a hostUsers: false pod's are mounted for
        # its ID range once its infra holds one), the others the volume driver's.
        paths = dict(self.volume_paths[pod.uid])
        for v in pod.volumes:
            if v.kind == "image":
                image = self.d.images.get_image(v.image)
                if image is None:
                    raise ContainerRuntimeError(f"image {v.image} of {pod.ref}'s volume {v.name} is not in the store")
                paths[v.name] = self._snapshot(pod, v.snapshot_key(pod.uid), image)
        return paths

    def _network(self, pod: DesiredPod) -> NetworkStatus | None:
        if pod.uid not in self.network:
            found = [a.status for a in self.d.network.list_attachments() if a.pod_uid == pod.uid]
            self.network[pod.uid] = found[0] if found else None
        return self.network[pod.uid]

    def _post_start(self, pod: DesiredPod, name: str, cid: str) -> None:
        """The container's postStart hook, as the kubelet runs it: right after the start, before
        the next container of the pod is started. A failed hook fails the start (the kubelet
        kills the container and restarts it under its policy: here the step fails, is undone, and
        the next pass retries under the back-off)."""
        spec = pod.container(name).spec
        hook = spec.lifecycle.post_start if spec.lifecycle is not None else None
        if hook is None:
            return
        from reconciler.health import run_hook

        network = self._network(pod) if pod.network else None
        info = self.d.runtime.infra_info(pod.uid) if pod.network else None
        netns = info.namespaces.get("network", "") if info else ""
        timeout = float(max(pod.spec.termination_grace_period_seconds, 1))
        ok, message = run_hook(self.d, cid, hook, netns=netns, pod_ip=network.ip if network else "", spec=spec,
                               timeout=timeout)
        if not ok:
            raise ContainerRuntimeError(f"postStart hook of {pod.ref}/{name} failed: {message}")

    def _create(self, pod: DesiredPod, name: str) -> str:
        pod = self._with_service_links(pod)
        c = pod.container(name)
        image = self.d.images.get_image(c.spec.image)
        if image is None:
            raise ContainerRuntimeError(f"image {c.spec.image} of {pod.ref}/{name} is not in the store")
        rootfs = self._snapshot(pod, c.id, image)
        # Only a container whose env asks for the pod's IP waits for the network (plan.py):
        # the others may be created while it is attached, and are given none.
        network = self._network(pod) if uses_pod_ip(c) else None
        self.d.runtime.create_container(pod, c, rootfs=rootfs, image=image, volumes=self._volumes(pod),
                                        network=network)
        return c.id

    def _snapshot(self, pod: DesiredPod, key: str, image) -> str:
        """A hostUsers: false pod's snapshots are mounted for the ID range its infra holds."""
        id_map = None if pod.spec.host_users else self.d.runtime.pod_id_map(pod.uid)
        return self.d.snapshots.prepare(key, image, id_map) if id_map else self.d.snapshots.prepare(key, image)

    def _with_service_links(self, pod: DesiredPod) -> DesiredPod:
        """The kubelet's service links, as the container is created: the Services of its namespace
        (FOO_SERVICE_HOST/_PORT…, reconciler.services.service_env), unless the pod says
        enableServiceLinks: false; never over a variable the manifest sets itself."""
        links = self.plan.service_env.get(pod.namespace, ())
        if not links or not pod.spec.enable_service_links:
            return pod
        from dataclasses import replace

        from reconciler.desired import EnvEntry

        def add(c):
            own = {e.name for e in c.env}
            return replace(c, env=tuple(EnvEntry(k, v) for k, v in links if k not in own) + c.env)

        return replace(pod, containers=tuple(add(c) for c in pod.containers),
                       init_containers=tuple(add(c) for c in pod.init_containers))

    def run(self, step: Step) -> None:
        d = self.d
        match step:
            case PullImage():
                creds = [cred for ref in step.credentials_from for p in self.plan.pods.values() if p.ref == ref
                         for cred in p.pull_secrets]
                d.images.ensure_image(step.image, step.policy, creds)
            case EnsureClaim():
                d.volumes.ensure_claim(self.plan.claims[step.claim])
            case PrepareVolumes():
                with self.lock:
                    self.volume_paths.pop(step.uid, None)
                    self._volumes(self.pod(step))
            case CheckFreeSpace():
                if self.state is not None:
                    self.state.journal.check_space(step.need)
            case PrepareSnapshot():
                image = d.images.get_image(step.image)
                if image is None:
                    raise ContainerRuntimeError(f"image {step.image} is not in the store")
                d.snapshots.prepare(step.key, image)
            case CreateInfra():
                d.runtime.create_infra(self.pod(step))
            case AttachNetwork():
                pod = self.pod(step)
                info = d.runtime.infra_info(pod.uid)
                if info is None:
                    raise NetworkError(f"pod {pod.ref} has no infra container to attach to {step.network}")
                self.network[pod.uid] = status = d.network.attach(pod, info.namespaces["network"])
                d.runtime.address_pod(pod, status)
            case RunInitContainer():
                pod = self.pod(step)
                cid = self._create(pod, step.container)
                d.runtime.start_container(cid)
                code = d.runtime.wait_container(cid, INIT_TIMEOUT)
                if code != 0:
                    # The failed creation is rolled back, init container and its log included:
                    # the log's tail travels in the error, the only place left to read it.
                    raise ContainerRuntimeError(
                        f"init container {pod.ref}/{step.container} exited with code {code}{_log_tail(d, cid)}")
            case CreateContainer():
                self._create(self.pod(step), step.container)
            case StartContainer():
                d.runtime.start_container(step.container_id)
                self._post_start(self.pod(step), step.container, step.container_id)
            case RestartContainer():
                pod = self.pod(step)
                d.runtime.remove_container(step.container_id)
                cid = self._create(pod, step.container)
                d.runtime.start_container(cid)
                self._post_start(pod, step.container, cid)
            case StopContainers():
                started = time.monotonic()
                hooks = _PreStop(d, step)
                _stop_all(d, step.container_ids, step.timeout, hooks)
                if step.then_ids:
                    _stop_all(d, step.then_ids, sidecar_grace(step.timeout, time.monotonic() - started), hooks)
            case StopContainer():
                d.runtime.stop_container(step.container_id, step.timeout, step.signal)
            case RemoveContainer():
                d.runtime.remove_container(step.container_id)
            case DetachNetwork():
                d.network.detach(step.uid)
            case RemoveInfra():
                d.runtime.remove_infra(step.uid)
            case RemoveSnapshot():
                d.snapshots.remove(step.key)
            case RemoveVolumes():
                d.volumes.remove_pod_volumes(step.uid)
            case RemoveClaim():
                d.volumes.remove_claim(step.claim)
            case SyncServices():
                from reconciler.services import ServiceSync

                if d.services is None:
                    raise NetworkError("this host has no Service driver")
                d.services.sync(ServiceSync.loads(step.sync))
            case _:
                raise ContainerRuntimeError(f"apply does not know the step {step.verb}")


def sidecar_grace(timeout: int, spent: float) -> int:
    """What the sidecars get of a pod's grace period once its app containers stopped: the rest,
    and never less than 2 s unless the stop was immediate (the kubelet's minimum for them)."""
    if timeout <= 0:
        return 0
    return max(math.ceil(timeout - spent), min(timeout, 2))


class _PreStop:
    """The preStop hooks of one StopContainers step. The kubelet's order and accounting: the hook
    runs first, within the grace period; the stop signal follows with what is left of it (and at
    least 2 s more when the hook used it all up). An immediate stop (timeout 0) runs no hook. A
    failed hook is only logged by the kubelet: the container is stopped all the same."""

    def __init__(self, d: Drivers, step: StopContainers):
        import json

        from reconciler.model import codec
        from reconciler.model.kube import LifecycleHandler

        self.d, self.step = d, step
        self.hooks = {cid: codec.from_data(LifecycleHandler, json.loads(text)) for cid, text in step.pre_stop}
        self._netns: str | None = None

    def netns(self) -> str:
        if self._netns is None:
            info = self.d.runtime.infra_info(self.step.uid) if self.step.pod_ip else None
            self._netns = info.namespaces.get("network", "") if info else ""
        return self._netns

    def stop(self, cid: str, timeout: int) -> None:
        hook = self.hooks.get(cid)
        if hook is not None and timeout > 0:
            from reconciler.health import run_hook

            started = time.monotonic()
            run_hook(self.d, cid, hook, netns=self.netns(), pod_ip=self.step.pod_ip, spec=None, timeout=timeout)
            timeout = max(math.ceil(timeout - (time.monotonic() - started)), 2)
        self.d.runtime.stop_container(cid, timeout)


def _stop_all(d: Drivers, ids: tuple[str, ...], timeout: int, hooks: _PreStop | None = None) -> None:
    """Stop containers in parallel so that the grace period is spent once, not once each."""
    stop = hooks.stop if hooks is not None else d.runtime.stop_container
    if len(ids) == 1:
        stop(ids[0], timeout)
        return
    with ThreadPoolExecutor(max_workers=min(len(ids), 8)) as pool:
        for f in [pool.submit(stop, cid, timeout) for cid in ids]:
            f.result()


def _log_tail(d: Drivers, cid: str, lines: int = 20) -> str:
    try:
        tail = [text.decode(errors="replace").rstrip() for _, _, text in d.runtime.read_logs(cid, tail=lines)]
    except PodplayError:
        return ""
    return (":\n    " + "\n    ".join(tail)) if tail else ""


# --- applying a plan ------------------------------------------------------------------------------

def _port_conflict(plan: Plan, txn: Txn, drivers: Drivers) -> str:
    """A create whose hostPorts are taken fails before any of its steps runs. Checked when the
    transaction is reached, so that ports freed by an earlier teardown in this plan count as free."""
    pod = plan.pods.get(txn.uid)
    if txn.kind != TxnKind.CREATE or pod is None or not any(p.host_port for c in pod.containers for p in c.spec.ports):
        return ""
    conflicts = drivers.network.port_conflicts(pod)
    return f"host port already in use: {'; '.join(conflicts)}" if conflicts else ""


def default_parallelism() -> int:
    """How many transactions run at once: $PODPLAY_PARALLEL, else 4 (independent pods are
    created and torn down side by side, as the kubelet does; 1 runs the plan strictly in order)."""
    try:
        return max(1, int(os.environ.get("PODPLAY_PARALLEL", "4")))
    except ValueError:
        return 4


def apply_plan(plan: Plan, drivers: Drivers, state: StateStore, *, report: Reporter | None = None,
               failpoints: Failpoints | None = None, parallel: int | None = None) -> ApplyResult:
    """Run every transaction; one pod's failure never stops the others.

    A transaction starts once every transaction it depends on (through its steps' dependencies)
    finished; if one of those failed it is skipped. Independent transactions run in parallel,
    up to `parallel` at a time, except the shared ones (image pulls, claims), which run one at a
    time: the image store parallelizes a pull's layers itself.
    """
    report = report or (lambda event, txn, message: None)
    failpoints = failpoints or Failpoints()
    parallel = parallel or default_parallelism()
    runner = _Runner(drivers, plan, state)
    owner = {sid: t.id for t in plan.txns for sid in t.step_ids}
    needs = {t.id: {owner[d] for d in t.external_deps() if d in owner} for t in plan.txns}
    outcome: dict[str, TxnResult] = {}
    prepared: dict[str, int] = {}  # a PREPARE's txn id → its journal id, while it is held open
    lock = threading.Lock()  # report() and the event log see one transaction at a time
    if plan.txns:
        state.journal.hold_reserve()

    def finish(txn: Txn, status: TxnStatus, message: str = "", cause: PodplayError | None = None) -> None:
        with lock:
            outcome[txn.id] = TxnResult(txn, status, message, cause)
            if status != TxnStatus.OK:
                with contextlib.suppress(PodplayError):  # the event log must not fail a full disk's undo
                    state.keepers.add_event("warning" if status == TxnStatus.SKIPPED else "error", txn.key, message)
            if not isinstance(cause, NoSpaceError):  # said once, by apply_plan's error
                report(status, txn, message)

    def run(txn: Txn) -> None:
        conflict = _port_conflict(plan, txn, drivers)
        if conflict:
            finish(txn, TxnStatus.SKIPPED, conflict)
            return
        with lock:
            report("begin", txn, "")
        error, cause, tid = _run_txn(txn, runner, state, txn.owns.to_json(), failpoints)
        if txn.kind == TxnKind.PREPARE and not error:
            with lock:
                prepared[txn.id] = tid
        finish(txn, TxnStatus.FAILED if error else TxnStatus.OK, error, cause)

    pending = list(plan.txns)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        running: dict = {}
        while pending or running:
            for txn in list(pending):
                deps = needs[txn.id]
                # The Services' sync waits for the pods but serves whatever came up.
                failed = [outcome[d] for d in deps if d in outcome and outcome[d].status != TxnStatus.OK]
                if txn.kind != "services" and failed:
                    pending.remove(txn)
                    finish(txn, TxnStatus.SKIPPED, "skipped: a step it depends on failed",
                           next((r.cause for r in failed if isinstance(r.cause, NoSpaceError)), None))
                    continue
                if not deps <= outcome.keys():
                    continue
                if txn.kind == TxnKind.SHARED and any(t.kind == TxnKind.SHARED for t in running.values()):
                    continue
                pending.remove(txn)
                running[pool.submit(run, txn)] = txn
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                txn = running.pop(future)
                future.result()  # a bug (not a PodplayError) surfaces here, as it would in order
    _release_prepared(plan, prepared, outcome, runner, state)
    result = ApplyResult([outcome[t.id] for t in plan.txns])
    with contextlib.suppress(NoSpaceError):  # housekeeping: the next apply prunes
        state.journal.prune_history()
    if result.no_space is not None:
        raise result.no_space
    return result


def _release_prepared(plan: Plan, prepared: dict[str, int], outcome: dict[str, TxnResult], runner: _Runner,
                      state: StateStore) -> None:
    """Undo the PREPAREs whose new instance was not created (a committed CREATE has closed its
    PREPARE in the journal already)."""
    for txn in plan.txns:
        tid = prepared.get(txn.id)
        if tid is None:
            continue
        created = any(t.kind == TxnKind.CREATE and t.uid == txn.uid and t.key == txn.key
                      and outcome.get(t.id) is not None and outcome[t.id].status == TxnStatus.OK for t in plan.txns)
        if created:
            continue
        steps = [ps.step for ps in txn.steps]
        errors = _compensate(tid, steps, list(range(len(steps))), runner, state)
        state.journal.finish_txn(tid, ROLLED_BACK, "its new instance was not created" + errors)


def _run_txn(txn: Txn, runner: _Runner, state: StateStore, record: dict, failpoints: Failpoints
             ) -> tuple[str, PodplayError | None, int]:
    """Run one transaction: (error message or "", the error, its journal id). A PREPARE that
    succeeds is left open (see the module docstring)."""
    steps = [ps.step for ps in txn.steps]
    try:
        tid = state.journal.begin_txn(txn.kind, txn.key, txn.uid, steps, record)
    except PodplayError as exc:  # not even journaled (a full disk): nothing ran
        return f"{txn.kind} {txn.key}: {exc}", exc, 0
    if txn.kind == TxnKind.CREATE and len(steps) > 1:
        return _run_create(txn, tid, steps, runner, state, failpoints)
    done: list[int] = []
    for seq, step in enumerate(steps):
        n = failpoints.before(step)
        try:
            state.journal.mark(tid, seq, STARTED)  # on a disk full even past the reserve: not run
            runner.run(step)
            failpoints.ran(step, n)
        except PodplayError as exc:
            exc = as_no_space(exc, state.path.parent) or exc  # a full disk is said once, as itself
            with contextlib.suppress(NoSpaceError):
                state.journal.mark(tid, seq, FAILED, str(exc))
            message = f"{step.describe()}: {exc}"
            if txn.kind in (TxnKind.CREATE, TxnKind.PREPARE):
                undo_errors = _compensate(tid, steps, done + [seq], runner, state)
                state.journal.finish_txn(tid, ROLLED_BACK, message + undo_errors)
                return message + undo_errors, exc, tid
            if txn.kind == TxnKind.DELETE:
                # Keep tearing down what we can; the open transaction is retried next pass.
                rest = _roll_forward(tid, steps, range(seq + 1, len(steps)), runner, state)
                if rest:
                    message += rest
                state.journal.finish_txn(tid, ABORTED, message)
                return message, exc, tid
            state.journal.finish_txn(tid, ABORTED, message)
            return message, exc, tid
        state.journal.mark(tid, seq, DONE)
        done.append(seq)
        failpoints.after(step, n)
    if txn.kind != TxnKind.PREPARE:
        state.journal.finish_txn(tid, COMMITTED)
    return "", None, tid


STEP_PARALLELISM = 4  # steps of one pod's creation running at once


def _run_create(txn: Txn, tid: int, steps: list[Step], runner: _Runner, state: StateStore,
                failpoints: Failpoints) -> tuple[str, PodplayError | None, int]:
    """A pod's creation with its independent steps side by side: each step starts once the steps
    it depends on (in the plan) are done, so the snapshots are prepared while the sandbox and its
    network are made, and the app containers are created together once the sandbox exists (in
    order when the pod has a secret volume). The containers still start one after the other in
    the plan's order, as the kubelet starts them (a postStart hook holds the next start).

    Journaling is the same as in order: each step is marked started and done around its driver
    call. After a failure no new step starts; the ones running finish, and everything touched is
    undone newest first by plan order (which puts a step after everything it depends on), as
    crash recovery undoes it. A crash (a BaseException) leaves the transaction open for it."""
    index = {ps.id: i for i, ps in enumerate(txn.steps)}
    needs = [{index[d] for d in ps.depends_on if d in index} for ps in txn.steps]
    pod = runner.plan.pods.get(txn.uid)
    # A secret volume's owner-only files are given to the first container that needs them: the
    # containers of such a pod are created in plan order, so which one that is never races.
    ordered = (StartContainer, RunInitContainer, CreateContainer) \
        if pod is not None and any(v.kind == "secret" for v in pod.volumes) else (StartContainer, RunInitContainer)
    previous: dict[type, int] = {}
    for i, step in enumerate(steps):
        kind = StartContainer if isinstance(step, RunInitContainer) else type(step)
        if kind in ordered:
            if kind in previous:
                needs[i].add(previous[kind])
            previous[kind] = i

    def one(seq: int) -> None:
        step = steps[seq]
        n = failpoints.before(step)
        state.journal.mark(tid, seq, STARTED)  # on a disk full even past the reserve: not run
        try:
            runner.run(step)
            failpoints.ran(step, n)
        except PodplayError as exc:
            cause = as_no_space(exc, state.path.parent) or exc  # a full disk is said once, as itself
            with contextlib.suppress(NoSpaceError):
                state.journal.mark(tid, seq, FAILED, str(cause))
            if cause is exc:
                raise
            raise cause from exc
        state.journal.mark(tid, seq, DONE)
        failpoints.after(step, n)

    pending = list(range(len(steps)))
    done: set[int] = set()
    touched: set[int] = set()
    error = ""
    cause: PodplayError | None = None
    crash: BaseException | None = None
    with ThreadPoolExecutor(max_workers=STEP_PARALLELISM) as pool:
        running: dict = {}
        while True:
            if not error and crash is None:
                for seq in [s for s in pending if needs[s] <= done]:
                    pending.remove(seq)
                    touched.add(seq)
                    running[pool.submit(one, seq)] = seq
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                seq = running.pop(future)
                try:
                    future.result()
                    done.add(seq)
                except PodplayError as exc:
                    if not error:
                        error, cause = f"{steps[seq].describe()}: {exc}", exc
                except BaseException as exc:  # a crash (or a bug): no compensation, as after a kill
                    crash = crash or exc
    if crash is not None:
        raise crash
    if pending and not error:  # a plan whose steps wait on each other: refused, never half-run
        error = f"steps {', '.join(txn.steps[s].id for s in pending)} of {txn.key} wait on each other"
        cause = ContainerRuntimeError(error)
    if error:
        undo_errors = _compensate(tid, steps, sorted(touched), runner, state)
        state.journal.finish_txn(tid, ROLLED_BACK, error + undo_errors)
        return error + undo_errors, cause, tid
    state.journal.finish_txn(tid, COMMITTED)
    return "", None, tid


def _compensate(tid: int, steps: list[Step], seqs: list[int], runner: _Runner, state: StateStore) -> str:
    if any(steps[seq].undo() is not None for seq in seqs):
        # Undoing must not stop at its own bookkeeping on a disk that (nearly) filled up.
        state.journal.release_reserve(unless_free=True)
    errors = []
    for seq in reversed(seqs):
        undo = steps[seq].undo()
        if undo is None:
            continue
        try:
            runner.run(undo)
        except PodplayError as exc:
            errors.append(f"{undo.describe()}: {exc}")
            continue
        # The undo ran; a disk full past the reserve only keeps the journal behind (the
        # transaction stays open, and recovery undoes it again: undo steps are idempotent).
        with contextlib.suppress(NoSpaceError):
            state.journal.mark(tid, seq, UNDONE)
    return ("; compensation left errors: " + "; ".join(errors)) if errors else ""


def _roll_forward(tid: int, steps: list[Step], seqs, runner: _Runner, state: StateStore) -> str:
    errors = []
    for seq in seqs:
        try:
            runner.run(steps[seq])
            state.journal.mark(tid, seq, DONE)
        except PodplayError as exc:
            state.journal.mark(tid, seq, FAILED, str(exc))
            errors.append(f"{steps[seq].describe()}: {exc}")
    return ("; " + "; ".join(errors)) if errors else ""


# --- crash recovery -------------------------------------------------------------------------------

def recover(state: StateStore, drivers: Drivers) -> list[str]:
    """Finish the transactions a killed process left open. Returns what was done, for the log.

    A create is undone: every step that may have run (started or done) is reversed, newest
    first; undo steps are idempotent, so reversing a step that never took effect is harmless.
    A delete is rolled forward: its remaining steps are run again. A restart is dropped: the
    next diff restarts the container again.
    """
    notes = []
    runner = _Runner(drivers, Plan(), state)
    # An open PREPARE is undone last: the creation that used its snapshots goes first.
    for txn in sorted(state.journal.open_txns(), key=lambda t: t.kind == TxnKind.PREPARE):
        steps = [e.step for e in txn.entries]
        if txn.kind == TxnKind.PREPARE:
            touched = [e.seq for e in txn.entries if e.status in (STARTED, DONE, FAILED)]
            errors = _compensate(txn.id, steps, touched, runner, state)
            state.journal.finish_txn(txn.id, ROLLED_BACK if not errors else OPEN, "recovered after a crash" + errors)
            notes.append(f"undid the interrupted preparation of {txn.key}'s new instance{errors}")
        elif txn.kind == TxnKind.CREATE:
            touched = [e.seq for e in txn.entries if e.status in (STARTED, DONE, FAILED)]
            errors = _compensate(txn.id, steps, touched, runner, state)
            state.journal.finish_txn(txn.id, ROLLED_BACK if not errors else OPEN, "recovered after a crash" + errors)
            notes.append(f"undid the interrupted creation of {txn.key}{errors}")
        elif txn.kind in (TxnKind.DELETE, TxnKind.START):
            remaining = [e.seq for e in txn.entries if e.status != DONE]
            if txn.kind == TxnKind.START:
                # A restart needs the desired pod, which only a plan has: the next diff redoes it.
                state.journal.finish_txn(txn.id, ABORTED, "interrupted restart; the next pass restarts again")
                notes.append(f"dropped the interrupted restart of {txn.key}")
                continue
            errors = _roll_forward(txn.id, steps, remaining, runner, state)
            state.journal.finish_txn(txn.id, COMMITTED if not errors else OPEN, "recovered after a crash" + errors)
            notes.append(f"finished the interrupted teardown of {txn.key}{errors}")
        else:
            state.journal.finish_txn(txn.id, ABORTED, "interrupted")
    return notes
