"""What a container process may do, checked from inside it."""

from __future__ import annotations

import json
import os
import resource

import pytest

from reconciler.errors import ContainerRuntimeError
from reconciler.model.kube import PodSecurityContext, Sysctl
from reconciler.runtime import oci
from reconciler.runtime.driver import RuncRuntime
from tests.host.runtime.conftest import cgroup_parent
from tests.unit.runtime.pods import bypass_loader, image, make_pod


def status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def cap_mask(names) -> int:
    return sum(1 << oci.ALL_CAPABILITIES.index(n) for n in names)


def run(pods, pod, **kw) -> tuple[int, str]:
    pods.up(pod, **kw)
    return pods.run(pod.containers[0].id)


def test_default_capabilities_and_seccomp(pods):
    code, out = run(pods, make_pod("caps", [{"name": "app", "command": ["cat", "/proc/self/status"]}]))
    assert code == 0
    assert int(status_field(out, "CapEff"), 16) == cap_mask(oci.DEFAULT_CAPABILITIES)
    assert int(status_field(out, "CapBnd"), 16) == cap_mask(oci.DEFAULT_CAPABILITIES)
    assert status_field(out, "NoNewPrivs") == "1"
    assert status_field(out, "Seccomp") == "2"  # filter mode: the runtime default profile


