"""A pod on real runc + conmon: the infra holds the namespaces, app containers join them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.errors import ContainerRuntimeError
from reconciler.observed import ContainerState, NetworkStatus
from tests.support.leaks import mounts_under
from tests.unit.runtime.pods import image, make_pod

NS_SCRIPT = "for n in net ipc uts pid; do echo $n=$(readlink /proc/self/ns/$n); done; hostname"


def namespaces(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def host_ns(name: str) -> str:
    return os.readlink(f"/proc/self/ns/{name}")


def test_containers_share_network_ipc_uts_and_shm(pods, runtime, capfd):
    pod = make_pod("shared", [
        {"name": "server", "command": ["sh", "-c", "mkdir -p /www && echo pong > /www/ping && "
                                                   "exec httpd -f -p 127.0.0.1:8080 -h /www"]},
        {"name": "client", "command": ["sleep", "3600"]},
    ])
    info = pods.up(pod)
    assert set(info.namespaces) == {"network", "ipc", "uts"}
    server, client = (c.id for c in pod.containers)

    # pod-local traffic over 127.0.0.1 from one container to the other (retry until httpd listens)
    code = runtime.exec_in(client, ["sh", "-c", "for i in $(seq 100); do "
                                                "wget -q -O /dev/shm/got http://127.0.0.1:8080/ping && exit 0; "
                                                "sleep 0.1; done; exit 1"])
    assert code == 0
    # /dev/shm is the pod's: the client wrote there, the server reads it
    capfd.readouterr()
    assert runtime.exec_in(server, ["cat", "/dev/shm/got"]) == 0
    assert capfd.readouterr().out == "pong\n"


def test_namespaces_are_the_infras_and_not_the_hosts(pods, runtime, capfd):
    pod = make_pod("nsinfo", [{"name": "a", "command": ["sleep", "3600"]},
                              {"name": "b", "command": ["sleep", "3600"]}])
    info = pods.up(pod)
    seen = []
    for c in pod.containers:
        capfd.readouterr()
        assert runtime.exec_in(c.id, ["sh", "-c", NS_SCRIPT]) == 0
        out = capfd.readouterr().out
        seen.append(namespaces(out))
        assert out.splitlines()[-1] == "nsinfo"
    a, b = seen
    for ns in ("net", "ipc", "uts"):
        held = info.namespaces[{"net": "network"}.get(ns, ns)]  # /proc/PID/ns/… or a pinned file
        assert a[ns] == b[ns] == f"{ns}:[{os.stat(held).st_ino}]"
        assert a[ns] != host_ns(ns)
    assert a["pid"] != b["pid"]  # no shareProcessNamespace: each container has its own
    assert a["pid"] != host_ns("pid")


def test_a_pod_without_a_shared_pid_namespace_has_no_sandbox_process(pods, runtime, host_paths, capfd):
    """Its net, ipc and uts namespaces are pinned by bind mounts: no catatonit, no conmon for the
    sandbox; the pod's name is its hostname, its loopback is up; removal leaves no mount."""
    pod = make_pod("pinned", [{"name": "a", "command": ["sleep", "3600"]}])
    info = pods.up(pod)
    assert info.pid == 0
    pod_dir = host_paths.runroot / "pods" / pod.uid
    for kind in ("network", "ipc", "uts"):
        assert info.namespaces[kind] == str(pod_dir / "ns" / kind) and os.path.ismount(info.namespaces[kind])
    assert not (runtime.paths.runc_root / pod.uid).exists()  # runc never heard of it
    infra = next(c for c in runtime.list_containers() if c.role == "infra")
    assert (infra.state, infra.pid, infra.pod) == (ContainerState.RUNNING, 0, "default/pinned")
    capfd.readouterr()
    assert runtime.exec_in(pod.containers[0].id, ["sh", "-c", "hostname; ip -o link show lo"]) == 0
    out = capfd.readouterr().out
    assert out.splitlines()[0] == "pinned" and "UP" in out.splitlines()[1]
    runtime.stop_container(pod.containers[0].id, timeout=0)
    runtime.remove_infra(pod.uid)
    assert not [m for m in mounts_under(host_paths.runroot) if pod.uid in m]
    assert not pod_dir.exists()


def test_sysctls_or_a_shared_pid_namespace_keep_the_catatonit_infra(pods):
    sysctls = {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}]}
    for pod in (make_pod("pidns", [{"name": "a", "command": ["sleep", "3600"]}], shareProcessNamespace=True),
                make_pod("sysctl", [{"name": "a", "command": ["sleep", "3600"]}], securityContext=sysctls)):
        info = pods.up(pod, start=False)
        assert info.pid > 0 and Path(f"/proc/{info.pid}/cmdline").read_text().startswith("/catatonit")


