"""What a pod does, as a user meets it: through `podplay up`, `exec`, `logs` and `down`.

One test per user-visible behaviour of issue 4, on the real stack (registry images, overlay
snapshots, runc under conmon, CNI). The driver suites test the same things one driver at a time;
these go through the whole command line. Long-running containers trap SIGTERM (``serve``) so
that a teardown does not wait out the grace period: PID 1 ignores a signal it has no handler for.
"""

from __future__ import annotations

import os
import socket
import textwrap

import pytest

from reconciler.observed import ContainerState
from reconciler.runtime.oci import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from tests.host.e2e.conftest import (
    Stack,
    container_logs,
    exec_in,
    find_container,
    free_port,
    host_leftovers,
    http_get,
    pod_cgroup,
    pod_containers,
    wait_for,
    wait_http,
)
from tests.support.images import make_busybox_image
from tests.support.network import host_address

BUSYBOX = "localhost/busybox:latest"


def serve(cmd: str = "sleep 100000") -> str:
    """A shell command running ``cmd`` that exits at once on SIGTERM."""
    return f"trap 'exit 0' TERM; {cmd} & wait"


# A web server on port 8080 serving one page.
WEB = "echo {page} > /tmp/index.html; " + serve("httpd -f -p 8080 -h /tmp")


def up(stack: Stack, name: str, text: str, *args: str, check: bool = True, wait: bool = True):
    m = stack.write(name, textwrap.dedent(text))
    return m, stack.run("up", *(["--wait"] if wait else []), *args, str(m), check=check)


def pod_ip(stack: Stack, pod: str, namespace: str = "default") -> str:
    """The pod's IP as `podplay pods -o json` shows it."""
    import json

    pods = json.loads(stack.run("pods", "-o", "json").stdout)
    return next(p["ip"] for p in pods if (p["namespace"], p["name"]) == (namespace, pod))


def caps(status: str, field: str = "CapEff") -> set[str]:
    line = next(line for line in status.splitlines() if line.startswith(field + ":"))
    mask = int(line.split()[1], 16)
    return {name for i, name in enumerate(ALL_CAPABILITIES) if mask >> i & 1}


def status_field(status: str, field: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith(field + ":"))


# --- the process ----------------------------------------------------------------------------------

def test_command_and_args_over_the_images_entrypoint_and_cmd(stack, registry):
    image = make_busybox_image(registry, "e2e/entry", config={"entrypoint": ["echo", "ep"], "cmd": ["from-cmd"]})
    up(stack, "entry.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: entry}}
        spec:
          restartPolicy: Never
          containers:
          - {{name: image-default, image: {image.ref}}}
          - {{name: args-only, image: {image.ref}, args: [from-args]}}
          - {{name: command-only, image: {image.ref}, command: [echo, own]}}
          - {{name: both, image: {image.ref}, command: [echo, own], args: [and-args]}}
        """)
    # The image came from the registry through podplay's own pull (IfNotPresent for a tag).
    assert [i.id for i in stack.drivers().images.list_images() if image.ref in i.names]
    expected = {"image-default": "ep from-cmd\n", "args-only": "ep from-args\n", "command-only": "own\n",
                "both": "own and-args\n"}
    for name, out in expected.items():
        assert container_logs(stack, "entry", name) == out, name


def test_dollar_var_references_are_expanded_as_the_kubelet_does(stack):
    up(stack, "expand.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: expand}}
        spec:
          restartPolicy: Never
          containers:
          - name: app
            image: {BUSYBOX}
            command: [echo, "$(GREETING)", "$$(GREETING)", "$(MISSING)", "$(BOTH)", "$(GREETING", "$(URL)"]
            env:
            - {{name: GREETING, value: hello}}
            - {{name: BOTH, value: "$(GREETING)-world"}}
            - name: POD_IP
              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
            - {{name: URL, value: "http://$(POD_IP):8080/"}}
        """)
    # A value known only once the pod runs (its IP) is expanded too.
    ip = pod_ip(stack, "expand")
    assert container_logs(stack, "expand", "app") == \
        f"hello $(GREETING) $(MISSING) hello-world $(GREETING http://{ip}:8080/\n"


def test_environment_from_image_env_envfrom_refs_and_fields(stack, registry):
    image = make_busybox_image(registry, "e2e/env", config={"env": {"FROM_IMAGE": "image", "OVERRIDDEN": "image"}})
    up(stack, "env.yaml", f"""
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: settings, namespace: team}}
        data: {{MODE: fast, SHARED: from-envfrom, key1: value1}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: creds, namespace: team}}
        stringData: {{token: s3cret}}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: envpod
          namespace: team
          labels: {{app: shop}}
        spec:
          containers:
          - name: app
            image: {image.ref}
            command: [sh, -c, "{serve()}"]
            resources: {{limits: {{memory: 64Mi}}}}
            envFrom:
            - configMapRef: {{name: settings}}
            - secretRef: {{name: creds}}
              prefix: S_
            env:
            - {{name: OVERRIDDEN, value: pod}}
            - {{name: SHARED, value: from-env}}
            - name: FROM_CM
              valueFrom: {{configMapKeyRef: {{name: settings, key: key1}}}}
            - name: FROM_SECRET
              valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}
            - name: POD_NAME
              valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
            - name: POD_NAMESPACE
              valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
            - name: POD_IP
              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
            - name: APP_LABEL
              valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}
            - name: MEMORY_MI
              valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
        """)
    env = dict(line.split("=", 1) for line in
               exec_in(stack, "envpod", "app", "env", namespace="team").stdout.splitlines() if "=" in line)
    expected = {"FROM_IMAGE": "image", "OVERRIDDEN": "pod", "MODE": "fast", "SHARED": "from-env",
                "key1": "value1", "S_token": "s3cret", "FROM_CM": "value1", "FROM_SECRET": "s3cret",
                "POD_NAME": "envpod", "POD_NAMESPACE": "team", "APP_LABEL": "shop", "MEMORY_MI": "64",
                "HOSTNAME": "envpod"}
    assert {k: env.get(k) for k in expected} == expected
    ip = pod_ip(stack, "envpod", "team")
    import ipaddress

    assert env["POD_IP"] == ip and ipaddress.ip_address(ip) in stack.network.subnet
    inside = exec_in(stack, "envpod", "app", "ip", "-4", "-o", "addr", "show", "eth0", namespace="team").stdout
    assert f"inet {ip}/" in inside


