"""The loop that keeps a host converged: shared by `podplay watch` (files) and `podplay sync` (git).

A *source* says what the host should run (a ``Composition``) and when it has news (``due()``).
The keeper is an event loop around ``reconciler.converger``: it ticks the converger when the
source has news, on a periodic full resync, and on a relist (every ``relist`` seconds, and
exactly when a crash-loop back-off, a probe or a retry of a failed pod is due) that runs the
probes and repairs what it finds: a container that exited, a pod removed behind podplay's back.

A relist reuses the parsed composition: it costs one look at the host under the apply lock
(skipped when another podplay holds it) and one diff. Between events the keeper sleeps in
``select`` on a self-pipe that the file watcher and the signal handlers write to: no polling.

On stop (SIGTERM) the pods stay: they belong to the host, not to the keeper; with
``down_on_exit`` the keeper removes what its source describes first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from reconciler.converger import Converger, HealthHook
from reconciler.drivers.base import Drivers
from reconciler.errors import EXIT_APPLY_FAILED, EXIT_INVALID, LockedError, PodplayError
from reconciler.observed import ObservedHost
from reconciler.paths import HostPaths
from reconciler.plan import Plan, Txn
from reconciler.reconcile import Goal, Mode, PassResult, make_goal
from reconciler.revisions import PROGRESSING, RolloutEvent
from reconciler.state import StateStore
from reconciler.watch.backoff import backoff_schedule
from reconciler.watch.files import Composition, empty_composition
from reconciler.watch.log import EventLog


class Source(Protocol):
    """Where a keeper's manifests come from."""

    kind: str  # watch | sync
    news: str  # the trigger name of a pass it asks for: files | git
    id: str  # stable name of this source on this host (status, lock file)
    scope_paths: tuple[str, ...]

    def start(self, wake: Callable[[], None]) -> None:
        """Begin noticing news; call `wake` (from any thread) when there is some."""

    def close(self) -> None:
        ...

    def due(self) -> float | None:
        """Monotonic time at which ``refresh`` should run (news, debounced), or None."""

    def refresh(self, full: bool) -> Composition:
        """The composition to converge to now; `full` re-reads everything (the periodic resync)."""

    def settle(self, comp: Composition, result: PassResult | None, error: str) -> Composition | None:
        """Told how a pass over `comp` went; returns a composition to apply next (a rollback) or None."""

    def describe(self) -> dict:
        """What `podplay status` shows about the source."""

    def rebuild(self) -> bool:
        """Whether a build context changed since the last call (then --build builds again)."""


@dataclass
class KeeperOptions:
    relist: float = 2.0  # seconds between relists of the runtime
    resync: float = 300.0  # seconds between full passes (every file re-read, journal recovered)
    down_on_exit: bool = False
    reopen_drivers: bool = False  # open the drivers afresh for every pass (the file-backed fake host)
    once: bool = False  # converge once and return (sync --once)
    # A step between the manifests and the goal, prepare(paths, manifests) -> manifests (--build's
    # image builds): run when the composition changes and at every resync, not on relists.
    prepare: Callable | None = None


class KeeperLock:
    """One keeper per source on a host: two watchers of the same files would fight over them."""

    def __init__(self, host_paths: HostPaths, source_id: str):
        self.path = host_paths.runroot / "keep" / f"{source_id}.lock"
        self.fd: int | None = None

    def __enter__(self) -> KeeperLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"this source is already kept by {holder} (lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(OSError):
                self.path.unlink()