def test_capability_add_and_drop_and_unconfined(pods):
    pod = make_pod("caps2", [{"name": "app", "command": ["cat", "/proc/self/status"],
                              "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN", "KILL"]},
                                                  "allowPrivilegeEscalation": True,
                                                  "seccompProfile": {"type": "Unconfined"}}}])
    code, out = run(pods, pod)
    want = [c for c in oci.DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")] + ["CAP_NET_ADMIN"]
    assert int(status_field(out, "CapEff"), 16) == cap_mask(want)
    assert status_field(out, "NoNewPrivs") == "0"
    assert status_field(out, "Seccomp") == "0"


def test_privileged(pods):
    pod = make_pod("priv", [{"name": "app", "command": ["sh", "-c", "cat /proc/self/status; ls /dev"],
                             "securityContext": {"privileged": True}}])
    code, out = run(pods, pod)
    assert code == 0
    with open("/proc/self/status") as f:
        host_bounding = int(status_field(f.read(), "CapBnd"), 16)
    assert int(status_field(out, "CapEff"), 16) == host_bounding
    assert status_field(out, "Seccomp") == "0"
    assert "loop0" in out.split() or "tty1" in out.split() or "vda" in out.split()  # host devices


def test_localhost_seccomp_profile_blocks_a_syscall(host_paths, pods):
    profiles = host_paths.root.parent / "seccomp"
    (profiles / "podplay").mkdir(parents=True)
    (profiles / "podplay" / "no-mkdir.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    pods.rt.seccomp_root = str(profiles)
    pod = make_pod("seccomp", [{"name": "app", "command": ["sh", "-c", "touch /tmp/file && mkdir /tmp/dir"],
                                "securityContext": {"seccompProfile": {"type": "Localhost",
                                                                       "localhostProfile": "podplay/no-mkdir.json"}}}])
    code, out = run(pods, pod)
    assert code == 1
    assert "Operation not permitted" in out


def test_missing_localhost_profile_is_refused_before_anything_runs(pods, runtime, host_paths):
    pod = make_pod("noprof", [{"name": "app", "command": ["true"],
                               "securityContext": {"seccompProfile": {"type": "Localhost",
                                                                      "localhostProfile": "nope.json"}}}])
    runtime.create_infra(pod)
    with pytest.raises(ContainerRuntimeError, match="nope.json"):
        runtime.create_container(pod, pod.containers[0], rootfs=pods.rootfs(), image=image(), volumes={},
                                 network=None)
    assert not (host_paths.containers / pod.containers[0].id).exists()


def test_rlimits_are_the_hosts_hard_limits_at_most(pods):
    code, out = run(pods, make_pod("rlim", [{"name": "app", "command": ["sh", "-c", "ulimit -n; ulimit -Hn"]}]))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = str(min(hard, oci.DEFAULT_RLIMITS["RLIMIT_NOFILE"]))
    assert (code, out.split()) == (0, [expected, expected])


def test_read_only_root_filesystem(pods):
    vol = pods.volume("scratch")
    pod = make_pod("ro", [{"name": "app", "command": ["sh", "-c", "touch /x; echo root=$?; touch /scratch/x; "
                                                                  "echo vol=$?"],
                           "securityContext": {"readOnlyRootFilesystem": True},
                           "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
                   volumes=[{"name": "scratch", "emptyDir": {}}])
    code, out = run(pods, pod, volumes={"scratch": vol})
    assert "root=1" in out and "vol=0" in out


def test_image_user_name_is_resolved_in_the_images_passwd(pods):
    pod = make_pod("user", [{"name": "app", "command": ["sh", "-c", "id; echo HOME=$HOME"]}],
                   securityContext={"supplementalGroups": [4000]})
    code, out = run(pods, pod, img=image(user="app"))
    assert code == 0
    assert "uid=1234(app) gid=2345(app)" in out
    assert "3456(extra)" in out and "4000" in out
    assert "HOME=/home/app" in out


def test_run_as_non_root_refuses_a_root_image_and_touches_nothing(pods, runtime, host_paths):
    pod = make_pod("nonroot", [{"name": "app", "command": ["id"], "securityContext": {"runAsNonRoot": True}}])
    runtime.create_infra(pod)
    before = sorted(p.name for p in host_paths.containers.iterdir())
    with pytest.raises(ContainerRuntimeError, match="runAsNonRoot"):
        runtime.create_container(pod, pod.containers[0], rootfs=pods.rootfs(), image=image(), volumes={},
                                 network=None)
    assert sorted(p.name for p in host_paths.containers.iterdir()) == before


def test_bad_sysctl_leaves_the_host_untouched(host_paths):
    rt = RuncRuntime(host_paths, cgroup_parent=cgroup_parent(host_paths))
    pod = bypass_loader(make_pod("badsysctl", [{"name": "app"}]),
                        security_context=PodSecurityContext(sysctls=(Sysctl("kernel.panic", "1"),)))
    with pytest.raises(ContainerRuntimeError, match="kernel.panic"):
        rt.create_infra(pod)
    assert list(host_paths.root.iterdir()) == []
    assert list(host_paths.runroot.iterdir()) == []


def test_sub_path_cannot_escape_its_volume(pods, runtime, host_paths):
    vol = pods.volume("data")
    os.symlink("/etc", os.path.join(vol, "evil"))
    pod = make_pod("subpath", [{"name": "app", "command": ["sh", "-c", "echo hi > /mnt/written"],
                                "volumeMounts": [{"name": "data", "mountPath": "/mnt", "subPath": "evil"}]}],
                   volumes=[{"name": "data", "emptyDir": {}}])
    runtime.create_infra(pod)
    with pytest.raises(ContainerRuntimeError, match="not within its volume"):
        runtime.create_container(pod, pod.containers[0], rootfs=pods.rootfs(), image=image(),
                                 volumes={"data": vol}, network=None)
    assert not (host_paths.containers / pod.containers[0].id).exists()
    assert not os.path.exists("/etc/written")


def test_sub_path_is_made_inside_its_volume(pods):
    vol = pods.volume("data")
    pod = make_pod("subpath2", [{"name": "app", "command": ["sh", "-c", "echo hi > /mnt/written"],
                                 "volumeMounts": [{"name": "data", "mountPath": "/mnt", "subPath": "logs/app"}]}],
                   volumes=[{"name": "data", "emptyDir": {}}])
    code, _ = run(pods, pod, volumes={"data": vol})
    assert code == 0
    with open(os.path.join(vol, "logs", "app", "written")) as f:
        assert f.read() == "hi\n"
