"""Pull progress: a silent default, and a live display for terminals only.

Download threads call these methods concurrently; ``TerminalProgress`` serialises them and
redraws at most ten times a second, so that progress never slows a pull down.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO


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

    def blob_done(self, digest: str) -> None:
        pass

    def end(self) -> None:
        pass


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n:.1f}GiB"


class TerminalProgress(Progress):
    """One line per layer, redrawn in place (ANSI cursor movement)."""

    def __init__(self, stream: TextIO, interval: float = 0.1):
        self.stream, self.interval = stream, interval
        self._lock = threading.Lock()
        self._rows: dict[str, list] = {}  # digest → [size, done, state]
        self._drawn = 0
        self._last = 0.0

    def begin(self, reference: str) -> None:
        with self._lock:
            self.stream.write(f"Pulling {reference}\n")
            self.stream.flush()

    def blob_queued(self, digest: str, size: int, present: bool) -> None:
        with self._lock:
            self._rows[digest] = [size, size if present else 0, "exists" if present else "waiting"]
            self._draw(force=True)

    def blob_start(self, digest: str, size: int) -> None:
        with self._lock:
            if digest in self._rows:
                self._rows[digest][2] = "downloading"
                self._draw()

    def blob_advance(self, digest: str, n: int) -> None:
        with self._lock:
            row = self._rows.get(digest)
            if row:
                row[1] += n
                self._draw()

    def blob_done(self, digest: str) -> None:
        with self._lock:
            row = self._rows.get(digest)
            if row:
                row[1], row[2] = row[0], "done"
                self._draw(force=True)

    def end(self) -> None:
        with self._lock:
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}A")
        for digest, (size, done, state) in self._rows.items():
            short = digest.split(":", 1)[-1][:12]
            if state == "downloading" and size:
                width = 30
                filled = int(width * min(done, size) / size)
                bar = "=" * filled + ">" + " " * (width - filled)
                line = f"{short}: [{bar[:width]}] {_human(done)}/{_human(size)}"
            else:
                line = f"{short}: {state} {_human(size)}"
            out.append(f"\x1b[2K{line}\n")
        self._drawn = len(self._rows)
        self.stream.write("".join(out))
        self.stream.flush()
