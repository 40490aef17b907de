"""Services on the real host: what a ClusterIP costs a request, and how fast a replica that turns
unready leaves the rotation under `podplay watch`.

    sudo .venv/bin/python -m benchmarks.bench_services [--requests 400] [--runs 5]

1. Added latency: from inside a client pod's network namespace, --requests sequential HTTP
   GETs (connect, request, read, close) to the backend pod's IP:8080 and the same number to
   the Service's ClusterIP:80 (iptables DNAT, one endpoint), interleaved; medians and p90.
2. Unready → out of the rotation: two replicas with an exec readiness probe (periodSeconds 1,
   failureThreshold 1) behind a Service, a `podplay watch` keeping them; the benchmark removes
   one replica's ready file and times until the Service's chain has one endpoint left (read
   from iptables every 50 ms), then puts it back and times its return; --runs times.

Needs root; works in a private storage root, run root, CNI network (bridge ppbsvc0,
10.221.40.0/24) and Service range (10.221.41.0/24), and removes everything afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_watch import HOST_IMAGE, IMAGE_CHANGES

REPO = Path(__file__).resolve().parents[1]
BRIDGE = "ppbsvc0"
SUBNET = "10.221.40.0/24"
SERVICE_CIDR = "10.221.41.0/24"

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: backend}}}}
  template:
    metadata: {{labels: {{app: backend}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir /w && echo ok >/w/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /w"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1, failureThreshold: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "100000"]
"""

# Runs inside the client's netns: sequential GETs, alternating targets, per-request seconds.
CLIENT = r"""
import json, socket, sys, time
targets = [(sys.argv[1], int(sys.argv[2])), (sys.argv[3], int(sys.argv[4]))]
n = int(sys.argv[5])
out = [[], []]
for i in range(2 * n + 20):
    k = i % 2
    t = time.perf_counter()
    s = socket.create_connection(targets[k], timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    while s.recv(4096):
        pass
    s.close()
    if i >= 20:  # warm-up: ARP, conntrack, the server's first fork
        out[k].append(time.perf_counter() - t)
print(json.dumps(out))
"""


def env_for(base: Path) -> dict:
    env = {**os.environ, "PODPLAY_ROOT": str(base / "root"), "PODPLAY_RUNROOT": str(base / "run"),
           "PODPLAY_NETWORK_DIR": str(base / "net.d"), "PODPLAY_SERVICE_CIDR": SERVICE_CIDR}
    env.pop("PODPLAY_DRIVER", None)
    return env


def podplay(base: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("podplay")), *args], env=env_for(base),
                          capture_output=True, text=True, check=check, timeout=300)


def prepare(base: Path) -> None:
    from reconciler.network.config import default_conflist

    net = base / "net.d"
    net.mkdir(parents=True)
    doc = default_conflist("podplay", BRIDGE, SUBNET, str(base / "run" / "cni" / "ipam"))
    (net / "podplay.conflist").write_text(json.dumps(doc, indent=2))
    tarball = base / "rootfs.tar"
    subprocess.run([str(REPO / "scripts" / "busybox-rootfs.sh"), str(tarball)], check=True, capture_output=True)
    podplay(base, "import", "-q", *IMAGE_CHANGES, str(tarball), HOST_IMAGE)


def pod_facts(base: Path, pod: str) -> tuple[str, str]:
    """(pod IP, network namespace path) of a running pod."""
    from reconciler.paths import HostPaths
    from reconciler.reconcile import open_drivers

    d = open_drivers(HostPaths(base / "root", base / "run", base / "net.d"), "host")
    try:
        [infra] = [c for c in d.runtime.list_containers() if c.pod == f"default/{pod}" and c.role == "infra"]
        [att] = [a for a in d.network.list_attachments() if a.pod_uid == infra.pod_uid]
        return att.status.ip, d.runtime.infra_info(infra.pod_uid).namespaces["network"]
    finally:
        d.close()


def cluster_ip(base: Path) -> str:
    rows = json.loads(podplay(base, "services", "-o", "json").stdout)
    return next(r["clusterIP"] for r in rows if r["name"] == "backend")