def test_working_dir_from_the_image_or_the_pod(stack, registry):
    image = make_busybox_image(registry, "e2e/workdir", config={"workingdir": "/var/www"})
    up(stack, "wd.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: wd}}
        spec:
          restartPolicy: Never
          containers:
          - {{name: image, image: {image.ref}, command: [pwd]}}
          - {{name: pod, image: {image.ref}, command: [pwd], workingDir: /tmp}}
        """)
    assert container_logs(stack, "wd", "image") == "/var/www\n"
    assert container_logs(stack, "wd", "pod") == "/tmp\n"


def test_user_from_the_image_or_run_as_user(stack, registry):
    image = make_busybox_image(registry, "e2e/user", config={"user": "app"})
    up(stack, "user.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: users}}
        spec:
          restartPolicy: Never
          containers:
          - {{name: image, image: {image.ref}, command: [id]}}
          - name: pod
            image: {image.ref}
            command: [id]
            securityContext: {{runAsUser: 33, runAsGroup: 33}}
          - name: root
            image: {BUSYBOX}
            command: [id, -u]
        """)
    # The names come from the image's /etc/passwd, which the user can read: the image's root
    # directories are traversable for a non-root user.
    assert container_logs(stack, "users", "image") == "uid=1000(app) gid=1000(app)\n", "the image's USER app"
    assert container_logs(stack, "users", "pod") == "uid=33(www-data) gid=33(www-data)\n"
    assert container_logs(stack, "users", "root") == "0\n"


# --- security -------------------------------------------------------------------------------------

