"""hostUsers: false on real runc: the pod's own user namespace, its ID range, idmapped mounts."""

from __future__ import annotations

import os

import pytest

from reconciler.paths import HostPaths
from reconciler.runtime.driver import RuncRuntime
from reconciler.store.db import connect
from reconciler.store.idranges import IdRanges, PodIdAllocator
from tests.host.runtime.conftest import Pods, cgroup_parent, cgroups_left
from tests.support.leaks import find_leaks
from tests.unit.runtime.pods import make_pod


def status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


@pytest.fixture
def userns_pods(host_paths, runtime):
    # The pod's root is an unprivileged host user: the directories above the run root must let it through.
    os.chmod(host_paths.root.parent, 0o711)
    base = host_paths.root.parent
    (base / "subuid").write_text("someone:100000:65536\n")
    (base / "subgid").write_text("")
    # The test's own subuid files and host-wide registry of claimed ranges.
    runtime.id_ranges = PodIdAllocator(host_paths.state_db, str(base / "subuid"), str(base / "subgid"), base / "ids")
    yield Pods(runtime, base)
    runtime.id_ranges.close()


def held(host_paths) -> dict:
    db = connect(host_paths.state_db)
    try:
        return IdRanges(db).held()
    finally:
        db.close()


def test_pod_in_its_own_user_namespace(userns_pods, host_paths):
    pods = userns_pods
    base = host_paths.root.parent
    secret_dir = base / "hostdir"
    secret_dir.mkdir(mode=0o755)
    (secret_dir / "root-only").write_text("host secret\n")
    os.chmod(secret_dir / "root-only", 0o600)
    data = pods.volume("data")
    pod = make_pod("uns", [
        {"name": "app", "command": ["sh", "-c", "sleep 1000"],
         "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "host", "mountPath": "/host"}]},
        {"name": "probe", "command": ["sh", "-c",
                                      "id -u; echo rootfs > /written && cat /written;"
                                      " echo vol > /data/f && cat /data/f; stat -c %u /data/f;"
                                      " cat /host/root-only || echo DENIED; cat /proc/self/status"],
         "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "host", "mountPath": "/host"}]},
    ], hostUsers=False, volumes=[{"name": "data", "emptyDir": {}},
                                 {"name": "host", "hostPath": {"path": str(secret_dir)}}])
    # The volume driver's emptyDir is root's; the test gives the path the way the engine does.
    info = pods.up(pod, volumes={"data": data, "host": str(secret_dir)})
    ranges = held(host_paths)
    ids = ranges[pod.uid]
    assert ids.uid >= 1 << 30 and ids.size == 65536  # podplay's entry, made above 'someone's
    assert "podplay:" in (base / "subuid").read_text() and "podplay:" in (base / "subgid").read_text()

    code, out = pods.run(pod.containers[1].id)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "0"  # root inside …
    assert lines[1:4] == ["rootfs", "vol", "0"]  # … writes its root filesystem and its emptyDir as root
    assert "DENIED" in out and "host secret" not in out  # … but a host file of root's is not its own
    assert int(status_field(out, "CapEff"), 16) != 0  # capabilities, in its own namespace
    assert os.stat(os.path.join(data, "f")).st_uid == 0  # stored with the IDs the pod sees (idmapped)

    # On the host its processes run as the range's first uid, never as root.
    app = next(c for c in pods.rt.list_containers() if c.id == pod.containers[0].id)
    for pid in (app.pid, info.pid):
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        assert status_field(status, "Uid").split() == [str(ids.uid)] * 4
        assert status_field(status, "Gid").split() == [str(ids.gid)] * 4
    # The app containers joined the infra's user namespace.
    assert os.readlink(f"/proc/{app.pid}/ns/user") == os.readlink(f"/proc/{info.pid}/ns/user")
    assert os.readlink(f"/proc/{app.pid}/ns/user") != os.readlink("/proc/self/ns/user")

    pods.rt.remove_infra(pod.uid)
    assert pod.uid not in held(host_paths)  # the range is free again
    assert not os.path.exists(host_paths.userns_mounts / pod.uid)


def test_two_pods_never_share_a_range(userns_pods, host_paths):
    a = make_pod("una", [{"name": "app", "command": ["sleep", "1000"]}], hostUsers=False)
    b = make_pod("unb", [{"name": "app", "command": ["sleep", "1000"]}], hostUsers=False)
    userns_pods.up(a)
    userns_pods.up(b)
    ranges = held(host_paths)
    assert abs(ranges[a.uid].uid - ranges[b.uid].uid) >= 65536
    userns_pods.rt.remove_infra(a.uid)
    c = make_pod("unc", [{"name": "app", "command": ["sleep", "1000"]}], hostUsers=False)
    userns_pods.up(c)
    assert held(host_paths)[c.uid] == ranges[a.uid]  # a freed range is used again


def test_two_storage_roots_share_the_entry_but_never_a_range(userns_pods, host_paths):
    """Two installations on one host (two storage roots, one /etc/subuid entry): their pods get
    disjoint host IDs, through the host-wide registry of claimed ranges."""
    base = host_paths.root.parent
    second = HostPaths(base / "root2", base / "run2", base / "net2.d")
    for d in (second.root, second.runroot, second.network_dir):
        d.mkdir()
    parent2 = cgroup_parent(host_paths) + "-second"
    rt2 = RuncRuntime(second, cgroup_parent=parent2, id_ranges=PodIdAllocator(
        second.state_db, str(base / "subuid"), str(base / "subgid"), base / "ids"))
    a = make_pod("tra", [{"name": "app", "command": ["sleep", "1000"]}], hostUsers=False)
    b = make_pod("trb", [{"name": "app", "command": ["sleep", "1000"]}], hostUsers=False)
    try:
        info_a = userns_pods.up(a)
        (base / "pods2").mkdir(mode=0o755)
        info_b = Pods(rt2, base / "pods2").up(b)
        ours, theirs = held(host_paths)[a.uid], held(second)[b.uid]
        assert abs(ours.uid - theirs.uid) >= 65536 and abs(ours.gid - theirs.gid) >= 65536
        for info, ids in ((info_a, ours), (info_b, theirs)):
            with open(f"/proc/{info.pid}/status") as f:
                assert status_field(f.read(), "Uid").split() == [str(ids.uid)] * 4
        assert len(list((base / "ids").glob("*.json"))) == 2
    finally:
        for uid in {c.pod_uid for c in rt2.list_containers()}:
            rt2.remove_infra(uid)
        rt2.id_ranges.close()
    assert len(list((base / "ids").glob("*.json"))) == 1  # root2's claim went with its pod
    assert find_leaks(second.root, second.runroot) == [] and cgroups_left(parent2) == []


def test_without_allocator_is_a_clear_error(host_paths):
    rt = RuncRuntime(host_paths, cgroup_parent=cgroup_parent(host_paths))
    pod = make_pod("unz", [{"name": "app", "command": ["sleep", "1"]}], hostUsers=False)
    from reconciler.errors import ContainerRuntimeError

    with pytest.raises(ContainerRuntimeError, match="ID range allocator"):
        rt.create_infra(pod)


def test_read_only_root_and_privileged_in_a_user_namespace(userns_pods):
    pod = make_pod("unro", [
        {"name": "ro", "command": ["sh", "-c", "touch /x 2>/dev/null && echo WROTE; echo done"],
         "securityContext": {"readOnlyRootFilesystem": True}},
        {"name": "priv", "command": ["sh", "-c", "cat /proc/self/status; ls /dev"],
         "securityContext": {"privileged": True}},
    ], hostUsers=False)
    userns_pods.up(pod)
    code, out = userns_pods.run(pod.containers[0].id)
    assert code == 0 and "WROTE" not in out and "done" in out
    code, out = userns_pods.run(pod.containers[1].id)
    assert code == 0, out
    assert int(status_field(out, "CapEff"), 16) != 0  # every capability, of the pod's namespace only
    assert "sda" not in out and "vda" not in out  # no host devices in a user namespace
