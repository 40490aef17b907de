"""Keeping converged: how fast `podplay watch` reacts, what a quiet pass costs, what idling costs.

    python -m benchmarks.bench_watch [--driver fake|host] [--runs 20] [--pods 100] [--idle 60]

1. Latency from writing a new manifest file to its container running, through a real
   `podplay watch` process (median of --runs). The driver is selectable: ``fake`` (the
   file-backed fake host, the engine alone) now; ``host`` (runc, CNI, a registry image) once the
   real drivers are in — it then needs root and the image named by --image.
2. A no-change pass over --pods pods, in process on the fake host: the relist tick (observe +
   diff against the cached desired state), a file-event pass that finds nothing changed, and the
   periodic full resync (every file re-read, the journal recovered under the apply lock).
   Target from the issue: < 50 ms.
3. `podplay watch` idling over 20 pods for --idle seconds: RSS and CPU read from /proc.
   Targets: < 30 MB RSS, < 1 % CPU.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Row, table

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: bench}}
spec:
  containers:
  - name: app
    image: {image}
    command: ["sleep", "100000"]
    resources: {{limits: {{memory: 32Mi}}}}
"""


def write_pod(d: Path, name: str, image: str) -> None:
    tmp = d / f".{name}.tmp"
    tmp.write_text(POD.format(name=name, image=image))
    os.replace(tmp, d / f"{name}.yaml")


def env_for(base: Path, driver: str) -> dict:
    env = {**os.environ, "PODPLAY_ROOT": str(base / "root"), "PODPLAY_RUNROOT": str(base / "run"),
           "PODPLAY_NETWORK_DIR": str(base / "net.d"), "PODPLAY_DRIVER": driver}
    if driver == "fake":
        env["PODPLAY_FAKE_REGISTRY"] = "*"
    return env


def podplay() -> list[str]:
    return [str(Path(sys.executable).with_name("podplay"))]


def running_pods(base: Path, driver: str) -> set[str]:
    from reconciler.paths import HostPaths
    from reconciler.reconcile import open_drivers

    drivers = open_drivers(HostPaths(base / "root", base / "run", base / "net.d"), driver)
    try:
        return {c.pod for c in drivers.runtime.list_containers() if c.role == "app" and c.state == "running"}
    finally:
        drivers.close()


def start_watch(d: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(podplay() + ["watch", str(d), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def wait_for(pred, timeout: float = 120.0, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(interval)


def bench_latency(base: Path, driver: str, image: str, runs: int, debounce: str) -> list[float]:
    d = base / f"lat-{debounce}"
    d.mkdir()
    env = env_for(base, driver)
    proc = start_watch(d, env, "--debounce", debounce)
    samples = []
    try:
        time.sleep(1.0)  # the watcher's start-up is not what this measures
        for i in range(runs):
            name = f"lat{debounce.replace('.', '')}-{i}"
            t = time.perf_counter()
            write_pod(d, name, image)
            wait_for(lambda n=name: f"default/{n}" in running_pods(base, driver))
            samples.append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(podplay() + ["down", "-q", str(d)], env=env, capture_output=True)
    return samples


def bench_quiet_pass(base: Path, pods: int, runs: int) -> list[Row]:
    from reconciler.drivers.fake import FakeHost, fake_drivers
    from reconciler.paths import HostPaths
    from reconciler.state import StateStore
    from reconciler.watch import DirSource, EventLog, Keeper, KeeperOptions

    d = base / "quiet"
    d.mkdir()
    for i in range(pods):
        write_pod(d, f"q-{i:03}", "registry.test/busybox:1.36")
    paths = HostPaths(base / "qroot", base / "qrun", base / "qnet")
    host = FakeHost()
    host.registry.add("*")
    drivers = fake_drivers(host)
    state = StateStore(paths.state_db)
    keeper = Keeper(DirSource([str(d)], state), paths, state, lambda: drivers, EventLog(io.StringIO()),
                    KeeperOptions(relist=3600, resync=3600))
    try:
        t = time.perf_counter()
        keeper.converge("start", refresh=True, full=True)
        first = time.perf_counter() - t
        assert len(host.containers) == 2 * pods

        def timed(fn) -> list[float]:
            out = []
            for _ in range(runs):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return out
        rows = [
            Row(f"first pass, {pods} pods created (fake host)", [first]),
            Row(f"relist tick, {pods} pods, nothing to do", timed(keeper.tick)),
            Row(f"file-event pass, {pods} pods, nothing changed",
                timed(lambda: keeper.converge("files", refresh=True))),
            Row(f"full resync pass, {pods} pods (all files re-read, apply lock)",
                timed(lambda: keeper.converge("resync", refresh=True, full=True))),
        ]
        assert keeper.source.files.parses == pods, "a quiet pass parsed a file again"
        return rows
    finally:
        keeper.waker.close()
        state.close()


def _proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS kB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss


def bench_idle(base: Path, driver: str, image: str, seconds: float) -> str:
    d = base / "idle"
    d.mkdir()
    for i in range(20):
        write_pod(d, f"idle-{i:02}", image)
    env = env_for(base, driver)
    proc = start_watch(d, env)
    try:
        wait_for(lambda: sum(1 for p in running_pods(base, driver) if p.startswith("default/idle-")) == 20,
                 interval=0.1)
        time.sleep(2.0)  # let the start-up settle
        cpu0, _ = _proc_sample(proc.pid)
        t0 = time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            rss.append(_proc_sample(proc.pid)[1])
        cpu1, _ = _proc_sample(proc.pid)
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(podplay() + ["down", "-q", str(d)], env=env, capture_output=True)
    return ("## podplay watch idling over 20 pods\n\n| what | value | target |\n|---|---:|---:|\n"
            f"| RSS, median over {wall:.0f} s | {statistics.median(rss) / 1024:.1f} MB | < 30 MB |\n"
            f"| RSS, max | {max(rss) / 1024:.1f} MB | |\n"
            f"| CPU | {100 * (cpu1 - cpu0) / wall:.2f} % | < 1 % |\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", choices=("fake", "host"), default="fake")
    ap.add_argument("--image", default=None, help="image for --driver host (default: registry.test/busybox:1.36 "
                    "on the fake)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idling to measure (default 60)")
    args = ap.parse_args(argv)
    if args.driver == "host" and not args.image:
        ap.error("--driver host needs --image (an image the host can pull, e.g. from a local registry)")
    image = args.image or "registry.test/busybox:1.36"
    base = Path(tempfile.mkdtemp(prefix="pp-bench-watch-"))
    try:
        rows = [Row(f"file write → container running, debounce {db} s ({args.driver} host)",
                    bench_latency(base, args.driver, image, args.runs, db)) for db in ("0.3", "0.05")]
        print(table("podplay watch latency (median)", rows))
        print(table("Quiet passes in process (median)", bench_quiet_pass(base, args.pods, args.runs)))
        print(bench_idle(base, args.driver, image, args.idle))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
