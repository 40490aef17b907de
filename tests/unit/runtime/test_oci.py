"""OCI config generation: the Kubernetes semantics a user relies on, one table per rule."""

from __future__ import annotations

import pytest

from reconciler.errors import ContainerRuntimeError
from reconciler.model.kube import Container, PodSecurityContext, Sysctl, VolumeMount
from reconciler.observed import LABEL_CONTAINER, LABEL_POD, LABEL_POD_UID, LABEL_ROLE, LABEL_STOP_SIGNAL
from reconciler.runtime import oci
from reconciler.runtime.users import ResolvedUser
from tests.unit.runtime.pods import bypass_loader, image, make_pod, with_container_spec

NS = {"network": "/proc/7/ns/net", "ipc": "/proc/7/ns/ipc", "uts": "/proc/7/ns/uts", "pid": "/proc/7/ns/pid"}


def ctx(**kw) -> oci.RuntimeContext:
    base = dict(rootfs="/var/lib/podplay/snapshots/x/rootfs", cgroup_path="/podplay/u/u.c", namespaces=NS,
                hosts_file="/run/podplay/pods/u/hosts", resolv_conf_file="/run/podplay/pods/u/resolv.conf",
                hostname_file="/run/podplay/pods/u/hostname", shm_dir="/run/podplay/pods/u/shm",
                seccomp_default={"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]})
    base.update(kw)
    return oci.RuntimeContext(**base)


def config(containers, c_index=0, img=None, context=None, **spec):
    pod = make_pod("web", containers, **spec)
    return oci.container_config(pod, pod.containers[c_index], img or image(), context or ctx())


# --- argv ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command,args,expected", [
    ((), (), ["/entry", "-x", "default-cmd"]),
    ((), ("a1", "a2"), ["/entry", "-x", "a1", "a2"]),
    (("/bin/run",), (), ["/bin/run"]),
    (("/bin/run",), ("a1",), ["/bin/run", "a1"]),
])
def test_command_and_args_over_entrypoint_and_cmd(command, args, expected):
    spec = Container(name="c", command=command, args=args)
    assert oci.process_args(spec, ("/entry", "-x"), ("default-cmd",)) == expected


@pytest.mark.parametrize("text,expected", [
    ("$(A)", "a"),
    ("___$(B)___", "___b___"),
    ("$(A)-$(A)", "a-a"),
    ("$$(A)", "$(A)"),
    ("$$$(A)", "$a"),
    ("$$$$(A)", "$$(A)"),
    ("$(MISSING)", "$(MISSING)"),
    ("$(A", "$(A"),
    ("$A", "$A"),
    ("end$", "end$"),
    ("$()", "$()"),
    ("f000-$$A", "f000-$A"),
    ("no refs", "no refs"),
])
def test_variable_expansion_follows_the_kubelet(text, expected):
    assert oci.expand(text, {"A": "a", "B": "b"}.get) == expected


def test_args_are_expanded_with_the_container_env():
    cfg = config([{"name": "c", "command": ["echo", "$(GREETING)", "$$(GREETING)"],
                   "env": [{"name": "GREETING", "value": "hi"}]}])
    assert cfg["process"]["args"] == ["echo", "hi", "$(GREETING)"]


def test_no_command_at_all_is_a_clear_error():
    with pytest.raises(ContainerRuntimeError, match="no command"):
        config([{"name": "c"}], img=image(cmd=()))


# --- env ----------------------------------------------------------------------------------------

def env_of(cfg) -> dict[str, str]:
    return dict(item.split("=", 1) for item in cfg["process"]["env"])


def test_env_values_expand_against_earlier_ones_only():
    cfg = config([{"name": "c", "env": [
        {"name": "FIRST", "value": "1"},
        {"name": "SECOND", "value": "$(FIRST)-$(THIRD)"},
        {"name": "THIRD", "value": "3"},
    ]}])
    env = env_of(cfg)
    assert env["SECOND"] == "1-$(THIRD)"
    assert env["THIRD"] == "3"


