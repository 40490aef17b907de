"""podman's kube-play test manifests, played by `podplay up` on the real stack.

The corpus (/work/shared/fixtures/podman-kube/, read in place) says, for each manifest, what
podman's own test expects. Every fixture podplay accepts is played here: as it is, or with the
documented smallest edit the loader test (tests/unit/manifests/test_podman_corpus.py, EXPECT)
names for podman's dialect (lower-case names, imagePullPolicy: missing, …; the fixed files pass
--strict). The dialect itself, played unedited, is the last test of this file. Fixed hostPorts are replaced by free
ones (tests run in parallel); nothing else is changed. The fixtures podplay rejects outright
(04, 05, 06, 14, 17, 25, 28) are covered by that loader test.

Each check asserts what podman's test asserts where podplay promises the same; where podplay
differs (replicas, naming, secret modes, podman-only annotations), it asserts podplay's
behaviour and the comment says why. Pods are stopped with `podplay stop -t 0` before `down`
(busybox's top and sleep ignore SIGTERM as PID 1, and the grace period is not what these tests
are about), except where the graceful shutdown is the point (16).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.observed import ContainerState
from tests.host.e2e.conftest import (
    PODPLAY,
    Stack,
    container_logs,
    exec_in,
    find_container,
    host_leftovers,
    pod_cgroup,
    pod_containers,
    rewrite_host_ports,
    wait_exited,
    wait_for,
)
from tests.unit.manifests.test_podman_corpus import EXPECT, FIXTURES


def _played() -> list[str]:
    """Fixtures podplay accepts, as they are or after their documented fix."""
    return sorted(name for name, (errors, _, fix, _) in EXPECT.items() if not errors or fix)


def prepare(stack: Stack, name: str) -> tuple[Path, dict[int, int]]:
    text = (FIXTURES / name).read_text()
    for old, new in EXPECT[name][2]:
        text = text.replace(old, new)
    text, ports = rewrite_host_ports(text)
    return stack.write(name, text), ports


def pods_json(stack: Stack) -> list[dict]:
    return json.loads(stack.run("pods", "-o", "json").stdout)


def ps_json(stack: Stack) -> list[dict]:
    return json.loads(stack.run("ps", "-a", "--infra", "-o", "json").stdout)


def ns_of(stack: Stack, pod: str, container: str, kind: str) -> str:
    return exec_in(stack, pod, container, "readlink", f"/proc/self/ns/{kind}").stdout.strip()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback only
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# --- checks, one per fixture --------------------------------------------------------------------------
# Each gets the stack, the manifest it played and the hostPort mapping; `up` has run (with --wait
# unless the fixture is in NO_WAIT).

def check_01(stack, m, ports):
    # podman names the unnamed container "libpod-test-"; podplay needs a name (fix: "app").
    c = find_container(stack, "libpod-test", "app")
    assert c.state == ContainerState.RUNNING
    assert c.labels["io.podplay.stop-signal"] == "SIGTERM", "the default stop signal, as podman says"


def check_02(stack, m, ports):
    # --no-pod-prefix: podman's container is named exactly after the spec. podplay never prefixes:
    # a container is always <pod>/<name>.
    rows = [r for r in ps_json(stack) if r["role"] == "app"]
    assert [(r["pod"], r["name"]) for r in rows] == [("libpod-test", "simplewithoutpodprefix")]


def check_03(stack, m, ports):
    # The pod keeps its name although its container has the same one; the container runs the
    # image's CMD (sh), which ends at once: restartPolicy Always restarts it.
    c = wait_exited(stack, "podname-equals-ctrname", "podname-equals-ctrname")
    assert c.exit_code == 0 and c.pod == "default/podname-equals-ctrname"
    again = stack.run("up", str(m))
    assert "> restarted default/podname-equals-ctrname [podname-equals-ctrname] (exited)" in again.stdout


def check_07(stack, m, ports):
    # shareProcessNamespace: the pod shares ipc, net, uts and pid (held by the infra container).
    infra = next(c for c in pod_containers(stack, "testpod1") if c.role == "infra")
    for kind in ("ipc", "net", "uts", "pid"):
        assert ns_of(stack, "testpod1", "testimage", kind) == os.readlink(f"/proc/{infra.pid}/ns/{kind}"), kind
    assert exec_in(stack, "testpod1", "testimage", "cat", "/proc/1/cmdline").stdout.startswith("/catatonit")
    # The explicit HOSTNAME env wins over the pod's hostname, as in podman.
    assert exec_in(stack, "testpod1", "testimage", "sh", "-c", "echo $HOSTNAME; hostname").stdout == \
        "label-pod\ntestpod1\n"


def _deployment_runs(stack, deployment: str, container: str):
    # podman names a Deployment's single pod "<deployment>-pod"; podplay names replicas
    # "<deployment>-<ordinal>".
    assert [p["name"] for p in pods_json(stack)] == [f"{deployment}-0"]
    assert find_container(stack, f"{deployment}-0", container).state == ContainerState.RUNNING


def check_08(stack, m, ports):
    # The liveness probe (echo hello) passes: the container keeps running without restarts.
    # (Probe-driven restarts are tested in test_e2e_probes.py.)
    _deployment_runs(stack, "liveness-probe", "testimage")
    assert find_container(stack, "liveness-probe-0", "testimage").restart_count == 0


def check_09(stack, m, ports):
    # Fixed to restartPolicy Always (a Deployment's pods must have it). podman reports the
    # failing liveness probe as "unhealthy"; podplay restarts such a container under `watch`
    # (test_e2e_probes.py). Here: it is played and runs.
    _deployment_runs(stack, "liveness-unhealthy-probe", "testimage")


def check_10(stack, m, ports):
    # The startup probe (cat /testfile) gates readiness: `up --wait` keeps waiting until the file
    # exists, as podman's health stays "starting" until then.
    waiter = subprocess.Popen([*PODPLAY, "up", "--wait", "--timeout", "300", str(m)], env=stack.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: find_container(stack, "startup-healthy-probe-0", "testimage").state
                 == ContainerState.RUNNING, "the container to run")
        for _ in range(3):  # several probe periods pass: still waiting
            assert waiter.poll() is None, waiter.communicate()
            time.sleep(1)
        # Every 3 failed periods the startup probe has the container restarted (as the kubelet
        # does), so the file may land in a container that is just being replaced: write it
        # until the probe passes and `up --wait` returns.
        deadline = time.monotonic() + 120
        while waiter.poll() is None and time.monotonic() < deadline:
            exec_in(stack, "startup-healthy-probe-0", "testimage", "sh", "-c", "echo > /testfile", check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                waiter.wait(timeout=5)
        out, err = waiter.communicate(timeout=10)
        assert waiter.returncode == 0, out + err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


def check_11(stack, m, ports):
    assert exec_in(stack, "mypod", "myctr", "cat", "/etc/foo/username", "/etc/foo/password").stdout == \
        "user54f41d12e8fa"
    # podman writes secret files 0644; podplay's default is 0400 (owner-only), and on a tmpfs.
    assert exec_in(stack, "mypod", "myctr", "stat", "-L", "-c", "%a", "/etc/foo/username").stdout == "400\n"
    ro = exec_in(stack, "mypod", "myctr", "touch", "/etc/foo/new", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr


def check_12(stack, m, ports):
    def cat(path):
        return exec_in(stack, "mypod2", "myctr", "cat", path).stdout

    assert cat("/etc/foo/username") == "user"
    assert cat("/etc/bar/username") == cat("/etc/baz/username") == "cdoern"
    assert cat("/etc/bar/note") == "kube secrets are cool!\n"
    assert cat("/etc/baz/plain_note") == "This is a test", "stringData becomes a file too"


def check_13(stack, m, ports):
    # An optional secret that does not exist: the pod starts; the volume is empty (Kubernetes'
    # behaviour; podman skips the mount).
    assert exec_in(stack, "mypod", "myctr", "ls", "/etc/foo").stdout == ""


def check_15(stack, m, ports):
    # podman's test fills the volume first; so does this one (the claim exists, with content).
    assert exec_in(stack, "testpod", "testctr", "cat", "/var/123.txt").stdout == "hi"
    assert exec_in(stack, "testpod", "testctr", "ls", "/var").stdout == "123.txt\n", "only the subpath is visible"


def setup_15(stack):
    claim = stack.paths.claims / "default" / "testvol" / "testing" / "onlythis"
    claim.mkdir(parents=True)
    (claim / "123.txt").write_text("hi")
    unrelated = stack.paths.claims / "default" / "unrelated"
    unrelated.mkdir(parents=True)


def teardown_15(stack, m):
    # `kube down --force` removes testvol but not unrelated volumes: so does `down --volumes`.
    stack.run("down", "--volumes", str(m))
    assert not (stack.paths.claims / "default" / "testvol").exists()
    assert (stack.paths.claims / "default" / "unrelated").is_dir()
    (stack.paths.claims / "default" / "unrelated").rmdir()


def check_16(stack, m, ports):
    wait_for(lambda: find_container(stack, "testpod", "testctr").state == ContainerState.RUNNING, "the pod")


def teardown_16(stack, m):
    # `down` sends SIGTERM and waits: the trap writes TERMINATED to the claim, which survives.
    stack.run("down", str(m))
    assert (stack.paths.claims / "default" / "testvol" / "termfile").read_text() == "TERMINATED\n"
    stack.run("down", "--volumes", str(m))


def check_18(stack, m, ports):
    assert exec_in(stack, "youthfulshaw-pod", "youthfulshaw", "cat", "/test/foo").stdout == "bar"
    assert exec_in(stack, "youthfulshaw-pod", "youthfulshaw", "stat", "-L", "-c", "%a", "/test/foo").stdout == "644\n"


def check_19(stack, m, ports):
    # containerPort alone is not published on the host; the server is reachable on the pod's IP.
    (pod,) = pods_json(stack)
    assert pod["ports"] == []
    assert wait_for(lambda: http_status(f"http://{pod['ip']}:80/"), "httpd on the pod IP") == 404


def check_20(stack, m, ports):
    # hostPort 19001 → 80, on every address of the host: curl localhost:<port> succeeds (httpd
    # answers 404 for its empty document root, which is an answer from the container).
    port = ports[19001]
    assert wait_for(lambda: http_status(f"http://127.0.0.1:{port}/"), "the hostPort") == 404
    (pod,) = pods_json(stack)
    assert pod["ports"] == [{"host_ip": "", "host_port": port, "container_port": 80, "protocol": "tcp"}]


def check_21(stack, m, ports):
    # Fixed with protocol UDP. The udp hostPort is published for the pod (19009 → 19008/udp). The
    # echo servers themselves cannot run here: busybox-static's nc has neither -u nor -k, so both
    # containers stop at its usage message (podman's test image has a full nc).
    (pod,) = pods_json(stack)
    assert pod["ports"] == [{"host_ip": "", "host_port": ports[19009], "container_port": 19008, "protocol": "udp"}]
    for name in ("udp-echo", "tcp-echo"):
        c = wait_exited(stack, "network-echo", name)
        assert c.exit_code == 1 and "Usage: nc" in container_logs(stack, "network-echo", name)


def check_22(stack, m, ports):
    # hostPID: the container gets no pid namespace of its own (podman: PidMode=host), as its
    # configuration shows. podman's test prints `echo $$`; podplay expands the command as the
    # kubelet does, where "$$" is an escaped "$": the shell is given `echo $` and prints "$".
    c = wait_exited(stack, "test-hostpid", "testimage")
    assert c.exit_code == 0
    assert container_logs(stack, "test-hostpid", "testimage") == "$\n"
    config = json.loads((stack.paths.containers / c.id / "config.json").read_text())
    kinds = {n["type"] for n in config["linux"]["namespaces"]}
    assert "pid" not in kinds and {"network", "ipc", "uts"} <= kinds


def check_23(stack, m, ports):
    # hostIPC: the container's ipc namespace is the host's.
    wait_exited(stack, "test-hostipc", "testimage")
    assert container_logs(stack, "test-hostipc", "testimage").rstrip().endswith(os.readlink("/proc/self/ns/ipc"))


def check_24(stack, m, ports):
    wait_exited(stack, "test-sysctl", "testimage")
    assert container_logs(stack, "test-sysctl", "testimage") == "kernel.msgmax = 65535\nnet.core.somaxconn = 65535\n"


def check_26(stack, m, ports):
    wait_exited(stack, "test-list-pod", "container")
    assert "FOO=bar" in container_logs(stack, "test-list-pod", "container").splitlines()


def check_27(stack, m, ports):
    # lifecycle.stopSignal is in the container's configuration: podplay's label, read by `stop`.
    c = find_container(stack, "testpod", "testctr")
    assert c.labels["io.podplay.stop-signal"] == "SIGUSR1"


def check_29(stack, m, ports):
    # hostNetwork: spec.hostname is ignored, the pod has the host's name and UTS namespace.
    assert exec_in(stack, "test-pod", "alpine", "hostname").stdout == os.uname().nodename + "\n"
    assert ns_of(stack, "test-pod", "alpine", "uts") == os.readlink("/proc/self/ns/uts")
    assert ns_of(stack, "test-pod", "alpine", "net") == os.readlink("/proc/self/ns/net")


def check_30(stack, m, ports):
    # The PVC is a named volume, the Service is skipped (with a warning here; podman is silent),
    # the Deployment's pod mounts the claim. (podman names the pod "multiFoo-pod".)
    _deployment_runs(stack, "multi-foo", "ctr-01")
    exec_in(stack, "multi-foo-0", "ctr-01", "sh", "-c", "echo kept > /test/file")
    assert (stack.paths.claims / "default" / "multi-foo" / "file").read_text() == "kept\n"


def check_31(stack, m, ports):
    # podman limits a Deployment to one replica; podplay runs all ten (no hostPort, so they do
    # not collide), named test-deployment-0 … -9.
    names = sorted(p["name"] for p in pods_json(stack))
    assert names == sorted(f"test-deployment-{i}" for i in range(10))
    assert all(p["status"].lower().startswith("running") for p in pods_json(stack)), pods_json(stack)


def check_32(stack, m, ports):
    # hostname == the pod's name; playing again without --replace is not an error in podplay
    # (podman: "pod already exists"): the host already matches. --replace recreates it.
    assert exec_in(stack, "test-pod", "test-ctr", "hostname").stdout == "test-pod\n"
    before = find_container(stack, "test-pod", "test-ctr")
    assert "No changes" in stack.run("up", str(m)).stdout
    assert "~ replaced pod default/test-pod (forced)" in stack.run("up", "--replace", "--wait", str(m)).stdout
    assert find_container(stack, "test-pod", "test-ctr").pid != before.pid


def teardown_32(stack, m):
    # `kube down` twice is idempotent (#19711): so is `podplay down`.
    stack.run("stop", "-t", "0", "test-pod")
    stack.run("down", str(m))
    assert "No changes" in stack.run("down", str(m)).stdout


def check_33(stack, m, ports):
    # restartPolicy OnFailure applies to the container: killed (exit 137), it is restarted.
    c = find_container(stack, "test-pod3", "test-ctr")
    os.kill(c.pid, 9)
    wait_exited(stack, "test-pod3", "test-ctr")
    assert "> restarted default/test-pod3 [test-ctr] (exited)" in stack.run("up", "--wait", str(m)).stdout


def check_34(stack, m, ports):
    # podman sets container=podman in its init containers, so `printenv container` prints
    # "podman". Kubernetes does not set it (and busybox-static has no printenv applet at all):
    # the pod fails at its init container, as it would on a cluster, with a clear error and
    # nothing left behind.
    res = stack.run("up", str(m), check=False)
    assert res.returncode == 3
    assert "RunInitContainer default/test-pod/init-test" in res.stderr and '"printenv"' in res.stderr, res.stderr
    assert "podman annotation" in res.stderr, "the init.container.type annotation is reported as not acted on"
    assert host_leftovers(stack) == []


def check_35(stack, m, ports):
    env = exec_in(stack, "test-pod", "test-ctr", "env").stdout.splitlines()
    assert "MY_ENV_VAR=2" in env and "MY_ENV_VAR=1" not in env


def check_36(stack, m, ports):
    # One emptyDir shared by both containers at different paths; gone with the pod.
    exec_in(stack, "test-pod", "vol-test-ctr", "sh", "-c", "echo shared > /test-emptydir/f")
    assert exec_in(stack, "test-pod", "vol-test-ctr-2", "cat", "/test-emptydir-2/f").stdout == "shared\n"
    d = stack.drivers()
    assert len(d.volumes.list_pod_volumes()) == 1
    d.close()


def check_37(stack, m, ports):
    c = find_container(stack, "test-pod", "test-ctr")
    cpu = pod_cgroup("cpu", stack.paths.tag, c.pod_uid, c.id)
    memory = pod_cgroup("memory", stack.paths.tag, c.pod_uid, c.id)
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000\n"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "20000\n", "200m of a 100000us period"
    assert int((memory / "memory.limit_in_bytes").read_text()) == 20000000 // 4096 * 4096  # the kernel rounds
    assert int((memory / "memory.soft_limit_in_bytes").read_text()) == 10000000 // 4096 * 4096
    # podman: requests.cpu has no effect. podplay, like the kubelet, turns it into cpu.shares.
    assert (cpu / "cpu.shares").read_text() == "102\n"


def check_38(stack, m, ports):
    hosts = exec_in(stack, "test-pod", "test-ctr", "cat", "/etc/hosts").stdout.splitlines()
    assert "192.168.1.2\ttest1.podman.io test2.podman.io" in hosts
    assert "192.168.1.3\ttest3.podman.io test4.podman.io" in hosts


def check_39(stack, m, ports):
    # volumes-from is podman's own: podplay warns that it does not act on it, so tgtctr does not
    # see srcctr's volume. The claim testvol is made on first use, as podman does.
    exec_in(stack, "volspod", "srcctr", "sh", "-c", "echo x > /mnt/vol/f")
    assert exec_in(stack, "volspod", "tgtctr", "ls", "/mnt/vol", check=False).returncode != 0
    assert (stack.paths.claims / "default" / "testvol" / "f").exists()


def check_40(stack, m, ports):
    # The init container's file in /dev/shm is there for the app container (the pod's IPC).
    c = wait_exited(stack, "p-init", "c-init-test")
    assert c.exit_code == 0
    assert container_logs(stack, "p-init", "c-init-test") == "/dev/shm/test1\n"
    assert find_container(stack, "p-init", "c-init-init").exit_code == 0


def check_41(stack, m, ports):
    c = find_container(stack, "liveness-exec-healthy", "liveness-ctr")
    assert c.state == ContainerState.RUNNING and c.restart_count == 0


def check_42(stack, m, ports):
    # `up --wait` returns once the pod has run (echo hello, restartPolicy Never, exit 0). podman's
    # `--wait` also removes the pod afterwards; podplay keeps what the manifests declare until
    # `down`.
    c = wait_exited(stack, "p-wait", "c-wait")
    assert c.exit_code == 0
    assert container_logs(stack, "p-wait", "c-wait") == "hello\n"


def check_43(stack, m, ports):
    # Fixed with containerPort 18181 (the API server requires it; podman copies hostPort).
    port = ports[18181]
    (pod,) = pods_json(stack)
    assert pod["ports"] == [{"host_ip": "", "host_port": port, "container_port": 18181, "protocol": "tcp"}]


CHECKS = {
    "01-simple-pod-unnamed-ctr.yaml": check_01, "02-no-pod-prefix.yaml": check_02,
    "03-podname-equals-ctrname.yaml": check_03, "07-shared-pid-namespace.yaml": check_07,
    "08-deployment-liveness-exec.yaml": check_08, "09-deployment-liveness-unhealthy.yaml": check_09,
    "10-deployment-startup-probe.yaml": check_10, "11-secret-volume.yaml": check_11,
    "12-secret-volume-multi.yaml": check_12, "13-secret-optional-missing.yaml": check_13,
    "15-pvc-subpath.yaml": check_15, "16-graceful-shutdown-sigterm.yaml": check_16,
    "18-configmap-volume-default-mode.yaml": check_18, "19-containerport-not-published.yaml": check_19,
    "20-hostport-published.yaml": check_20, "21-hostport-udp-two-ctrs.yaml": check_21,
    "22-host-pid.yaml": check_22, "23-host-ipc.yaml": check_23, "24-pod-sysctls.yaml": check_24,
    "26-list-kind-configmap-env.yaml": check_26, "27-stopsignal-sigusr1.yaml": check_27,
    "29-hostnetwork-hostname.yaml": check_29, "30-multidoc-pvc-service-deployment.yaml": check_30,
    "31-deployment-replicas-10.yaml": check_31, "32-template-default-pod.yaml": check_32,
    "33-restart-policy-onfailure.yaml": check_33, "34-init-container-always.yaml": check_34,
    "35-env-precedence-over-envfrom.yaml": check_35, "36-emptydir-two-ctrs.yaml": check_36,
    "37-resource-limits.yaml": check_37, "38-host-aliases.yaml": check_38,
    "39-volumes-from-annotation.yaml": check_39, "40-bats-init-container-shm.yaml": check_40,
    "41-bats-liveness-initialdelay.yaml": check_41, "42-bats-wait-pod-exit.yaml": check_42,
    "43-bats-hostport-no-containerport.yaml": check_43,
}
# Containers that end by themselves under restartPolicy Always (or are waited for by the check):
# `up --wait` would follow their restarts, so these are played with a plain `up`.
NO_WAIT = {"03-podname-equals-ctrname.yaml", "10-deployment-startup-probe.yaml", "21-hostport-udp-two-ctrs.yaml",
           "22-host-pid.yaml",
           "27-stopsignal-sigusr1.yaml", "40-bats-init-container-shm.yaml"}
SETUP = {"15-pvc-subpath.yaml": setup_15}
TEARDOWN = {"15-pvc-subpath.yaml": teardown_15, "16-graceful-shutdown-sigterm.yaml": teardown_16,
            "32-template-default-pod.yaml": teardown_32}
# Fixtures beyond the baseline pod-security level (host namespaces, unsafe sysctls): podman plays
# them as they are, so podplay's host is set to privileged for them.
PRIVILEGED = {"22-host-pid.yaml", "23-host-ipc.yaml", "24-pod-sysctls.yaml", "29-hostnetwork-hostname.yaml"}
# Fixtures whose `up` fails as it should: the check runs `up` itself.
FAILS = {"34-init-container-always.yaml"}


def test_every_fixture_podplay_accepts_has_a_check():
    assert FIXTURES.is_dir(), f"{FIXTURES} is missing"
    assert set(CHECKS) == set(_played())
    rejected = sorted(set(EXPECT) - set(_played()))
    assert rejected == ["04-error-pod-without-name.yaml", "05-error-ctr-without-image.yaml",
                        "06-error-unknown-kind.yaml", "14-error-secret-required-missing.yaml",
                        "17-error-configmap-volume-missing.yaml", "25-error-sysctl-with-hostnetwork.yaml",
                        "28-error-stopsignal-invalid.yaml"]


@pytest.mark.parametrize("name", _played())
def test_podman_fixture_played(stack, name):
    m, ports = prepare(stack, name)
    if name in PRIVILEGED:
        stack.env["PODPLAY_POD_SECURITY"] = "privileged"
    if name in SETUP:
        SETUP[name](stack)
    if name in FAILS:
        CHECKS[name](stack, m, ports)
        return
    up = stack.run("up", *([] if name in NO_WAIT else ["--wait"]), str(m))
    assert "+ created pod" in up.stdout
    CHECKS[name](stack, m, ports)
    if name in TEARDOWN:
        TEARDOWN[name](stack, m)
    else:
        pods = sorted({c.pod.split("/", 1)[1] for c in stack.containers()})
        if pods:
            stack.run("stop", "-t", "0", *pods)
        stack.run("down", "--volumes", str(m))
    assert host_leftovers(stack) == []


# --- podman's dialect, played as it is ------------------------------------------------------------

DIALECT = ["01-simple-pod-unnamed-ctr.yaml", "09-deployment-liveness-unhealthy.yaml", "21-hostport-udp-two-ctrs.yaml",
           "32-template-default-pod.yaml", "43-bats-hostport-no-containerport.yaml"]


def test_podman_dialect_plays_unchanged_and_strict_refuses_it(stack):
    # The files podman users bring, unedited (only the fixed hostPorts are moved to free ones):
    # `up` runs them as podman does and warns once per fix with the Kubernetes spelling;
    # `up --strict` refuses the same directory and touches nothing.
    ports: dict[int, int] = {}
    for name in DIALECT:
        text, mapping = rewrite_host_ports((FIXTURES / name).read_text())
        ports.update(mapping)
        stack.write(name, text)
    manifests = stack.tmp / "manifests"
    strict = stack.run("up", "--strict", str(manifests), check=False)
    assert strict.returncode == 1, strict.stderr
    assert "error: metadata.name: would be rejected by a Kubernetes API server: use 'testPod' → 'testpod'" \
        in strict.stderr
    assert stack.containers() == []
    up = stack.run("up", str(manifests))
    for fix in ("'missing' → 'IfNotPresent'", "'udp' → 'UDP'", "'testPod' → 'testpod'", "'Never' → 'Always'",
                "a name for every container, e.g. name: container-0",
                f"containerPort: {ports[18181]} beside hostPort: {ports[18181]}"):
        assert f"would be rejected by a Kubernetes API server: use {fix}" in up.stderr, (fix, up.stderr)
    assert up.stderr.count("'missing' → 'IfNotPresent'") == 1, "said once for the whole load"
    # The names stay as podman keeps them; the unnamed container is 'container-0'.
    wait_for(lambda: find_container(stack, "testPod", "testCtr").state == ContainerState.RUNNING, "testPod")
    assert exec_in(stack, "testPod", "testCtr", "hostname").stdout == "testPod\n"
    assert find_container(stack, "libpod-test", "container-0").state == ContainerState.RUNNING
    # hostPort alone: the container listens on the host's port number, as podman makes it.
    pod = next(p for p in pods_json(stack) if p["name"] == "p-hostport")
    assert pod["ports"] == [{"host_ip": "", "host_port": ports[18181], "container_port": ports[18181],
                             "protocol": "tcp"}]
    echo = next(p for p in pods_json(stack) if p["name"] == "network-echo")
    assert {p["protocol"] for p in echo["ports"]} == {"udp"}
    # The Deployment with restartPolicy Never runs its pod with that policy (no restart).
    assert find_container(stack, "liveness-unhealthy-probe-0", "testimage").state == ContainerState.RUNNING
    pods = sorted({c.pod.split("/", 1)[1] for c in stack.containers()})
    stack.run("stop", "-t", "0", *pods)
    stack.run("down", str(manifests))
    assert host_leftovers(stack) == []
