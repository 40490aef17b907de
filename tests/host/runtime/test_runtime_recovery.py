"""A new podplay process sees what an old one left, and cleans up after any crash or a reboot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

from reconciler.observed import LABEL_POD, LABEL_ROLE, ContainerState
from reconciler.runtime import hostinfo
from reconciler.runtime.driver import RuncRuntime
from tests.host.runtime.conftest import cgroup_parent, cgroups_left
from tests.support.leaks import mounts_under, runc_containers
from tests.unit.runtime.pods import image, make_pod


def fresh(host_paths) -> RuncRuntime:
    return RuncRuntime(host_paths, cgroup_parent=cgroup_parent(host_paths))


def test_a_new_driver_relists_what_an_old_one_created(pods, host_paths, capfd):
    pod = make_pod("relist", [{"name": "web", "command": ["sleep", "3600"]},
                              {"name": "once", "command": ["sh", "-c", "exit 4"]}])
    info = pods.up(pod)
    pods.rt.wait_container(pod.containers[1].id, 30)

    rt = fresh(host_paths)
    got = {c.id: c for c in rt.list_containers()}
    assert set(got) == {pod.uid, pod.containers[0].id, pod.containers[1].id}
    infra, web, once = got[pod.uid], got[pod.containers[0].id], got[pod.containers[1].id]
    assert (infra.role, infra.state, infra.name, infra.pod) == ("infra", ContainerState.RUNNING, "", "default/relist")
    assert (web.role, web.state, web.name, web.pod_uid) == ("app", ContainerState.RUNNING, "web", pod.uid)
    assert (once.state, once.exit_code) == (ContainerState.EXITED, 4)
    assert web.spec_hash == pod.spec_hash and web.image == "localhost/busybox:1" and web.image_id == image().id
    assert web.labels[LABEL_POD] == "default/relist" and web.labels[LABEL_ROLE] == "app"
    assert web.pid > 0 and web.started_at > 0
    assert rt.infra_info(pod.uid) == info
    capfd.readouterr()
    assert rt.exec_in(web.id, ["echo", "still here"]) == 0
    assert capfd.readouterr().out == "still here\n"
    rt.stop_container(web.id, timeout=0)
    rt.remove_infra(pod.uid)
    assert rt.list_containers() == [] and pods.rt.list_containers() == []


def test_a_dead_infra_is_reported_and_recreated(pods, runtime):
    # shareProcessNamespace: the pod's sandbox is a catatonit process, killed here
    pod = make_pod("deadinfra", [{"name": "web", "command": ["sleep", "3600"]}], shareProcessNamespace=True)
    old = pods.up(pod, start=False)
    assert old.pid > 0
    os.kill(old.pid, signal.SIGKILL)
    hostinfo.wait_pid_gone(old.pid, hostinfo.proc_start_time(old.pid), 30)
    infra = next(c for c in runtime.list_containers() if c.role == "infra")
    assert infra.state == ContainerState.EXITED
    assert runtime.infra_info(pod.uid) is None
    new = runtime.create_infra(pod)
    assert new.pid != old.pid and runtime.infra_info(pod.uid) == new


def test_unmounted_pinned_namespaces_are_a_dead_infra_and_are_pinned_again(pods, runtime):
    pod = make_pod("deadpins", [{"name": "web", "command": ["sleep", "3600"]}])
    old = pods.up(pod, start=False)
    assert old.pid == 0  # no process: its namespaces are pinned
    subprocess.run(["umount", old.namespaces["network"]], check=True)
    infra = next(c for c in runtime.list_containers() if c.role == "infra")
    assert infra.state == ContainerState.EXITED
    assert runtime.infra_info(pod.uid) is None
    new = runtime.create_infra(pod)
    assert runtime.infra_info(pod.uid) == new
    assert os.stat(new.namespaces["network"]).st_ino != os.stat(old.namespaces["uts"]).st_ino


def simulate_reboot(host_paths):
    """What a reboot does to podplay's files: every process dies, the run root (a tmpfs) is empty."""
    for cid in runc_containers(host_paths.runc_root):
        subprocess.run(["runc", "--root", str(host_paths.runc_root), "kill", "--all", cid, "KILL"],
                       capture_output=True)
    for conmon in (host_paths.conmon).glob("*/state.json"):
        st = json.loads(conmon.read_text())
        if "pinned" in st:
            continue  # a sandbox of pinned namespaces: no process; its mounts go below
        for pid, start in ((st["pid"], st["pid_start"]), (st["conmon_pid"], st["conmon_start"])):
            assert hostinfo.wait_pid_gone(pid, start, 30)
    for m in sorted(mounts_under(host_paths.runroot), key=len, reverse=True):
        subprocess.run(["umount", m], check=True)
    shutil.rmtree(host_paths.runroot)
    host_paths.runroot.mkdir()


