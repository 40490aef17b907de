"""Probes and rollouts on the real stack.

    python -m benchmarks.bench_rollout [--runs N]

* One probe, in process, against a running busybox httpd pod: httpGet and tcpSocket (podplay
  connects from a thread inside the pod's network namespace) side by side with an exec probe
  of `true` and with the exec probe an image would need without podplay's own HTTP probing
  (`wget -q -O- http://127.0.0.1:8080/`, both through `runc exec`).
* `podplay up` of a template change of a 3-replica Deployment with an httpGet readiness probe
  (period 1 s): the whole rolling update, pod by pod, waiting for readiness each time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row, table, time_call, time_command

IMAGE = "localhost/busybox:latest"


def deployment(version: str, replicas: int = 3) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "httpd", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", f"mkdir -p /www && echo {version} > /www/index.html && "
                                        "exec httpd -f -p 8080 -h /www"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
            }]}}}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rollouts", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_pods import _mounts_under
    from reconciler.health import Target, run_probe
    from reconciler.model.kube import ExecAction, HTTPGetAction, Probe, TCPSocketAction
    from reconciler.network.config import default_conflist
    from reconciler.paths import HostPaths
    from reconciler.reconcile import open_drivers
    from tests.support.images import ImageFactory
    from tests.support.registry import running_registry

    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-rollout-", dir="/tmp"))
    env = {**os.environ, "PODPLAY_ROOT": str(tmp / "root"), "PODPLAY_RUNROOT": str(tmp / "run"),
           "PODPLAY_NETWORK_DIR": str(tmp / "net")}
    env.pop("PODPLAY_DRIVER", None)
    podplay = [str(Path(sys.executable).with_name("podplay"))]
    bridge = "ppbench1"
    f = tmp / "web.yaml"
    try:
        paths = HostPaths(tmp / "root", tmp / "run", tmp / "net")
        (tmp / "net").mkdir(parents=True)
        doc = default_conflist("podplay", bridge, "10.221.8.0/24", str(paths.cni / "ipam"))
        (tmp / "net" / "podplay.conflist").write_text(json.dumps(doc))
        with running_registry() as reg:
            ref = ImageFactory(tmp / "build").push(reg, "bench/busybox").ref
            subprocess.run(podplay + ["pull", "-q", ref], env=env, check=True, capture_output=True)
            subprocess.run(podplay + ["tag", ref, IMAGE], env=env, check=True, capture_output=True)
        f.write_text(json.dumps(deployment("v0", replicas=1)))
        subprocess.run(podplay + ["up", "-q", "--wait", str(f)], env=env, check=True, capture_output=True)

        drivers = open_drivers(paths, "host")
        try:
            [c] = [c for c in drivers.runtime.list_containers() if c.name == "httpd"]
            info = drivers.runtime.infra_info(c.pod_uid)
            ip = next(a.status.ip for a in drivers.network.list_attachments() if a.pod_uid == c.pod_uid)
            from reconciler.model.kube import Container, ContainerPort

            spec = Container("httpd", IMAGE, ports=(ContainerPort(8080),))
            target = Target(c.id, "httpd", spec, info.namespaces["network"], ip)

            def probe(p: Probe):
                def go():
                    ok, message = run_probe(drivers, target, "readiness", p)
                    if not ok:
                        raise RuntimeError(message)
                return go

            rows = [
                Row("httpGet (podplay, from the pod netns)",
                    time_call(probe(Probe(http_get=HTTPGetAction(8080, "/index.html"))), args.runs)),
                Row("tcpSocket (podplay, from the pod netns)",
                    time_call(probe(Probe(tcp_socket=TCPSocketAction(8080))), args.runs)),
                Row("exec: true (runc exec)", time_call(probe(Probe(exec=ExecAction(("true",)))), args.runs)),
                Row("exec: wget -q -O- http://127.0.0.1:8080/ (runc exec)",
                    time_call(probe(Probe(exec=ExecAction(("wget", "-q", "-O-", "http://127.0.0.1:8080/")))),
                              args.runs)),
            ]
        finally:
            drivers.close()
        print(table("one probe", rows, baseline="exec: wget -q -O- http://127.0.0.1:8080/ (runc exec)"), flush=True)

        f.write_text(json.dumps(deployment("v0")))
        subprocess.run(podplay + ["up", "-q", "--wait", str(f)], env=env, check=True, capture_output=True)
        samples = []
        for i in range(args.rollouts):
            f.write_text(json.dumps(deployment(f"v{i + 1}")))
            samples += time_command(podplay + ["up", "-q", str(f)], 1, env=env)
        print(table("rolling update of 3 replicas (maxSurge 1, readiness httpGet every 1 s)",
                    [Row("podplay up (template change, waits for each replica)", samples)], unit="s"), flush=True)
    finally:
        subprocess.run(podplay + ["down", "-q", str(f)], env=env, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for m in sorted(_mounts_under(tmp), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
