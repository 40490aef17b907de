"""`podplay ps` and `podplay pods` on the real stack: columns, JSON, exit codes, restarts."""

from __future__ import annotations

import ipaddress
import json
import os
import re

from tests.host.e2e.conftest import free_port, wait_exited, wait_for, wait_http

# A container that ends at once on its stop signal (a shell as pid 1 ignores SIGTERM otherwise).
LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def test_ps_and_pods_show_what_runs(stack):
    port = free_port()
    m = stack.write("app.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: localhost/busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/"]
    ports: [{{containerPort: 8080, hostPort: {port}}}]
  - name: side
    image: localhost/busybox:latest
    command: ["sh", "-c", "{LOOP}"]
---
apiVersion: v1
kind: Pod
metadata: {{name: job}}
spec:
  restartPolicy: Never
  containers:
  - name: run
    image: localhost/busybox:latest
    command: ["sh", "-c", "exit 3"]
""")
    stack.run("up", str(m))  # not --wait: the job fails on purpose
    wait_http(f"http://127.0.0.1:{port}/etc/hostname")
    wait_for(lambda: len(stack.run("ps").stdout.splitlines()) == 3, "web's containers to run")
    wait_exited(stack, "job", "run")
    subnet = ipaddress.ip_network(stack.network.subnet)

    # Default: the running app containers; the exited job is not listed.
    lines = stack.run("ps").stdout.splitlines()
    assert lines[0].split() == ["POD", "CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS", "PORTS", "IP", "AGE"]
    rows = [line.split() for line in lines[1:]]
    assert [r[:2] for r in rows] == [["web", "httpd"], ["web", "side"]]
    for r in rows:
        assert r[2:6] == ["localhost/busybox:latest", "running", "true", "0"]
        assert r[6] == f"0.0.0.0:{port}->8080/tcp"
        assert ipaddress.ip_address(r[7]) in subnet
        assert re.fullmatch(r"\d+(s|m\d*s?)", r[8])
    web_ip = rows[0][7]

    # -a: exited containers too, with their exit code; --infra: each pod's infra container.
    text = stack.run("ps", "-a", "--infra").stdout
    job = [line for line in text.splitlines() if line.startswith("job ")]
    assert [line.split()[1] for line in job] == ["(infra)", "run"]
    assert "exited (3)" in job[1]
    assert "running" in job[0]

    # JSON: the documented field names; -q: the same ids.
    data = json.loads(stack.run("ps", "-a", "-o", "json").stdout)
    assert {d["name"] for d in data} == {"httpd", "side", "run"}
    run = next(d for d in data if d["name"] == "run")
    assert set(run) == {"id", "namespace", "pod", "pod_uid", "name", "role", "image", "image_id", "state",
                        "exit_code", "oom_killed", "ready", "restarts", "restart_at", "pid", "started_at",
                        "finished_at", "ip", "ports", "source"}
    assert (run["namespace"], run["pod"], run["state"], run["exit_code"], run["role"]) == (
        "default", "job", "exited", 3, "app")
    assert run["finished_at"].endswith("Z") and run["pid"] is None
    assert run["source"] == str(m)
    httpd = next(d for d in data if d["name"] == "httpd")
    assert httpd["ports"] == [{"host_ip": "", "host_port": port, "container_port": 8080, "protocol": "tcp"}]
    assert httpd["ip"] == web_ip and httpd["image_id"].startswith("sha256:") and httpd["pid"] > 0
    ids = stack.run("ps", "-a", "-q").stdout.split()
    assert sorted(ids) == sorted(d["id"] for d in data)

    # pods: one line each, READY and STATUS, the manifest it came from (relative to the cwd).
    res = stack.run("pods")
    table = {line.split()[0]: line.split() for line in res.stdout.splitlines()}
    assert table["NAME"] == ["NAME", "READY", "STATUS", "RESTARTS", "IP", "AGE", "OWNER", "SOURCE"]
    assert table["web"][6] == "Pod/web"
    assert table["web"][1:5] == ["2/2", "Running", "0", web_ip]
    assert table["job"][1:4] == ["0/1", "Failed", "0"]
    assert os.path.realpath(table["web"][7]) == os.path.realpath(m)
    pods = {p["name"]: p for p in json.loads(stack.run("pods", "-o", "json").stdout)}
    assert pods["web"]["status"] == "Running" and pods["web"]["ready"] == 2
    assert [c["name"] for c in pods["web"]["containers"]] == ["httpd", "side"]
    assert pods["job"]["containers"] == [{"name": "run", "state": "exited", "exit_code": 3, "restarts": 0,
                                          "ready": False, "restart_at": None}]
    assert pods["job"]["owner"] == "Pod/default/job" and pods["job"]["source"] == str(m)
    assert stack.run("pods", "-q").stdout.split() == ["default/job", "default/web"]

    # Naming pods filters; an unknown one is exit 6.
    assert [line.split()[0] for line in stack.run("ps", "-a", "job").stdout.splitlines()[1:]] == ["job"]
    missing = stack.run("ps", "jbo", check=False)
    assert missing.returncode == 6 and "did you mean job?" in missing.stderr
    stack.run("down", str(m))


def test_namespaces_get_a_column_and_a_filter(stack):
    m = stack.write("ns.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: api}}
spec:
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sh", "-c", "{LOOP}"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: api, namespace: team}}
spec:
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sh", "-c", "{LOOP}"]}}
""")
    stack.run("up", "--wait", str(m))
    lines = stack.run("ps").stdout.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "POD"]
    assert sorted(line.split()[:3] for line in lines[1:]) == [["default", "api", "c"], ["team", "api", "c"]]
    only = stack.run("pods", "-n", "team").stdout.splitlines()
    assert only[0].split()[0] == "NAME" and [line.split()[0] for line in only[1:]] == ["api"]
    # A bare name in two namespaces must be qualified.
    res = stack.run("logs", "api", check=False)
    assert res.returncode == 2 and "default, team" in res.stderr
    assert stack.run("exec", "team/api/c", "--", "cat", "/etc/hostname").stdout.strip() == "api"
    stack.run("down", str(m))


def test_restarts_count_when_up_restarts_an_exited_container(stack):
    # First run: exits 1. Its restart (same pod, same emptyDir) finds the marker and keeps running.
    m = stack.write("flaky.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: flaky}}
spec:
  restartPolicy: OnFailure
  containers:
  - name: worker
    image: localhost/busybox:latest
    command: ["sh", "-c", "if [ ! -e /state/ran ]; then touch /state/ran; exit 1; fi; {LOOP}"]
    volumeMounts: [{{name: state, mountPath: /state}}]
  volumes:
  - {{name: state, emptyDir: {{}}}}
""")
    stack.run("up", str(m))
    wait_exited(stack, "flaky", "worker")
    before = json.loads(stack.run("pods", "-o", "json").stdout)[0]
    assert before["status"] == "Failed" and before["restarts"] == 0

    again = stack.run("up", str(m))
    assert "> restarted default/flaky [worker]" in again.stdout
    row = wait_for(lambda: next((r for r in json.loads(stack.run("ps", "-o", "json").stdout)
                                 if r["name"] == "worker"), None), "the restarted worker to run")
    assert (row["state"], row["restarts"]) == ("running", 1)
    line = stack.run("pods").stdout.splitlines()[1].split()
    assert line[:4] == ["flaky", "1/1", "Running", "1"]
    stack.run("down", str(m))
