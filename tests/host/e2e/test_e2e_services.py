"""Services on the real stack: names from every pod, ClusterIP load-balancing over the ready
endpoints (iptables DNAT), hairpin, named targetPorts, and exact teardown of the rules."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.host.e2e.conftest import Stack, exec_in, wait_for
from tests.support.leaks import iptables_rules_mentioning

IMAGE = "localhost/busybox:latest"

BACKEND = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: backend}}}}
  template:
    metadata: {{labels: {{app: backend}}}}
    spec:
      containers:
      - name: app
        image: {IMAGE}
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /tmp/w && hostname > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"]
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{port: 80, targetPort: http}}]
"""

CLIENT = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"""


@pytest.fixture
def svc(stack, request) -> Stack:
    """The e2e stack with a Service range of the test's own (next to its pod subnet)."""
    cidr = f"10.223.{stack.network.slot}.0/24"
    stack.env["PODPLAY_SERVICE_CIDR"] = cidr
    stack.paths = dataclasses.replace(stack.paths, service_cidr=cidr)
    request.node.leak_needles = (*getattr(request.node, "leak_needles", ()), f"10.223.{stack.network.slot}.")
    yield stack
    stack.run("down", str(stack.tmp / "manifests"), check=False)


def service_ip(stack: Stack, pod: str, name: str) -> str:
    hosts = exec_in(stack, pod, "app", "cat", "/etc/hosts").stdout
    for line in hosts.splitlines():
        if f" {name}.default.svc.cluster.local" in line or line.endswith(f"\t{name}"):
            return line.split()[0]
    raise AssertionError(f"{name} is not in {pod}'s /etc/hosts:\n{hosts}")


def get(stack: Stack, pod: str, url: str) -> str:
    """The body at http://HOST[:PORT]/ from inside `pod`. With nc, not wget: the static busybox's
    wget crashes in glibc's getaddrinfo (no NSS modules in the image), nc resolves names fine."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    res = exec_in(stack, pod, "app", "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port or 80}",
                  check=False)
    assert res.returncode == 0 and "200 OK" in res.stdout, f"GET {url} from {pod}: {res.stdout!r} {res.stderr!r}"
    return res.stdout.replace("\r", "").split("\n\n", 1)[1].strip()


def test_a_service_is_reached_by_name_from_another_pod_and_balanced_over_its_replicas(svc):
    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    ip = service_ip(svc, "client", "backend")
    assert ip.startswith(f"10.223.{svc.network.slot}.")
    resolv = exec_in(svc, "client", "app", "cat", "/etc/resolv.conf").stdout
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv and "ndots:5" in resolv
    # The kubelet's service links, given to containers created with the Service in place.
    links = exec_in(svc, "client", "app", "sh", "-c", "echo $BACKEND_SERVICE_HOST:$BACKEND_SERVICE_PORT").stdout
    assert links.strip() == f"{ip}:80", links
    seen = set()
    for name in ("backend", "backend.default", "backend.default.svc", "backend.default.svc.cluster.local"):
        seen.add(get(svc, "client", f"http://{name}/"))
    for _ in range(12):
        seen.add(get(svc, "client", f"http://{ip}/"))
        if len(seen) == 2:
            break
    assert seen == {"backend-0", "backend-1"}, seen
    # Hairpin: a replica reaching its own Service (half the time, itself).
    for _ in range(6):
        assert get(svc, "backend-0", "http://backend/") in ("backend-0", "backend-1")
    # The host reaches a ClusterIP too (the OUTPUT chain).
    import urllib.request

    with urllib.request.urlopen(f"http://{ip}/", timeout=5) as r:  # noqa: S310 - a pod of this test
        assert r.read().decode().strip() in ("backend-0", "backend-1")
    # The address is kept across passes.
    svc.run("up", str(m))
    assert service_ip(svc, "client", "backend") == ip
    tag = svc.paths.tag
    assert iptables_rules_mentioning(f"{tag}-SVC")
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{tag}-"), iptables_rules_mentioning(f"{tag}-")


def test_a_killed_replica_leaves_the_rotation_and_requests_keep_succeeding(svc):
    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    d = svc.drivers()
    try:
        [victim] = [c for c in d.runtime.list_containers() if c.pod == "default/backend-1" and c.role == "infra"]
        d.runtime.stop_container(victim.id, 0)  # the whole pod's network goes with its infra
    finally:
        d.close()
    svc.run("up", str(m))  # one tick: the dead replica is out before it is replaced
    for _ in range(8):
        assert get(svc, "client", "http://backend/") in ("backend-0", "backend-1")
    svc.run("down", str(m))


def test_headless_service_names_each_ready_pod(svc):
    m = svc.write("app.yaml", BACKEND.replace("  selector: {app: backend}\n  ports",
                                              "  clusterIP: None\n  selector: {app: backend}\n  ports")
                  + "---\n" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    hosts = exec_in(svc, "client", "app", "cat", "/etc/hosts").stdout
    lines = [line for line in hosts.splitlines() if "backend.default.svc.cluster.local" in line]
    assert len(lines) == 2 and all(line.startswith(f"10.222.{svc.network.slot}.") for line in lines), hosts
    assert get(svc, "client", "http://backend:8080/") in ("backend-0", "backend-1")
    svc.run("down", str(m))


def pod_netns(stack: Stack, pod: str) -> str:
    d = stack.drivers()
    try:
        [infra] = [c for c in d.runtime.list_containers() if c.pod == f"default/{pod}" and c.role == "infra"]
        return d.runtime.infra_info(infra.pod_uid).namespaces["network"]
    finally:
        d.close()


def test_udp_service(svc):
    # busybox has no UDP server: the endpoint's server is the test network's UDP echo, run in
    # the pod's own network namespace; the client is another pod's namespace.
    m = svc.write("udp.yaml", f"""\
