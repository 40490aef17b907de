"""Structured event log of `watch` and `sync`: one line per event on stderr, logfmt or JSON.

    ts=2025-05-01T12:00:00.123Z level=info event=pass trigger=files changes=1 duration_ms=12

logfmt is for people and `grep`; ``--log-format json`` is for log shippers. Field values that
are not plain words are quoted (logfmt) so that one event is always one line.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import Any, TextIO

_BARE = re.compile(r"^[A-Za-z0-9_.,:/@%+\-]+$")


def _timestamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".")
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if text and _BARE.match(text) else json.dumps(text)


class EventLog:
    """Writes events; thread-safe (the file watcher thread may log too)."""

    def __init__(self, stream: TextIO | None = None, fmt: str = "text", clock=time.time):
        if fmt not in ("text", "json"):
            raise ValueError(f"log format {fmt!r}: use text or json")
        self.stream = stream if stream is not None else sys.stderr
        self.fmt = fmt
        self.clock = clock
        self._lock = threading.Lock()

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        ts = self.clock()
        if self.fmt == "json":
            line = json.dumps({"ts": _timestamp(ts), "level": level, "event": event, **fields}, default=str)
        else:
            parts = [f"ts={_timestamp(ts)}", f"level={level}", f"event={event}"]
            parts += [f"{k}={_logfmt_value(v)}" for k, v in fields.items()]
            line = " ".join(parts)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # nobody reads the log any more; the keeper's work goes on

    def info(self, event: str, **fields: Any) -> None:
        self(event, "info", **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> None:
        self(event, "error", **fields)