def test_capabilities_privileged_no_new_privileges_and_read_only_root(stack):
    stack.env["PODPLAY_POD_SECURITY"] = "privileged"  # deliberately beyond baseline
    up(stack, "sec.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: sec}}
        spec:
          containers:
          - {{name: default, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
          - name: tuned
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            securityContext:
              capabilities: {{add: [NET_ADMIN], drop: [CHOWN, KILL]}}
              allowPrivilegeEscalation: true
          - name: privileged
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            securityContext: {{privileged: true}}
          - name: readonly
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            securityContext: {{readOnlyRootFilesystem: true}}
        """)

    def status(name):
        return exec_in(stack, "sec", name, "cat", "/proc/self/status").stdout

    default = status("default")
    assert caps(default) == set(DEFAULT_CAPABILITIES) and "CAP_NET_RAW" not in caps(default)
    assert status_field(default, "NoNewPrivs") == "1"
    tuned = status("tuned")
    assert caps(tuned) == set(DEFAULT_CAPABILITIES) - {"CAP_CHOWN", "CAP_KILL"} | {"CAP_NET_ADMIN"}
    assert status_field(tuned, "NoNewPrivs") == "0"
    # NET_ADMIN is real: the container can change its own (pod's) interface.
    exec_in(stack, "sec", "tuned", "ip", "link", "set", "lo", "mtu", "9000")
    assert exec_in(stack, "sec", "default", "ip", "link", "set", "lo", "mtu", "8000", check=False).returncode != 0
    with open("/proc/self/status") as f:
        mine = caps(f.read(), "CapBnd")
    privileged = status("privileged")
    assert caps(privileged) == mine, "privileged: every capability podplay itself holds"
    assert status_field(privileged, "NoNewPrivs") == "0"
    assert exec_in(stack, "sec", "privileged", "ls", "/dev/loop-control", check=False).returncode == 0
    assert exec_in(stack, "sec", "default", "ls", "/dev/loop-control", check=False).returncode != 0
    ro = exec_in(stack, "sec", "readonly", "touch", "/file", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    exec_in(stack, "sec", "default", "touch", "/file")


def test_pod_sysctls_apply_inside_the_pod_only(stack):
    stack.env["PODPLAY_POD_SECURITY"] = "privileged"  # deliberately beyond baseline
    with open("/proc/sys/net/core/somaxconn") as f:
        host_somaxconn = f.read()
    up(stack, "sysctl.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: sysctl}}
        spec:
          securityContext:
            sysctls:
            - {{name: kernel.msgmax, value: "65000"}}
            - {{name: net.core.somaxconn, value: "1234"}}
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        """)
    assert exec_in(stack, "sysctl", "app", "cat", "/proc/sys/kernel/msgmax").stdout == "65000\n"
    assert exec_in(stack, "sysctl", "app", "cat", "/proc/sys/net/core/somaxconn").stdout == "1234\n"
    with open("/proc/sys/net/core/somaxconn") as f:
        assert f.read() == host_somaxconn


def test_resources_become_cgroup_limits(stack):
    up(stack, "res.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: res}}
        spec:
          containers:
          - name: app
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            resources:
              requests: {{cpu: 100m, memory: 16Mi}}
              limits: {{cpu: 250m, memory: 48Mi}}
        """)
    c = find_container(stack, "res", "app")
    cgroup = pod_cgroup("memory", stack.paths.tag, c.pod_uid, c.id)
    assert (cgroup / "memory.limit_in_bytes").read_text() == f"{48 * 1024 * 1024}\n"
    assert (cgroup / "memory.soft_limit_in_bytes").read_text() == f"{16 * 1024 * 1024}\n"
    cpu = pod_cgroup("cpu", stack.paths.tag, c.pod_uid, c.id)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "25000\n"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000\n"
    assert (cpu / "cpu.shares").read_text() == "102\n"
    # The container's processes are in that cgroup.
    assert str(c.pid) in (cgroup / "cgroup.procs").read_text().split()


def test_a_container_over_its_memory_limit_is_oom_killed_and_wait_says_so(stack):
    m, _ = up(stack, "oom.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: oom}}
        spec:
          restartPolicy: Never
          containers:
          - name: hog
            image: {BUSYBOX}
            command: [sh, -c, "x=$(head -c 64m /dev/zero | tr '\\\\0' a); sleep 1000"]
            resources: {{limits: {{memory: 16Mi}}}}
        """, wait=False)  # --wait could see it running before the kill: asked again below
    wait_for(lambda: find_container(stack, "oom", "hog").state == ContainerState.EXITED, "the hog to die")
    import json

    (hog,) = [c for c in json.loads(stack.run("ps", "-a", "-o", "json").stdout) if c["name"] == "hog"]
    assert hog["oom_killed"] is True and hog["exit_code"] == 137
    res = stack.run("up", "--wait", str(m), check=False)
    assert res.returncode == 3 and "! default/oom/hog: exited with code 137 (OOM killed)" in res.stderr, res.stderr


# --- the pod's network and files ------------------------------------------------------------------

def test_hostname_hosts_file_and_names_of_the_pod(stack):
    up(stack, "names.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: names}}
        spec:
          hostAliases:
          - {{ip: 192.0.2.10, hostnames: [db.example.test, cache.example.test]}}
          containers:
          - {{name: web, image: {BUSYBOX}, command: [sh, -c, "{WEB.format(page='served-by-web')}"]}}
          - {{name: client, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: custom}}
        spec:
          hostname: chosen
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        """)
    ip = pod_ip(stack, "names")
    assert exec_in(stack, "names", "client", "hostname").stdout == "names\n"
    assert exec_in(stack, "custom", "app", "hostname").stdout == "chosen\n"
    hosts = exec_in(stack, "names", "client", "cat", "/etc/hosts").stdout
    assert f"{ip}\tnames web client" in hosts.splitlines()
    assert "192.0.2.10\tdb.example.test cache.example.test" in hosts.splitlines()
    # Containers of a pod reach each other by the pod's name, a container's name and localhost.
    for host in ("names", "web", "localhost", "127.0.0.1"):
        got = wait_for(lambda h=host: exec_in(stack, "names", "client", "wget", "-qO-", f"http://{h}:8080/").stdout,
                       f"GET http://{host}:8080/ inside the pod")
        assert got == "served-by-web\n"


def test_resolv_conf_follows_the_host_and_dns_config(stack):
    up(stack, "dns.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: dns}}
        spec:
          dnsConfig:
            nameservers: [192.0.2.53]
            searches: [example.test]
            options: [{{name: ndots, value: "2"}}]
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: only-mine}}
        spec:
          dnsPolicy: "None"
          dnsConfig: {{nameservers: [192.0.2.54]}}
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        """)
    with open("/etc/resolv.conf") as f:
        host = f.read().split("\n")
    host_ns = [line.split()[1] for line in host if line.startswith("nameserver ")]
    reachable = [n for n in host_ns if not n.startswith("127.") and n != "::1"] or ["8.8.8.8", "8.8.4.4"]
    conf = exec_in(stack, "dns", "app", "cat", "/etc/resolv.conf").stdout.splitlines()
    assert [line.split()[1] for line in conf if line.startswith("nameserver ")] == (reachable + ["192.0.2.53"])[:3]
    assert any(line.startswith("search ") and line.split()[-1] == "example.test" for line in conf)
    assert "ndots:2" in next(line for line in conf if line.startswith("options ")).split()
    assert exec_in(stack, "only-mine", "app", "cat", "/etc/resolv.conf").stdout == "nameserver 192.0.2.54\n"


def test_dev_shm_is_the_pods_tmpfs_shared_by_its_containers(stack):
    up(stack, "shm.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: shm}}
        spec:
          containers:
          - {{name: a, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
          - {{name: b, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        """)
    exec_in(stack, "shm", "a", "sh", "-c", "echo shared > /dev/shm/note")
    assert exec_in(stack, "shm", "b", "cat", "/dev/shm/note").stdout == "shared\n"
    assert exec_in(stack, "shm", "b", "stat", "-f", "-c", "%T", "/dev/shm").stdout == "tmpfs\n"
    df = exec_in(stack, "shm", "b", "df", "-k", "/dev/shm").stdout.splitlines()[-1].split()
    assert df[1] == str(64 * 1024)


def _ns(stack: Stack, pod: str, name: str, kind: str) -> str:
    return exec_in(stack, pod, name, "readlink", f"/proc/self/ns/{kind}").stdout.strip()


def test_the_infra_container_holds_net_ipc_uts_and_pid_when_shared(stack):
    up(stack, "ns.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: apart}}
        spec:
          containers:
          - {{name: a, image: {BUSYBOX}, command: [sh, -c, "{serve('sleep 100001')}"]}}
          - {{name: b, image: {BUSYBOX}, command: [sh, -c, "{serve('sleep 100002')}"]}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: together}}
        spec:
          shareProcessNamespace: true
          containers:
          - {{name: a, image: {BUSYBOX}, command: [sh, -c, "{serve('sleep 100003')}"]}}
          - {{name: b, image: {BUSYBOX}, command: [sh, -c, "{serve('sleep 100004')}"]}}
        """)
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in ("net", "ipc", "uts", "pid")}
    for pod in ("apart", "together"):
        infra = next(c for c in pod_containers(stack, pod) if c.role == "infra")
        for kind in ("net", "ipc", "uts"):
            a, b = _ns(stack, pod, "a", kind), _ns(stack, pod, "b", kind)
            assert a == b == stack.infra_ns(infra.pod_uid, kind) != host[kind], (pod, kind)
        assert (infra.pid > 0) == (pod == "together")  # a pid namespace needs a process; the rest is pinned
    assert _ns(stack, "apart", "a", "pid") != _ns(stack, "apart", "b", "pid")
    assert "sleep 100002" not in exec_in(stack, "apart", "a", "ps").stdout
    assert _ns(stack, "together", "a", "pid") == _ns(stack, "together", "b", "pid") != host["pid"]
    assert "sleep 100004" in exec_in(stack, "together", "a", "ps").stdout
    # The infra's catatonit is PID 1 of the shared namespace and reaps for the pod.
    assert exec_in(stack, "together", "a", "cat", "/proc/1/cmdline").stdout.split("\0")[0] == "/catatonit"


def test_host_network_pod_uses_the_hosts_network_and_name(stack):
    stack.env["PODPLAY_POD_SECURITY"] = "privileged"  # deliberately beyond baseline
    port = free_port()
    up(stack, "hostnet.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: hostnet}}
        spec:
          hostNetwork: true
          containers:
          - name: web
            image: {BUSYBOX}
            command: [sh, -c, "echo on-the-host > /tmp/index.html; {serve(f'httpd -f -p 127.0.0.1:{port} -h /tmp')}"]
        """)
    assert wait_http(f"http://127.0.0.1:{port}/") == "on-the-host\n"
    assert _ns(stack, "hostnet", "web", "net") == os.readlink("/proc/self/ns/net")
    assert exec_in(stack, "hostnet", "web", "hostname").stdout == os.uname().nodename + "\n"
    d = stack.drivers()
    assert d.network.list_attachments() == []
    d.close()


def test_host_port_on_loopback_and_on_the_hosts_address(stack):
    port, local = free_port(), free_port()
    up(stack, "web.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: web}}
        spec:
          containers:
          - name: web
            image: {BUSYBOX}
            command: [sh, -c, "echo published > /tmp/index.html; {serve('httpd -f -p 80 -h /tmp')}"]
            ports: [{{containerPort: 80, hostPort: {port}}}]
          - name: local
            image: {BUSYBOX}
            command: [sh, -c, "echo published > /tmp/index.html; {serve('httpd -f -p 81 -h /tmp')}"]
            ports: [{{containerPort: 81, hostPort: {local}, hostIP: 127.0.0.1}}]
        """)
    assert wait_http(f"http://127.0.0.1:{port}/") == "published\n"
    assert wait_http(f"http://{host_address()}:{port}/") == "published\n"
    # With hostIP 127.0.0.1 the port is published on loopback only.
    assert wait_http(f"http://127.0.0.1:{local}/") == "published\n"
    with pytest.raises(OSError):
        http_get(f"http://{host_address()}:{local}/", timeout=5)


def test_pod_to_pod_traffic_over_the_pod_network(stack):
    up(stack, "pods.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: server}}
        spec:
          containers:
          - {{name: web, image: {BUSYBOX}, command: [sh, -c, "{WEB.format(page='from-server')}"]}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: client}}
        spec:
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        """)
    ip = pod_ip(stack, "server")
    assert ip != pod_ip(stack, "client")
    got = wait_for(lambda: exec_in(stack, "client", "app", "wget", "-qO-", f"http://{ip}:8080/").stdout,
                   "the client to reach the server")
    assert got == "from-server\n"


def test_a_host_port_in_use_is_a_clear_error_before_anything_starts(stack):
    port = free_port()
    pod = f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: NAME}}
        spec:
          containers:
          - name: web
            image: {BUSYBOX}
            command: [sh, -c, "{serve('httpd -f -p 80')}"]
            ports: [{{containerPort: 80, hostPort: {port}}}]
        """
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", port))
    holder.listen()
    try:
        m, res = up(stack, "taken.yaml", pod.replace("NAME", "first"), check=False)
        assert res.returncode == 3
        # The error names the port and who holds it (this test's own process).
        assert f"hostPort {port}/tcp is already in use by a host process listening on 0.0.0.0:{port}" \
            in res.stderr, res.stderr
        assert f"(pid {os.getpid()} " in res.stderr, res.stderr
        assert host_leftovers(stack) == [], "nothing of the pod may exist"
    finally:
        holder.close()
    stack.run("up", "--wait", str(m))
    # A second pod on the same hostPort is refused too, naming the pod that holds it.
    _, res = up(stack, "second.yaml", pod.replace("NAME", "second"), check=False)
    assert res.returncode == 3 and "default/first" in res.stderr, res.stderr
    assert not pod_containers(stack, "second")
    stack.run("down", str(m))


# --- init containers --------------------------------------------------------------------------------

def test_init_containers_run_to_completion_in_order_before_the_app(stack):
    up(stack, "init.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: init}}
        spec:
          initContainers:
          - {{name: first, image: {BUSYBOX}, command: [sh, -c, "echo first >> /work/order"],
             volumeMounts: [{{name: work, mountPath: /work}}]}}
          - {{name: second, image: {BUSYBOX}, command: [sh, -c, "test -f /work/order && echo second >> /work/order"],
             volumeMounts: [{{name: work, mountPath: /work}}]}}
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "echo app >> /work/order; {serve()}"],
             volumeMounts: [{{name: work, mountPath: /work}}]}}
          volumes:
          - {{name: work, emptyDir: {{}}}}
        """)
    got = wait_for(lambda: (out := exec_in(stack, "init", "app", "cat", "/work/order").stdout).count("\n") == 3 and out,
                   "the app to write its line")
    assert got == "first\nsecond\napp\n"
    for name in ("first", "second"):
        c = find_container(stack, "init", name)
        assert c.role == "init" and c.state == ContainerState.EXITED and c.exit_code == 0


MIGRATE = "for i in $(seq 21); do echo line $i; done; echo migrating; echo cannot reach the database >&2; exit 3"


def test_a_failing_init_container_fails_the_pod_and_shows_its_log(stack):
    m, res = up(stack, "badinit.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: badinit}}
        spec:
          initContainers:
          - name: migrate
            image: {BUSYBOX}
            command: [sh, -c, "{MIGRATE}"]
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "{serve()}"]}}
        """, check=False)
    assert res.returncode == 3
    assert "init container default/badinit/migrate exited with code 3" in res.stderr, res.stderr
    # The creation is rolled back (the init container with it), so its log comes with the error;
    # a longer log is shown up to its last 20 lines.
    assert "    migrating\n    cannot reach the database" in res.stderr, res.stderr
    assert "    line 3\n" not in res.stderr and "    line 4\n" in res.stderr
    # Any command the error tells the user to run works (it once sent them to `podplay logs` of
    # the container the rollback had just removed).
    import re

    for hint in re.findall(r"`(podplay [^`]+)`", res.stderr):
        assert stack.run(*hint.split()[1:], check=False).returncode == 0, hint
    # The app never started, and the failed pod left nothing behind.
    assert host_leftovers(stack) == []


# --- stopping ---------------------------------------------------------------------------------------

def recorder(name: str, signal: str) -> str:
    """Writes "up" to /record/NAME, and SIGNAL's name when it arrives (then exits)."""
    return f"trap 'echo {signal} >> /record/{name}; exit 0' {signal}; echo up >> /record/{name}; sleep 100000 & wait"


# Ignores SIGTERM and keeps writing: only SIGKILL ends it.
STUBBORN = ("trap 'echo TERM ignored >> /record/stubborn' TERM; echo up >> /record/stubborn; "
            "while true; do sleep 0.2; echo alive >> /record/stubborn; done")


def test_graceful_stop_signal_grace_period_then_sigkill(stack, registry, tmp_path):
    stack.env["PODPLAY_ALLOWED_HOST_PATHS"] = str(tmp_path)  # baseline, with the operator's exception
    record = tmp_path / "record"
    image = make_busybox_image(registry, "e2e/stopsig", config={"stop_signal": "SIGUSR2"})
    m, _ = up(stack, "stop.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: stop}}
        spec:
          terminationGracePeriodSeconds: 3
          containers:
          - name: term
            image: {BUSYBOX}
            command: [sh, -c, "{recorder('term', 'TERM')}"]
            volumeMounts: [{{name: record, mountPath: /record}}]
          - name: usr1
            image: {BUSYBOX}
            lifecycle: {{stopSignal: SIGUSR1}}
            command: [sh, -c, "trap 'echo TERM >> /record/usr1' TERM; {recorder('usr1', 'USR1')}"]
            volumeMounts: [{{name: record, mountPath: /record}}]
          - name: image-signal
            image: {image.ref}
            command: [sh, -c, "{recorder('usr2', 'USR2')}"]
            volumeMounts: [{{name: record, mountPath: /record}}]
          - name: stubborn
            image: {BUSYBOX}
            command: [sh, -c, "{STUBBORN}"]
            volumeMounts: [{{name: record, mountPath: /record}}]
          volumes:
          - name: record
            hostPath: {{path: {record}, type: DirectoryOrCreate}}
        """)
    for name in ("term", "usr1", "usr2", "stubborn"):
        wait_for(lambda n=name: (record / n).exists(), f"{name} to start")
    stack.run("down", str(m))
    assert (record / "term").read_text() == "up\nTERM\n"
    assert (record / "usr1").read_text() == "up\nUSR1\n", "lifecycle.stopSignal replaces SIGTERM"
    assert (record / "usr2").read_text() == "up\nUSR2\n", "the image's STOPSIGNAL"
    stubborn = (record / "stubborn").read_text().splitlines()
    # It got SIGTERM, ignored it and kept running until the grace period ended with SIGKILL.
    at = stubborn.index("TERM ignored")
    assert stubborn[at + 1:] and set(stubborn[at + 1:]) == {"alive"}, stubborn
    assert host_leftovers(stack) == []


# --- volumes ----------------------------------------------------------------------------------------

def test_memory_empty_dir_is_a_tmpfs_bounded_by_its_size_limit(stack):
    up(stack, "mem.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: mem}}
        spec:
          containers:
          - name: app
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            volumeMounts: [{{name: scratch, mountPath: /scratch}}, {{name: disk, mountPath: /disk}}]
          volumes:
          - {{name: scratch, emptyDir: {{medium: Memory, sizeLimit: 4Mi}}}}
          - {{name: disk, emptyDir: {{}}}}
        """)
    assert exec_in(stack, "mem", "app", "stat", "-f", "-c", "%T", "/scratch").stdout == "tmpfs\n"
    assert exec_in(stack, "mem", "app", "stat", "-f", "-c", "%T", "/disk").stdout != "tmpfs\n"
    full = exec_in(stack, "mem", "app", "dd", "if=/dev/zero", "of=/scratch/big", "bs=1M", "count=8", check=False)
    assert full.returncode != 0 and "No space left on device" in full.stderr
    size = int(exec_in(stack, "mem", "app", "stat", "-c", "%s", "/scratch/big").stdout)
    assert size <= 4 * 1024 * 1024


def test_host_path_types(stack, tmp_path):
    stack.env["PODPLAY_ALLOWED_HOST_PATHS"] = str(tmp_path)  # baseline, with the operator's exception
    made_dir, made_file = tmp_path / "made-dir", tmp_path / "made-file"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "hello").write_text("from the host\n")
    m, _ = up(stack, "hp.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: hp}}
        spec:
          containers:
          - name: app
            image: {BUSYBOX}
            command: [sh, -c, "echo from-the-pod > /made-dir/out; echo line > /made-file; {serve()}"]
            volumeMounts:
            - {{name: dir, mountPath: /made-dir}}
            - {{name: file, mountPath: /made-file}}
            - {{name: existing, mountPath: /existing}}
          volumes:
          - {{name: dir, hostPath: {{path: {made_dir}, type: DirectoryOrCreate}}}}
          - {{name: file, hostPath: {{path: {made_file}, type: FileOrCreate}}}}
          - {{name: existing, hostPath: {{path: {existing}, type: Directory}}}}
        """)
    wait_for((made_dir / "out").exists, "the pod to write to the created directory")
    assert (made_dir / "out").read_text() == "from-the-pod\n"
    assert made_file.read_text() == "line\n"
    assert exec_in(stack, "hp", "app", "cat", "/existing/hello").stdout == "from the host\n"
    stack.run("down", str(m))
    assert (made_dir / "out").exists(), "a hostPath belongs to the host: down keeps it"

    for kind, path, why in (("Directory", tmp_path / "missing", "does not exist"),
                            ("File", existing, "is not a file"),
                            ("Socket", existing / "hello", "is not a unix socket")):
        _, res = up(stack, "bad-hp.yaml", f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: bad-hp}}
            spec:
              containers:
              - name: app
                image: {BUSYBOX}
                command: [sh, -c, "{serve()}"]
                volumeMounts: [{{name: v, mountPath: /v}}]
              volumes:
              - {{name: v, hostPath: {{path: {path}, type: {kind}}}}}
            """, check=False)
        assert res.returncode == 3 and f"hostPath '{path}' {why}" in res.stderr, (kind, res.stderr)
        assert host_leftovers(stack) == [], kind


def test_config_map_and_secret_files_items_and_modes(stack):
    up(stack, "files.yaml", f"""
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: conf}}
        data: {{app.ini: "[main]\\n", other: "x", picked: "only me"}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: keys}}
        stringData: {{tls.key: private, tls.crt: public}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: files}}
        spec:
          containers:
          - name: app
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            volumeMounts:
            - {{name: conf, mountPath: /etc/conf}}
            - {{name: picked, mountPath: /etc/picked}}
            - {{name: keys, mountPath: /etc/keys}}
            - {{name: crt, mountPath: /etc/crt}}
          volumes:
          - {{name: conf, configMap: {{name: conf, defaultMode: 0640}}}}
          - name: picked
            configMap:
              name: conf
              items: [{{key: picked, path: sub/dir/renamed, mode: 0600}}]
          - {{name: keys, secret: {{secretName: keys}}}}
          - name: crt
            secret:
              secretName: keys
              defaultMode: 0444
              items: [{{key: tls.crt, path: cert.pem}}]
        """)

    def sh(cmd: str) -> str:
        return exec_in(stack, "files", "app", "sh", "-c", cmd).stdout

    assert sh("cat /etc/conf/app.ini; cat /etc/conf/other") == "[main]\nx"
    assert sh("stat -L -c %a /etc/conf/app.ini") == "640\n"
    assert sh("ls /etc/picked; cat /etc/picked/sub/dir/renamed") == "sub\nonly me"
    assert sh("stat -L -c %a /etc/picked/sub/dir/renamed") == "600\n"
    assert sh("cat /etc/keys/tls.key") == "private"
    assert sh("stat -L -c %a /etc/keys/tls.key /etc/keys/tls.crt") == "400\n400\n", "secrets default to 0400"
    assert sh("stat -f -c %T /etc/keys") == "tmpfs\n", "secrets never touch the disk"
    assert sh("ls /etc/crt; stat -L -c %a /etc/crt/cert.pem") == "cert.pem\n444\n"
    ro = exec_in(stack, "files", "app", "sh", "-c", "echo x > /etc/conf/new", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr


def test_a_non_root_container_can_read_its_own_owner_only_secret(stack, registry):
    # Secret files are 0400: they belong to the user the container runs as (its image's USER or
    # its runAsUser), so that it can read them; root reads them anyway. (Before, they stayed
    # root's and a non-root container got "Permission denied" for its own secret.)
    image = make_busybox_image(registry, "e2e/user", config={"user": "app"})
    m, _ = up(stack, "secret-users.yaml", f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: token}}
        stringData: {{token: t0k3n}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: other}}
        stringData: {{token: other-t0k3n}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: readers}}
        spec:
          containers:
          - name: image-user
            image: {image.ref}
            command: [sh, -c, "{serve()}"]
            volumeMounts: [{{name: token, mountPath: /token}}]
          - name: root
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            volumeMounts: [{{name: token, mountPath: /token}}]
          - name: run-as
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            securityContext: {{runAsUser: 33}}
            volumeMounts: [{{name: other, mountPath: /token}}]
          volumes:
          - {{name: token, secret: {{secretName: token}}}}
          - {{name: other, secret: {{secretName: other}}}}
        """)
    assert exec_in(stack, "readers", "image-user", "cat", "/token/token").stdout == "t0k3n"
    assert exec_in(stack, "readers", "root", "cat", "/token/token").stdout == "t0k3n"
    assert exec_in(stack, "readers", "run-as", "cat", "/token/token").stdout == "other-t0k3n"
    assert exec_in(stack, "readers", "run-as", "stat", "-L", "-c", "%a %u", "/token/token").stdout == "400 33\n"
    stack.run("stop", "-t", "0", "readers")
    stack.run("down", str(m))
    # Two users cannot both own one owner-only secret: a clear error says what to do instead.
    _, res = up(stack, "secret-users.yaml", f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: token}}
        stringData: {{token: t0k3n}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: two-users}}
        spec:
          containers:
          - name: app
            image: {image.ref}
            command: [sh, -c, "{serve()}"]
            volumeMounts: [{{name: token, mountPath: /token}}]
          - name: www
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            securityContext: {{runAsUser: 33}}
            volumeMounts: [{{name: token, mountPath: /token}}]
          volumes:
          - {{name: token, secret: {{secretName: token}}}}
        """, check=False)
    assert res.returncode == 3
    assert "default/two-users/www runs as uid 33, but the files of secret volume 'token' are owner-only and " \
        "belong to uid 1000: give the pod a securityContext.fsGroup" in res.stderr, res.stderr
    assert host_leftovers(stack) == []