apiVersion: v1
kind: Pod
metadata: {{name: echo, labels: {{app: echo}}}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    ports: [{{name: dns, containerPort: 5353, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: dns, port: 53, targetPort: dns, protocol: UDP}}, {{name: tcp, port: 80, targetPort: 8080}}]
---
""" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    svc.network.serve_udp_echo(pod_netns(svc, "echo"), 5353)
    ip = service_ip(svc, "client", "echo")
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
            f"s.sendto(b'hi', ({ip!r}, 53)); print(s.recvfrom(100)[0].decode())")
    res = svc.network.exec_in(pod_netns(svc, "client"), ["python3", "-c", code])
    assert res.stdout.strip() == "echo:hi", res
    svc.run("down", str(m))


def test_the_plan_shows_services_and_json(svc):
    m = svc.write("app.yaml", BACKEND)
    res = svc.run("plan", str(m))
    assert "+ create service default/backend (new)" in res.stdout
    plan = json.loads(svc.run("plan", "-o", "json", str(m)).stdout)
    assert any(t["kind"] == "services" for t in plan["transactions"])


def test_readiness_takes_a_replica_out_of_the_rotation_and_back_under_watch(svc):
    from tests.host.e2e.test_e2e_watch import Watcher

    probed = BACKEND.replace("exec httpd", "touch /tmp/ready && exec httpd").replace(
        "        ports: [{name: http, containerPort: 8080}]\n",
        "        ports: [{name: http, containerPort: 8080}]\n"
        "        readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}\n")
    m = svc.write("app.yaml", probed + "---\n" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))

    def answers(n: int = 10) -> set[str]:
        return {get(svc, "client", "http://backend/") for _ in range(n)}

    assert wait_for(lambda: answers() == {"backend-0", "backend-1"}, "both replicas in the rotation", 30)
    w = Watcher(svc, m.parent, svc.tmp / "watch.log")
    try:
        exec_in(svc, "backend-1", "app", "rm", "/tmp/ready")
        wait_for(lambda: w.alive() and answers(4) == {"backend-0"}, "backend-1 out of the rotation", 30)
        assert answers(10) == {"backend-0"}  # every request still succeeds, on the ready replica
        exec_in(svc, "backend-1", "app", "touch", "/tmp/ready")
        wait_for(lambda: w.alive() and answers(10) == {"backend-0", "backend-1"}, "backend-1 back", 30)
    finally:
        assert w.stop() == 0, w.text()[-2000:]
    svc.run("down", str(m))


def test_nodeport_and_loadbalancer_answer_on_127_0_0_1(svc):
    import urllib.request

    from tests.support.network import free_port

    lb = free_port()
    m = svc.write("app.yaml", BACKEND + f"""---
apiVersion: v1
kind: Service
metadata: {{name: public}}
spec:
  type: NodePort
  selector: {{app: backend}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: balanced}}
