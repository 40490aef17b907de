"""The manifests a keeper converges to, file by file, each file's last good version standing in
for it while it is invalid.

``ManifestFiles.refresh()`` re-reads only the files whose stat changed (and re-parses only when
the content changed), so a pass after an edit costs one file's parse, not the whole directory's.
A file whose current version cannot be used (YAML or schema errors, a reference to something that
is not there, an empty file) is replaced by its last valid version, kept in memory and in the state
store so that a restarted watcher still has it: its pods keep running and nothing it described is
pruned. A file that was never valid has no stand-in: its objects are unknown, so deletes are held
for the whole pass (kubelet's sources-ready rule). A file that is gone is a real delete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from reconciler import sha
from reconciler.desired import DesiredState, build_desired
from reconciler.diff import Scope
from reconciler.errors import Diagnostic, ManifestError, Severity
from reconciler.manifests import FileLoad, ManifestSet, combine_files, refuse_links
from reconciler.sources import find_manifest_files
from reconciler.state import StateStore
from reconciler.watch.parse import Request, load_in_process

MAX_ERRORS_SHOWN = 5


@dataclass
class FileReport:
    """How one manifest file stands, for the log and `podplay status`."""

    path: str
    state: str  # ok | invalid | unread | deleted
    using: str  # current | last good | nothing
    errors: list[str] = field(default_factory=list)
    since: float = 0.0  # when the current state began

    def to_json(self) -> dict:
        return {"path": self.path, "state": self.state, "using": self.using, "errors": self.errors,
                "since": self.since}


@dataclass
class Composition:
    """What the keeper converges to: the manifests (each file's current or last good version),
    the desired state built from them, and which owned pods this source may prune."""

    manifests: ManifestSet
    desired: DesiredState
    scope: Scope
    revision: str  # changes exactly when the set of file versions in use changes
    files: dict[str, FileReport] = field(default_factory=dict)
    held: str = ""  # why newer versions could not be used together (then the previous composition is kept)

    @property
    def problems(self) -> list[FileReport]:
        return [r for r in self.files.values() if r.state != "ok"]


def empty_composition(scope_paths: Sequence[str], held: str = "") -> Composition:
    """Nothing known yet: nothing to create, nothing may be pruned."""
    return Composition(ManifestSet(), DesiredState(), Scope(tuple(scope_paths), prune=False), "", held=held)


def digest_text(data: bytes) -> str:
    return sha.sha256(data).hexdigest()


@dataclass
class _Version:
    digest: str
    load: FileLoad
    content: str | None = None  # kept until saved as the last good version


@dataclass
class _File:
    path: str
    stamp: tuple = ()
    current: _Version | None = None
    good: _Version | None = None
    report: FileReport | None = None
    in_place: bool = False  # its last change kept the inode (written in place, not renamed over)


def _usable(load: FileLoad) -> list[str]:
    """Why this version of a file cannot be used on its own ([] when it can)."""
    errors = [str(d) for d in load.diagnostics if d.severity == Severity.ERROR]
    if not errors and not load.documents:
        errors = [f"{load.file}: the file is empty; its last good version stays in use "
                  "(delete the file to remove what it described)"]
    return errors


def _stamp(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# A pod that vanishes from a file rewritten in place (same inode: an editor's save, scp, rsync
# --inplace) may only be a writer halfway through: it is pruned when a read this much later
# agrees. A file replaced by a rename, or deleted, is complete: its pods go at once.
HOLD_GRACE = 3.0

_UNSETTLED = object()  # _read's answer for a file still being written: look again later


class ManifestFiles:
    """The manifest files under `paths`, cached between refreshes; `state` keeps the last good
    versions across restarts (None: in memory only)."""

    def __init__(self, paths: Sequence[str], state: StateStore | None = None, *, clock=time.time,
                 loader: Callable[[Sequence[Request]], list[FileLoad]] = load_in_process, strict: bool = False,
                 settle: float = 0.0):
        self.loader = loader  # parse.load_in_child in a long-running keeper
        # A file changed in place is read only once it has been quiet this long (its mtime, or
        # the same size and mtime seen that long ago): a slow writer is not read halfway. A file
        # replaced by a rename is complete and read at once.
        self.settle = settle
        self.strict = strict  # --strict: podman's dialect makes a file invalid (its last good version runs)
        self.paths = [os.path.abspath(p) for p in paths]
        self.scope_paths = tuple(self.paths)
        self.state = state
        self.clock = clock
        self.files: dict[str, _File] = {}
        self.previous: Composition | None = None
        self.reads = 0  # files read from disk (the benchmark shows the cache works)
        self.parses = 0
        self._stored: dict[str, tuple[str, str]] | None = None
        self._last: tuple[tuple, Composition] | None = None  # (what was read, what it composed to)
        self.held: dict[str, float] = {}  # pod ref → when it vanished from a file written in place
        self.unsettled: dict[str, float] = {}  # path → when to look again at a file still being written
        self._pending: dict[str, tuple[tuple, float]] = {}  # path → (stamp, when first seen) of an unread change

    # --- the last good versions saved in the state store ---------------------------------------------

    def _stored_versions(self) -> dict[str, tuple[str, str]]:
        if self._stored is None:
            scope = Scope(self.scope_paths)
            self._stored = {p: v for p, v in (self.state.meta.last_good().items() if self.state else ())
                            if scope.covers(p)}
        return self._stored

    def _good(self, f: _File) -> _Version | None:
        if f.good is None:
            f.good = self._stored_good(f.path)
        return f.good

    def _stored_good(self, path: str) -> _Version | None:
        saved = self._stored_versions().get(path)
        if saved is None:
            return None
        digest, content = saved
        [load] = self.loader([(path, content)])
        self.parses += 1
        return _Version(digest, load) if not _usable(load) else None

    # --- reading ----------------------------------------------------------------------------------

    def _settling(self, path: str, st: os.stat_result, f: _File, now: float) -> float | None:
        """None when a changed file may be read now, else when to look at it again (wall clock)."""
        stamp = _stamp(st)
        if self.settle <= 0 or self._last is None or (f.stamp and stamp[:2] != f.stamp[:2]):
            # (The first look, when the watcher starts, takes every file as it is.)
            self._pending.pop(path, None)
            return None  # no waiting asked for, or a new inode: renamed over, complete
        seen = self._pending.get(path)
        if seen is None or seen[0] != stamp:
            seen = self._pending[path] = (stamp, now)
        mtime = st.st_mtime_ns / 1e9
        if now - seen[1] >= self.settle or now - mtime >= self.settle:
            self._pending.pop(path, None)
            return None  # the same size and mtime for the settle time, or modified that long ago
        return min(seen[1], mtime) + self.settle

    def _read(self, path: str, f: _File, full: bool, now: float = 0.0) -> tuple[str, str | None] | object | None:
        """Look at one file; returns (digest, text) when its content changed and needs parsing,
        ``_UNSETTLED`` when it is still being written."""
        try:
            st = os.stat(path)
        except OSError:
            st = None
        stamp = _stamp(st) if st else ()
        if f.current is not None and stamp and stamp == f.stamp and not full:
            return None
        if st is not None and stamp != f.stamp:
            again = self._settling(path, st, f, now)
            if again is not None:
                self.unsettled[path] = again
                return _UNSETTLED
        f.in_place = bool(stamp and f.stamp and stamp[:2] == f.stamp[:2])  # same device and inode
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            data = None
        self.reads += 1
        f.stamp = stamp
        if data is None:
            if f.current is not None and not f.current.digest:
                return None  # still unreadable: already said why
            return "", None  # the loader reads it again and says why it cannot
        digest = digest_text(data)
        if f.current is not None and f.current.digest == digest:
            return None
        try:
            return digest, data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return digest, None  # the loader's own message about the encoding

    def _find(self) -> tuple[list[str], list[Diagnostic]]:
        """Every manifest file, and the problems that mean some objects are unknown.

        A watched directory with no manifest files describes nothing; a file that was named but is
        missing stays in the list (it reads as unreadable, so its last good version stands in and
        nothing is pruned: a named file vanishing is more likely an accident than a delete); a
        directory that cannot be read is an unknown."""
        files, problems = find_manifest_files(self.paths)
        files, refused = refuse_links(self.paths, files)  # a link out of the directory: not read
        problems += refused
        unknown = []
        for d in problems:
            if d.file in self.paths and os.path.isdir(d.file):
                continue
            if d.file in self.paths and not os.path.lexists(d.file):
                files.append(d.file)
                continue
            unknown.append(d)
        return files, unknown

    # --- composing ---------------------------------------------------------------------------------

    def refresh(self, full: bool = False) -> Composition:
        """Re-read what changed and compose; `full` re-reads every file (the periodic resync)."""
        now = self.clock()
        paths, unknown = self._find()
        present = set(paths)
        todo: list[tuple[_File, str, str | None]] = []
        self.unsettled = {}
        for path in list(paths):
            f = self.files.get(path) or _File(path)
            changed = self._read(path, f, full, now)
            if changed is _UNSETTLED and f.current is None:
                # Never read, and still being written: what it describes is unknown until it is
                # quiet, so nothing may be pruned meanwhile (its pods may be among the running).
                paths.remove(path)
                unknown.append(Diagnostic(Severity.WARNING, path, 0, 0, "",
                                          f"still being written; read once it is unchanged for {self.settle:g}s"))
                continue
            self.files[path] = f
            if changed is not None and changed is not _UNSETTLED:
                todo.append((f, *changed))
        loads = self.loader([(f.path, text) for f, _, text in todo])
        self.parses += len(todo)
        for (f, digest, text), load in zip(todo, loads, strict=True):
            f.current = _Version(digest, load, text)
        gone = [p for p in self.files if p not in present]
        # Nothing read anew, nothing gone, the same unknowns: the last answer still holds (a quiet
        # pass costs a stat per file, not a parse, not the cross-object checks).
        signature = (tuple(paths), tuple(str(d) for d in unknown))
        if not todo and not gone and self._last is not None and self._last[0] == signature \
                and self.confirm_at() is None:
            return self._last[1]

        # Each file's candidate: its current version when usable on its own, else its last good one.
        chosen: dict[str, _Version | None] = {}
        why: dict[str, list[str]] = {}
        for path in paths:
            f = self.files[path]
            errors = _usable(f.current.load)
            if errors:
                why[path] = errors
                chosen[path] = self._good(f)
            else:
                chosen[path] = f.current
        comp, held = self._compose(paths, chosen, why, unknown)
        reports = self._reports(paths, chosen, why, unknown, gone, now)
        if comp is None:
            # Even the last good versions do not fit together (a file they need was deleted):
            # keep converging to the previous composition, and say why.
            prev = self.previous or empty_composition(self.scope_paths)
            comp = replace(prev, files=reports, held=held)
        else:
            comp.files = reports
            comp = self._hold_vanished(comp, now)
            self._commit(paths, chosen, gone)
            self.previous = comp
        self._last = (signature, comp)
        return comp

    def confirm_at(self) -> float | None:
        """When the next read is due (wall clock): the one that confirms (or not) a held pod's
        disappearance, or a look at a file that was still being written."""
        due = [t + HOLD_GRACE for t in self.held.values()] + list(self.unsettled.values())
        return min(due) if due else None

    def _hold_vanished(self, comp: Composition, now: float) -> Composition:
        """Pods that left a file rewritten in place are held (not pruned) until a read HOLD_GRACE
        later agrees; a new or changed pod applies at once."""
        prev = self.previous.desired.pods if self.previous is not None else {}
        pods = comp.desired.pods
        for ref, d in prev.items():
            f, report = self.files.get(d.source), comp.files.get(d.source)
            still_there = report is not None and report.state != "deleted"
            if ref not in pods and ref not in self.held and f is not None and f.in_place and still_there:
                self.held[ref] = now
        for ref, since in list(self.held.items()):
            if ref in pods or now >= since + HOLD_GRACE:
                del self.held[ref]  # came back, or a later read agrees that it is gone
        if not self.held:
            return comp
        return replace(comp, scope=replace(comp.scope, hold=frozenset(self.held)))

    def _compose(self, paths: list[str], chosen: dict[str, _Version | None], why: dict[str, list[str]],
                 unknown: list[Diagnostic]) -> tuple[Composition | None, str]:
        # A current version may be fine alone but not with the others (a reference to a ConfigMap
        # that is not there, a name defined twice): fall back to its last good version and try
        # again. Each round moves at least one file to an older version, so this ends.
        for _ in range(len(paths) + 1):
            unread = [p for p in paths if chosen[p] is None]
            loads = [chosen[p].load for p in paths if chosen[p] is not None]
            combined = combine_files(loads, complete=not unread and not unknown, strict=self.strict)
            errors = [d for d in combined.errors]
            if not errors:
                try:
                    desired = build_desired(combined.objects)
                except ManifestError as exc:
                    errors = [d for d in exc.diagnostics if d.severity == Severity.ERROR] or [
                        Diagnostic(Severity.ERROR, "", 0, 0, "", str(exc))]
                else:
                    return self._composition(paths, chosen, combined, desired, unread, unknown), ""
            by_file: dict[str, list[Diagnostic]] = {}
            for d in errors:
                by_file.setdefault(d.file, []).append(d)
            moved = False
            for file, diags in by_file.items():
                f = self.files.get(file)
                v = chosen.get(file)
                if f is None or v is None or v is not f.current:
                    continue  # already its last good version (or nothing): cannot fall back further
                good = self._good(f)
                if good is not None and good.digest == v.digest:
                    continue  # the current version is the last good one: its errors come from another file
                why.setdefault(file, []).extend(str(d) for d in diags)
                chosen[file] = good
                moved = True
            if not moved:
                return None, "; ".join(str(d) for d in errors[:MAX_ERRORS_SHOWN])
        return None, "the manifests do not fit together"

    def _composition(self, paths, chosen, combined: ManifestSet, desired: DesiredState, unread: list[str],
                     unknown: list[Diagnostic]) -> Composition:
        manifests = ManifestSet(objects=combined.objects, diagnostics=list(combined.warnings),
                                files=list(paths), unreadable=list(unread) + [d.file for d in unknown])
        for p in unread:
            manifests.diagnostics.append(Diagnostic(Severity.ERROR, p, 0, 0, "",
                                                    "invalid, and no earlier valid version is known"))
        manifests.diagnostics.extend(unknown)
        scope = Scope(self.scope_paths, prune=not manifests.unreadable)
        revision = digest_text("\n".join(f"{p} {chosen[p].digest}" for p in paths
                                         if chosen[p] is not None).encode())[:16]
        return Composition(manifests, desired, scope, revision)

    def _reports(self, paths, chosen, why, unknown, gone, now) -> dict[str, FileReport]:
        reports: dict[str, FileReport] = {}
        for path in paths:
            f = self.files[path]
            v = chosen[path]
            if v is not None and v is f.current:
                r = FileReport(path, "ok", "current")
            elif v is not None:
                r = FileReport(path, "invalid", "last good", why.get(path, [])[:MAX_ERRORS_SHOWN])
            else:
                r = FileReport(path, "unread", "nothing", why.get(path, [])[:MAX_ERRORS_SHOWN])
            prev = f.report
            r.since = prev.since if prev and (prev.state, prev.errors) == (r.state, r.errors) else now
            f.report = r
            reports[path] = r
        for d in unknown:
            reports[d.file] = FileReport(d.file, "unread", "nothing", [str(d)], now)
        for path in gone:
            reports[path] = FileReport(path, "deleted", "nothing", [], now)
        return reports

    def _commit(self, paths, chosen, gone) -> None:
        """The composition is in use: its current versions become the last good ones."""
        stored = self._stored_versions()
        for path in paths:
            f = self.files[path]
            v = chosen[path]
            if v is None or v is not f.current:
                continue
            f.good = v
            if v.content is not None and self.state is not None and stored.get(path, ("",))[0] != v.digest:
                self.state.meta.save_last_good(path, v.digest, v.content)
                stored[path] = (v.digest, v.content)
            v.content = None
        for path in gone:
            del self.files[path]
        # Files deleted (now, or while no watcher ran): their saved versions are stale.
        for path in [p for p in stored if p not in self.files]:
            if self.state is not None:
                self.state.meta.forget_last_good(path)
            del stored[path]
