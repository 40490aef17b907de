"""`validate` and `plan` of 200 files shaped like real-world manifests, beside the 200 plain pods
of bench_engine (same machine, same run).

    python -m benchmarks.bench_realworld [--runs N] [--count N]

The files cycle through six shapes taken from what users bring: a microservices-demo Deployment
(gRPC probes, resources, env), a ConfigMap with a Deployment that mounts it and a downwardAPI
volume, a Pod with a native sidecar and lifecycle hooks, a Secret with a Pod that projects it
beside a ConfigMap and the downward API, a file in podman's dialect (camelCase names,
imagePullPolicy: missing, protocol: udp: warnings folded into one line each), and a two-replica
Deployment with HTTP probes and a preStop hook. `plan` runs against the file-backed fake host.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_engine import write_manifests as write_plain
from benchmarks.harness import Row, table, time_command

GRPC_SERVICE = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: svc-{i}, labels: {{app: svc-{i}}}}}
spec:
  selector: {{matchLabels: {{app: svc-{i}}}}}
  template:
    metadata: {{labels: {{app: svc-{i}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      securityContext: {{runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true, fsGroup: 1000}}
      containers:
      - name: server
        image: registry.test/microservices-demo/svc{i}:v0.10.1
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL]}}
          readOnlyRootFilesystem: true
        ports: [{{containerPort: 9555}}]
        env:
        - {{name: PORT, value: "9555"}}
        - {{name: DISABLE_PROFILER, value: "1"}}
        - name: MEMORY_LIMIT
          valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
        readinessProbe: {{grpc: {{port: 9555}}, periodSeconds: 5}}
        livenessProbe: {{grpc: {{port: 9555}}, periodSeconds: 5}}
        resources:
          requests: {{cpu: 100m, memory: 64Mi}}
          limits: {{cpu: 200m, memory: 128Mi}}
"""

CONFIGURED = """apiVersion: v1
kind: ConfigMap
metadata: {{name: conf-{i}}}
data:
  app.properties: |
    mode=production
    shard={i}
  log.level: info
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: conf-app-{i}}}
spec:
  selector: {{matchLabels: {{app: conf-app-{i}}}}}
  template:
    metadata: {{labels: {{app: conf-app-{i}, tier: back}}, annotations: {{build: "{i}"}}}}
    spec:
      containers:
      - name: app
        image: registry.test/conf-app:{i}
        envFrom: [{{configMapRef: {{name: conf-{i}}}}}]
        volumeMounts:
        - {{name: conf, mountPath: /etc/app}}
        - {{name: podinfo, mountPath: /etc/podinfo}}
      volumes:
      - name: conf
        configMap: {{name: conf-{i}, items: [{{key: app.properties, path: app.properties}}]}}
      - name: podinfo
        downwardAPI:
          items:
          - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
          - {{path: annotations, fieldRef: {{fieldPath: metadata.annotations}}}}
"""

SIDECAR = """apiVersion: v1
kind: Pod
metadata: {{name: side-{i}, labels: {{app: side-{i}}}}}
spec:
  initContainers:
  - name: migrate
    image: registry.test/migrate:{i}
    command: [sh, -c, "echo migrated"]
  - name: log-shipper
    image: registry.test/fluent-bit:3.0
    restartPolicy: Always
    volumeMounts: [{{name: logs, mountPath: /var/log/app}}]
    lifecycle: {{preStop: {{sleep: {{seconds: 2}}}}}}
  containers:
  - name: app
    image: registry.test/app:{i}
    ports: [{{name: http, containerPort: 8080}}]
    volumeMounts: [{{name: logs, mountPath: /var/log/app}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo started > /tmp/started"]}}}}
      preStop: {{httpGet: {{path: /drain, port: http}}}}
    readinessProbe: {{httpGet: {{path: /ready, port: http}}}}
  volumes:
  - {{name: logs, emptyDir: {{}}}}
"""

PROJECTED = """apiVersion: v1
kind: Secret
metadata: {{name: creds-{i}}}
type: Opaque
stringData: {{username: app{i}, password: s3cret-{i}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca-{i}}}
data: {{ca.crt: "-----BEGIN CERTIFICATE-----"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: proj-{i}, labels: {{app: proj-{i}}}}}
spec:
  containers:
  - name: app
    image: registry.test/worker:{i}
    env:
    - name: USER
      valueFrom: {{secretKeyRef: {{name: creds-{i}, key: username}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    resources: {{limits: {{memory: 256Mi}}}}
    volumeMounts: [{{name: all-in-one, mountPath: /projected, readOnly: true}}]
  volumes:
  - name: all-in-one
    projected:
      sources:
      - secret: {{name: creds-{i}, items: [{{key: password, path: secrets/password}}]}}
      - configMap: {{name: ca-{i}}}
      - downwardAPI:
          items:
          - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
          - {{path: mem, resourceFieldRef: {{containerName: app, resource: limits.memory, divisor: 1Mi}}}}
"""

PODMAN = """apiVersion: v1
kind: Pod
metadata:
  name: podmanPod{i}
spec:
  restartPolicy: Never
  containers:
  - name: testCtr
    image: registry.test/busybox:latest
    imagePullPolicy: missing
    command: [top]
    ports:
    - {{containerPort: 5353, protocol: udp}}
"""

WEB = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{i}}}
spec:
  replicas: 2
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: web-{i}}}}}
  template:
    metadata: {{labels: {{app: web-{i}}}}}
    spec:
      containers:
      - name: nginx
        image: registry.test/nginx:1.27
        ports: [{{name: http, containerPort: 80}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}, initialDelaySeconds: 2}}
        livenessProbe: {{tcpSocket: {{port: 80}}}}
        lifecycle: {{preStop: {{exec: {{command: [nginx, -s, quit]}}}}}}
        resources: {{requests: {{cpu: 50m, memory: 32Mi}}}}
"""

SHAPES = (GRPC_SERVICE, CONFIGURED, SIDECAR, PROJECTED, PODMAN, WEB)


def write_realworld(d: Path, n: int) -> None:
    for i in range(n):
        (d / f"m-{i:03}.yaml").write_text(SHAPES[i % len(SHAPES)].format(i=i))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-"))
    try:
        real, plain = tmp / "real", tmp / "plain"
        real.mkdir()
        plain.mkdir()
        write_realworld(real, args.count)
        write_plain(plain, args.count)
        env = {**os.environ, "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
               "PODPLAY_ROOT": str(tmp / "root"), "PODPLAY_RUNROOT": str(tmp / "run")}
        podplay = [str(Path(sys.executable).with_name("podplay"))]
        rows = []
        for what, d in ((f"{args.count} plain pods (bench_engine's)", plain),
                        (f"{args.count} real-world-shaped files", real)):
            rows.append(Row(f"podplay validate, {what}", time_command(podplay + ["validate", str(d)], args.runs,
                                                                      env=env)))
            rows.append(Row(f"podplay plan, empty host, {what}", time_command(podplay + ["plan", str(d)], args.runs,
                                                                             env=env)))
        print(table("validate + plan: real-world-shaped manifests beside plain pods (fake host)", rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