spec:
  type: LoadBalancer
  selector: {{app: backend}}
  ports: [{{port: {lb}, targetPort: 8080}}]
""")
    svc.run("up", "--wait", "--timeout", "90", str(m))
    rows = {r["name"]: r for r in json.loads(svc.run("services", "-o", "json").stdout)}
    assert rows["public"]["type"] == "NodePort" and rows["balanced"]["type"] == "LoadBalancer"
    assert (rows["public"]["ready"], rows["public"]["total"]) == (2, 2) and rows["public"]["serving"]
    assert sorted(e["pod"] for e in rows["balanced"]["endpoints"]) == ["default/backend-0", "default/backend-1"]
    assert all(e["ip"].startswith(f"10.222.{svc.network.slot}.") for e in rows["balanced"]["endpoints"])
    node_port = rows["public"]["ports"][0]["nodePort"]
    lb_node_port = rows["balanced"]["ports"][0]["nodePort"]
    table = svc.run("services").stdout
    assert f"80:{node_port}/TCP" in table and "2/2" in table, table
    assert 30000 <= node_port <= 32767 and 30000 <= lb_node_port <= 32767
    for port in (node_port, lb, lb_node_port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:  # noqa: S310 - loopback
            assert r.read().decode().strip() in ("backend-0", "backend-1")
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


@pytest.mark.parametrize("when", ["before", "ran", "after"])
@pytest.mark.parametrize("command", ["up", "down"])
def test_killed_around_the_services_sync_then_up_converges_and_down_leaves_no_rule(svc, command, when):
    import signal

    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT)
    if command == "down":
        svc.run("up", "--wait", "--timeout", "90", str(m))
    res = svc.run(command, str(m), check=False, env={"PODPLAY_FAILPOINT": f"{when}:SyncServices"})
    assert res.returncode == -signal.SIGKILL, res
    svc.run("up", "--wait", "--timeout", "90", str(m))
    assert get(svc, "client", "http://backend/") in ("backend-0", "backend-1")
    again = svc.run("up", str(m))
    assert "No changes" in again.stdout, again.stdout
    # `ran`: the rules were written, the store never heard of them — the record is repaired.
    [row] = json.loads(svc.run("services", "-o", "json").stdout)
    assert row["name"] == "backend" and row["serving"] and row["ready"] == 2, row
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


@pytest.mark.parametrize("when", ["before", "ran", "after"])
def test_killed_around_the_sync_that_prunes_a_service_leaves_none_of_its_rules(svc, when):
    import signal

    extra = STICKY.replace("name: sticky", "name: extra")
    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT + "---\n" + extra)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    gone = service_ip(svc, "client", "extra")
    m.write_text(BACKEND + "---\n" + CLIENT)
    res = svc.run("up", str(m), check=False, env={"PODPLAY_FAILPOINT": f"{when}:SyncServices"})
    assert res.returncode == -signal.SIGKILL, res
    svc.run("up", str(m))
    left = iptables_rules_mentioning(f"{svc.paths.tag}-")
    assert left and not [r for r in left if gone in r or "extra" in r], left
    assert "extra" not in exec_in(svc, "client", "app", "cat", "/etc/hosts").stdout
    assert [r["name"] for r in json.loads(svc.run("services", "-o", "json").stdout)] == ["backend"]
    assert "No changes" in svc.run("up", str(m)).stdout
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


# --- service links, session affinity, traffic policies, ExternalName, hostNetwork endpoints -------------

QUIET = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: quiet}}
spec:
  enableServiceLinks: false
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"""

STICKY = """\
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: backend}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{port: 80, targetPort: http}]
"""


