"""Probes on the real stack: exec through runc exec, httpGet and tcpSocket from inside the pod's
network namespace (busybox has neither curl nor a probe helper), startup gating, `up --wait`
waiting for readiness, and a failing liveness probe restarting its container under `watch`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess

from tests.host.e2e.conftest import PODPLAY, wait_for

IMAGE = "localhost/busybox:latest"


def pod(name: str, command: str, probes: str, ports: str = "") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", {json.dumps(command)}]{ports}
{probes}"""


def exec_in(stack, pod_name: str, *argv: str) -> int:
    d = stack.drivers()
    try:
        [c] = [c for c in d.runtime.list_containers() if c.pod == f"default/{pod_name}" and c.name == "app"]
        return d.runtime.exec_in(c.id, list(argv))
    finally:
        d.close()


def pods_json(stack) -> dict[str, dict]:
    res = stack.run("pods", "-o", "json")
    return {p["name"]: p for p in json.loads(res.stdout)}


def test_http_readiness_from_inside_the_pod_netns_gates_up_wait(stack):
    # httpd serves an emptyDir that starts empty: GET /ready.html is 404 until the file exists.
    m = stack.write("web.yaml", pod("web", "httpd -f -p 8080 -h /www", """    ports: [{name: http, containerPort: 8080}]
    volumeMounts: [{name: www, mountPath: /www}]
    readinessProbe:
      httpGet: {path: /ready.html, port: http, httpHeaders: [{name: X-Probe, value: podplay}]}
      periodSeconds: 1
  volumes:
  - name: www
    emptyDir: {}
"""))
    res = stack.run("up", "--wait", "--timeout", "4", str(m), check=False)
    assert res.returncode == 3, res
    assert "default/web" in res.stderr and "404" in res.stderr, res.stderr
    assert exec_in(stack, "web", "sh", "-c", "echo ok > /www/ready.html") == 0
    res = stack.run("up", "--wait", "--timeout", "60", str(m))
    assert "No changes" in res.stdout
    stack.run("down", str(m))


def test_tcp_socket_probe_and_a_closed_port(stack):
    m = stack.write("tcp.yaml", pod("tcp", "httpd -f -p 9000 -h /", """    readinessProbe:
      tcpSocket: {port: 9000}
      periodSeconds: 1
""") + "---\n" +
        pod("closed", "httpd -f -p 9000 -h /", """    readinessProbe:
      tcpSocket: {port: 9001}
      periodSeconds: 1
"""))
    res = stack.run("up", "--wait", "--timeout", "5", str(m), check=False)
    assert res.returncode == 3
    unready = [line for line in res.stderr.splitlines() if line.startswith("! default/")]
    assert len(unready) == 1 and unready[0].startswith("! default/closed:"), res.stderr
    assert "9001" in unready[0] and "refused" in unready[0].lower(), unready
    stack.run("down", str(m))


def test_startup_probe_holds_liveness_and_readiness_back(stack):
    # Liveness would fail (and restart the container) if it ran before startup passed.
    m = stack.write("slow.yaml", pod("slow", "sleep 100000", """    startupProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1000
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"""))
    res = stack.run("up", "--wait", "--timeout", "4", str(m), check=False)
    assert res.returncode == 3 and "default/slow" in res.stderr, res.stderr
    assert pods_json(stack)["slow"]["restarts"] == 0
    assert exec_in(stack, "slow", "touch", "/tmp/started") == 0
    stack.run("up", "--wait", "--timeout", "60", str(m))
    assert pods_json(stack)["slow"]["restarts"] == 0
    stack.run("down", str(m))


def test_failing_exec_liveness_probe_restarts_the_container_under_watch(stack):
    # Healthy for the first moments of each run, then the liveness file goes away.
    command = "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 100000"
    m = stack.write("live.yaml", pod("live", command, """    livenessProbe:
      exec: {command: ["cat", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 2
"""))
    watch = subprocess.Popen([*PODPLAY, "watch", "--relist", "0.5", str(m)], env=stack.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: pods_json(stack).get("live", {}).get("restarts", 0) >= 1, "a liveness restart", 90)
        # `ps` lists running containers: wait out the moment a restart stops and starts it again.
        line = wait_for(lambda: next((line for line in stack.run("ps").stdout.splitlines()
                                      if line.split()[:2] == ["live", "app"]), None), "live/app to be listed")
        assert int(line.split()[5]) >= 1, line  # RESTARTS, after STATE and READY
        status = stack.run("status").stdout
        assert "live" in status
    finally:
        watch.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=60)
    assert "unhealthy" in err and "liveness probe failed 2 times" in err, err[-3000:]
    stack.run("down", str(m))


def pod_netns(stack, pod_name: str) -> str:
    d = stack.drivers()
    try:
        [uid] = {c.pod_uid for c in d.runtime.list_containers() if c.pod == f"default/{pod_name}"}
        return d.runtime.infra_info(uid).namespaces["network"]
    finally:
        d.close()


def test_grpc_probe_asks_a_health_server_in_the_pod_netns(stack):
    # busybox cannot serve gRPC: the test runs the health server itself, bound inside the pod's
    # network namespace (on all its addresses, as a server in the pod would be), and nowhere else.
    from tests.support.grpc_health import NOT_SERVING, SERVING, HealthServer

    m = stack.write("grpc.yaml", pod("grpc", "sleep 100000", """    readinessProbe:
      grpc: {port: 50051}
      periodSeconds: 1
    livenessProbe:
      grpc: {port: 50051, service: liveness}
      periodSeconds: 1
      failureThreshold: 1000
"""))
    stack.run("up", str(m))
    res = stack.run("up", "--wait", "--timeout", "3", str(m), check=False)
    assert res.returncode == 3 and "failed to connect service" in res.stderr, res.stderr
    with HealthServer({"": SERVING, "liveness": NOT_SERVING}, host="0.0.0.0", port=50051,
                      netns=pod_netns(stack, "grpc")) as server:
        with socket.socket() as s:  # the host's namespace has no such server
            assert s.connect_ex(("127.0.0.1", 50051)) != 0
        stack.run("up", "--wait", "--timeout", "60", str(m))
        assert pods_json(stack)["grpc"]["ready"] == 1
        assert "" in server.calls and "liveness" in server.calls
        # The liveness probe asked for its service, and was told NOT_SERVING (failureThreshold is high).
        from reconciler.health import probe_details
        from reconciler.state import StateStore

        state = StateStore(stack.paths.state_db)
        try:
            [uid] = {c.pod_uid for c in stack.containers() if c.pod == "default/grpc"}
            [record] = probe_details(state, uid).values()
        finally:
            state.close()
        assert record.tracks["liveness"].message == 'service unhealthy (responded with "NOT_SERVING")'
    stack.run("stop", "-t", "0", "grpc")
    stack.run("down", str(m))