def test_env_overrides_image_env_and_gets_defaults():
    img = image(env=("PATH=/opt/bin:/bin", "LANG=C", "MODE=image"))
    cfg = config([{"name": "c", "env": [{"name": "MODE", "value": "pod"}]}], img=img,
                 context=ctx(user=ResolvedUser(1000, 1000, name="app", home="/home/app")))
    env = env_of(cfg)
    assert env["PATH"] == "/opt/bin:/bin"
    assert env["LANG"] == "C"
    assert env["MODE"] == "pod"
    assert env["HOSTNAME"] == "web"
    assert env["HOME"] == "/home/app"
    assert "TERM" not in env


def test_default_path_and_term_with_tty():
    env = env_of(config([{"name": "c", "tty": True}], img=image(env=())))
    assert env["PATH"] == oci.DEFAULT_PATH
    assert env["TERM"] == "xterm"


def test_runtime_values_are_filled_in():
    pod = make_pod("web", [{"name": "c", "env": [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "URL", "value": "http://$(POD_IP):80"},
    ]}])
    context = ctx(pod_ip="10.88.0.5", host_ip="192.168.1.2", node_name="box", node_cpu_millis=2000,
                  node_memory=4 * 1024**3)
    env = env_of(oci.container_config(pod, pod.containers[0], image(), context))
    assert env["POD_IP"] == "10.88.0.5"
    assert env["HOST_IP"] == "192.168.1.2"
    assert env["NODE"] == "box"
    assert env["NAME"] == "web"
    assert env["UID"] == pod.uid
    assert env["MEM"] == "4096"  # no limit: the node's memory, as the kubelet reports it
    assert env["CPU"] == "2"
    assert env["URL"] == "http://10.88.0.5:80"


# --- stop signal --------------------------------------------------------------------------------

@pytest.mark.parametrize("lifecycle,image_signal,expected", [
    (None, "", "SIGTERM"),
    (None, "SIGQUIT", "SIGQUIT"),
    (None, "9", "SIGKILL"),
    (None, "usr1", "SIGUSR1"),
    ({"stopSignal": "SIGINT"}, "SIGQUIT", "SIGINT"),
])
def test_stop_signal(lifecycle, image_signal, expected):
    c = {"name": "c"} | ({"lifecycle": lifecycle} if lifecycle else {})
    cfg = config([c], img=image(stop_signal=image_signal))
    assert cfg["annotations"][LABEL_STOP_SIGNAL] == expected


def test_bad_stop_signal_is_an_error():
    with pytest.raises(ContainerRuntimeError, match="STOPSIGNAL"):
        config([{"name": "c"}], img=image(stop_signal="SIGNOPE"))


# --- security -----------------------------------------------------------------------------------

def caps(sc: dict) -> list[str]:
    return config([{"name": "c", "securityContext": sc}])["process"]["capabilities"]["bounding"]


def test_default_capabilities_are_cri_o_s_and_exclude_net_raw():
    got = caps({})
    assert got == list(oci.DEFAULT_CAPABILITIES)
    assert "CAP_NET_RAW" not in got


@pytest.mark.parametrize("add,drop,expected", [
    (["NET_ADMIN"], [], [*oci.DEFAULT_CAPABILITIES, "CAP_NET_ADMIN"]),
    (["CAP_SYS_TIME"], ["CHOWN"], [c for c in oci.DEFAULT_CAPABILITIES if c != "CAP_CHOWN"] + ["CAP_SYS_TIME"]),
    ([], ["ALL"], []),
    (["NET_BIND_SERVICE"], ["ALL"], ["CAP_NET_BIND_SERVICE"]),
    (["ALL"], ["CHOWN"], [c for c in oci.ALL_CAPABILITIES if c != "CAP_CHOWN"]),
    (["net_admin"], ["net_admin"], list(oci.DEFAULT_CAPABILITIES)),
])
def test_capability_add_and_drop(add, drop, expected):
    assert caps({"capabilities": {"add": add, "drop": drop}}) == expected


