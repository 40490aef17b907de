"""A batch of work as a Job vs the same work as separate `podman run`s.

    python -m benchmarks.bench_jobs [--runs N]

A 20-completion Job with parallelism 4 (`podplay up --wait`: the Job from nothing to Complete,
every pod created, run, its exit recorded) against the same 20 runs of the same command with
`podman run` — one after the other, and 4 at a time (the Job's parallelism). Same busybox image
from one local registry, private stores on both sides. The work itself is trivial (`echo`), so
the figures are the tools' own cost per unit of work. A second round gives each run half a
second of work (`sleep 0.5`): there the time a tool takes to notice that a run ended counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.harness import Row, podman_side, podplay_side, table, time_call, time_command

IMAGE = "localhost/busybox:latest"
COMPLETIONS, PARALLELISM = 20, 4
WORK = ["sh", "-c", "echo done"]
SLOW_WORK = ["sh", "-c", "sleep 0.5; echo done"]


def job_doc(work: list[str] | None = None) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bench-job"},
            "spec": {"completions": COMPLETIONS, "parallelism": PARALLELISM, "backoffLimit": 0,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [
                         {"name": "work", "image": IMAGE, "imagePullPolicy": "Never", "command": work or WORK}]}}}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_pods import _bench_network, _mounts_under
    from tests.support.images import ImageFactory
    from tests.support.registry import running_registry

    have_podman = bool(shutil.which("podman"))
    if not have_podman:
        print("podman is not installed: run `make bench` (it installs podman) — podplay alone:")
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-jobs-", dir="/tmp"))
    factory = ImageFactory(tmp / "build")
    podplay, pp_env = podplay_side(tmp)
    podman, pm_env = podman_side(tmp)
    bridge = "ppbench1"
    f = tmp / "job.yaml"
    f.write_text(json.dumps(job_doc()))
    try:
        with running_registry() as reg:
            ref = factory.push(reg, "bench/busybox").ref
            subprocess.run(podplay + ["pull", "-q", ref], env=pp_env, check=True, capture_output=True)
            subprocess.run(podplay + ["tag", ref, IMAGE], env=pp_env, check=True, capture_output=True)
            if have_podman:
                subprocess.run(podman + ["pull", "-q", "--tls-verify=false", ref], env=pm_env, check=True,
                               capture_output=True)
                subprocess.run(podman + ["tag", ref, IMAGE], env=pm_env, check=True, capture_output=True)
        _bench_network(tmp / "pp-net", bridge)

        def down() -> None:  # every round starts from nothing: a finished Job would not run again
            subprocess.run(podplay + ["down", "-q", str(f)], env=pp_env, check=True, capture_output=True)

        for work, label in ((WORK, ""), (SLOW_WORK, ", 0.5 s of work each")):
            f.write_text(json.dumps(job_doc(work)))
            one_run = podman + ["run", "--rm", "--network", "none", IMAGE, *work]

            def podman_parallel(one_run=one_run) -> None:
                with ThreadPoolExecutor(PARALLELISM) as pool:
                    for res in pool.map(lambda _: subprocess.run(one_run, env=pm_env, capture_output=True),
                                        range(COMPLETIONS)):
                        if res.returncode != 0:
                            raise RuntimeError(res.stderr.decode()[-2000:])

            ours = f"podplay up --wait (Job 20/4{label})"
            rows = {ours: []}
            if have_podman:
                rows.update({f"podman run x20, sequential{label}": [], f"podman run x20, 4 at a time{label}": []})
            for _ in range(args.runs):
                rows[ours] += time_command(
                    podplay + ["up", "-q", "--wait", "--timeout", "600", str(f)], 1, env=pp_env, setup=down)
                if have_podman:
                    rows[f"podman run x20, sequential{label}"] += time_call(
                        lambda one_run=one_run: [time_command(one_run, 1, env=pm_env) for _ in range(COMPLETIONS)], 1)
                    rows[f"podman run x20, 4 at a time{label}"] += time_call(podman_parallel, 1)
            jobs = json.loads(subprocess.run(podplay + ["jobs", "-o", "json"], env=pp_env, capture_output=True,
                                             text=True).stdout)
            assert jobs and jobs[0]["phase"] == "Complete" and jobs[0]["succeeded"] == COMPLETIONS, jobs
            print(table(f"{COMPLETIONS} completions, parallelism {PARALLELISM}{label}: end to end",
                        [Row(k, v) for k, v in rows.items()],
                        baseline=f"podman run x20, sequential{label}" if have_podman else None, unit="s"), flush=True)
    finally:
        subprocess.run(podplay + ["down", "-q", str(f)], env=pp_env, capture_output=True)
        if shutil.which("podman"):
            subprocess.run(podman + ["system", "reset", "-f"], env=pm_env, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for m in sorted(_mounts_under(tmp), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