def test_a_claim_survives_down_unless_volumes(stack):
    m, _ = up(stack, "claim.yaml", f"""
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {{name: data}}
        spec:
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: 16Mi}}}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: keeper}}
        spec:
          containers:
          - name: app
            image: {BUSYBOX}
            command: [sh, -c, "echo start >> /data/starts; {serve()}"]
            volumeMounts: [{{name: data, mountPath: /data}}]
          volumes:
          - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
        """)

    def starts() -> str:
        return wait_for(lambda: exec_in(stack, "keeper", "app", "cat", "/data/starts").stdout, "the claim's file")

    assert starts() == "start\n"
    stack.run("down", str(m))
    assert (stack.paths.claims / "default" / "data" / "starts").exists()
    stack.run("up", "--wait", str(m))
    assert starts() == "start\nstart\n"
    stack.run("down", "--volumes", str(m))
    assert not (stack.paths.claims / "default" / "data").exists()
    stack.run("up", "--wait", str(m))
    assert starts() == "start\n"
    stack.run("down", "--volumes", str(m))


def test_a_sub_path_cannot_escape_its_volume_through_a_symlink(stack, tmp_path):
    secret_dir = tmp_path / "host-secret"
    secret_dir.mkdir()
    (secret_dir / "shadow").write_text("host only\n")
    # An init container plants a symlink in the shared volume; the app asks for it as a subPath.
    m, res = up(stack, "escape.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: escape}}
        spec:
          initContainers:
          - name: plant
            image: {BUSYBOX}
            command: [sh, -c, "ln -s {secret_dir} /work/out && mkdir -p /work/fine"]
            volumeMounts: [{{name: work, mountPath: /work}}]
          containers:
          - name: app
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            volumeMounts:
            - {{name: work, mountPath: /stolen, subPath: out}}
          volumes:
          - {{name: work, emptyDir: {{}}}}
        """, check=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "subPath" in res.stderr and "out" in res.stderr, res.stderr
    assert host_leftovers(stack) == []
    assert (secret_dir / "shadow").read_text() == "host only\n"
    # The same volume with a subPath that stays inside it works.
    m.write_text(m.read_text().replace("subPath: out", "subPath: fine"))
    stack.run("up", "--wait", str(m))
    exec_in(stack, "escape", "app", "sh", "-c", "echo inside > /stolen/file")
    stack.run("down", str(m))


def test_read_only_volume_mounts(stack):
    up(stack, "ro.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: ro}}
        spec:
          containers:
          - name: writer
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            volumeMounts: [{{name: shared, mountPath: /shared}}]
          - name: reader
            image: {BUSYBOX}
            command: [sh, -c, "{serve()}"]
            volumeMounts: [{{name: shared, mountPath: /shared, readOnly: true}}]
          volumes:
          - {{name: shared, emptyDir: {{}}}}
        """)
    exec_in(stack, "ro", "writer", "sh", "-c", "echo written > /shared/f")
    assert exec_in(stack, "ro", "reader", "cat", "/shared/f").stdout == "written\n"
    res = exec_in(stack, "ro", "reader", "sh", "-c", "echo x > /shared/g", check=False)
    assert res.returncode != 0 and "Read-only file system" in res.stderr


