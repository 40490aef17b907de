"""Container logs in the Kubernetes CRI format, as conmon's ``k8s-file`` driver writes them.

One record per line: ``2006-01-02T15:04:05.999999999+07:00 stdout F message``. The tag is ``F``
for a full line and ``P`` for a partial one (conmon splits long lines and flushes lines without
a newline); consecutive ``P`` records of one stream and the ``F`` that ends them are one line.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterator

Record = tuple[float, str, bytes]  # (unix time, "stdout" | "stderr", line without newline)

FOLLOW_POLL = 0.1


def parse_timestamp(text: bytes) -> float:
    """RFC 3339 with nanoseconds and a Z or ±hh:mm offset → unix time. ValueError if malformed."""
    s = text.decode("ascii")
    if len(s) < 20 or s[10] != "T":
        raise ValueError(f"bad timestamp {s!r}")
    base = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    rest = s[19:]
    frac = 0.0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac = float("0" + rest[:end])
        rest = rest[end:]
    if rest in ("Z", "z"):
        offset = 0
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError(f"bad timestamp offset in {s!r}")
    return datetime.datetime(*base[:6], tzinfo=datetime.UTC).timestamp() - offset + frac


def parse_line(line: bytes) -> tuple[float, str, bool, bytes] | None:
    """(time, stream, partial, content) of one record, or None for a line that is not one."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    if len(parts) == 3:
        parts.append(b"")
    ts, stream, tag, content = parts
    if stream not in (b"stdout", b"stderr") or tag not in (b"F", b"P"):
        return None
    try:
        when = parse_timestamp(ts)
    except (ValueError, UnicodeDecodeError):
        return None
    return when, stream.decode(), tag == b"P", content


class _Joiner:
    """Joins P records with the record that completes them, per stream."""

    def __init__(self, skip_leading_partials: bool = False):
        self.pending: dict[str, tuple[float, bytes]] = {}
        # After a cut in the middle of a file, a stream's first records may be the tail of a line
        # whose start was cut off; drop them up to that stream's first complete line.
        self.skipping: set[str] | None = set() if skip_leading_partials else None

    def feed(self, when: float, stream: str, partial: bool, content: bytes) -> Record | None:
        if self.skipping is not None and stream not in self.skipping:
            if not partial:
                self.skipping.add(stream)
            return None
        _, text = self.pending.pop(stream, (when, b""))
        text += content
        if partial:
            self.pending[stream] = (when, text)
            return None
        # The time of the record that completes the line: records stay in file (and time) order.
        return when, stream, text

    def flush(self) -> list[Record]:
        out = [(start, stream, text) for stream, (start, text) in self.pending.items()]
        self.pending.clear()
        return sorted(out)


def _records(data: bytes, joiner: _Joiner) -> list[Record]:
    out = []
    for line in data.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        rec = joiner.feed(*parsed)
        if rec is not None:
            out.append(rec)
    return out


def _read_tail(path: str, tail: int) -> tuple[list[Record], int, _Joiner]:
    """The last ``tail`` lines, reading backwards in growing blocks; also the offset read up to."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        block = 64 * 1024
        while True:
            start = max(0, size - block)
            f.seek(start)
            data = f.read(size - start)
            skip = data.find(b"\n") + 1 if start > 0 else 0  # the first line may be cut
            end = data.rfind(b"\n") + 1  # the last one may still be being written
            joiner = _Joiner(skip_leading_partials=start > 0)
            records = _records(data[skip:end], joiner) if end > skip else []
            if len(records) >= tail or start == 0:
                return records, start + end, joiner
            block *= 4


def read_log(path: str, *, follow: bool = False, tail: int | None = None, since: float | None = None,
             running: Callable[[], bool] = lambda: False) -> Iterator[Record]:
    """Records of a CRI log file in order. With ``follow``, keeps reading until ``running()`` turns
    false and the file is drained."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if tail is not None and tail >= 0 and size > 0 and since is None:
        records, offset, joiner = _read_tail(path, tail)
    else:
        with open(path, "rb") as f:
            data = f.read(size)
        end = data.rfind(b"\n") + 1
        offset = end
        joiner = _Joiner()
        records = _records(data[:end], joiner)
    if not follow:
        records += joiner.flush()  # a line still being written shows as far as it got
    if since is not None:
        records = [r for r in records if r[0] >= since]
    if tail is not None and tail >= 0:
        records = records[-tail:] if tail else []
    yield from records
    if not follow:
        return
    buffer = b""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            chunk = f.read(65536)
            if not chunk:
                if running():
                    time.sleep(FOLLOW_POLL)
                    continue
                chunk = f.read()  # the writer is gone: what it wrote after our last look, if anything
                if not chunk:
                    break
            buffer += chunk
            end = buffer.rfind(b"\n") + 1
            for rec in _records(buffer[:end], joiner):
                if since is None or rec[0] >= since:
                    yield rec
            buffer = buffer[end:]
    for rec in _records(buffer, joiner) + joiner.flush():
        if since is None or rec[0] >= since:
            yield rec
