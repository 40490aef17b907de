"""Container lifecycle on runc + conmon: logs, exec, stop, OOM, restarts, idempotency."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time

import pytest

from reconciler.errors import ContainerRuntimeError, NotFoundError
from reconciler.observed import ContainerState
from tests.unit.runtime.pods import image, make_pod

CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) (stdout|stderr) [PF] .*$")


def state_of(runtime, cid):
    return next(c for c in runtime.list_containers() if c.id == cid)


def test_logs_are_in_cri_format_with_streams_and_partial_lines(pods, runtime, host_paths):
    pod = make_pod("logs", [{"name": "app", "command": [
        "sh", "-c", "echo out1; echo err1 >&2; printf abc; sleep 0.2; echo def; printf 'no newline at end'"]}])
    before = time.time()
    pods.up(pod)
    cid = pod.containers[0].id
    assert runtime.wait_container(cid, 30) == 0
    raw = (host_paths.containers / cid / "ctr.log").read_bytes().splitlines()
    assert raw and all(CRI_LINE.match(line) for line in raw), raw
    got = [(stream, text) for _, stream, text in runtime.read_logs(cid)]
    assert ("stdout", b"out1") in got and ("stderr", b"err1") in got
    assert ("stdout", b"abcdef") in got  # conmon wrote "abc" as a P record; read_logs joins it
    assert got[-1] == ("stdout", b"no newline at end")
    stamps = [ts for ts, _, _ in runtime.read_logs(cid)]
    assert stamps == sorted(stamps) and before - 1 <= stamps[0] <= time.time() + 1
    assert [t for _, _, t in runtime.read_logs(cid, tail=2)] == [b"abcdef", b"no newline at end"]
    assert list(runtime.read_logs(cid, since=time.time() + 3600)) == []


def test_follow_streams_until_the_container_exits(pods, runtime):
    pod = make_pod("follow", [{"name": "app", "command": [
        "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done"]}])
    pods.up(pod)
    lines = [t for _, _, t in runtime.read_logs(pod.containers[0].id, follow=True)]
    assert lines == [b"line1", b"line2", b"line3", b"line4", b"line5"]
    assert state_of(runtime, pod.containers[0].id).state == ContainerState.EXITED


def test_exec_passes_exit_codes_env_and_stdio_through(pods, runtime, capfd):
    pod = make_pod("exec", [{"name": "app", "command": ["sleep", "3600"],
                             "env": [{"name": "FROM_POD", "value": "pod"}]}])
    pods.up(pod)
    cid = pod.containers[0].id
    capfd.readouterr()
    assert runtime.exec_in(cid, ["sh", "-c", "echo $FROM_POD $EXTRA; echo oops >&2; exit 7"],
                           env={"EXTRA": "extra"}) == 7
    out = capfd.readouterr()
    assert out.out == "pod extra\n" and out.err == "oops\n"
    assert runtime.exec_in(cid, ["sh", "-c", "kill -9 $$"]) == 137
    with pytest.raises(ContainerRuntimeError, match="did not finish"):
        runtime.exec_in(cid, ["sleep", "30"], timeout=0.5)
    capfd.readouterr()
    assert runtime.exec_in(cid, ["sh", "-c", "pgrep -f 'sleep 30' || echo gone"]) == 0
    assert "gone" in capfd.readouterr().out  # the timed-out process was killed, not left behind
    with pytest.raises(ContainerRuntimeError, match="terminal"):
        runtime.exec_in(cid, ["true"], tty=True)  # pytest's stdin is not a terminal
    with pytest.raises(NotFoundError):
        runtime.exec_in(pod.uid + ".nope", ["true"])


EXEC_TTY = """
import sys
from reconciler.paths import HostPaths
from reconciler.runtime.driver import RuncRuntime
paths = HostPaths.from_env(*sys.argv[1:4])
rt = RuncRuntime(paths)
sys.exit(rt.exec_in(sys.argv[4], ["sh", "-c", "test -t 0 && test -t 1 && tty && exit 5"], tty=True,
                    interactive=True))