def test_after_a_reboot_containers_are_unknown_and_removal_cleans_everything(pods, host_paths):
    pod = make_pod("reboot", [{"name": "web", "command": ["sleep", "3600"]}])
    pods.up(pod)
    simulate_reboot(host_paths)

    rt = fresh(host_paths)
    states = {c.id: (c.state, c.name, c.pod) for c in rt.list_containers()}
    assert states == {pod.uid: (ContainerState.UNKNOWN, "", "default/reboot"),
                      pod.containers[0].id: (ContainerState.UNKNOWN, "web", "default/reboot")}
    assert rt.infra_info(pod.uid) is None
    rt.remove_container(pod.containers[0].id)
    rt.remove_infra(pod.uid)
    assert rt.list_containers() == []
    assert runc_containers(host_paths.runc_root) == []
    assert not any(p for p in host_paths.containers.iterdir() if not p.name.startswith("."))
    assert cgroups_left(cgroup_parent(host_paths)) == []


def test_half_written_bundle_is_unknown_and_removable(pods, runtime, host_paths):
    pod = make_pod("half", [{"name": "web", "command": ["sleep", "3600"]}])
    pods.up(pod, start=False)
    # a crash between writing the bundle directory and writing its files
    ghost = host_paths.containers / f"{pod.uid}.ghost"
    ghost.mkdir()
    got = {c.id: c for c in runtime.list_containers()}
    assert got[ghost.name].state == ContainerState.UNKNOWN
    assert (got[ghost.name].pod_uid, got[ghost.name].name) == (pod.uid, "ghost")
    runtime.remove_container(ghost.name)
    assert not ghost.exists()


def test_crash_after_the_bundle_but_before_runc_is_finished_by_the_next_create(pods, runtime, host_paths):
    pod = make_pod("replay", [{"name": "web", "command": ["sleep", "3600"]}])
    pods.up(pod, start=False)
    c = pod.containers[0]
    rootfs = pods.rootfs()
    runtime.remove_container(c.id)
    # the bundle as the crashed process wrote it, without any runtime state
    (host_paths.containers / c.id).mkdir()
    (host_paths.containers / c.id / "labels.json").write_text(json.dumps({"labels": {"io.podplay.pod-uid": pod.uid}}))
    assert next(x for x in runtime.list_containers() if x.id == c.id).state == ContainerState.UNKNOWN
    runtime.create_container(pod, c, rootfs=rootfs, image=image(), volumes={}, network=None)  # the replay
    runtime.start_container(c.id)
    assert next(x for x in runtime.list_containers() if x.id == c.id).state == ContainerState.RUNNING


def test_remove_works_when_conmon_was_killed(pods, runtime):
    pod = make_pod("noconmon", [{"name": "web", "command": ["sleep", "3600"]}])
    pods.up(pod)
    cid = pod.containers[0].id
    rec = runtime.paths.conmon / cid
    st = json.loads((rec / "state.json").read_text())
    os.kill(st["conmon_pid"], signal.SIGKILL)
    assert hostinfo.wait_pid_gone(st["conmon_pid"], st["conmon_start"], 30)
    assert hostinfo.proc_start_time(st["pid"]) == st["pid_start"]  # the container outlived its monitor
    runtime.remove_container(cid)
    assert hostinfo.proc_start_time(st["pid"]) is None
    assert cid not in {c.id for c in runtime.list_containers()}


def test_conmon_does_not_hold_the_callers_pipes(host_paths):
    """podplay's stdout/stderr may be pipes (a CI log, `podplay up | tee`); conmon must not keep
    them open, or the reader never sees EOF."""
    script = f"""
import sys
sys.path.insert(0, {os.getcwd()!r})
from reconciler.paths import HostPaths
from reconciler.runtime.driver import RuncRuntime
from tests.unit.runtime.pods import make_pod
rt = RuncRuntime(HostPaths.from_env(*sys.argv[1:4]), cgroup_parent=sys.argv[4])
pod = make_pod("pipes", [{{"name": "web"}}], shareProcessNamespace=True)  # a catatonit infra, under conmon
print(rt.create_infra(pod).pid, flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script,
                           str(host_paths.root), str(host_paths.runroot), str(host_paths.network_dir),
                           cgroup_parent(host_paths)],
                          capture_output=True, text=True, timeout=120)  # returns only at EOF on both pipes
    assert proc.returncode == 0, proc.stderr
    rt = fresh(host_paths)
    infra = rt.list_containers()
    assert [c.state for c in infra] == [ContainerState.RUNNING]
    assert str(infra[0].pid) == proc.stdout.strip()
    rt.remove_infra(infra[0].pod_uid)


def test_remove_after_a_crash_before_the_state_was_recorded(pods, runtime):
    pod = make_pod("nostate", [{"name": "web", "command": ["sleep", "3600"]}])
    pods.up(pod)
    cid = pod.containers[0].id
    state_file = runtime.paths.conmon / cid / "state.json"
    st = json.loads(state_file.read_text())
    state_file.unlink()  # podplay died between conmon's answer and writing down what it said
    assert next(c for c in runtime.list_containers() if c.id == cid).state == ContainerState.UNKNOWN
    runtime.remove_container(cid)
    assert hostinfo.proc_start_time(st["pid"]) is None
    assert hostinfo.proc_start_time(st["conmon_pid"]) is None
    assert cid not in {c.id for c in runtime.list_containers()}
