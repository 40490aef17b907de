"""Crash safety on the real stack: `podplay` killed at every step boundary, and a reboot.

The pod is small but has every kind of step: an init container, two app containers, a hostPort
(CNI attachment with portmap rules) and a configMap volume. For every step N of the plan, a real
`podplay up` (or `down`) runs with ``PODPLAY_FAILPOINT=before:#N`` / ``after:#N`` and dies by
SIGKILL at that boundary. Then the next `podplay up` must converge (the page is served on the
hostPort by exactly one instance of the pod) and `podplay down` must leave nothing: no
container, snapshot, pod volume, attachment, mount, runc state, conmon or container process,
cgroup, veth, IP allocation or iptables rule.

The reboot case kills every process of the pod, unmounts the test's mounts, wipes the run root
and the network state the kernel would lose (bridge, iptables rules), then expects the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from reconciler.desired import build_desired
from reconciler.manifests import load_manifests
from reconciler.observed import ContainerState
from tests.host.e2e.conftest import Stack, free_port, host_leftovers, http_get, pod_containers, wait_http
from tests.support.leaks import mounts_under, processes_mentioning

# The containers trap SIGTERM so that a teardown is quick (PID 1 ignores an untrapped SIGTERM,
# and every `down` would wait out the grace period).
POD = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: crash-page}}
data: {{index.html: "{page}\\n"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: init
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo init ran"]
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
    ports: [{{containerPort: 8080, hostPort: {port}}}]
    volumeMounts: [{{name: page, mountPath: /www}}]
  - name: side
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
  volumes:
  - name: page
    configMap: {{name: crash-page}}
"""


class Crash:
    def __init__(self, stack: Stack):
        self.stack = stack
        self.port = free_port()
        self.m = stack.write("crash.yaml", self.text("version 1"))
        self.uids: set[str] = set()

    def text(self, page: str) -> str:
        return POD.format(page=page, port=self.port)

    def write(self, page: str) -> None:
        self.m.write_text(self.text(page))
        self.uids |= {p.uid for p in build_desired(load_manifests([str(self.m)]).objects).pods.values()}

    def steps(self, *plan_args: str) -> list[str]:
        doc = json.loads(self.stack.run("plan", "-o", "json", *plan_args, str(self.m)).stdout)
        return [f"{s['step']['verb']} {s['step'].get('container', '')}".strip()
                for t in doc["transactions"] for s in t["steps"]]

    def killed(self, command: str, failpoint: str) -> None:
        res = self.stack.run(command, str(self.m), check=False, env={"PODPLAY_FAILPOINT": failpoint})
        assert res.returncode == -signal.SIGKILL, \
            f"{command} with {failpoint} was not killed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}"

    def assert_converged(self, page: str, context: str) -> None:
        self.stack.run("up", "--wait", str(self.m))
        assert wait_http(f"http://127.0.0.1:{self.port}/index.html") == page + "\n", context
        listed = pod_containers(self.stack, "crash")
        desired = build_desired(load_manifests([str(self.m)]).objects).pods["default/crash"]
        assert {c.pod_uid for c in listed} == {desired.uid}, f"{context}: more than one instance: {listed}"
        by_role = {(c.role, c.name): c for c in listed}
        assert set(by_role) == {("infra", ""), ("init", "init"), ("app", "web"), ("app", "side")}, context
        assert by_role[("init", "init")].exit_code == 0, context
        assert all(by_role[k].state == ContainerState.RUNNING for k in (("app", "web"), ("app", "side"))), context
        d = self.stack.drivers()
        try:
            assert [a.pod_uid for a in d.network.list_attachments()] == [desired.uid], context
            assert {s.key.split(".")[0] for s in d.snapshots.list_snapshots()} == {desired.uid}, context
        finally:
            d.close()
        again = self.stack.run("up", str(self.m))
        assert "No changes" in again.stdout, f"{context}: a converged host changed again:\n{again.stdout}"

    def assert_clean(self, context: str) -> None:
        self.stack.run("down", str(self.m))
        left = host_leftovers(self.stack)  # cgroups of every pod uid the journal saw included
        assert left == [], f"{context}: down left:\n  " + "\n  ".join(left)


def setup_create(c: Crash) -> str:
    return "version 1"


def setup_replace(c: Crash) -> str:
    c.stack.run("up", "--wait", str(c.m))
    c.write("version 2")  # a changed ConfigMap replaces the pod
    return "version 2"


def setup_down(c: Crash) -> str:
    c.stack.run("up", "--wait", str(c.m))
    return "version 1"


