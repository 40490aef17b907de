"""Engine speed: `validate` and `plan` over 200 manifests, and `podplay --help` start-up.

    python -m benchmarks.bench_engine [--runs N]

`plan` runs against the file-backed fake host (the engine alone, no container stack), once on
an empty host and once on a host where all 200 pods already run (the no-change path that every
`up` and every watch pass takes). Start-up is compared with `podman --help` when podman exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row, compile_bytecode, table, time_call, time_command

POD = """apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg-{i}}}
data: {{greeting: hello-{i}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: pod-{i}
  labels: {{app: bench, index: "{i}"}}
spec:
  containers:
  - name: app
    image: registry.test/busybox:1.36
    command: ["httpd", "-f", "-p", "8080"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: cfg-{i}, key: greeting}}}}
    ports: [{{containerPort: 8080}}]
    resources: {{limits: {{cpu: 100m, memory: 32Mi}}}}
    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 5}}
    volumeMounts: [{{name: cfg, mountPath: /etc/cfg}}]
  volumes:
  - name: cfg
    configMap: {{name: cfg-{i}}}
"""


def write_manifests(d: Path, n: int) -> None:
    for i in range(n):
        (d / f"pod-{i:03}.yaml").write_text(POD.format(i=i))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args(argv)
    compile_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-"))
    try:
        mdir = tmp / "m"
        mdir.mkdir()
        write_manifests(mdir, args.count)
        env = {**os.environ, "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
               "PODPLAY_ROOT": str(tmp / "root"), "PODPLAY_RUNROOT": str(tmp / "run")}
        podplay = [str(Path(sys.executable).with_name("podplay"))]

        from reconciler.manifests import load_manifests

        rows = [
            Row(f"load_manifests() of {args.count} manifests (in process)",
                time_call(lambda: load_manifests([str(mdir)]), args.runs)),
            Row(f"podplay validate ({args.count} manifests)", time_command(podplay + ["validate", str(mdir)],
                                                                          args.runs, env=env)),
            Row(f"podplay plan, empty host ({args.count} pods)",
                time_command(podplay + ["plan", str(mdir)], args.runs, env=env)),
        ]
        time_command(podplay + ["up", "-q", str(mdir)], 1, env=env)
        rows.append(Row(f"podplay plan, all {args.count} pods running (no change)",
                        time_command(podplay + ["plan", str(mdir)], args.runs, env=env)))
        rows.append(Row(f"podplay up, all {args.count} pods running (no change)",
                        time_command(podplay + ["up", "-q", str(mdir)], args.runs, env=env)))
        print(table("Engine over the fake host", rows))

        start = [Row("podplay --help", time_command(podplay + ["--help"], args.runs * 3))]
        if shutil.which("podman"):
            start.append(Row("podman --help", time_command(["podman", "--help"], args.runs * 3)))
        print(table("Start-up", start, baseline="podman --help" if len(start) > 1 else None))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
