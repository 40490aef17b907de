"""Rootless podplay's paths and prerequisite checks, without a host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler import rootless
from reconciler.errors import EnvironmentProblem
from reconciler.paths import HostPaths
from tests.unit.runtime.pods import make_pod


def test_paths_follow_xdg(tmp_path):
    env = {"HOME": "/home/u", "XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c", "XDG_RUNTIME_DIR": str(tmp_path)}
    assert rootless.data_dir(env) == Path("/d/podplay")
    assert rootless.config_dir(env) == Path("/c/podplay")
    assert rootless.run_dir(env) == tmp_path / "podplay"


def test_paths_default_under_home_and_the_temp_dir():
    env = {"HOME": "/home/u", "TMPDIR": "/scratch"}
    assert rootless.data_dir(env) == Path("/home/u/.local/share/podplay")
    assert rootless.config_dir(env) == Path("/home/u/.config/podplay")
    assert rootless.run_dir(env) == Path(f"/scratch/podplay-run-{os.geteuid()}")


def test_a_runtime_dir_that_is_not_ours_is_not_used(tmp_path):
    os.chown(tmp_path, 12345, 12345)  # the tests run as root: give it to someone else
    env = {"HOME": "/home/u", "XDG_RUNTIME_DIR": str(tmp_path), "TMPDIR": "/scratch"}
    assert rootless.run_dir(env) == Path(f"/scratch/podplay-run-{os.geteuid()}")
    assert rootless.run_dir({**env, "XDG_RUNTIME_DIR": str(tmp_path / "missing")}).parent == Path("/scratch")


def test_a_foreign_fallback_dir_is_refused(tmp_path):
    mine = rootless.ensure_own_dir(tmp_path / "mine")
    assert (os.stat(mine).st_mode & 0o777) == 0o700
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    with pytest.raises(EnvironmentProblem, match="not a directory of your own"):
        rootless.ensure_own_dir(theirs)


def test_root_keeps_the_system_paths(monkeypatch):
    for var in ("PODPLAY_ROOT", "PODPLAY_RUNROOT", "PODPLAY_NETWORK_DIR"):
        monkeypatch.delenv(var, raising=False)
    paths = HostPaths.from_env()
    assert (paths.root, paths.runroot, paths.network_dir) == (
        Path("/var/lib/podplay"), Path("/run/podplay"), Path("/etc/podplay/net.d"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "/d")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/c")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/t")
    paths = HostPaths.from_env()
    assert (paths.root, paths.runroot, paths.network_dir) == (
        Path("/d/podplay"), Path("/t/podplay-run-1000"), Path("/c/podplay/net.d"))


def test_every_missing_prerequisite_is_named_with_its_fix(tmp_path, monkeypatch):
    (tmp_path / "subuid").write_text("other:100000:65536\nu:200000:1000\n")
    (tmp_path / "subgid").write_text("")
    monkeypatch.setattr(rootless.shutil, "which", lambda name: None)
    problems = rootless.check_prerequisites("u", 1000, subuid=str(tmp_path / "subuid"),
                                            subgid=str(tmp_path / "subgid"), probe=False)
    text = [str(p) for p in problems]
    assert any("gives u only 1000 subordinate user IDs" in t and "usermod --add-subuids" in t for t in text)
    assert any("gives u no subordinate group IDs" in t and "usermod --add-subgids" in t for t in text)
    assert any("newuidmap is not installed" in t and "apt-get install uidmap" in t for t in text)
    assert any("newgidmap is not installed" in t for t in text)
    assert any("slirp4netns" in t and "apt-get install slirp4netns" in t for t in text)


def test_a_host_with_everything_has_no_problem(tmp_path, monkeypatch):
    tun = tmp_path / "tun"
    tun.write_text("")
    os.chmod(tun, 0o666)  # this VM's own /dev/net/tun is 0600 (no udev)
    monkeypatch.setattr(rootless, "TUN", str(tun))
    (tmp_path / "subuid").write_text("1000:100000:65536\n")  # by uid works too
    (tmp_path / "subgid").write_text("u:100000:65536\n")
    problems = rootless.check_prerequisites("u", 1000, subuid=str(tmp_path / "subuid"),
                                            subgid=str(tmp_path / "subgid"))
    assert problems == []  # this host: uidmap and slirp4netns installed, user namespaces allowed


def test_disabled_user_namespaces_are_reported(monkeypatch):
    real = rootless._read
    monkeypatch.setattr(rootless, "_read", lambda p: "0\n" if p.endswith("max_user_namespaces") else real(p))
    (problem,) = rootless._userns_problems(probe=True)
    assert "user namespaces are disabled" in problem.what and "user.max_user_namespaces" in problem.fix


def test_low_host_ports_name_the_file_field_and_fix():
    pod = make_pod("web", [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80},
                                                   {"containerPort": 81, "hostPort": 8080}]}])
    (problem,) = rootless.low_host_ports(rootless.host_port_uses([pod]), start=1024)
    assert "default/web" in problem.what and "spec.containers[0].ports[0].hostPort 80" in problem.what
    assert "test.yaml" in problem.what
    assert "ip_unprivileged_port_start=80" in problem.fix
    assert rootless.low_host_ports(rootless.host_port_uses([pod]), start=0) == []


def test_a_tun_device_others_cannot_open_is_named(tmp_path):
    dev = tmp_path / "tun"
    dev.write_text("")
    os.chmod(dev, 0o600)
    (problem,) = rootless._tun_problems(str(dev))
    assert "not usable by other users (mode 600)" in problem.what and f"chmod 0666 {dev}" in problem.fix
    os.chmod(dev, 0o666)
    assert rootless._tun_problems(str(dev)) == []
    assert "modprobe tun" in rootless._tun_problems(str(tmp_path / "none"))[0].fix


@pytest.mark.parametrize(("env", "installed", "want"), [
    ({}, {"slirp4netns", "pasta"}, "slirp4netns"),  # slirp4netns first, as before pasta was known
    ({}, {"pasta"}, "pasta"),  # pasta when slirp4netns is absent
    ({"PODPLAY_ROOTLESS_NETWORK": "pasta"}, {"slirp4netns", "pasta"}, "pasta"),  # asked for
    ({"PODPLAY_ROOTLESS_NETWORK": "slirp4netns"}, {"slirp4netns", "pasta"}, "slirp4netns"),
])
def test_the_rootless_network_tool_is_chosen(env, installed, want):
    tool, problem = rootless.choose_network(env, lambda name: f"/usr/bin/{name}" if name in installed else None)
    assert (tool, problem) == (want, None)


@pytest.mark.parametrize(("env", "installed", "said"), [
    ({}, set(), "neither slirp4netns nor pasta is installed: rootless pods would have no network; "
                "as root: apt-get install slirp4netns (or passt)"),
    ({"PODPLAY_ROOTLESS_NETWORK": "pasta"}, {"slirp4netns"},
     "PODPLAY_ROOTLESS_NETWORK=pasta asks for pasta, which is not installed; as root: apt-get install passt"),
    ({"PODPLAY_ROOTLESS_NETWORK": "vde"}, {"slirp4netns"},
     "PODPLAY_ROOTLESS_NETWORK='vde' names no rootless network; set it to slirp4netns or pasta, or unset it"),
])
def test_a_rootless_network_that_cannot_be_had_is_named_with_its_fix(env, installed, said):
    tool, problem = rootless.choose_network(env, lambda name: f"/usr/bin/{name}" if name in installed else None)
    assert (tool, str(problem)) == ("", said)
