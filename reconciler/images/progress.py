"""Pull progress: silent by default; a live display on terminals; one line per layer elsewhere.

Download threads call these methods concurrently; the displays serialise them. ``TerminalProgress``
redraws at most ten times a second, so that progress never slows a pull down; ``LineProgress``
(a log, a pipe, journald) writes one plain line when a layer is done or a stalled download is
tried again, and never an escape code.

``for_stream(stream, quiet)`` picks the display a command should use; ``used_by_default`` makes
it, for a block, the one image stores created without an explicit progress get (``podplay up``
pulls through the drivers, which it does not build itself).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TextIO

RATE_WINDOW = 5.0  # seconds of history behind a rate: it falls to 0 soon after a link stalls


class Progress:
    """Receives pull events; does nothing. Subclass to show or record them."""

    def begin(self, reference: str) -> None:
        pass

    def blob_queued(self, digest: str, size: int, present: bool) -> None:
        pass

    def blob_start(self, digest: str, size: int) -> None:
        pass

    def blob_advance(self, digest: str, n: int) -> None:
        pass

    def blob_retry(self, digest: str, offset: int, why: str) -> None:
        """A download stalled and is tried again from ``offset`` (``why`` says what happened)."""

    def blob_done(self, digest: str) -> None:
        pass

    def end(self) -> None:
        pass


class BlobFeed:
    """What a transport is given to report on one blob: call it with the bytes that came;
    ``retrying`` when the download is tried again after a stall."""

    def __init__(self, progress: Progress, digest: str, check: Callable[[], None] = lambda: None):
        self.progress, self.digest, self.check = progress, digest, check

    def __call__(self, n: int) -> None:
        self.check()  # raises to stop the download (a sibling failed, Ctrl-C)
        self.progress.blob_advance(self.digest, n)

    def retrying(self, offset: int, why: str) -> None:
        self.progress.blob_retry(self.digest, offset, why)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n:.1f}GiB"


_human = human


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Blob:
    __slots__ = ("size", "done", "state", "started", "samples", "moved")

    def __init__(self, size: int, present: bool):
        self.size = size
        self.done = size if present else 0
        self.state = "exists" if present else "waiting"
        self.started = 0.0
        self.moved = 0  # bytes that came over the network in this pull (not what a resume had)
        self.samples: deque[tuple[float, int]] = deque()


class _Tally(Progress):
    """Bytes, totals and rates per layer and overall; the displays below draw them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, _Blob] = {}
        self._samples: deque[tuple[float, int]] = deque()
        self._moved = 0
        self._started = 0.0
        self.reference = ""

    def _sample(self, samples: deque, moved: int, now: float) -> None:
        samples.append((now, moved))
        while len(samples) > 2 and samples[1][0] < now - RATE_WINDOW:
            samples.popleft()

    def _rate(self, samples: deque, moved: int, now: float) -> float:
        if not samples:
            return 0.0
        t0, m0 = samples[0]
        return (moved - m0) / (now - t0) if now - t0 >= 0.2 else 0.0

    def begin(self, reference: str) -> None:
        with self._lock:
            self.reference = reference
            self._rows, self._moved, self._started = {}, 0, self.clock()
            self._samples = deque([(self._started, 0)])
            self._began(reference)

    def blob_queued(self, digest: str, size: int, present: bool) -> None:
        with self._lock:
            self._rows[digest] = _Blob(size, present)
            self._changed(digest, force=True)

    def blob_start(self, digest: str, size: int) -> None:
        with self._lock:
            row = self._rows.setdefault(digest, _Blob(size, False))
            row.state, row.started = "downloading", self.clock()
            row.samples = deque([(row.started, 0)])
            self._changed(digest)

    def blob_advance(self, digest: str, n: int) -> None:
        with self._lock:
            row = self._rows.get(digest)
            if row is None:
                return
            now = self.clock()
            row.done += n
            row.moved += n
            self._moved += n
            self._sample(row.samples, row.moved, now)
            self._sample(self._samples, self._moved, now)
            self._changed(digest)

    def blob_retry(self, digest: str, offset: int, why: str) -> None:
        with self._lock:
            row = self._rows.get(digest)
            if row is not None:
                row.done, row.state = offset, "retrying"
            self._retry(digest, offset, why)

    def blob_done(self, digest: str) -> None:
        with self._lock:
            row = self._rows.get(digest)
            if row is not None:
                row.done, row.state = row.size, "done"
                self._finished(digest, row)

    def end(self) -> None:
        with self._lock:
            self._ended()

    # --- what the displays draw ----------------------------------------------------------------

    def layer_line(self, digest: str, now: float) -> str:
        row = self._rows[digest]
        if row.state in ("downloading", "retrying") and row.size:
            width = 24
            filled = int(width * min(row.done, row.size) / row.size)
            bar = ("=" * filled + ">" + " " * width)[:width]
            rate = self._rate(row.samples, row.moved, now)
            note = " (stalled, retrying)" if row.state == "retrying" else ""
            return f"{_short(digest)}: [{bar}] {human(row.done)}/{human(row.size)} {human(rate)}/s{note}"
        return f"{_short(digest)}: {row.state} {human(row.size)}"

    def total_line(self, now: float) -> str:
        size = sum(r.size for r in self._rows.values())
        done = sum(min(r.done, r.size) for r in self._rows.values())
        finished = sum(1 for r in self._rows.values() if r.state in ("done", "exists"))
        rate = self._rate(self._samples, self._moved, now)
        return (f"total: {human(done)}/{human(size)}, {finished}/{len(self._rows)} layers, "
                f"{human(rate)}/s, {now - self._started:.0f}s")

    # --- hooks (called with the lock held) ------------------------------------------------------

    def _began(self, reference: str) -> None:
        pass

    def _changed(self, digest: str, force: bool = False) -> None:
        pass

    def _retry(self, digest: str, offset: int, why: str) -> None:
        pass

    def _finished(self, digest: str, row: _Blob) -> None:
        pass

    def _ended(self) -> None:
        pass