def test_share_process_namespace(pods, runtime, capfd):
    pod = make_pod("pidshare", [{"name": "a", "command": ["sleep", "3601"]},
                                {"name": "b", "command": ["sleep", "3602"]}], shareProcessNamespace=True)
    info = pods.up(pod)
    assert "pid" in info.namespaces
    capfd.readouterr()
    assert runtime.exec_in(pod.containers[1].id, ["ps", "-o", "pid,args"]) == 0
    out = capfd.readouterr().out
    assert "sleep 3601" in out and "sleep 3602" in out
    assert "catatonit" in out  # the infra is PID 1 of the shared namespace
    assert [line.split()[0] for line in out.splitlines() if "catatonit" in line] == ["1"]


def test_host_namespaces(pods, runtime, capfd):
    pod = make_pod("hostns", [{"name": "a", "command": ["sleep", "3600"]}], hostNetwork=True, hostPID=True,
                   hostIPC=True, hostname="blah")
    info = pods.up(pod)
    assert info.namespaces == {}
    capfd.readouterr()
    assert runtime.exec_in(pod.containers[0].id, ["sh", "-c", NS_SCRIPT]) == 0
    out = capfd.readouterr().out
    got = namespaces(out)
    for ns in ("net", "ipc", "uts", "pid"):
        assert got[ns] == host_ns(ns)
    assert out.splitlines()[-1] == os.uname().nodename  # spec.hostname is ignored with hostNetwork


def test_init_containers_run_in_order_and_share_volumes(pods, runtime):
    vol = pods.volume("work")
    pod = make_pod("inits", [{"name": "app", "command": ["sh", "-c", "cat /work/order /dev/shm/from-init"],
                              "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                   init=[{"name": "first", "command": ["sh", "-c", "echo first >> /work/order; "
                                                                   "echo shm > /dev/shm/from-init"],
                          "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                         {"name": "second", "command": ["sh", "-c", "echo second >> /work/order"],
                          "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                   volumes=[{"name": "work", "emptyDir": {}}])
    pods.up(pod, volumes={"work": vol})
    code, out = pods.run(pod.containers[0].id)
    assert (code, out) == (0, "first\nsecond\nshm")  # /dev/shm is the pod's, kept between containers
    states = {c.name: (c.role, c.state, c.exit_code) for c in runtime.list_containers()}
    assert states["first"] == ("init", ContainerState.EXITED, 0)
    assert states["second"] == ("init", ContainerState.EXITED, 0)


def test_failing_init_container_reports_its_exit_code(pods, runtime):
    pod = make_pod("badinit", [{"name": "app", "command": ["true"]}],
                   init=[{"name": "setup", "command": ["sh", "-c", "echo cannot set up >&2; exit 3"]}])
    pods.up(pod)
    setup = pod.init_containers[0].id
    assert runtime.wait_container(setup, 10) == 3
    assert [(s, t) for _, s, t in runtime.read_logs(setup)] == [("stderr", b"cannot set up")]
    assert pod.containers[0].id not in {c.id for c in runtime.list_containers()}


def test_pod_ip_hostname_and_aliases(pods, runtime):
    pod = make_pod("named", [{"name": "app", "command": ["sh", "-c", "cat /etc/hosts; echo IP=$POD_IP; hostname; "
                                                                      "cat /etc/hostname"],
                              "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
                             {"name": "side", "command": ["sleep", "3600"]}],
                   hostname="www", hostAliases=[{"ip": "10.9.9.9", "hostnames": ["db"]}])
    pods.up(pod, network=NetworkStatus("podplay", ip="10.88.0.42", prefix_length=16))
    code, out = pods.run(pod.containers[0].id)
    assert code == 0
    lines = out.splitlines()
    assert "10.88.0.42\twww named app side" in lines
    assert "10.9.9.9\tdb" in lines
    assert "IP=10.88.0.42" in lines
    assert lines[-2:] == ["www", "www"]


def test_sysctls_apply_to_the_pod(pods, runtime):
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        host_value = f.read()
    # podman's fixture 24-pod-sysctls plus two of the kubelet's safe set
    pod = make_pod("sysctl", [{"name": "app", "command": [
        "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/kernel/shm_rmid_forced",
        "/proc/sys/kernel/msgmax", "/proc/sys/net/core/somaxconn"]}],
        securityContext={"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"},
                                     {"name": "kernel.shm_rmid_forced", "value": "1"},
                                     {"name": "kernel.msgmax", "value": "65535"},
                                     {"name": "net.core.somaxconn", "value": "65535"}]})
    pods.up(pod)
    assert pods.run(pod.containers[0].id) == (0, "80\n1\n65535\n65535")
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert f.read() == host_value  # the pod's network namespace changed, not the host's


def test_a_container_needs_its_pods_infra(pods, runtime):
    pod = make_pod("noinfra", [{"name": "app", "command": ["true"]}])
    with pytest.raises(ContainerRuntimeError, match="no running infra"):
        runtime.create_container(pod, pod.containers[0], rootfs=pods.rootfs(), image=image(), volumes={},
                                 network=None)
    assert runtime.list_containers() == []