def test_unknown_capability_is_an_error():
    with pytest.raises(ContainerRuntimeError, match="unknown capability 'CAP_FLY'"):
        caps({"capabilities": {"add": ["CAP_FLY"]}})


def test_privileged_gets_everything_and_no_confinement():
    cfg = config([{"name": "c", "securityContext": {"privileged": True}}])
    assert cfg["process"]["capabilities"]["bounding"] == list(oci.ALL_CAPABILITIES)
    assert cfg["process"]["noNewPrivileges"] is False
    assert "seccomp" not in cfg["linux"]
    assert "maskedPaths" not in cfg["linux"]
    assert cfg["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sys_mount = next(m for m in cfg["mounts"] if m["destination"] == "/sys")
    assert "ro" not in sys_mount["options"]


def test_capabilities_the_kernel_lacks_are_left_out():
    pod = make_pod("web", [{"name": "c", "securityContext": {"privileged": True}}])
    cfg = oci.container_config(pod, pod.containers[0], image(), ctx(cap_last_cap=37))
    assert cfg["process"]["capabilities"]["bounding"] == list(oci.ALL_CAPABILITIES[:38])


def test_all_means_what_the_host_can_give_and_a_missing_capability_is_an_error():
    host = tuple(c for c in oci.ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE")
    pod = make_pod("web", [{"name": "c", "securityContext": {"privileged": True}}])
    cfg = oci.container_config(pod, pod.containers[0], image(), ctx(host_capabilities=host))
    assert cfg["process"]["capabilities"]["bounding"] == list(host)
    pod = make_pod("web", [{"name": "c", "securityContext": {"capabilities": {"add": ["ALL"]}}}])
    assert "CAP_SYS_RESOURCE" not in oci.container_config(pod, pod.containers[0], image(), ctx(
        host_capabilities=host))["process"]["capabilities"]["bounding"]
    pod = make_pod("web", [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_RESOURCE"]}}}])
    with pytest.raises(ContainerRuntimeError, match="CAP_SYS_RESOURCE is not available on this host"):
        oci.container_config(pod, pod.containers[0], image(), ctx(host_capabilities=host))


@pytest.mark.parametrize("sc,expected", [
    ({}, True),
    ({"allowPrivilegeEscalation": False}, True),
    ({"allowPrivilegeEscalation": True}, False),
    ({"privileged": True}, False),
])
def test_no_new_privileges(sc, expected):
    assert config([{"name": "c", "securityContext": sc}])["process"]["noNewPrivileges"] is expected


def test_privileged_without_escalation_is_contradictory():
    with pytest.raises(ContainerRuntimeError, match="contradicts"):
        config([{"name": "c", "securityContext": {"privileged": True, "allowPrivilegeEscalation": False}}])


def test_masked_and_readonly_paths_by_default():
    linux = config([{"name": "c"}])["linux"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/sys/firmware" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]


@pytest.mark.parametrize("pod_level,container_level,confined", [
    (None, None, True),
    ({"type": "Unconfined"}, None, False),
    ({"type": "Unconfined"}, {"type": "RuntimeDefault"}, True),
    ({"type": "RuntimeDefault"}, {"type": "Unconfined"}, False),
])
def test_seccomp_profile_choice(pod_level, container_level, confined):
    c = {"name": "c"} | ({"securityContext": {"seccompProfile": container_level}} if container_level else {})
    spec = {"securityContext": {"seccompProfile": pod_level}} if pod_level else {}
    cfg = config([c], **spec)
    assert ("seccomp" in cfg["linux"]) is confined


def test_localhost_seccomp_profile_needs_to_be_loaded_by_the_driver():
    c = {"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost",
                                                              "localhostProfile": "deny-mkdir.json"}}}
    with pytest.raises(ContainerRuntimeError, match="deny-mkdir.json"):
        config([c])
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    cfg = config([c], context=ctx(seccomp_localhost=profile))
    assert cfg["linux"]["seccomp"]["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    pod = make_pod("web", [c])
    assert oci.localhost_profile(pod, pod.containers[0]) == "deny-mkdir.json"


def test_missing_default_seccomp_profile_is_reported():
    with pytest.raises(ContainerRuntimeError, match="seccomp.json"):
        config([{"name": "c"}], context=ctx(seccomp_default=None))


def test_readonly_root_filesystem_also_makes_pod_files_readonly():
    cfg = config([{"name": "c", "securityContext": {"readOnlyRootFilesystem": True}}])
    assert cfg["root"] == {"path": ctx().rootfs, "readonly": True}
    hosts = next(m for m in cfg["mounts"] if m["destination"] == "/etc/hosts")
    assert "ro" in hosts["options"]


def test_rlimits_never_exceed_the_host_hard_limit():
    cfg = config([{"name": "c"}], context=ctx(host_rlimits={"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": oci.RLIM_MAX}))
    limits = {r["type"]: (r["soft"], r["hard"]) for r in cfg["process"]["rlimits"]}
    assert limits["RLIMIT_NOFILE"] == (20000, 20000)
    assert limits["RLIMIT_NPROC"] == (oci.DEFAULT_RLIMITS["RLIMIT_NPROC"],) * 2


# --- sysctls ------------------------------------------------------------------------------------

def infra(context=None, sysctls=(), **spec):
    pod = make_pod("web", [{"name": "c"}], **spec)
    if sysctls:
        pod = bypass_loader(pod, security_context=PodSecurityContext(sysctls=tuple(Sysctl(*s) for s in sysctls)))
    return oci.infra_config(pod, context or ctx())


def test_safe_sysctls_go_to_the_infra():
    cfg = infra(sysctls=[
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("kernel.shm_rmid_forced", "1"),
        ("net/ipv4/conf/all/forwarding", "1"),
        ("fs.mqueue.msg_max", "20"),
    ])
    assert cfg["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1",
                                      "net.ipv4.conf.all.forwarding": "1", "fs.mqueue.msg_max": "20"}


@pytest.mark.parametrize("name,spec,message", [
    ("kernel.panic", {}, "not allowed"),
    ("vm.swappiness", {}, "not allowed"),
    ("net.ipv4.ip_forward", {"hostNetwork": True}, "hostNetwork"),
    ("kernel.shmmax", {"hostIPC": True}, "hostIPC"),
])
def test_unsafe_sysctls_are_refused(name, spec, message):
    with pytest.raises(ContainerRuntimeError, match=message):
        infra(sysctls=[(name, "1")], **spec)


# --- resources ----------------------------------------------------------------------------------

@pytest.mark.parametrize("milli,shares", [(0, 2), (1, 2), (100, 102), (250, 256), (1000, 1024), (300000, 262144)])
def test_cpu_shares_formula(milli, shares):
    assert oci.cpu_shares(milli) == shares


@pytest.mark.parametrize("milli,quota", [(1, 1000), (10, 1000), (250, 25000), (1500, 150000)])
def test_cpu_quota_formula(milli, quota):
    assert oci.cpu_quota(milli) == quota


@pytest.mark.parametrize("resources,expected", [
    ({}, {"cpu": {"shares": 2}}),
    ({"limits": {"memory": "64Mi", "cpu": "500m"}},
     {"memory": {"limit": 64 * 2**20, "reservation": 64 * 2**20}, "cpu": {"shares": 512, "quota": 50000,
                                                                          "period": 100000}}),
    ({"requests": {"memory": "32Mi", "cpu": "0.1"}, "limits": {"memory": "64Mi"}},
     {"memory": {"limit": 64 * 2**20, "reservation": 32 * 2**20}, "cpu": {"shares": 102}}),
])
def test_resources(resources, expected):
    got = config([{"name": "c", "resources": resources}])["linux"]["resources"]
    assert {k: v for k, v in got.items() if k in ("memory", "cpu")} == expected
    assert got["pids"] == {"limit": 4096}
    assert got["devices"] == [{"allow": False, "access": "rwm"}]


def test_swap_is_capped_to_the_limit_when_accounted():
    got = config([{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}],
                 context=ctx(swap_accounting=True))["linux"]["resources"]["memory"]
    assert got["swap"] == got["limit"]


def test_tiny_memory_limit_is_refused():
    with pytest.raises(ContainerRuntimeError, match="below"):
        config([{"name": "c", "resources": {"limits": {"memory": "1Mi"}}}])


# --- namespaces ---------------------------------------------------------------------------------

def namespaces(cfg) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in cfg["linux"]["namespaces"]}


@pytest.mark.parametrize("spec,expected", [
    ({}, {"mount": None, "network": NS["network"], "uts": NS["uts"], "ipc": NS["ipc"], "pid": None}),
    ({"shareProcessNamespace": True},
     {"mount": None, "network": NS["network"], "uts": NS["uts"], "ipc": NS["ipc"], "pid": NS["pid"]}),
    ({"hostNetwork": True}, {"mount": None, "ipc": NS["ipc"], "pid": None}),
    ({"hostPID": True}, {"mount": None, "network": NS["network"], "uts": NS["uts"], "ipc": NS["ipc"]}),
    ({"hostIPC": True, "hostNetwork": True, "hostPID": True}, {"mount": None}),
])
def test_app_containers_join_the_infra(spec, expected):
    assert namespaces(config([{"name": "c"}], **spec)) == expected


@pytest.mark.parametrize("spec,expected", [
    ({}, {"mount", "network", "uts", "ipc", "pid"}),
    ({"hostNetwork": True}, {"mount", "ipc", "pid"}),
    ({"hostIPC": True, "hostPID": True}, {"mount", "network", "uts"}),
])
def test_infra_creates_the_pod_namespaces(spec, expected):
    cfg = infra(**spec)
    assert set(namespaces(cfg)) == expected
    assert all(p is None for p in namespaces(cfg).values())
    assert ("hostname" in cfg) is ("uts" in expected)
    assert cfg["process"]["capabilities"]["bounding"] == []


def test_joining_needs_the_infra_namespaces():
    with pytest.raises(ContainerRuntimeError, match="network namespace"):
        config([{"name": "c"}], context=ctx(namespaces={}))


# --- mounts -------------------------------------------------------------------------------------

def mounts(cfg) -> dict[str, dict]:
    return {m["destination"]: m for m in cfg["mounts"]}


def test_default_mounts():
    got = mounts(config([{"name": "c"}]))
    assert got["/proc"]["type"] == "proc"
    assert got["/dev/shm"]["source"] == ctx().shm_dir
    assert got["/dev/mqueue"]["type"] == "mqueue"
    assert "ro" in got["/sys"]["options"]
    assert "ro" in got["/sys/fs/cgroup"]["options"]
    for f, source in (("/etc/hosts", ctx().hosts_file), ("/etc/resolv.conf", ctx().resolv_conf_file),
                      ("/etc/hostname", ctx().hostname_file)):
        assert got[f]["source"] == source


def test_host_ipc_uses_the_host_shm():
    got = mounts(config([{"name": "c"}], hostIPC=True))
    assert got["/dev/shm"]["source"] == "/dev/shm"
    assert got["/dev/mqueue"]["type"] == "mqueue"


VOLUMES = [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cm", "optional": True}}]


def test_volume_mounts_read_only_and_sub_path():
    c = {"name": "c", "volumeMounts": [
        {"name": "data", "mountPath": "/data"},
        {"name": "data", "mountPath": "/logs", "subPath": "logs/app", "readOnly": True},
        {"name": "cfg", "mountPath": "/etc/app"},
    ]}
    context = ctx(volumes={"data": "/vol/data", "cfg": "/vol/cfg"},
                  subpaths={("data", "logs/app"): "/vol/data/logs/app"})
    got = mounts(config([c], context=context, volumes=VOLUMES))
    assert got["/data"] == {"destination": "/data", "type": "bind", "source": "/vol/data",
                            "options": ["rbind", "rprivate"]}
    assert got["/logs"]["source"] == "/vol/data/logs/app"
    assert "ro" in got["/logs"]["options"]
    assert "ro" in got["/etc/app"]["options"]  # configMap volumes are always read-only


@pytest.mark.parametrize("sub_path,message", [("../etc", "'..'"), ("/etc", "relative"), ("a/../../b", "'..'")])
def test_hostile_sub_paths_are_refused(sub_path, message):
    pod = make_pod("web", [{"name": "c"}], volumes=VOLUMES)
    pod = with_container_spec(pod, volume_mounts=(VolumeMount("data", "/data", sub_path=sub_path),))
    with pytest.raises(ContainerRuntimeError, match=message):
        oci.container_config(pod, pod.containers[0], image(), ctx(volumes={"data": "/vol/data"}))


def test_a_volume_replaces_the_default_mount_at_the_same_place_and_parents_come_first():
    c = {"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/dev/shm"},
                                       {"name": "cfg", "mountPath": "/etc/resolv.conf", "subPath": "resolv"}]}
    context = ctx(volumes={"data": "/vol/data", "cfg": "/vol/cfg"}, subpaths={("cfg", "resolv"): "/vol/cfg/resolv"})
    cfg = config([c], context=context, volumes=VOLUMES)
    shm = [m for m in cfg["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm", "type": "bind", "source": "/vol/data", "options": ["rbind", "rprivate"]}]
    assert [m["source"] for m in cfg["mounts"] if m["destination"] == "/etc/resolv.conf"] == ["/vol/cfg/resolv"]
    order = [m["destination"] for m in cfg["mounts"]]
    assert order.index("/dev") < order.index("/dev/shm") < order.index("/dev/pts") or \
        order.index("/dev") < order.index("/dev/pts")
    assert order.index("/sys") < order.index("/sys/fs/cgroup")


def test_undeclared_volume_is_an_error():
    pod = make_pod("web", [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}], volumes=VOLUMES)
    with pytest.raises(ContainerRuntimeError, match="'data' has no host path"):
        oci.container_config(pod, pod.containers[0], image(), ctx(volumes={}))


# --- the rest -----------------------------------------------------------------------------------

def test_annotations_carry_the_labels_podplay_relists_by():
    pod = make_pod("web", [{"name": "c"}])
    cfg = oci.container_config(pod, pod.containers[0], image(), ctx())
    a = cfg["annotations"]
    assert a[LABEL_POD] == "default/web"
    assert a[LABEL_POD_UID] == pod.uid
    assert a[LABEL_CONTAINER] == "c"
    assert a[LABEL_ROLE] == "app"
    assert a[oci.LABEL_IMAGE] == "localhost/busybox:1"
    assert a[oci.LABEL_IMAGE_ID] == image().id
    assert oci.infra_config(pod, ctx())["annotations"][LABEL_ROLE] == "infra"


def test_init_containers_are_labelled_init():
    pod = make_pod("web", [{"name": "c"}], init=[{"name": "setup"}])
    cfg = oci.container_config(pod, pod.init_containers[0], image(), ctx())
    assert cfg["annotations"][LABEL_ROLE] == "init"


@pytest.mark.parametrize("spec_dir,image_dir,expected", [
    ("", "", "/"), ("", "/srv", "/srv"), ("/work", "/srv", "/work"), ("rel", "", "/rel"),
])
def test_working_dir(spec_dir, image_dir, expected):
    c = {"name": "c"} | ({"workingDir": spec_dir} if spec_dir else {})
    assert config([c], img=image(working_dir=image_dir))["process"]["cwd"] == expected


def test_user_and_groups_come_from_the_context():
    cfg = config([{"name": "c"}], context=ctx(user=ResolvedUser(1000, 2000, (3000, 4000))))
    assert cfg["process"]["user"] == {"uid": 1000, "gid": 2000, "additionalGids": [3000, 4000]}


def test_relative_rootfs_is_refused():
    with pytest.raises(ContainerRuntimeError, match="absolute"):
        config([{"name": "c"}], context=ctx(rootfs="snapshots/x"))
