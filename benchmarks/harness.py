"""Tiny side-by-side benchmark harness: medians of repeated runs, printed as a table with ratios.

Benchmarks never assert on time; they print what they measured so that a person (or a
closing note) can compare podplay with its peer tool measured in the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def time_call(fn: Callable[[], object], runs: int, *, setup: Callable[[], object] | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def time_command(argv: list[str], runs: int, *, setup: Callable[[], object] | None = None, env=None,
                 check: bool = True) -> list[float]:
    def run():
        res = subprocess.run(argv, capture_output=True, env=env)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.decode()[-2000:]}")
    return time_call(run, runs, setup=setup)


def table(title: str, rows: list[Row], baseline: str | None = None, unit: str = "ms") -> str:
    scale = 1000.0 if unit == "ms" else 1.0
    base = next((r for r in rows if r.name == baseline), None)
    lines = [f"## {title}", "", f"| what | median {unit} | runs | ratio to {baseline or '-'} |", "|---|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r.median / base.median:.2f}" if base and base.median else "-"
        lines.append(f"| {r.name} | {r.median * scale:.1f} | {len(r.samples)} | {ratio} |")
    return "\n".join(lines) + "\n"
