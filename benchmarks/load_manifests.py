"""How long `load_manifests` takes on N generated pods (default 200), warm and in a fresh process.

    .venv/bin/python benchmarks/load_manifests.py [N]

Prints the best and the median of several warm runs, and the wall time of `podplay validate` in
a new process (imports and schema loading included). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POD = """apiVersion: v1
kind: Pod
metadata:
  name: web-{i}
  labels: {{app: web, idx: "{i}"}}
spec:
  containers:
  - name: app
    image: registry.local/app:{i}
    command: [httpd, -f, -p, "8080"]
    env:
    - {{name: MODE, value: fast}}
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    ports:
    - {{name: http, containerPort: 8080}}
    volumeMounts:
    - {{name: data, mountPath: /data}}
    resources:
      requests: {{cpu: 100m, memory: 64Mi}}
      limits: {{cpu: "1", memory: 128Mi}}
    livenessProbe:
      httpGet: {{path: /healthz, port: http}}
  - name: sidecar
    image: busybox:1.36
    command: [sleep, "100000"]
  volumes:
  - {{name: data, emptyDir: {{}}}}
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    from reconciler.manifests import load_manifests

    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            Path(d, f"pod-{i:04d}.yaml").write_text(POD.format(i=i))
        result = load_manifests([d])
        assert result.ok and len(result.objects) == n, result.errors[:3]
        times = []
        for _ in range(7):
            t = time.perf_counter()
            load_manifests([d])
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "reconciler", "validate", d], cwd=repo, check=True,
                       capture_output=True)
        cold = time.perf_counter() - t
    print(f"load_manifests, {n} pods: best {min(times) * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms"
          f"; `podplay validate` in a fresh process: {cold * 1000:.0f} ms")


if __name__ == "__main__":
    main()
