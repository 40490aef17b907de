"""Listing what runs: `podplay ps` / `pods` side by side with `podman ps` / `podman pod ps`.

    python -m benchmarks.bench_ps [--runs N] [--pods N]

The same pods (N two-container pods, one with a hostPort) run under both tools, from the same
YAML and the same busybox image; each listing command is then timed N times, alternating
tools. `python -c pass` is the floor any Python command pays. podplay's target: `ps` well under
100 ms with a handful of pods.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_pods import IMAGE, SLEEPER, _mounts_under, container
from benchmarks.harness import Row, podman_side, podplay_side, table, time_command


def manifest(pods: int, port: int) -> str:
    docs = []
    for i in range(pods):
        ctrs = [container("app", SLEEPER, port if i == 0 else 0), container("sidecar", SLEEPER)]
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"list-{i}"},
                     "spec": {"containers": ctrs}})
    return "\n---\n".join(json.dumps(d) for d in docs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pods", type=int, default=5)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.images import ImageFactory
    from tests.support.network import free_port
    from tests.support.registry import running_registry

    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-ps-", dir="/tmp"))
    factory = ImageFactory(tmp / "build")
    podplay, pp_env = podplay_side(tmp)
    podman, pm_env = podman_side(tmp)
    have_podman = bool(shutil.which("podman"))
    if not have_podman:
        print("podman is not installed: run `make bench` (it installs podman) — podplay alone:")
    bridge = "ppbench1"
    f = tmp / "pods.yaml"
    f.write_text(manifest(args.pods, free_port()))
    try:
        with running_registry() as reg:
            ref = factory.push(reg, "bench/busybox").ref
            subprocess.run(podplay + ["pull", "-q", ref], env=pp_env, check=True, capture_output=True)
            subprocess.run(podplay + ["tag", ref, IMAGE], env=pp_env, check=True, capture_output=True)
            if have_podman:
                subprocess.run(podman + ["pull", "-q", "--tls-verify=false", ref], env=pm_env, check=True,
                               capture_output=True)
                subprocess.run(podman + ["tag", ref, IMAGE], env=pm_env, check=True, capture_output=True)
        _network(tmp / "pp-net", bridge)
        subprocess.run(podplay + ["up", "-q", "--wait", str(f)], env=pp_env, check=True, capture_output=True)
        if have_podman:
            subprocess.run(podman + ["kube", "play", str(f)], env=pm_env, check=True, capture_output=True)

        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "podplay ps": podplay + ["ps"],
            "podplay ps -a --infra": podplay + ["ps", "-a", "--infra"],
            "podplay ps -o json": podplay + ["ps", "-o", "json"],
            "podplay pods": podplay + ["pods"],
        }
        if have_podman:
            commands |= {"podman ps": podman + ["ps"], "podman ps -a": podman + ["ps", "-a"],
                         "podman pod ps": podman + ["pod", "ps"]}
        rows = {name: Row(name) for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                rows[name].samples += time_command(cmd, 1, env=pm_env if name.startswith("podman") else pp_env)
        print(table(f"listing {args.pods} two-container pods", list(rows.values()),
                    baseline="podman ps" if have_podman else None), flush=True)
    finally:
        subprocess.run(podplay + ["down", "-q", str(f)], env=pp_env, capture_output=True)
        if have_podman:
            subprocess.run(podman + ["kube", "down", str(f)], env=pm_env, capture_output=True)
            subprocess.run(podman + ["system", "reset", "-f"], env=pm_env, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for m in sorted(_mounts_under(tmp), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _network(net_dir: Path, bridge: str) -> None:
    """podplay's default network on a bridge and subnet of its own (not bench_pods' ones, so
    that both benchmarks can run at once)."""
    from reconciler.network.config import default_conflist
    from reconciler.paths import HostPaths

    paths = HostPaths.from_env(None, None, str(net_dir))
    net_dir.mkdir(parents=True, exist_ok=True)
    doc = default_conflist("podplay", bridge, "10.221.8.0/24", str(paths.cni / "ipam"))
    (net_dir / "podplay.conflist").write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
