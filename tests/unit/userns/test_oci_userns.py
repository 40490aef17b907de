"""The OCI configs of a hostUsers: false pod: the infra creates the user namespace, the app
containers join it (with the mappings repeated, as runc 1.1 wants), volumes keep locked flags."""

from __future__ import annotations

import pytest

from reconciler.errors import ContainerRuntimeError, Severity
from reconciler.idmap import IdMap
from reconciler.manifests import load_objects
from reconciler.runtime import oci
from tests.unit.runtime.pods import bypass_loader, image, make_pod

IDS = IdMap(1 << 30, 2 << 30)
NS = {"network": "/proc/9/ns/net", "ipc": "/proc/9/ns/ipc", "uts": "/proc/9/ns/uts", "user": "/proc/9/ns/user"}
MAPS = ([{"containerID": 0, "hostID": 1 << 30, "size": 65536}], [{"containerID": 0, "hostID": 2 << 30, "size": 65536}])


def ctx(**kw) -> oci.RuntimeContext:
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    return oci.RuntimeContext(**{"rootfs": "/r", "cgroup_path": "/podplay/u/u.c", "namespaces": NS, "id_map": IDS,
                                 "seccomp_default": seccomp, **kw})


def userns_pod(**container):
    return make_pod("u", [{"name": "app", "command": ["sleep", "1"], **container}], hostUsers=False)


def test_the_infra_creates_the_user_namespace_with_the_pods_range():
    config = oci.infra_config(userns_pod(), ctx())
    linux = config["linux"]
    assert linux["namespaces"][0] == {"type": "user"}
    assert (linux["uidMappings"], linux["gidMappings"]) == MAPS


def test_app_containers_join_it_with_the_same_mappings():
    pod = userns_pod()
    linux = oci.container_config(pod, pod.containers[0], image(), ctx())["linux"]
    assert {"type": "user", "path": "/proc/9/ns/user"} in linux["namespaces"]
    assert (linux["uidMappings"], linux["gidMappings"]) == MAPS


def test_without_the_infras_user_namespace_the_container_is_refused():
    pod = userns_pod()
    with pytest.raises(ContainerRuntimeError, match="user namespace to join"):
        oci.container_config(pod, pod.containers[0], image(), ctx(namespaces={k: v for k, v in NS.items()
                                                                              if k != "user"}))


def test_other_pods_have_no_user_namespace():
    pod = make_pod("h", [{"name": "app", "command": ["sleep", "1"]}])
    config = oci.container_config(pod, pod.containers[0], image(), ctx(id_map=None))
    assert "uidMappings" not in config["linux"]
    assert all(ns["type"] != "user" for ns in config["linux"]["namespaces"])


def test_a_privileged_container_in_a_user_namespace_gets_no_host_devices():
    pod = userns_pod(securityContext={"privileged": True})
    dev = oci.HostDevice("/dev/sda", "b", 8, 0)
    linux = oci.container_config(pod, pod.containers[0], image(), ctx(host_devices=(dev,)))["linux"]
    assert "devices" not in linux
    host = make_pod("p", [{"name": "app", "command": ["sleep", "1"], "securityContext": {"privileged": True}}])
    assert oci.container_config(host, host.containers[0], image(), ctx(id_map=None, host_devices=(dev,)))[
        "linux"]["devices"][0]["path"] == "/dev/sda"


def test_volumes_keep_their_sources_locked_flags():
    pod = make_pod("u", [{"name": "app", "command": ["sleep", "1"],
                          "volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]}],
                   hostUsers=False, volumes=[{"name": "s", "secret": {"secretName": "x", "optional": True}}])
    config = oci.container_config(pod, pod.containers[0], image(),
                                  ctx(volumes={"s": "/staged/s"}, volume_options={"s": ("nosuid", "nodev", "noexec")}))
    (mount,) = [m for m in config["mounts"] if m["destination"] == "/s"]
    assert mount["options"] == ["rbind", "rprivate", "nosuid", "nodev", "noexec", "ro"]


@pytest.mark.parametrize("flag", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_are_refused_with_host_users_false(flag):
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                "spec": {"hostUsers": False, flag: True, "containers": [{"name": "a", "image": "busybox"}]}}
    loaded = load_objects([manifest], source="x.yaml")
    assert [d.message for d in loaded.errors] == [f"hostUsers: false cannot be combined with {flag}: true"]
    # … and the runtime checks again for library callers that bypass the loader.
    pod = bypass_loader(userns_pod(), **{{"hostNetwork": "host_network", "hostPID": "host_pid",
                                          "hostIPC": "host_ipc"}[flag]: True})
    with pytest.raises(ContainerRuntimeError, match="cannot be combined"):
        oci.infra_config(pod, ctx())


def test_host_users_is_acted_on_not_warned_about():
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                "spec": {"hostUsers": False, "containers": [{"name": "a", "image": "busybox"}]}}
    loaded = load_objects([manifest], source="x.yaml")
    assert loaded.ok
    assert not [d for d in loaded.diagnostics if d.severity == Severity.WARNING and "hostUsers" in d.message]
