"""`podplay watch DIR…`: manifest files on this host as a keeper's source, noticed through inotify.

Events are debounced: a pass runs once the files have been quiet for ``debounce`` seconds (an
editor's write-then-rename, a `git checkout` touching fifty files: one pass), or at the latest
``debounce_max`` seconds after the first event. That pass reads a file changed in place only if
it has itself been quiet for ``debounce`` (its mtime, or the same size and mtime seen that long
before): a slow writer (scp, rsync --inplace) is read when it is done, its previous version
standing in meanwhile; the pass after is scheduled for then. Events the keeper causes itself
(it opens and reads the files) are not subscribed to.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Sequence

from reconciler import sha
from reconciler.errors import EnvironmentProblem
from reconciler.sources import MANIFEST_SUFFIXES
from reconciler.state import StateStore
from reconciler.watch.files import Composition, ManifestFiles
from reconciler.watch.parse import load_in_child, load_in_process


def source_id(kind: str, key: str) -> str:
    return f"{kind}-{sha.sha256(key.encode()).hexdigest()[:12]}"


def _relevant_name(path: str) -> bool:
    name = os.path.basename(path)
    return name.endswith(MANIFEST_SUFFIXES) and not name.startswith((".", "#"))


class DirSource:
    kind = "watch"
    news = "files"

    def __init__(self, paths: Sequence[str], state: StateStore | None, *, debounce: float = 0.3,
                 debounce_max: float = 2.0, monotonic: Callable[[], float] = time.monotonic,
                 isolate_parsing: bool = False, strict: bool = False, contexts: bool = False):
        self.files = ManifestFiles(paths, state, loader=load_in_child if isolate_parsing else load_in_process,
                                   strict=strict, settle=debounce)
        self.paths = self.files.paths
        self.scope_paths = self.files.scope_paths
        self.id = source_id("watch", "\0".join(sorted(self.paths)))
        # --build: a file under a build context (a directory with a Containerfile or Dockerfile
        # beside the manifests) is news too, and the next pass builds again.
        self.contexts = contexts
        self.contexts_changed = False
        self.debounce, self.debounce_max = debounce, debounce_max
        self.mono = monotonic
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last: float | None = None
        self._wake: Callable[[], None] = lambda: None
        self._observer = None
        self.events = 0

    def start(self, wake: Callable[[], None]) -> None:
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        self._wake = wake
        source = self

        class Handler(FileSystemEventHandler):
            def __init__(self, only: str | None):
                self.only = only  # a file named directly: its parent is watched, for this name only

            def on_any_event(self, event) -> None:
                paths = [os.fsdecode(event.src_path)]
                if getattr(event, "dest_path", ""):
                    paths.append(os.fsdecode(event.dest_path))
                if self.only is not None:
                    hit = self.only in paths
                else:
                    hit = event.is_directory or any(_relevant_name(p) for p in paths)
                if source.contexts and any(source.in_context(p) for p in paths):
                    source.contexts_changed = hit = True
                if hit:
                    source.notice()

        # Directory "modified" events (any file created inside) and open/close-without-write
        # events (our own reads) are left out of the inotify mask.
        wanted = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent,
                  DirCreatedEvent, DirDeletedEvent, DirMovedEvent]
        observer = Observer()
        observer.daemon = True
        try:
            for p in self.paths:
                if os.path.isdir(p):
                    observer.schedule(Handler(None), p, recursive=True, event_filter=wanted)
                else:
                    observer.schedule(Handler(p), os.path.dirname(p) or ".", recursive=False, event_filter=wanted)
            observer.start()
        except OSError as exc:
            observer.stop()
            hint = (" (the inotify limits are reached: raise fs.inotify.max_user_watches and "
                    "fs.inotify.max_user_instances with sysctl)") if exc.errno in (errno.ENOSPC, errno.EMFILE) else ""
            raise EnvironmentProblem(f"cannot watch {', '.join(self.paths)}: {exc.strerror or exc}{hint}") from None
        self._observer = observer

    def in_context(self, path: str) -> bool:
        """Whether `path` lies in a build context: a directory, at or below a watched one, that
        holds a Containerfile or Dockerfile."""
        d = os.path.dirname(os.path.abspath(path))
        for root in self.paths:
            if d != root and not d.startswith(root.rstrip("/") + "/"):
                continue
            while True:
                if d != root and any(os.path.exists(os.path.join(d, n)) for n in ("Containerfile", "Dockerfile")):
                    return True
                if d == root or len(d) <= len(root):
                    break
                d = os.path.dirname(d)
        return False

    def rebuild(self) -> bool:
        """Whether a build context changed since the last call (then --build builds again)."""
        changed, self.contexts_changed = self.contexts_changed, False
        return changed

    def notice(self) -> None:
        """A relevant file event (called on the watcher thread)."""
        now = self.mono()
        with self._lock:
            self.events += 1
            if self._first is None:
                self._first = now
            self._last = now
        self._wake()

    def due(self) -> float | None:
        confirm = self.files.confirm_at()
        confirm_due = None
        if confirm is not None:
            left = confirm - self.files.clock()
            # Due already: a time surely before the caller's "now" (which it read before calling),
            # not "now" again, or it would wait for a moment that never comes and spin.
            confirm_due = self.mono() + left if left > 0 else 0.0
        with self._lock:
            if self._first is None:
                return confirm_due
            events = min(self._last + self.debounce, self._first + self.debounce_max)
        return events if confirm_due is None else min(events, confirm_due)

    def refresh(self, full: bool) -> Composition:
        with self._lock:
            # Cleared before reading: an event that comes while the files are read asks again.
            self._first = self._last = None
        return self.files.refresh(full)

    def settle(self, comp, result, error) -> None:
        return None

    def describe(self) -> dict:
        return {"paths": list(self.paths)}

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