SCENARIOS = {"create": ("up", setup_create), "replace": ("up", setup_replace), "down": ("down", setup_down)}


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_killed_at_every_step_boundary_then_up_converges_and_down_leaves_nothing(stack, scenario, when):
    command, setup = SCENARIOS[scenario]
    c = Crash(stack)
    c.write("version 1")
    page = setup(c)
    steps = c.steps(*(["--down"] if command == "down" else []))
    # The pod is small but has every kind of step.
    assert len(steps) >= (10 if command == "down" else 12), steps
    started = time.monotonic()
    for n, step in enumerate(steps, start=1):
        context = f"{scenario}: killed {when} step #{n} ({step})"
        if n > 1:
            c.write("version 1")
            page = setup(c)
            assert c.steps(*(["--down"] if command == "down" else [])) == steps, "the plan is the same every time"
        c.killed(command, f"{when}:#{n}")
        c.assert_converged(page, context)
        c.assert_clean(context)
    print(f"\n{scenario}/{when}: {len(steps)} kills in {time.monotonic() - started:.0f}s")


def _pids_in_cgroups(uids: set[str], tag: str) -> set[int]:
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
        if any(f"/podplay/{tag}/{uid}/" in text for uid in uids):
            pids.add(int(pid))
    return pids


def simulate_reboot(stack: Stack, uids: set[str], *, keep_rules: bool = False) -> None:
    """What a reboot does to podplay's pods: every process gone (conmon, the containers, the
    infra), every mount gone, the run root (a tmpfs) empty, and the kernel's network state (the
    bridge, the veths, iptables rules) gone. The storage root survives. `keep_rules`: a host
    that restores its saved iptables rules at boot (or a run root wiped on its own)."""
    victims = {int(p.split(":")[0]) for p in processes_mentioning(str(stack.paths.root), str(stack.paths.runroot))}
    victims |= _pids_in_cgroups(uids, stack.paths.tag)
    assert victims, "the pod should have processes to kill"
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    roots = (str(stack.paths.root), str(stack.paths.runroot))
    while _pids_in_cgroups(uids, stack.paths.tag) or processes_mentioning(*roots):
        assert time.monotonic() < deadline, "processes survived SIGKILL"
        time.sleep(0.05)
    for m in sorted(mounts_under(stack.paths.root, stack.paths.runroot), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=True, capture_output=True)
    shutil.rmtree(stack.paths.runroot)
    stack.paths.runroot.mkdir()
    if keep_rules:
        return
    problems = stack.network.cleanup()  # the bridge, its rules and the allocations die with the kernel
    assert problems == []


@pytest.mark.slow
def test_reboot_then_up_converges_and_down_leaves_nothing(stack):
    c = Crash(stack)
    c.write("version 1")
    c.stack.run("up", "--wait", str(c.m))
    assert http_get(f"http://127.0.0.1:{c.port}/index.html") == "version 1\n"
    simulate_reboot(stack, c.uids)

    listed = pod_containers(stack, "crash")
    assert listed and all(x.state == ContainerState.UNKNOWN for x in listed), listed
    up = stack.run("up", "--wait", str(c.m))
    assert "replaced pod default/crash" in up.stdout, up.stdout
    c.assert_converged("version 1", "after a reboot")
    c.assert_clean("after a reboot")


@pytest.mark.slow
def test_reboot_with_a_killed_up_in_between(stack):
    """A reboot while an `up` was half-way: the journal says a create was open, the host has
    lost every process of it. The next `up` undoes what is left and converges."""
    c = Crash(stack)
    c.write("version 1")
    c.killed("up", "after:StartContainer")
    simulate_reboot(stack, c.uids)
    c.assert_converged("version 1", "after a reboot during up")
    c.assert_clean("after a reboot during up")


@pytest.mark.slow
def test_a_wiped_run_root_whose_iptables_rules_survived_converges_and_down_leaves_nothing(stack):
    c = Crash(stack)
    c.write("version 1")
    c.stack.run("up", "--wait", str(c.m))
    simulate_reboot(stack, c.uids, keep_rules=True)
    assert stack.network.iptables_rules(), "the old attachment's rules are still there"
    # Another pod comes up first and gets the address the old rules still forward the hostPort to.
    filler = stack.write("filler.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: filler}\nspec:\n"
                         "  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: c, image: "
                         "localhost/busybox:latest, imagePullPolicy: Never, command: [sleep, '600']}\n")
    stack.run("up", "--wait", str(filler))
    up = stack.run("up", "--wait", str(c.m))
    assert "replaced pod default/crash" in up.stdout, up.stdout
    for _ in range(3):  # every answer from the pod itself, none from the pod that now has its old address
        assert wait_http(f"http://127.0.0.1:{c.port}/index.html") == "version 1\n"
    stack.run("down", str(filler))
    c.assert_converged("version 1", "after a wiped run root")
    c.assert_clean("after a wiped run root")
