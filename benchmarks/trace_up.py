"""`podplay ARGS` in this process with every apply step timed, for the time split of an `up`.

    PODPLAY_BENCH_SPANS=FILE python -m benchmarks.trace_up up -q pod.yaml

Writes ``{"spans": [[verb, start, end], ...], "end": seconds}`` to FILE, times in seconds from
this module's start (the interpreter's own start is outside; the harness measures the process).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> int:
    from reconciler import apply

    spans: list[tuple[str, float, float]] = []
    run = apply._Runner.run

    def timed(self, step):
        started = time.perf_counter() - T0
        try:
            return run(self, step)
        finally:
            spans.append((step.verb, started, time.perf_counter() - T0))

    apply._Runner.run = timed
    from reconciler.cli import main as cli

    try:
        return cli(sys.argv[1:])
    finally:
        Path(os.environ["PODPLAY_BENCH_SPANS"]).write_text(
            json.dumps({"spans": spans, "end": time.perf_counter() - T0}))


if __name__ == "__main__":
    sys.exit(main())