class Waker:
    """A self-pipe: `wake()` is safe from threads and signal handlers; `wait()` sleeps in select."""

    def __init__(self):
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        # A full pipe means a wake-up is already pending; a closed one, that the keeper is done.
        with contextlib.suppress(OSError):
            os.write(self.w, b".")

    def wait(self, timeout: float | None) -> None:
        select.select([self.r], [], [], None if timeout is None else max(0.0, timeout))
        try:
            while os.read(self.r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class Keeper:
    def __init__(self, source: Source, host_paths: HostPaths, state: StateStore,
                 open_drivers: Callable[[], Drivers], log: EventLog, options: KeeperOptions | None = None, *,
                 health: HealthHook | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.source = source
        self.paths = host_paths
        self.state = state
        self.open_drivers = open_drivers
        self.log = log
        self.options = options or KeeperOptions()
        self.health = health
        self.clock, self.mono = clock, monotonic
        self.comp: Composition = empty_composition(source.scope_paths)
        self.waker = Waker()
        self.stopping = False
        self.started = clock()
        self.next_relist = 0.0
        self.next_resync = 0.0
        self.backoff_at: float | None = None  # monotonic time of the next back-off expiry
        self.health_at: float | None = None
        self.workload_at: float | None = None  # a CronJob's next schedule, a Job's back-off, deadline or ttl
        self.backoff: dict[str, dict] = {}  # container id → back-off state, for status and ps
        self.last_pass: dict = {}
        self.rollouts: dict[str, dict] = {}  # deployment → a rollout under way, failed or rolled back
        self.passes = 0
        self._drivers: Drivers | None = None
        self._files_seen: dict[str, tuple] = {}
        self._plan: Plan | None = None
        self._read_ms: float | None = None
        self._failing: tuple[str, float] = ("", 0.0)  # the last failure logged, and when
        self._goal: tuple[Composition, Goal] | None = None
        # Relist ticks (probes on) call the health hook; passes for news and resyncs do not.
        self.converger = Converger(self.drivers, state, host_paths, clock=clock, mono=monotonic, report=self._report,
                                   on_plan=self._set_plan, probe=health)

    # --- life cycle --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """From a signal handler: finish the current step, then stop."""
        self.stopping = True
        self.waker.wake()

    def run(self) -> int:
        self.log.info("start", source=self.source.kind, id=self.source.id, pid=os.getpid(),
                      relist_s=self.options.relist, resync_s=self.options.resync, **self._source_fields())
        try:
            self.source.start(self.waker.wake)
            self._guard(lambda: self.converge("start", refresh=True, full=True))
            if self.options.once:
                return self.exit_code()
            while not self.stopping:
                self.step()
            if self.options.down_on_exit:
                self._guard(self.down)
        finally:
            self.source.close()
            self._record(running=False)
            self.log.info("stop", down=self.options.down_on_exit, passes=self.passes)
            if self._drivers is not None:
                self._drivers.close()
            self.waker.close()
        return 0

    def step(self) -> None:
        """Do whatever is due now, else sleep until something is (or a wake-up comes)."""
        now = self.mono()
        news = self.source.due()
        if news is not None and news <= now:
            self._guard(lambda: self.converge(self.source.news, refresh=True))
            return
        if now >= self.next_resync:
            self._guard(lambda: self.converge("resync", refresh=True, full=True))
            return
        timers = [t for t in (self.next_relist, self.backoff_at, self.health_at, self.workload_at,
                              self.converger.retry.next_at()) if t is not None]
        if min(timers) <= now:
            self._guard(self.tick)
            return
        self.waker.wait(min([self.next_resync, *timers] + ([news] if news is not None else [])) - now)

    def _guard(self, fn: Callable[[], None]) -> None:
        """A failing pass must not end the keeper: log it, try again at the next tick."""
        try:
            fn()
            self._failing = ("", 0.0)
        except PodplayError as exc:
            self._failed("pass_failed", str(exc))
        except Exception as exc:  # a bug: say where, keep the host converging
            self._failed("internal_error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=8))
        finally:
            self.next_relist = max(self.next_relist, self.mono() + self.options.relist)

    def _failed(self, event: str, error: str, trace: str | None = None) -> None:
        """Log a failure; the same one again only once a minute (a runtime that stays broken
        would otherwise fill the log at every relist)."""
        self._note_pass("error", 0, 0, 0.0, [error])
        now = self.mono()
        if self._failing[0] == error and now - self._failing[1] < 60:
            return
        self._failing = (error, now)
        self.log.error(event, error=error, trace=trace)

    def exit_code(self) -> int:
        """0 when the last pass applied everything, with every file and commit accepted; else the
        source's code for its problem (an invalid commit is bad input), or 'apply failed'."""
        src = self.source.describe()
        if src.get("problem"):
            return int(src.get("exit_code") or EXIT_APPLY_FAILED)
        if self.last_pass.get("errors") or self.comp.held:
            return EXIT_APPLY_FAILED
        return EXIT_INVALID if self.comp.problems else 0

    def _source_fields(self) -> dict:
        return {k: v for k, v in self.source.describe().items() if k in ("paths", "url", "branch", "path", "applied")
                and v}

    # --- drivers ----------------------------------------------------------------------------------

    def drivers(self) -> Drivers:
        if self._drivers is None or self.options.reopen_drivers:
            if self._drivers is not None:
                self._drivers.close()
                self._drivers = None
            self._drivers = self.open_drivers()
        return self._drivers

    # --- passes -----------------------------------------------------------------------------------

    def goal(self, comp: Composition) -> Goal:
        """The converger's goal for a composition, built once per composition."""
        if self._goal is None or self._goal[0] is not comp:
            manifests = comp.manifests
            if self.options.prepare is not None:
                manifests = self.options.prepare(comp.scope.paths, manifests)
            self._goal = (comp, make_goal(comp.scope.paths, manifests, self.paths, scope=comp.scope))
        return self._goal[1]

    def converge(self, trigger: str, *, refresh: bool = False, full: bool = False) -> None:
        """A pass the source asked for (news, the periodic resync, a rollback of a commit)."""
        if full:
            self.next_resync = self.mono() + self.options.resync
            if self.options.prepare is not None:
                self._goal = None  # a resync builds again: a context may have changed
        self._read_ms = None
        if self.options.prepare is not None and self.source.rebuild():
            self._goal = None  # a build context changed: build again (an unchanged one is cached)
        if refresh:
            started = self.mono()
            comp = self.source.refresh(full)
            self._read_ms = round((self.mono() - started) * 1000, 1)
            self.comp = comp
            self._note_files(comp)
        comp = self.comp
        while True:
            result, error = self._pass(comp, trigger, always=full)
            follow = self.source.settle(comp, result, error)
            if follow is None:
                break
            self.comp = comp = follow
            self._note_files(comp)
            trigger = "rollback"
        self._record()

    def _pass(self, comp: Composition, trigger: str, *, always: bool) -> tuple[PassResult | None, str]:
        """One converger tick over `comp`, acting on every change (a failed pod is retried at once).
        Returns the result when something was applied (or always), or why the pass failed."""
        started = self.mono()
        try:
            result = self.converger.tick(self.goal(comp), now=self.clock())
        except PodplayError as exc:
            self._note_pass(trigger, 0, 0, self.mono() - started, [str(exc)])
            self.log.error("pass", trigger=trigger, revision=comp.revision or None, error=str(exc))
            return None, str(exc)
        self._after_tick(comp, result)
        if result.applied is None and not always:
            if trigger in (self.source.news, "rollback"):
                self._note_pass(trigger, 0, 0, self.mono() - started, [])
                self.log.info("pass", trigger=trigger, revision=comp.revision or None, changes=0,
                              duration_ms=round((self.mono() - started) * 1000, 1), read_ms=self._read_ms)
            return None, ""
        return result, self._report_pass(comp, trigger, result, started)

    def _report_pass(self, comp: Composition, trigger: str, result: PassResult, started: float) -> str:
        """Log and record a pass that applied something (or was asked for in full); its errors."""
        for note in result.recovered:
            self.log.warning("recovered", note=note)
        effective = result.plan.effective_changes
        if trigger == "relist":
            for c in effective:
                self.log.info("drift", pod=f"{c.key.namespace}/{c.key.name}", action=str(c.action),
                              reason=str(c.reason), containers=",".join(c.containers) or None,
                              detail=c.detail or None)
        failed = result.applied.failed if result.applied else []
        errors = [f"{r.txn.key}: {r.error}" for r in failed]
        duration = self.mono() - started
        self.passes += 1
        self._note_pass(trigger, len(effective), len(failed), duration, errors)
        if effective or failed or trigger in ("start", "rollback", self.source.news):
            self.log("pass", "error" if failed else "info", trigger=trigger, revision=comp.revision or None,
                     changes=len(effective), failed=len(failed) or None, duration_ms=round(duration * 1000, 1),
                     read_ms=self._read_ms)
        return "; ".join(errors)

    def _after_tick(self, comp: Composition, result: PassResult) -> None:
        """What every tick's look says beyond its changes: back-offs to wake for, rollouts' news."""
        if result.view is not None:
            self._schedule(comp, result.view.observed)
            wake = result.view.wake_at  # wall clock: a tick just after it (the look compares with its own)
            self.workload_at = None if wake is None else self.mono() + max(0.0, wake - self.clock()) + 0.05
        self._follow_rollouts(result.rollouts)

    def _follow_rollouts(self, statuses: list) -> None:
        for s in statuses:
            if s.outcome == PROGRESSING or s.event:
                self.rollouts[s.deployment] = {"revision": s.revision, "outcome": s.outcome,
                                               "progress": s.progress.describe(), "message": s.message,
                                               "pinned": s.pin.revision if s.pin else None}
            else:
                self.rollouts.pop(s.deployment, None)
            if s.event == RolloutEvent.COMPLETE:
                self.log.info("rollout_complete", deployment=s.deployment, revision=s.revision)
            elif s.event in (RolloutEvent.FAILED, RolloutEvent.ROLLED_BACK):
                self._record()
                self.log.error("rollout_failed", deployment=s.deployment, revision=s.revision, error=s.message,
                               rolled_back_to=s.rolled_back_to or None)

    def tick(self) -> None:
        """The relist: probes, then the runtime against the cached composition. A pod whose
        change failed waits out the retry policy; when another podplay is applying, the tick
        is skipped (the next relist comes soon)."""
        self.next_relist = self.mono() + self.options.relist
        started = self.mono()
        try:
            result = self.converger.tick(self.goal(self.comp), now=self.clock(), everything=False, probe=True,
                                         lock_timeout=0)
        except LockedError:
            return
        self.health_at = self.mono() + result.probe_in if result.probe_in is not None else None
        self._after_tick(self.comp, result)
        if result.applied is not None:
            self._report_pass(self.comp, "relist", result, started)
            self._record()

    def down(self) -> None:
        """--down-on-exit: remove what the source describes (and what it created earlier)."""
        comp = self.comp
        goal = make_goal(comp.scope.paths, comp.manifests, self.paths, mode=Mode.DOWN, scope=comp.scope)
        result = self.converger.once(goal)
        self.log("down", "info" if result.ok else "error", removed=len(result.plan.effective_changes),
                 failed=len(result.applied.failed) if result.applied else None)

    # --- reporting --------------------------------------------------------------------------------

    def _set_plan(self, plan: Plan) -> None:
        self._plan = plan

    def _report(self, event: str, txn: Txn, message: str) -> None:
        if event == "begin":
            return
        if event in ("failed", "skipped"):
            self.log.error("apply_failed", what=str(txn.kind), key=txn.key, error=message)
            return
        done = self._plan.outcome(txn) if self._plan is not None else None
        if done is not None:
            c = done.change
            self.log.info(done.verb, pod=txn.key, reason=str(c.reason), detail=c.detail or None,
                          containers=",".join(c.containers) or None)

    def _note_files(self, comp: Composition) -> None:
        """Log each file's change of state once (not on every pass)."""
        seen: dict[str, tuple] = {}
        lines: list[tuple[str, str, dict]] = []
        for path, r in comp.files.items():
            key = (r.state, tuple(r.errors))
            seen[path] = key
            if self._files_seen.get(path) == key:
                continue
            if r.state == "ok":
                if path in self._files_seen and self._files_seen[path][0] != "ok":
                    lines.append(("file_ok", "info", {"file": path}))
            elif r.state == "deleted":
                lines.append(("file_deleted", "info", {"file": path}))
            else:
                lines.append(("file_invalid", "error", {"file": path, "using": r.using, "error": " | ".join(r.errors)}))
                self.state.keepers.add_event("error", path, "; ".join(r.errors) or "invalid")
        self._files_seen = {p: k for p, k in seen.items() if k[0] != "deleted"}
        if comp.held:
            lines.append(("held", "error", {"reason": comp.held}))
        if lines:
            self._record()
        for event, level, fields in lines:
            self.log(event, level, **fields)

    def _schedule(self, comp: Composition, observed: ObservedHost) -> None:
        """Wake up exactly when the next crash-loop back-off expires."""
        now = self.clock()
        backoff = backoff_schedule(comp.desired, observed, now)
        new = [b for cid, b in backoff.items() if cid not in self.backoff or self.backoff[cid]["until"] != b["until"]]
        changed = set(backoff) != set(self.backoff) or bool(new)
        self.backoff = backoff
        if backoff:
            soonest = min(b["until"] for b in backoff.values())
            # A little after expiry, so that compute_diff (which compares with its own clock) agrees.
            self.backoff_at = self.mono() + max(0.0, soonest - now) + 0.05
        else:
            self.backoff_at = None
        if changed:
            self._record()  # before the log line: whoever reads the log may ask `podplay status` next
        for b in new:
            self.log.info("backoff", pod=b["pod"], container=b["container"], exit_code=b["exit_code"],
                          restarts=b["restarts"], restart_in_s=round(b["until"] - now, 1))

    def _note_pass(self, trigger: str, changes: int, failed: int, duration: float, errors: list[str]) -> None:
        """Remember the pass for `status`, and record it before it is logged (a reader of the log
        may ask `podplay status` next)."""
        self.last_pass = {"at": self.clock(), "trigger": trigger, "changes": changes, "failed": failed,
                          "duration_ms": round(duration * 1000, 1), "errors": errors[:20]}
        self._record()

    def status(self, *, running: bool = True) -> dict:
        comp = self.comp
        return {
            "kind": self.source.kind, "id": self.source.id, "source": self.source.describe(),
            "pid": os.getpid(), "running": running, "started": self.started, "updated": self.clock(),
            "revision": comp.revision, "scope": list(comp.scope.paths), "prune": comp.scope.prune,
            "last_pass": self.last_pass, "held": comp.held,
            "files": [r.to_json() for r in comp.problems],
            "file_count": sum(1 for r in comp.files.values() if r.state != "deleted"),
            "pods": sorted(comp.desired.pods),
            "backoff": self.backoff,
            "rollouts": self.rollouts,
            "retrying": self.converger.retry.describe(),
        }

    def _record(self, running: bool = True) -> None:
        self.state.keepers.set_source(self.source.id, self.status(running=running))