def test_service_links_follow_enable_service_links_and_session_affinity_sticks_a_client(svc):
    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT + "---\n" + QUIET + "---\n" + STICKY)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    ip = service_ip(svc, "client", "backend")
    env = dict(line.split("=", 1) for line in exec_in(svc, "client", "app", "env").stdout.splitlines() if "=" in line)
    assert {k: v for k, v in env.items() if k.startswith("BACKEND_")} == {
        "BACKEND_SERVICE_HOST": ip, "BACKEND_SERVICE_PORT": "80", "BACKEND_PORT": f"tcp://{ip}:80",
        "BACKEND_PORT_80_TCP": f"tcp://{ip}:80", "BACKEND_PORT_80_TCP_PROTO": "tcp",
        "BACKEND_PORT_80_TCP_PORT": "80", "BACKEND_PORT_80_TCP_ADDR": ip}
    assert "STICKY_SERVICE_HOST" in env
    quiet = exec_in(svc, "quiet", "app", "env").stdout
    assert "_SERVICE_HOST" not in quiet and "BACKEND_PORT" not in quiet, quiet
    # sessionAffinity ClientIP: each client keeps its endpoint; without it requests spread.
    assert len({get(svc, "client", "http://sticky/") for _ in range(10)}) == 1
    assert len({get(svc, "quiet", "http://sticky/") for _ in range(10)}) == 1
    spread = set()
    for _ in range(20):
        spread.add(get(svc, "client", "http://backend/"))
        if len(spread) == 2:
            break
    assert spread == {"backend-0", "backend-1"}
    rules = "\n".join(iptables_rules_mentioning(f"{svc.paths.tag}-"))
    assert "--seconds 600" in rules and "recent" in rules, rules
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


# A CGI script that answers with the address the request came from.
CGI = ("mkdir -p /tmp/w/cgi-bin && printf '#!/bin/sh\\\\necho Content-Type: text/plain\\\\necho\\\\n"
       "echo $REMOTE_ADDR\\\\n' > /tmp/w/cgi-bin/ip && chmod +x /tmp/w/cgi-bin/ip")
WHOAMI = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: whoami, labels: {{app: whoami}}}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "{CGI} && exec httpd -f -p 8080 -h /tmp/w"]
    ports: [{{name: http, containerPort: 8080}}]
"""


def nodeport_service(name: str, policy: str) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: NodePort
  externalTrafficPolicy: {policy}
  selector: {{app: whoami}}
  ports: [{{port: 80, targetPort: http}}]
"""


def get_path(stack: Stack, pod: str, host: str, port: int, path: str) -> str:
    res = exec_in(stack, pod, "app", "sh", "-c",
                  f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}", check=False)
    assert res.returncode == 0 and "200 OK" in res.stdout, f"GET {host}:{port}{path} from {pod}: {res!r}"
    return client_address(res.stdout.replace("\r", "").split("\n\n", 1)[1])


def client_address(text: str) -> str:
    """busybox httpd's REMOTE_ADDR, '[::ffff:10.0.0.1]' (its socket is IPv6), as an IPv4 address."""
    return text.strip().removeprefix("[").removesuffix("]").removeprefix("::ffff:")


def test_external_traffic_policy_local_keeps_the_clients_address_cluster_masquerades(svc):
    from tests.support.network import host_address

    m = svc.write("app.yaml", WHOAMI + "---\n" + CLIENT + "---\n" + nodeport_service("local", "Local")
                  + "---\n" + nodeport_service("cluster", "Cluster"))
    svc.run("up", "--wait", "--timeout", "90", str(m))
    rows = {r["name"]: r for r in json.loads(svc.run("services", "-o", "json").stdout)}
    client_ip = json.loads(svc.run("pods", "-o", "json").stdout)
    [client_ip] = [p["ip"] for p in client_ip if p["name"] == "client"]
    node = host_address()
    local, cluster = rows["local"]["ports"][0]["nodePort"], rows["cluster"]["ports"][0]["nodePort"]
    # A client that is not the host, reaching the nodePort on the host's address.
    assert get_path(svc, "client", node, local, "/cgi-bin/ip") == client_ip
    assert get_path(svc, "client", node, cluster, "/cgi-bin/ip") == svc.network.gateway
    # The host's own requests are masqueraded with either policy (they could not be answered otherwise).
    from tests.host.e2e.conftest import http_get

    for port in (local, cluster):
        assert client_address(http_get(f"http://127.0.0.1:{port}/cgi-bin/ip")) != "127.0.0.1"
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


