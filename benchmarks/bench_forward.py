"""A pod's CNI attach and detach: the firewall plugin per pod vs podplay's rules per network.

    python -m benchmarks.bench_forward [--runs N] [--pods P]

The same driver (``CniNetwork``, in this process: no interpreter start in the figures), the same
plugins, two networks differing only in the firewall plugin: ``fw`` lists it (conflists written
by podplay before it made its own forward rules), ``own`` does not (today's default conflist:
podplay's two rules per network, made with the first pod, removed with the last). Each round
attaches P pods one after the other, then detaches them, alternating the networks round by round;
the first pod of a round pays for the rules on ``own``, the others find them made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Row, table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--pods", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from reconciler.network import CniNetwork
    from reconciler.network.config import default_conflist
    from reconciler.paths import HostPaths
    from tests.support.network import TestNetwork

    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-fwd-", dir="/tmp"))
    paths = HostPaths(tmp / "root", tmp / "run", tmp / "net.d")
    nets = {"fw": ("ppbfw-fw", "ppbfwbr0", "10.221.8.0/24"), "own": ("ppbfw-own", "ppbfwbr1", "10.221.9.0/24")}
    paths.network_dir.mkdir(parents=True)
    for mode, (name, bridge, subnet) in nets.items():
        doc = default_conflist(name, bridge, subnet, str(paths.cni / "ipam"))
        if mode == "fw":
            doc["plugins"].insert(2, {"type": "firewall", "backend": "iptables"})
        (paths.network_dir / f"{name}.conflist").write_text(json.dumps(doc))
    helper = TestNetwork(0, paths)  # only for its DesiredPod factory
    netns = []
    for i in range(args.pods):
        subprocess.run(["ip", "netns", "add", f"ppbfw{i}"], check=True)
        netns.append(f"/run/netns/ppbfw{i}")
    samples: dict[str, list[float]] = {}
    driver = CniNetwork(paths)
    try:
        for _ in range(args.runs):
            for mode, (name, _bridge, _subnet) in nets.items():
                pods = [helper.pod(f"p{i}", network=name) for i in range(args.pods)]
                for what in ("attach", "detach"):
                    whole = 0.0
                    for i in range(args.pods):
                        started = time.perf_counter()
                        if what == "attach":
                            driver.attach(pods[i], netns[i])
                            key = "first pod" if i == 0 else "other pods"
                        else:
                            driver.detach(pods[i].uid)
                            key = "last pod" if i == args.pods - 1 else "other pods"
                        took = time.perf_counter() - started
                        whole += took
                        samples.setdefault(f"{mode}: {what}, {key}", []).append(took)
                    samples.setdefault(f"{mode}: {what}, all {args.pods} pods", []).append(whole)
        for what in ("attach", "detach"):
            rows = [Row(k, v) for k, v in samples.items() if f": {what}, " in k]
            rows.sort(key=lambda r: (r.name.split(", ")[1], not r.name.startswith("fw")))
            print(table(f"CNI {what} per pod, {args.pods} pods per network (wall, in process); "
                        "fw = the firewall plugin per pod, own = podplay's rules per network", rows), flush=True)
    finally:
        for i in range(args.pods):
            for name, _, _ in nets.values():
                try:
                    driver.detach(helper.pod(f"p{i}", network=name).uid)
                except Exception as exc:  # report, keep cleaning
                    print(f"clean-up: {exc}", file=sys.stderr)
        for ns in netns:
            subprocess.run(["ip", "netns", "delete", ns.rsplit("/", 1)[1]], capture_output=True)
        for _, bridge, _ in nets.values():
            subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
