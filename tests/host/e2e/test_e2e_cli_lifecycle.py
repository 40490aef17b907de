"""`podplay stop`, `start` and `rm` on the real stack, and what a later `up` does after them."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.host.e2e.conftest import PODPLAY, host_leftovers, wait_for

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def _pods(stack) -> dict:
    return {p["name"]: p for p in json.loads(stack.run("pods", "-o", "json").stdout)}


def _containers(stack) -> dict:
    return {c["name"]: c for c in json.loads(stack.run("ps", "-a", "-o", "json").stdout)}


def test_stop_then_start_then_up(stack):
    # "polite" ends on SIGTERM; "stubborn" (sleep as pid 1) ignores it and needs the SIGKILL.
    m = stack.write("svc.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: svc}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: polite, image: localhost/busybox:latest, command: ["sh", "-c", "{LOOP}"]}}
  - {{name: stubborn, image: localhost/busybox:latest, command: ["sleep", "100000"]}}
""")
    stack.run("up", "--wait", str(m))
    ip = _pods(stack)["svc"]["ip"]

    res = stack.run("stop", "svc")
    assert res.stdout == "stopped default/svc\n"
    assert stack.run("ps").stdout.splitlines()[1:] == []  # nothing of it runs
    ctrs = _containers(stack)
    assert (ctrs["polite"]["state"], ctrs["polite"]["exit_code"]) == ("exited", 0)  # its stop signal
    assert (ctrs["stubborn"]["state"], ctrs["stubborn"]["exit_code"]) == ("exited", 137)  # the grace ran out
    pod = _pods(stack)["svc"]
    assert (pod["status"], pod["ready"], pod["ip"]) == ("Stopped", 0, ip)  # the pod keeps its IP
    assert stack.run("pods").stdout.splitlines()[1].split()[1:3] == ["0/2", "Stopped"]
    assert stack.run("stop", "svc").stdout == "default/svc is not running\n"

    res = stack.run("start", "svc")
    assert res.stdout == "started default/svc\n"
    wait_for(lambda: _pods(stack)["svc"]["ready"] == 2, "both containers to run again")
    pod = _pods(stack)["svc"]
    assert (pod["status"], pod["ip"], pod["restarts"]) == ("Running", ip, 2)
    assert stack.run("start", "svc").stdout == "default/svc is already running\n"

    # After a stop, `up` converges: restartPolicy Always restarts the containers.
    stack.run("stop", "--timeout", "0", "svc")
    assert _containers(stack)["stubborn"]["exit_code"] == 137
    res = stack.run("up", str(m))
    assert "> restarted default/svc [polite, stubborn]" in res.stdout
    wait_for(lambda: _pods(stack)["svc"]["ready"] == 2, "up to restart both containers")

    # A pod that is not running is removed without -f, with everything it had on the host.
    stack.run("stop", "svc")
    assert stack.run("rm", "svc").stdout == "removed default/svc\n"
    assert _pods(stack) == {}
    assert host_leftovers(stack) == []


def test_rm_refuses_a_running_pod_unless_forced(stack):
    m = stack.write("gone.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: gone}}
spec:
  containers:
  - name: c
    image: localhost/busybox:latest
    command: ["sh", "-c", "{LOOP}"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
""")
    stack.run("up", "--wait", str(m))

    res = stack.run("rm", "gone", check=False)
    assert res.returncode == 1
    assert "default/gone is running" in res.stderr and "-f" in res.stderr
    assert _pods(stack)["gone"]["status"] == "Running"

    # Unknown names: exit 6, a suggestion, and nothing done to the pods that were named right.
    for verb in ("stop", "start", "rm"):
        res = stack.run(verb, "gone", "goen", check=False)
        assert res.returncode == 6, (verb, res.stderr)
        assert "no pod 'goen'; did you mean gone?" in res.stderr and "(pods: default/gone)" in res.stderr
        assert _pods(stack)["gone"]["status"] == "Running"

    res = stack.run("rm", "-f", "gone")
    assert res.stdout == "removed default/gone\n"
    assert _pods(stack) == {} and stack.run("ps", "-a", "-q").stdout == ""
    # Containers, infra, snapshots, pod volumes, network attachment, iptables rules: all gone.
    assert host_leftovers(stack) == []

    # While the manifest describes it, `up` creates it again.
    res = stack.run("up", "--wait", str(m))
    assert "+ created pod default/gone" in res.stdout
    assert _pods(stack)["gone"]["status"] == "Running"
    stack.run("down", str(m))


def test_start_rebuilds_the_pod_from_its_manifest(stack):
    # The ConfigMap lives in a file of its own: start finds it next to the pod's manifest.
    stack.write("cm.yaml", """
apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {word: hello}
""")
    m = stack.write("greeter.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: greeter}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:latest
    command: ["sh", "-c", "echo $WORD; {LOOP}"]
    env:
    - name: WORD
      valueFrom: {{configMapKeyRef: {{name: greeting, key: word}}}}
""")
    stack.run("up", "--wait", str(m.parent))
    stack.run("stop", "greeter")
    stack.run("start", "greeter")
    wait_for(lambda: _pods(stack)["greeter"]["status"] == "Running", "greeter to run again")
    assert stack.run("exec", "greeter", "--", "sh", "-c", "echo $WORD").stdout == "hello\n"

    # Once the manifest changed, start cannot bring back the old version: it says what will.
    stack.run("stop", "greeter")
    m.write_text(m.read_text().replace("echo $WORD;", "echo changed $WORD;"))
    res = stack.run("start", "greeter", check=False)
    assert res.returncode == 3
    assert f"{m} has changed since this pod was created; `podplay up {m}`" in res.stderr
    assert _pods(stack)["greeter"]["status"] == "Stopped"
    res = stack.run("up", "--wait", str(m.parent))
    assert "~ replaced pod default/greeter" in res.stdout
    assert _pods(stack)["greeter"]["status"] == "Running"
    stack.run("down", str(m.parent))


def test_stop_under_watch_is_undone_by_the_keeper(stack):
    m = stack.write("kept.yaml", f"""
apiVersion: v1
kind: Pod
metadata: {{name: kept}}
spec:
  containers:
  - {{name: c, image: localhost/busybox:latest, command: ["sh", "-c", "{LOOP}"]}}
""")
    keeper = subprocess.Popen([*PODPLAY, "watch", "--relist", "0.5", str(m.parent)], env=stack.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _pods(stack).get("kept", {}).get("status") == "Running", "watch to start the pod")
        res = stack.run("stop", "kept")
        assert res.stdout == "stopped default/kept\n"
        assert f"`podplay watch` (pid {keeper.pid}) keeps default/kept converged" in res.stderr
        # Convergence: restartPolicy Always, so the keeper starts it again.
        wait_for(lambda: _pods(stack)["kept"]["status"] == "Running" and _pods(stack)["kept"]["restarts"] == 1,
                 "the keeper to restart the stopped container")
    finally:
        keeper.send_signal(signal.SIGTERM)
        keeper.wait(timeout=60)
    stack.run("down", str(m))