def test_an_external_name_resolves_in_pods_to_what_the_host_resolves(svc):
    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT + """---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: localhost
---
apiVersion: v1
kind: Service
metadata: {name: alias}
spec:
  type: ExternalName
  externalName: backend.default.svc.cluster.local
""")
    svc.run("up", "--wait", "--timeout", "90", str(m))
    hosts = exec_in(svc, "client", "app", "cat", "/etc/hosts").stdout
    assert "127.0.0.1\text ext.default ext.default.svc ext.default.svc.cluster.local" in hosts, hosts
    # `localhost` as the host resolves it: inside a pod, the pod's own loopback.
    assert get(svc, "backend-0", "http://ext.default.svc.cluster.local:8080/") == "backend-0"
    # An ExternalName that names a Service stands for its ClusterIP.
    assert service_ip(svc, "client", "alias") == service_ip(svc, "client", "backend")
    assert get(svc, "client", "http://alias/") in ("backend-0", "backend-1")
    table = svc.run("services").stdout
    assert "ExternalName" in table and "localhost" in table, table
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


def test_a_host_network_pod_behind_a_service_is_reached_at_the_hosts_address(svc):
    from tests.support.network import free_port, host_address

    port = free_port()
    svc.env["PODPLAY_POD_SECURITY"] = "privileged"  # hostNetwork is beyond the baseline level
    m = svc.write("app.yaml", f"""\
apiVersion: v1
kind: Pod
metadata: {{name: onhost, labels: {{app: onhost}}}}
spec:
  hostNetwork: true
  containers:
  - name: app
    image: {IMAGE}
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /tmp/w && echo on-the-host > /tmp/w/index.html && \\
      exec httpd -f -p {port} -h /tmp/w"]
    ports: [{{name: http, containerPort: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: onhost}}
spec:
  selector: {{app: onhost}}
  ports: [{{port: 80, targetPort: http}}]
---
""" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    [row] = [r for r in json.loads(svc.run("services", "-o", "json").stdout) if r["name"] == "onhost"]
    assert [e["ip"] for e in row["endpoints"]] == [host_address()], row
    from tests.host.e2e.conftest import http_get

    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/"), "the host-network pod listening", 30)
    assert get(svc, "client", "http://onhost/") == "on-the-host"
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{svc.paths.tag}-")


def test_rules_flushed_behind_podplays_back_are_restored_by_the_next_up(svc):
    import subprocess

    from reconciler.network.services import IptablesServices
    from reconciler.paths import HostPaths

    m = svc.write("app.yaml", BACKEND + "---\n" + CLIENT)
    svc.run("up", "--wait", "--timeout", "90", str(m))
    ip = service_ip(svc, "client", "backend")
    assert "No changes" in svc.run("up", str(m)).stdout
    # Another storage root sees this one's ClusterIP as taken (it picks its own range clear of it).
    other = IptablesServices(HostPaths(svc.tmp / "another-root", svc.tmp / "another-run", svc.tmp / "net"))
    assert ip in other.addresses_elsewhere()
    tag = svc.paths.tag
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    for line in nat.splitlines():
        if line.startswith(f":{tag}-"):
            subprocess.run(["iptables", "-w", "-t", "nat", "-F", line[1:].split()[0]], check=True)
    assert f"{ip}/32" not in "\n".join(iptables_rules_mentioning(f"{tag}-"))
    assert "+ create service default/backend" in svc.run("plan", str(m)).stdout
    res = svc.run("up", str(m))
    assert "No changes" not in res.stdout, res.stdout
    assert get(svc, "client", "http://backend/") in ("backend-0", "backend-1")
    assert "No changes" in svc.run("up", str(m)).stdout
    svc.run("down", str(m))
    assert not iptables_rules_mentioning(f"{tag}-")
