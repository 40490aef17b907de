"""How long ``list_containers`` takes with many containers, next to ``runc list``.

    sudo .venv/bin/python -m tests.host.runtime.bench_list [pods] [containers-per-pod]

Brings up pods of sleeping busybox containers on throw-away paths, times relists (a fresh driver
each time, as each reconcile pass does) and ``runc list --format json`` on the same runc root,
then removes everything. The reconcile loop calls list_containers on every pass; the target is
well under 50 ms for 100 containers.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.paths import HostPaths
from reconciler.runtime.driver import RuncRuntime
from tests.host.runtime.conftest import Pods
from tests.unit.runtime.pods import make_pod


def timed(fn, rounds: int = 30) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples)


def main(pod_count: int = 10, per_pod: int = 9) -> None:
    base = Path(tempfile.mkdtemp(prefix="pp-bench-", dir="/tmp"))
    paths = HostPaths(base / "root", base / "run", base / "net.d")
    parent = f"/podplay-bench-{base.name}"
    rt = RuncRuntime(paths, cgroup_parent=parent)
    pods = Pods(rt, base)
    made = []
    try:
        t = time.perf_counter()
        for i in range(pod_count):
            pod = make_pod(f"bench-{i}", [{"name": f"c{j}", "command": ["sleep", "3600"]} for j in range(per_pod)])
            pods.up(pod)
            made.append(pod)
        total = pod_count * (per_pod + 1)
        print(f"brought up {total} containers in {time.perf_counter() - t:.1f}s "
              f"({(time.perf_counter() - t) / total * 1000:.0f} ms each, create+start)")
        assert len(RuncRuntime(paths, cgroup_parent=parent).list_containers()) == total
        med, worst = timed(lambda: RuncRuntime(paths, cgroup_parent=parent).list_containers())
        print(f"list_containers, {total} containers: median {med:.1f} ms, max {worst:.1f} ms")
        runc = [shutil.which("runc") or "runc", "--root", str(paths.runc_root), "list", "--format", "json"]
        med, worst = timed(lambda: subprocess.run(runc, capture_output=True, check=True))
        print(f"runc list --format json, same containers: median {med:.1f} ms, max {worst:.1f} ms")
    finally:
        for pod in made:
            rt.remove_infra(pod.uid)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
