"""Which cgroups a host delegates to a rootless user (decision and probing, on fake trees), which
limits a rootless container's config carries, and conmon started inside the pod's cgroups."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from reconciler.runtime import cgroups, conmon, oci
from tests.unit.runtime.test_oci import config, ctx

ALL = frozenset(cgroups.CONTROLLERS)


def v1(present=(), writable=(), mounted=ALL, uid=1000) -> cgroups.Probed:
    return cgroups.Probed(1, uid, v1_present={c: f"/sys/fs/cgroup/{c}/podplay-{uid}" for c in present},
                          v1_writable=frozenset(writable), v1_mounted=frozenset(mounted))


def test_v1_every_controller_delegated():
    d = cgroups.decide(v1(ALL, ALL))
    assert d.dirs == {c: f"/sys/fs/cgroup/{c}/podplay-1000" for c in cgroups.CONTROLLERS}
    assert d.missing == {}


def test_v1_nothing_delegated_names_the_fix_once():
    d = cgroups.decide(v1())
    assert d.dirs == {}
    reason = d.reason(["memory", "pids"])
    assert reason.startswith("no cgroup is delegated to uid 1000 (cgroup v1;")
    assert "mkdir /sys/fs/cgroup/<controller>/podplay-1000" in reason and "chown -R 1000" in reason
    assert ";" not in reason.split("(")[0]  # one sentence, not one per controller


def test_v1_partial_delegation_applies_some_and_names_the_others():
    d = cgroups.decide(v1(present=("memory", "pids"), writable=("memory",)))
    assert set(d.dirs) == {"memory"}
    assert set(d.missing) == {"pids", "cpu"}
    assert "/sys/fs/cgroup/pids/podplay-1000 is not writable by uid 1000" in d.missing["pids"]
    assert d.reason(["pids", "cpu"]).startswith("pids: /sys/fs/cgroup/pids/podplay-1000 is not writable")
    assert "cpu: no cgroup is delegated" in d.reason(["pids", "cpu"])


def test_v1_a_controller_without_a_hierarchy_is_missing():
    d = cgroups.decide(v1(ALL, ALL, mounted=("memory", "cpu")))
    assert set(d.dirs) == {"memory", "cpu"}
    assert "no cgroup v1 hierarchy" in d.missing["pids"]


def v2(top="/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service", offered=ALL, busy=False, service=""):
    return cgroups.Probed(2, 1000, v2_dir=top, v2_controllers=frozenset(offered), v2_busy=busy,
                          v2_own="/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope", v2_user_service=service)


def test_v2_delegated_subtree_carries_every_offered_controller():
    d = cgroups.decide(v2())
    top = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/podplay"
    assert d.dirs == {c: top for c in cgroups.CONTROLLERS} and d.missing == {}
    assert d.version == 2 and d.root == "/sys/fs/cgroup"


def test_v2_controllers_the_host_keeps_are_named_with_the_systemd_fix():
    d = cgroups.decide(v2(offered={"memory", "pids"}))  # systemd's default Delegate= for users
    assert set(d.dirs) == {"memory", "pids"}
    assert d.reason(["cpu"]).startswith("cpu: the cpu controller is not delegated to uid 1000")
    assert "Delegate=memory pids cpu" in d.reason(["cpu"])


@pytest.mark.parametrize("service,words", [
    ("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service", "systemd-run --user --scope podplay"),
    ("", "systemd's Delegate=yes for user@.service"),
])
def test_v2_a_user_outside_any_delegated_cgroup_is_told_how_to_get_one(service, words):
    d = cgroups.decide(v2(top="", service=service))
    assert d.dirs == {} and set(d.missing) == ALL
    reason = d.reason(["memory"])
    assert "the user's cgroup /sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope is not delegated" in reason
    assert words in reason


def test_v2_a_delegated_cgroup_holding_processes_is_not_used():
    d = cgroups.decide(v2(busy=True))
    assert d.dirs == {}
    assert "processes run in it directly" in d.reason(["memory"])


def test_needed_controllers():
    assert cgroups.needed({"memory": "1Gi"}, {}) == {"memory", "pids"}
    assert cgroups.needed({}, {"cpu": "1"}) == {"cpu", "pids"}


def fake_v1(root, uid, delegated, writable):
    for c in cgroups.CONTROLLERS:
        (root / c).mkdir()
    for c in delegated:
        d = root / c / f"podplay-{uid}"
        d.mkdir()
        (d / "cgroup.procs").write_text("")
        if c not in writable:
            os.chmod(d / "cgroup.procs", 0o444)


def as_user(fn):
    """``fn()`` in a child that runs as uid 1000 (the tests run as root, who may write anything)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(r)
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            os.write(w, repr(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 65536).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def open_dir():
    """A directory other users can reach (pytest's tmp_path sits in root's private one)."""
    d = Path(tempfile.mkdtemp(prefix="pp-cg-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def test_probe_v1_on_a_fake_tree(open_dir):
    tmp_path = open_dir
    fake_v1(tmp_path, 1000, delegated=("memory", "pids"), writable=("memory",))
    for c in ("memory", "pids"):
        for p in (tmp_path / c / "podplay-1000", tmp_path / c / "podplay-1000" / "cgroup.procs"):
            os.chown(p, 1000, 1000)
    os.chmod(tmp_path / "pids" / "podplay-1000" / "cgroup.procs", 0o444)
    got = as_user(lambda: sorted(cgroups.probe(1000, root=str(tmp_path)).v1_writable))
    assert got == "['memory']"
    p = cgroups.probe(1000, root=str(tmp_path))
    assert set(p.v1_present) == {"memory", "pids"} and p.version == 1 and p.v1_mounted == ALL


def fake_v2(root: Path, uid=1000, own="user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope",
            delegated="user.slice/user-1000.slice/user@1000.service"):
    """A cgroup v2 tree: every cgroup root's, except from ``delegated`` down, which is ``uid``'s."""
    os.chmod(root, 0o755)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    parts = own.split("/")
    for n in range(1, len(parts) + 1):
        d = root.joinpath(*parts[:n])
        d.mkdir()
        (d / "cgroup.controllers").write_text("cpu memory pids\n")
        for f in ("cgroup.procs", "cgroup.subtree_control"):
            (d / f).write_text("")
            os.chmod(d / f, 0o644)
        if "/".join(parts[:n]).startswith(delegated):
            for p in (d, d / "cgroup.procs", d / "cgroup.subtree_control"):
                os.chown(p, uid, uid)
    (root / "proc-cgroup").write_text(f"0::/{own}\n")
    return root / delegated


def test_probe_v2_finds_the_top_of_the_delegated_subtree(open_dir):
    top = fake_v2(open_dir)
    got = as_user(lambda: cgroups.probe(1000, root=str(open_dir), proc_cgroup=str(open_dir / "proc-cgroup")))
    assert f"v2_dir='{top}'" in got and "v2_busy=False" in got
    assert "v2_controllers=frozenset({" in got and "'memory'" in got


def test_probe_v2_a_session_outside_the_delegated_subtree_gets_the_hint(open_dir):
    fake_v2(open_dir)
    (open_dir / "proc-cgroup").write_text("0::/user.slice/user-1000.slice\n")  # not the user's
    got = as_user(lambda: cgroups.probe(1000, root=str(open_dir), proc_cgroup=str(open_dir / "proc-cgroup")))
    assert "v2_dir=''" in got
    assert f"v2_user_service='{open_dir}/user.slice/user-1000.slice/user@1000.service'" in got


def test_probe_v2_sees_processes_in_the_delegated_cgroup(open_dir):
    top = fake_v2(open_dir)
    (top / "cgroup.procs").write_text("4242\n")
    got = as_user(lambda: cgroups.probe(1000, root=str(open_dir), proc_cgroup=str(open_dir / "proc-cgroup")).v2_busy)
    assert got == "True"


def test_enable_v2_switches_the_controllers_on_down_to_the_pod(tmp_path):
    top = tmp_path / "user@1000.service"
    top.mkdir()
    pod = top / "podplay" / "tag" / "uid"
    cgroups.enable_v2(str(top), str(pod), {"memory", "pids"})
    for d in (top, top / "podplay", top / "podplay" / "tag", pod):
        assert (d / "cgroup.subtree_control").read_text() == "+memory +pids"
    with pytest.raises(ValueError, match="is not below"):
        cgroups.enable_v2(str(top), str(tmp_path / "elsewhere"), {"memory"})


def test_the_driver_places_v2_rootless_containers_below_the_delegated_subtree(tmp_path):
    from reconciler.paths import HostPaths
    from reconciler.runtime.driver import RuncRuntime

    top = tmp_path / "user.slice" / "user@1000.service"
    top.mkdir(parents=True)
    rt = RuncRuntime(HostPaths(tmp_path / "root", tmp_path / "run", tmp_path / "net"), rootless=True)
    rt._facts["delegation"] = cgroups.Delegation(2, {"memory": f"{top}/podplay", "pids": f"{top}/podplay"},
                                                 {"cpu": "not delegated"}, root=str(tmp_path))
    pod = top / "podplay" / rt.paths.tag / "u1"
    assert rt._cgroup("u1", "u1.app") == f"/user.slice/user@1000.service/podplay/{rt.paths.tag}/u1/u1.app"
    assert rt._prepare_rootless_cgroups("u1") == []  # conmon joins nothing on v2
    assert (pod / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (top / "cgroup.subtree_control").read_text() == "+memory +pids"
    for f in pod.iterdir():  # a real cgroupfs has no files to delete; the fake's would block rmdir
        f.unlink()
    for f in pod.parent.glob("cgroup.*"):
        f.unlink()
    rt._remove_cgroups("u1")
    assert not pod.exists() and not pod.parent.exists()


def test_the_driver_gives_rootless_containers_no_cgroup_path_on_v1(tmp_path):
    from reconciler.paths import HostPaths
    from reconciler.runtime.driver import RuncRuntime

    rt = RuncRuntime(HostPaths(tmp_path / "root", tmp_path / "run", tmp_path / "net"), rootless=True)
    rt._facts["delegation"] = cgroups.Delegation(1, {"memory": str(tmp_path / "memory" / "podplay-1000")}, {})
    assert rt._cgroup("u1", "u1.app") == ""
    assert rt._prepare_rootless_cgroups("u1") == [str(tmp_path / "memory" / "podplay-1000" / rt.paths.tag / "u1"
                                                      / "cgroup.procs")]


def test_probe_without_cgroups(tmp_path):
    assert cgroups.probe(1000, root=str(tmp_path)).version == 0


def test_host_uid_outside_a_user_namespace_is_the_euid():
    assert cgroups.host_uid() == os.geteuid()


# --- what a rootless container's config carries -----------------------------------------------

LIMITED = [{"name": "app", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}]


def test_rootless_without_delegation_has_no_cgroup_and_no_limits():
    cfg = config(LIMITED, context=ctx(rootless=True, cgroup_path=""))
    assert "resources" not in cfg["linux"] and "cgroupsPath" not in cfg["linux"]


def test_rootless_carries_the_limits_of_the_delegated_controllers_only():
    cfg = config(LIMITED, context=ctx(rootless=True, cgroup_path="",
                                      rootless_controllers=frozenset({"memory", "pids"})))
    assert cfg["linux"]["resources"] == {"memory": {"limit": 64 << 20, "reservation": 64 << 20},
                                         "pids": {"limit": 4096}}
    assert "cgroupsPath" not in cfg["linux"]  # v1: runc makes it under conmon's, the pod's delegated cgroup
    v2 = config(LIMITED, context=ctx(rootless=True, cgroup_path="/user.slice/u/podplay/t/u/u.app",
                                     rootless_controllers=frozenset({"memory", "pids"})))
    assert v2["linux"]["cgroupsPath"] == "/user.slice/u/podplay/t/u/u.app"
    assert v2["linux"]["resources"] == cfg["linux"]["resources"]


def test_rootless_infra_gets_its_small_limits_where_delegated():
    from tests.unit.runtime.pods import make_pod

    pod = make_pod("web", LIMITED)
    cfg = oci.infra_config(pod, ctx(rootless=True, rootless_controllers=ALL))
    assert cfg["linux"]["resources"] == {"cpu": {"shares": oci.MIN_SHARES}, "pids": {"limit": 16}}


def test_conmon_joins_the_cgroups_before_it_runs(tmp_path):
    procs = [tmp_path / "a", tmp_path / "b"]
    argv = conmon.joined(["sh", "-c", "echo ran $#", "x", "1 2"], [str(p) for p in procs])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out == "ran 1\n"
    assert [p.read_text() for p in procs] == ["0\n", "0\n"]
    assert conmon.joined(["conmon"], []) == ["conmon"]
    missing = conmon.joined(["true"], [str(tmp_path / "no" / "such")])
    assert subprocess.run(missing, capture_output=True).returncode == 125
