"""Pods up and down, podplay side by side with `podman kube play` / `podman kube down`.

    python -m benchmarks.bench_pods [--runs N] [--shape WORD ...]

Same YAML, same busybox image (pulled from one local docker-registry into both stores), same
machine, same run, alternating tools round by round. Shapes: a 1-container pod, a 2-container
pod with a hostPort, a 3-replica Deployment; plus `podplay up` with nothing changed.

Both tools get private storage (podman: --root/--runroot and its own containers.conf with the
settings this VM needs; podplay: --root/--runroot/--network-dir with a network of its own), so
the host's stores are untouched. The containers stop promptly on SIGTERM (a shell that traps it),
so `down` measures teardown, not grace periods.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row, podman_side, podplay_side, table, time_command

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
IMAGE = "localhost/busybox:latest"


def container(name: str, command: list[str], port: int = 0) -> dict:
    c = {"name": name, "image": IMAGE, "imagePullPolicy": "Never", "command": command}
    if port:
        c["ports"] = [{"containerPort": 8080, "hostPort": port}]
    return c


def shapes(port: int) -> dict[str, dict]:
    one = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-one"},
           "spec": {"restartPolicy": "Always", "containers": [container("app", SLEEPER)]}}
    two = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-two"},
           "spec": {"containers": [container("web", ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 & wait"],
                                             port),
                                   container("sidecar", SLEEPER)]}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench-dep"},
              "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "bench"}},
                       "template": {"metadata": {"labels": {"app": "bench"}},
                                    "spec": {"containers": [container("app", SLEEPER)]}}}}
    return {"1-container pod": one, "2-container pod + hostPort": two, "3-replica Deployment": deploy}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shape", action="append", default=[],
                    help="only the shapes whose title contains WORD (e.g. 1-container, Deployment)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.images import ImageFactory
    from tests.support.network import free_port
    from tests.support.registry import running_registry

    if not shutil.which("podman"):
        print("podman is not installed: run `make bench` (it installs podman) — podplay alone:")
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-pods-", dir="/tmp"))
    factory = ImageFactory(tmp / "build")
    podplay, pp_env = podplay_side(tmp)
    podman, pm_env = podman_side(tmp)
    bridge = "ppbench0"
    try:
        with running_registry() as reg:
            ref = factory.push(reg, "bench/busybox").ref
            subprocess.run(podplay + ["pull", "-q", ref], env=pp_env, check=True, capture_output=True)
            subprocess.run(podplay + ["tag", ref, IMAGE], env=pp_env, check=True, capture_output=True)
            have_podman = bool(shutil.which("podman"))
            if have_podman:
                subprocess.run(podman + ["pull", "-q", "--tls-verify=false", ref], env=pm_env, check=True,
                               capture_output=True)
                subprocess.run(podman + ["tag", ref, IMAGE], env=pm_env, check=True, capture_output=True)
        _bench_network(tmp / "pp-net", bridge)

        sections = []
        for title, doc in shapes(free_port()).items():
            if args.shape and not any(w in title for w in args.shape):
                continue
            f = tmp / f"{title.split()[0]}.yaml"
            f.write_text(json.dumps(doc))
            rows = {"podplay plan": [], "podplay up": [], "podplay down": [], "podplay up (no change)": []}
            if have_podman:
                rows.update({"podman kube play": [], "podman kube down": []})
            cpu: dict[str, list[float]] = {"podplay plan": [], "podplay up": [], "podman kube play": []}
            for _ in range(args.runs):
                rows["podplay plan"] += time_command(podplay + ["plan", str(f)], 1, env=pp_env, cpu=cpu["podplay plan"])
                rows["podplay up"] += time_command(podplay + ["up", "-q", str(f)], 1, env=pp_env, cpu=cpu["podplay up"])
                rows["podplay up (no change)"] += time_command(podplay + ["up", "-q", str(f)], 1, env=pp_env)
                rows["podplay down"] += time_command(podplay + ["down", "-q", str(f)], 1, env=pp_env)
                if have_podman:
                    rows["podman kube play"] += time_command(podman + ["kube", "play", str(f)], 1, env=pm_env,
                                                             cpu=cpu["podman kube play"])
                    rows["podman kube down"] += time_command(podman + ["kube", "down", str(f)], 1, env=pm_env)
            out = [Row(k, v) for k, v in rows.items()]
            up = table(f"{title}: up", [r for r in out if r.name.endswith(("up", "(no change)", "play", "plan"))],
                       baseline="podman kube play" if have_podman else None)
            down = table(f"{title}: down", [r for r in out if "down" in r.name],
                         baseline="podman kube down" if have_podman else None)
            used = table(f"{title}: CPU time (user + system of the command and the processes it waited for)",
                         [Row(k, v) for k, v in cpu.items() if v], baseline="podman kube play" if have_podman else None)
            sections += [up, down, used]
            print(up + "\n" + down + "\n" + used, flush=True)
            if title.startswith("1-container"):
                print(split_table(title, time_split(podplay, pp_env, f, tmp, args.runs)), flush=True)
    finally:
        subprocess.run(podplay + ["down", "-q", *map(str, tmp.glob("*.yaml"))], env=pp_env, capture_output=True)
        if shutil.which("podman"):
            for f in tmp.glob("*.yaml"):
                subprocess.run(podman + ["kube", "down", str(f)], env=pm_env, capture_output=True)
            subprocess.run(podman + ["system", "reset", "-f"], env=pm_env, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for m in sorted(_mounts_under(tmp), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


# What an `up` spends its time on, from the steps apply runs (benchmarks.trace_up): the groups'
# spans may overlap (steps of one pod run side by side), so they need not add up to the total.
SPLIT = {"infra (sandbox)": ("CreateInfra",), "network (CNI)": ("AttachNetwork",),
         "containers": ("CreateContainer", "StartContainer"), "image + snapshot": ("PullImage", "PrepareSnapshot")}


def time_split(podplay: list[str], env: dict, manifest: Path, tmp: Path, runs: int) -> dict[str, list[float]]:
    """Per group, the wall time of its steps (the union of their spans) over `runs` traced `up`s;
    "engine" is the rest of the process: interpreter start, imports, load, look, plan, confirm."""
    import time

    spans_file = tmp / "spans.json"
    python = str(Path(podplay[0]).with_name("python"))
    out: dict[str, list[float]] = {k: [] for k in ("total", "engine", *SPLIT)}
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-m", "benchmarks.trace_up", "up", "-q", str(manifest)], check=True,
                       env={**env, "PODPLAY_BENCH_SPANS": str(spans_file)}, cwd=Path(__file__).resolve().parents[1],
                       capture_output=True)
        total = time.perf_counter() - started
        spans = json.loads(spans_file.read_text())["spans"]
        subprocess.run(podplay + ["down", "-q", str(manifest)], env=env, check=True, capture_output=True)
        out["total"].append(total)
        window = _union([(s, e) for _, s, e in spans])
        out["engine"].append(total - window)
        for group, verbs in SPLIT.items():
            out[group].append(_union([(s, e) for v, s, e in spans if v in verbs]))
    return out


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def split_table(title: str, split: dict[str, list[float]]) -> str:
    return table(f"{title}: where `podplay up` spends its time (wall, medians)",
                 [Row(name, samples) for name, samples in split.items()])


def _bench_network(net_dir: Path, bridge: str) -> None:
    """podplay's default network for the benchmark, on a bridge of its own."""
    from reconciler.network.config import default_conflist
    from reconciler.paths import HostPaths

    paths = HostPaths.from_env(None, None, str(net_dir))
    net_dir.mkdir(parents=True, exist_ok=True)
    doc = default_conflist("podplay", bridge, "10.221.7.0/24", str(paths.cni / "ipam"))
    (net_dir / "podplay.conflist").write_text(json.dumps(doc, indent=2))


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(root))]


if __name__ == "__main__":
    main()