def endpoints_in_rules(base: Path) -> int:
    from reconciler.network.services import IptablesServices, _short
    from reconciler.paths import HostPaths

    chain = IptablesServices(HostPaths(base / "root", base / "run", base / "net.d")).chain(
        "S" + _short("default/backend/0"))
    res = subprocess.run(["iptables", "-w", "-t", "nat", "-S", chain], capture_output=True, text=True)
    return sum(1 for line in res.stdout.splitlines() if line.startswith(f"-A {chain} ") and "-E" in line.split()[-1])


def bench_latency(base: Path, m: Path, requests: int) -> None:
    podplay(base, "up", "--wait", "--timeout", "120", str(m))
    pod_ip, _ = pod_facts(base, "backend-0")
    _, netns = pod_facts(base, "client")
    cip = cluster_ip(base)
    res = subprocess.run(["nsenter", f"--net={netns}", "--", "python3", "-c", CLIENT, pod_ip, "8080", cip, "80",
                          str(requests)], capture_output=True, text=True, check=True, timeout=600)
    direct, via = json.loads(res.stdout)

    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1e6

    print(f"\n## One request (connect, GET, read, close) from a pod, {requests} each, interleaved")
    print("| | median | p90 |\n|---|---:|---:|")
    print(f"| straight to the pod IP | {q(direct, .5):.0f} µs | {q(direct, .9):.0f} µs |")
    print(f"| through the ClusterIP (DNAT) | {q(via, .5):.0f} µs | {q(via, .9):.0f} µs |")
    print(f"| added by the ClusterIP | {q(via, .5) - q(direct, .5):+.0f} µs | |")
    podplay(base, "down", str(m))


def wait_until(pred, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return time.monotonic()


def bench_rotation(base: Path, m: Path, runs: int) -> None:
    podplay(base, "up", "--wait", "--timeout", "120", str(m))
    wait_until(lambda: endpoints_in_rules(base) == 2)
    log = open(base / "watch.log", "w")  # noqa: SIM115 - closed below
    watch = subprocess.Popen([str(Path(sys.executable).with_name("podplay")), "watch", str(m.parent)],
                             env=env_for(base), stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    out_times, back_times = [], []
    try:
        time.sleep(2)
        for _ in range(runs):
            t0 = time.monotonic()
            podplay(base, "exec", "backend-1", "--", "rm", "/tmp/ready")
            out_times.append(wait_until(lambda: endpoints_in_rules(base) == 1) - t0)
            t0 = time.monotonic()
            podplay(base, "exec", "backend-1", "--", "touch", "/tmp/ready")
            back_times.append(wait_until(lambda: endpoints_in_rules(base) == 2) - t0)
    finally:
        watch.terminate()
        watch.wait(60)
        log.close()
    print(f"\n## A replica's readiness → the Service's rules, under `podplay watch` ({runs} runs; probe period 1 s)")
    print("| | median | max |\n|---|---:|---:|")
    print(f"| unready → out of the rotation | {statistics.median(out_times):.2f} s | {max(out_times):.2f} s |")
    print(f"| ready again → back | {statistics.median(back_times):.2f} s | {max(back_times):.2f} s |")
    podplay(base, "down", str(m))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root (runc, overlay mounts, CNI, iptables)")
    sys.path.insert(0, str(REPO))
    base = Path(tempfile.mkdtemp(prefix="pp-bs-", dir="/tmp"))
    try:
        prepare(base)
        one = base / "m1" / "app.yaml"
        one.parent.mkdir()
        one.write_text(APP.format(replicas=1))
        bench_latency(base, one, args.requests)
        two = base / "m2" / "app.yaml"
        two.parent.mkdir()
        two.write_text(APP.format(replicas=2))
        bench_rotation(base, two, args.runs)
    finally:
        for d in ("m1", "m2"):
            if (base / d).exists():
                podplay(base, "down", str(base / d), check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        res = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
        for mnt in sorted((x for x in res.stdout.split() if x.startswith(str(base))), key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
