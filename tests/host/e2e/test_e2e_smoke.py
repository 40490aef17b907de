"""The first thing a user does: up a pod with a hostPort, reach it, up again (nothing), down."""

from __future__ import annotations

from tests.host.e2e.conftest import free_port, http_get


def test_up_reach_idempotent_down(stack):
    port = free_port()
    m = stack.write("web.yaml", f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: page}}
data: {{index.html: "hello from a configmap\\n"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: httpd
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{{containerPort: 8080, hostPort: {port}}}]
    volumeMounts: [{{name: page, mountPath: /www}}]
  volumes:
  - name: page
    configMap: {{name: page}}
""")
    first = stack.run("up", "--wait", str(m))
    assert "+ created pod default/web" in first.stdout
    assert http_get(f"http://127.0.0.1:{port}/index.html") == "hello from a configmap\n"
    again = stack.run("up", str(m))
    assert "No changes" in again.stdout
    stack.run("down", str(m))
    assert not stack.containers()
