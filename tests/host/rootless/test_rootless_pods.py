"""A pod run by an unprivileged user, end to end on the real host: `import`, `up` with a hostPort
reached on 127.0.0.1 and on the host's address (slirp4netns), `exec` as root of the user's
namespace, `logs`, outbound traffic, and `down` leaving no live process of the user's, no mount
and no network state."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.host.e2e.conftest import free_port
from tests.host.rootless.conftest import rootless_turn

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: [sh, -c, "echo started; echo hello-rootless > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    ports: [{{containerPort: 8080, hostPort: {port}}}]
    resources: {{limits: {{memory: 64Mi}}}}
"""

ROOTFS = """set -e
rm -rf rfs && mkdir -p rfs/bin rfs/tmp rfs/etc
cp /bin/busybox rfs/bin/
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "rfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > rfs/etc/passwd
echo 'root:x:0:' > rfs/etc/group
tar -C rfs -cf bb.tar .
"""


def host_address() -> str:
    """The host's first non-loopback IPv4 address (the pod reaches it through slirp4netns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source address
        return s.getsockname()[0]


def get(url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - the test's own pod
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def live_processes(uid: int) -> list[str]:
    res = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-u", str(uid)], capture_output=True, text=True)
    return [line for line in res.stdout.splitlines() if line.split()[1][0] != "Z"]


def user_mounts(*prefixes: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefixes)]


@pytest.fixture(scope="module")
def busybox(rootless_user):
    """localhost/busybox:latest in the test user's own image store, imported from a tarball."""
    script = rootless_user.home / "rootfs.sh"
    script.write_text(ROOTFS)
    res = rootless_user.run("sh", str(script))
    assert res.returncode == 0, res.stderr
    with rootless_turn():
        res = rootless_user.podplay("import", "bb.tar", "localhost/busybox:latest")
    assert res.returncode == 0, res.stderr


def assert_nothing_left(user) -> None:
    deadline = time.monotonic() + 10
    while live_processes(user.uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_processes(user.uid) == []  # containers, conmon, slirp4netns and the namespaces' holder
    assert user_mounts(str(user.home), f"/tmp/podplay-run-{user.uid}") == []
    assert "web" not in user.podplay("ps").stdout


@pytest.mark.slow
def test_a_rootless_pod_end_to_end(rootless_user, busybox):
    user = rootless_user
    port = free_port()
    manifest = user.home / "web.yaml"
    manifest.write_text(POD.format(port=port))

    res = user.podplay("up", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resource limits and requests of default/web are not applied" in res.stderr  # cgroup v1: none delegated
    assert get(f"http://127.0.0.1:{port}/index.html") == "hello-rootless\n"
    address = host_address()
    assert get(f"http://{address}:{port}/index.html") == "hello-rootless\n"

    res = user.podplay("exec", "web/web", "--", "sh", "-c", "id -u; head -1 /proc/self/uid_map")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "0", str(user.uid), "1"]  # root inside is the user outside
    out = user.podplay("exec", "web/web", "--", "wget", "-q", "-O-", f"http://{address}:{port}/index.html")
    assert out.stdout == "hello-rootless\n", out.stderr  # outbound through slirp4netns, back in by the hostPort
    logs = user.podplay("logs", "web/web")
    assert logs.returncode == 0 and "started" in logs.stdout, logs.stderr
    ps = user.podplay("ps")
    assert "web" in ps.stdout and "running" in ps.stdout

    res = user.podplay("down", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_nothing_left(user)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2)  # noqa: S310


@pytest.mark.slow
@pytest.mark.parametrize("command", ["up", "down"])
def test_killed_at_every_step_boundary_then_up_converges_and_down_leaves_nothing(rootless_user, busybox, command):
    """kill -9 of the rootless podplay (inside the user's namespace) before and after each step of
    an `up` and a `down`: the next `up` serves the page, and `down` leaves nothing."""
    user = rootless_user
    port = free_port()
    manifest = user.home / f"crash-{command}.yaml"
    manifest.write_text(POD.format(port=port))
    n, kills = 1, 0
    while True:
        finished = False
        for when in ("before", "after"):
            context = f"{command} killed {when} step #{n}"
            if command == "down":
                assert user.podplay("up", str(manifest)).returncode == 0, context
            res = user.podplay(command, str(manifest), env=user.env(PODPLAY_FAILPOINT=f"{when}:#{n}"))
            if res.returncode == 0:
                finished = True  # no step #n: every boundary was tried
                break
            assert res.returncode == 128 + 9, f"{context}: {res.returncode}\n{res.stdout}\n{res.stderr}"
            kills += 1
            res = user.podplay("up", str(manifest))
            assert res.returncode == 0, f"{context}: {res.stdout}\n{res.stderr}"
            assert get(f"http://127.0.0.1:{port}/index.html") == "hello-rootless\n", context
            res = user.podplay("down", str(manifest))
            assert res.returncode == 0, f"{context}: {res.stdout}\n{res.stderr}"
            assert_nothing_left(user)
        if finished:
            break
        n += 1
    if command == "down":
        assert user.podplay("down", str(manifest)).returncode == 0
        assert_nothing_left(user)
    assert kills >= 8, kills  # the pod's steps: pull, snapshot, infra, network, container, start…


@pytest.mark.slow
def test_watch_picks_up_a_file(rootless_user, busybox):
    """`podplay watch DIR` run by the user: a manifest written into DIR comes up (its hostPort
    answers); Ctrl-C stops the keeper, and `down` leaves nothing."""
    user = rootless_user
    watched = user.home / "watched"
    watched.mkdir()
    os.chown(watched, user.uid, -1)
    port = free_port()
    assignments = [f"{k}={v}" for k, v in user.env().items()]
    keeper = subprocess.Popen(["runuser", "-u", user.name, "--", "env", "-i", *assignments,
                               str(user.venv / "bin" / "podplay"), "watch", str(watched)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(user.home),
                              start_new_session=True)
    try:
        time.sleep(2)  # the keeper's first pass over an empty directory
        manifest = watched / "web.yaml"
        manifest.write_text(POD.format(port=port))
        os.chown(manifest, user.uid, -1)
        assert get(f"http://127.0.0.1:{port}/index.html", timeout=60) == "hello-rootless\n"
    finally:
        os.killpg(keeper.pid, signal.SIGINT)  # Ctrl-C at the terminal: the keeper's whole process group
        try:
            out, err = keeper.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(keeper.pid, signal.SIGKILL)
            out, err = keeper.communicate()
    assert keeper.returncode in (0, 130), f"{keeper.returncode}\n{out}\n{err}"
    assert "Traceback" not in err
    res = user.podplay("down", str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    assert_nothing_left(user)
