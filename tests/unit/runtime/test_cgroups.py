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


@pytest.mark.parametrize("writable,offered,words", [
    (False, ALL, "is not delegated to uid 1000"),
    (True, ALL, "with memory, pids, cpu, but podplay places rootless pods in a delegated cgroup only on cgroup v1"),
    (True, frozenset(), "without the memory, pids and cpu controllers"),
])
def test_v2_is_detected_and_reported_as_not_applied(writable, offered, words):
    d = cgroups.decide(cgroups.Probed(2, 1000, v2_dir="/sys/fs/cgroup/user.slice/u", v2_writable=writable,
                                      v2_controllers=offered))
    assert d.dirs == {} and set(d.missing) == ALL
    assert words in d.reason(["memory"])


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


def test_probe_v2_reads_the_own_cgroup(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    own = tmp_path / "user.slice" / "u"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("memory pids\n")
    for f in ("cgroup.procs", "cgroup.subtree_control"):
        (own / f).write_text("")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/user.slice/u\n")
    p = cgroups.probe(1000, root=str(tmp_path), proc_cgroup=str(proc))
    assert (p.version, p.v2_dir, p.v2_writable, p.v2_controllers) == (2, str(own), True, frozenset({"memory", "pids"}))


def test_probe_without_cgroups(tmp_path):
    assert cgroups.probe(1000, root=str(tmp_path)).version == 0


def test_host_uid_outside_a_user_namespace_is_the_euid():
    assert cgroups.host_uid() == os.geteuid()


# --- what a rootless container's config carries -----------------------------------------------

LIMITED = [{"name": "app", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}]


def test_rootless_without_delegation_has_no_cgroup_and_no_limits():
    cfg = config(LIMITED, context=ctx(rootless=True))
    assert "resources" not in cfg["linux"] and "cgroupsPath" not in cfg["linux"]


def test_rootless_carries_the_limits_of_the_delegated_controllers_only():
    cfg = config(LIMITED, context=ctx(rootless=True, rootless_controllers=frozenset({"memory", "pids"})))
    assert cfg["linux"]["resources"] == {"memory": {"limit": 64 << 20, "reservation": 64 << 20},
                                         "pids": {"limit": 4096}}
    assert "cgroupsPath" not in cfg["linux"]  # runc makes it under conmon's, the pod's delegated cgroup


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