"""


def test_exec_with_a_terminal_like_podman_exec_it(pods, runtime, host_paths):
    pod = make_pod("tty", [{"name": "app", "command": ["sleep", "3600"]}])
    pods.up(pod)
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", EXEC_TTY, str(host_paths.root), str(host_paths.runroot),
                                 str(host_paths.network_dir), pod.containers[0].id],
                                stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True,
                                cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(60) == 5, output
        assert b"/dev/pts/" in output
    finally:
        os.close(primary)


def test_stop_sends_the_stop_signal_and_waits_for_a_clean_exit(pods, runtime):
    trap = "trap 'echo got {sig}; exit 0' {sig}; echo ready; while true; do sleep 0.05; done"
    pod = make_pod("stop", [
        {"name": "term", "command": ["sh", "-c", trap.format(sig="TERM")]},
        {"name": "usr1", "command": ["sh", "-c", trap.format(sig="USR1")], "lifecycle": {"stopSignal": "SIGUSR1"}},
    ])
    pods.up(pod)
    for c, word in zip(pod.containers, ("got TERM", "got USR1")):
        for _, _, text in runtime.read_logs(c.id, follow=True):
            if text == b"ready":  # the trap is installed
                break
        runtime.stop_container(c.id, timeout=30)
        st = state_of(runtime, c.id)
        assert (st.state, st.exit_code) == (ContainerState.EXITED, 0)
        assert pods.output(c.id).splitlines()[-1] == word
        assert st.finished_at >= st.started_at > 0


def test_stop_kills_a_process_that_ignores_the_signal(pods, runtime):
    # busybox sh as PID 1 has no SIGTERM handler: the kernel drops the signal; only SIGKILL ends it
    pod = make_pod("stubborn", [{"name": "app", "command": ["sh", "-c", "while true; do sleep 1; done"]}])
    pods.up(pod)
    cid = pod.containers[0].id
    # `runc start` returns before runc's init has exec'd sh. Until then PID 1 is runc (Go), which
    # does handle SIGTERM and exits 2: wait for sh, the process whose indifference is tested.
    pid = state_of(runtime, cid).pid
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{pid}/exe") != "/bin/busybox" and time.monotonic() < deadline:
        time.sleep(0.01)
    runtime.stop_container(cid, timeout=1)
    st = state_of(runtime, cid)
    assert (st.state, st.exit_code, st.oom_killed) == (ContainerState.EXITED, 137, False)


def test_stop_with_an_explicit_signal_and_of_a_stopped_container(pods, runtime):
    pod = make_pod("sig", [{"name": "app", "command": ["sleep", "3600"]}])
    pods.up(pod)
    cid = pod.containers[0].id
    runtime.stop_container(cid, timeout=30, signal="SIGKILL")
    assert state_of(runtime, cid).exit_code == 137
    runtime.stop_container(cid, timeout=30)  # already stopped: nothing to do
    runtime.stop_container(pod.uid + ".never-created")


def test_oom_kill_is_detected(pods, runtime):
    pod = make_pod("oom", [{"name": "hog", "command": ["tail", "/dev/zero"],
                            "resources": {"limits": {"memory": "16Mi"}}}])
    pods.up(pod)
    cid = pod.containers[0].id
    assert runtime.wait_container(cid, 60) == 137
    st = state_of(runtime, cid)
    assert st.oom_killed is True
    assert state_of(runtime, pod.uid).oom_killed is False


def test_memory_and_cpu_limits_reach_the_cgroup(pods, runtime, capfd):
    pod = make_pod("limits", [{"name": "app", "command": ["sleep", "3600"],
                               "resources": {"limits": {"memory": "64Mi", "cpu": "250m"},
                                             "requests": {"cpu": "100m"}}}])
    pods.up(pod)
    capfd.readouterr()
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
              "/sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max")
    assert runtime.exec_in(pod.containers[0].id, ["sh", "-c", script]) == 0
    assert capfd.readouterr().out.split() == [str(64 * 2**20), "25000", "102", "4096"]


def test_restart_count_survives_remove_and_recreate(pods, runtime):
    pod = make_pod("restarts", [{"name": "app", "command": ["sh", "-c", "exit 1"]}])
    pods.up(pod)
    c = pod.containers[0]
    assert runtime.wait_container(c.id, 30) == 1
    assert state_of(runtime, c.id).restart_count == 0
    for expected in (1, 2):
        runtime.remove_container(c.id)
        runtime.create_container(pod, c, rootfs=pods.rootfs(), image=image(), volumes={}, network=None)
        runtime.start_container(c.id)
        assert runtime.wait_container(c.id, 30) == 1
        assert state_of(runtime, c.id).restart_count == expected


def test_every_operation_is_idempotent(pods, runtime):
    pod = make_pod("idem", [{"name": "app", "command": ["sleep", "3600"]}])
    info = pods.up(pod, start=False)
    c = pod.containers[0]
    assert runtime.create_infra(pod) == info
    rootfs = pods.rootfs()
    runtime.create_container(pod, c, rootfs=rootfs, image=image(), volumes={}, network=None)  # exists: no-op
    assert state_of(runtime, c.id).state == ContainerState.CREATED
    runtime.start_container(c.id)
    pid = state_of(runtime, c.id).pid
    runtime.start_container(c.id)
    assert state_of(runtime, c.id).pid == pid
    assert state_of(runtime, c.id).restart_count == 0
    other = dataclasses.replace(pod, spec_hash="not-the-same")  # a library caller reusing ids
    with pytest.raises(ContainerRuntimeError, match="another spec"):
        runtime.create_container(other, other.containers[0], rootfs=rootfs, image=image(), volumes={}, network=None)
    runtime.stop_container(c.id, timeout=0)
    runtime.stop_container(c.id, timeout=0)
    runtime.remove_container(c.id)
    runtime.remove_container(c.id)
    runtime.remove_infra(pod.uid)
    runtime.remove_infra(pod.uid)
    assert runtime.list_containers() == []
    assert runtime.infra_info(pod.uid) is None
    with pytest.raises(NotFoundError):
        runtime.start_container(c.id)
    with pytest.raises(NotFoundError):
        runtime.wait_container(c.id)


def test_wait_times_out_with_a_clear_error(pods, runtime):
    pod = make_pod("wait", [{"name": "app", "command": ["sleep", "3600"]}])
    pods.up(pod)
    with pytest.raises(ContainerRuntimeError, match="did not exit within"):
        runtime.wait_container(pod.containers[0].id, timeout=0.2)


def test_remove_of_a_created_never_started_container(pods, runtime):
    pod = make_pod("created", [{"name": "app", "command": ["sleep", "3600"]}])
    pods.up(pod, start=False)
    assert state_of(runtime, pod.containers[0].id).state == ContainerState.CREATED
    runtime.stop_container(pod.containers[0].id, timeout=5)
    assert state_of(runtime, pod.containers[0].id).state == ContainerState.EXITED
    runtime.remove_container(pod.containers[0].id)
    assert [c.id for c in runtime.list_containers()] == [pod.uid]


def test_a_tty_container_gets_a_terminal_and_its_output_is_logged(pods, runtime):
    pod = make_pod("ttyctr", [{"name": "app", "tty": True, "command": ["sh", "-c", "test -t 0 && test -t 1 && tty"]}])
    pods.up(pod)
    code, out = pods.run(pod.containers[0].id)
    assert code == 0
    assert out.strip().startswith("/dev/pts/")


def test_wait_exits_returns_when_one_container_exits_with_its_code_recorded(pods):
    pod = make_pod("waitexits", [{"name": "long", "command": ["sleep", "3600"]},
                                 {"name": "short", "command": ["sh", "-c", "sleep 1; exit 3"]}])
    pods.up(pod)
    ids = [c.id for c in pod.containers]
    t = time.monotonic()
    assert pods.rt.wait_exits(ids, 30) is True
    assert time.monotonic() - t < 10, "woken by the exit, not by the timeout"
    short = next(c for c in pods.rt.list_containers() if c.id == ids[1])
    assert (short.state, short.exit_code) == (ContainerState.EXITED, 3), "the exit code is there when it returns"
    assert pods.rt.wait_exits(ids, 30) is True, "one not running answers at once"
    t = time.monotonic()
    assert pods.rt.wait_exits(ids[:1], 0.3) is False
    assert 0.25 < time.monotonic() - t < 5