class TerminalProgress(_Tally):
    """One line per layer (bytes, total, rate) and a total line, redrawn in place (ANSI)."""

    def __init__(self, stream: TextIO, interval: float = 0.1, clock: Callable[[], float] = time.monotonic):
        super().__init__(clock)
        self.stream, self.interval = stream, interval
        self._drawn = 0
        self._last = 0.0

    def _began(self, reference: str) -> None:
        self._drawn = 0  # the previous image's lines stay as they were drawn last
        self.stream.write(f"Pulling {reference}\n")
        self.stream.flush()

    def _changed(self, digest: str, force: bool = False) -> None:
        self._draw(force)

    def _retry(self, digest: str, offset: int, why: str) -> None:
        self._draw(True)

    def _finished(self, digest: str, row: _Blob) -> None:
        self._draw(True)

    def _ended(self) -> None:
        if self._rows:
            self._draw(True)

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        out = [f"\x1b[{self._drawn}A"] if self._drawn else []
        lines = [self.layer_line(d, now) for d in self._rows] + [self.total_line(now)]
        out += [f"\x1b[2K{line}\n" for line in lines]
        self._drawn = len(lines)
        self.stream.write("".join(out))
        self.stream.flush()


class LineProgress(_Tally):
    """Plain lines for logs: one per layer downloaded, one per stalled download tried again,
    one when the image is in. Layers already present say nothing."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic):
        super().__init__(clock)
        self.stream = stream
        self._downloaded = 0

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _began(self, reference: str) -> None:
        self._downloaded = 0

    def _retry(self, digest: str, offset: int, why: str) -> None:
        row = self._rows.get(digest)
        size = f" of {human(row.size)}" if row else ""
        self._write(f"{self.reference}: layer {_short(digest)} stalled at {human(offset)}{size}: {why}")

    def _finished(self, digest: str, row: _Blob) -> None:
        self._downloaded += 1
        took = max(self.clock() - row.started, 1e-6)
        self._write(f"{self.reference}: layer {_short(digest)} done, {human(row.size)} in {took:.1f}s "
                    f"({human(row.moved / took)}/s)")

    def _ended(self) -> None:
        if not self._rows:
            return
        now = self.clock()
        size = sum(r.size for r in self._rows.values())
        took = max(now - self._started, 1e-6)
        complete = all(r.state in ("done", "exists") for r in self._rows.values())
        what = "layers downloaded" if complete else "layers downloaded before the pull stopped"
        self._write(f"{self.reference}: {self._downloaded} of {len(self._rows)} {what} "
                    f"({human(self._moved)} of {human(size)}) in {took:.1f}s")


def for_stream(stream: TextIO, quiet: bool = False) -> Progress:
    """The progress a command shows on ``stream``: nothing when quiet, a live display on a
    terminal, plain lines otherwise."""
    if quiet:
        return Progress()
    if getattr(stream, "closed", False):
        return Progress()  # nobody to tell
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError, OSError):
        terminal = False
    return TerminalProgress(stream) if terminal else LineProgress(stream)


_default: list[Callable[[], Progress]] = [Progress]


@contextlib.contextmanager
def used_by_default(make: Callable[[], Progress]) -> Iterator[None]:
    """Within the block, ``make()`` is the progress of image stores created without one."""
    previous, _default[0] = _default[0], make
    try:
        yield
    finally:
        _default[0] = previous


def default_progress() -> Progress:
    return _default[0]()
