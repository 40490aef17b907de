"""Tiny side-by-side benchmark harness: medians of repeated runs, printed as a table with ratios.

Benchmarks never assert on time; they print what they measured so that a person (or a
closing note) can compare podplay with its peer tool measured in the same run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# podman on this VM: runc (crun is not installed), cgroupfs (no systemd as PID 1), no journald for
# events, and the RLIMIT_NOFILE ceiling DESIGN.md describes.
PODMAN_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
"""


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
                 check: bool = True, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each run; with `cpu`, also the CPU seconds (user + system) of the command
    and the children it waited for, appended there: on a shared machine, CPU time says what a
    command costs when wall time mostly says how busy the machine was."""
    import resource

    def run():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = subprocess.run(argv, capture_output=True, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if cpu is not None:
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
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


def fresh_dirs(*paths: Path) -> Callable[[], None]:
    """A set-up step that empties ``paths`` (for a run that must start from nothing)."""
    def setup() -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
            p.mkdir(parents=True)
    return setup


def compile_bytecode() -> None:
    """Byte-compile the package, as pip does when it installs one: in an environment with
    PYTHONDONTWRITEBYTECODE set, every podplay process would otherwise compile its modules from
    source again (over 100 ms), which no installed podplay pays."""
    import compileall

    import reconciler

    compileall.compile_dir(str(Path(reconciler.__file__).parent), quiet=1)
    # And the dataclass methods' code (reconciler.classcache), as a first podplay run writes it.
    script = ("import importlib, pkgutil, reconciler.cli, reconciler\n"
              "for m in pkgutil.walk_packages(reconciler.__path__, 'reconciler.'):\n"
              "    if m.name.endswith('__main__'):\n        continue\n"
              "    try:\n        importlib.import_module(m.name)\n"
              "    except Exception:\n        pass\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)


def podplay_side(base: Path) -> tuple[list[str], dict]:
    """The `podplay` command of this environment and an env with private roots under ``base``."""
    compile_bytecode()
    env = {**os.environ, "PODPLAY_ROOT": str(base / "pp-root"), "PODPLAY_RUNROOT": str(base / "pp-run"),
           "PODPLAY_NETWORK_DIR": str(base / "pp-net")}
    env.pop("PODPLAY_DRIVER", None)
    return [str(Path(sys.executable).with_name("podplay"))], env


def podman_side(base: Path) -> tuple[list[str], dict]:
    """`podman` with a private root, run root and tmpdir under ``base``, and an env with
    PODMAN_CONF. The tmpdir (default /run/libpod, shared by every podman on the host) is private
    too: another run's `podman system reset` removes it, and podman then takes its own running
    containers for a reboot's leftovers and fails."""
    conf = base / "containers.conf"
    conf.write_text(PODMAN_CONF)
    return (["podman", "--root", str(base / "pm-root"), "--runroot", str(base / "pm-run"),
             "--tmpdir", str(base / "pm-tmp")],
            {**os.environ, "CONTAINERS_CONF": str(conf)})