# --- the engine through the command line -------------------------------------------------------------

# TEST makes each test's pods its own: pods with the same name and spec have the same uid, and
# tests run in parallel share the host's iptables (chain names derive from the uid) and cgroups.
TWO_PODS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: alpha}}
spec:
  containers:
  - name: app
    image: {BUSYBOX}
    command: [sh, -c, "{serve()}"]
    env: [{{name: VERSION, value: "1"}}, {{name: TEST, value: TEST_NAME}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: beta}}
spec:
  containers:
  - name: app
    image: {BUSYBOX}
    command: [sh, -c, "{serve()}"]
    env: [{{name: TEST, value: TEST_NAME}}]
"""


def two_pods(request) -> str:
    return TWO_PODS.replace("TEST_NAME", request.node.name)


def _running(stack: Stack) -> dict[str, tuple[str, int, float]]:
    return {c.pod: (c.id, c.pid, c.started_at) for c in stack.containers() if c.role == "app"}


def test_up_twice_touches_nothing_and_says_so(stack, request):
    m, _ = up(stack, "two.yaml", two_pods(request))
    before = _running(stack)
    assert all(pid for _, pid, _ in before.values())
    again = stack.run("up", "--wait", str(m))
    assert "No changes. The host matches the manifests." in again.stdout
    assert _running(stack) == before


def test_a_changed_pod_is_replaced_while_the_others_keep_running(stack, request):
    m, _ = up(stack, "two.yaml", two_pods(request))
    before = _running(stack)
    m.write_text(two_pods(request).replace('value: "1"', 'value: "2"'))
    res = stack.run("up", "--wait", str(m))
    assert "~ replaced pod default/alpha (spec changed)" in res.stdout
    assert "beta" not in res.stdout
    after = _running(stack)
    assert after["default/beta"] == before["default/beta"], "the unchanged pod was not touched"
    assert after["default/alpha"][0] != before["default/alpha"][0]
    assert exec_in(stack, "alpha", "app", "sh", "-c", "echo $VERSION").stdout == "2\n"
    assert len({c.pod_uid for c in pod_containers(stack, "alpha")}) == 1, "the old instance is gone"


def test_replace_forces_every_pod_to_be_recreated(stack, request):
    m, _ = up(stack, "two.yaml", two_pods(request))
    before = _running(stack)
    res = stack.run("up", "--replace", "--wait", str(m))
    assert "~ replaced pod default/alpha (forced)" in res.stdout
    assert "~ replaced pod default/beta (forced)" in res.stdout
    after = _running(stack)
    for pod in ("default/alpha", "default/beta"):
        assert after[pod][0] == before[pod][0], "same spec, same container id"
        assert after[pod][1:] != before[pod][1:], "a new process"


def test_wait_reports_a_container_that_exits_with_an_error(stack):
    _, res = up(stack, "fail.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: fail}}
        spec:
          restartPolicy: Never
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "exit 7"]}}
          - {{name: ok, image: {BUSYBOX}, command: ["true"]}}
        """, check=False)
    assert res.returncode == 3
    assert "! default/fail/app: exited with code 7" in res.stderr
    assert "default/fail/ok" not in res.stderr, "a container that finished with 0 is fine under Never"


@pytest.mark.parametrize("policy", ["Always", "OnFailure"])
def test_up_restarts_an_exited_container_its_policy_restarts(stack, policy):
    m, _ = up(stack, "restart.yaml", f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: restart}}
        spec:
          restartPolicy: {policy}
          containers:
          - {{name: app, image: {BUSYBOX}, command: [sh, -c, "echo run >> /data/runs; {serve()}"],
             volumeMounts: [{{name: data, mountPath: /data}}]}}
          volumes:
          - {{name: data, emptyDir: {{}}}}
        """)
    first = find_container(stack, "restart", "app")
    os.kill(first.pid, 9)
    wait_for(lambda: find_container(stack, "restart", "app").state == ContainerState.EXITED, "the kill")
    res = stack.run("up", "--wait", str(m))
    assert "> restarted default/restart [app] (exited)" in res.stdout
    again = find_container(stack, "restart", "app")
    assert again.state == ContainerState.RUNNING and again.restart_count == 1
    assert exec_in(stack, "restart", "app", "cat", "/data/runs").stdout == "run\nrun\n", "the emptyDir survived"
