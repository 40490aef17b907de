"""Every file in manifests/examples/ is played, checked and taken down on the real stack.

The test is parametrized over the directory listing, so a new example is played by it without
any edit here; an example with a check in CHECKS is also held to what its comment promises.
The examples publish fixed host ports (18080, 19000, 18100-18101); tests run in parallel, so
each test plays a copy in which every hostPort is replaced by a free one and nothing else
changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.observed import ContainerState
from tests.host.e2e.conftest import (
    Stack,
    exec_in,
    find_container,
    host_leftovers,
    http_get,
    pod_containers,
    rewrite_host_ports,
    wait_for,
    wait_http,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "examples"


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def play_copy(stack: Stack, name: str, span: int = 1) -> tuple[Path, dict[int, int]]:
    text, ports = rewrite_host_ports((EXAMPLES / name).read_text(), span)
    text, node_ports = rewrite_node_ports(text)
    return stack.write(name, text), {**ports, **node_ports}


def rewrite_node_ports(text: str) -> tuple[str, dict[int, int]]:
    """Every fixed ``nodePort: N`` given a free one of the nodePort range (as hostPorts are)."""
    import random
    import re
    import socket

    mapping: dict[int, int] = {}

    def free() -> int:
        while True:
            port = random.randint(30000, 32767)
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", port))
                except OSError:
                    continue
            if port not in mapping.values():
                return port

    def new(m: re.Match) -> str:
        mapping.setdefault(int(m.group(2)), free())
        return f"{m.group(1)}{mapping[int(m.group(2))]}"

    return re.sub(r"(nodePort:\s*)(\d+)", new, text), mapping


def check_hello_web(stack: Stack, m: Path, ports: dict[int, int]) -> None:
    # "A web server whose page comes from a ConfigMap, published on the host at 127.0.0.1:18080."
    page = wait_http(f"http://127.0.0.1:{ports[18080]}/")
    assert page == "<h1>Hello from podplay</h1>\n"
    # The ConfigMap is mounted readOnly: the server cannot change its own page.
    res = exec_in(stack, "hello-web", "httpd", "sh", "-c", "echo x > /www/index.html", check=False)
    assert res.returncode != 0 and "Read-only file system" in res.stderr


def check_sidecar_demo(stack: Stack, m: Path, ports: dict[int, int]) -> None:
    # "the init container seeds a file, the writer appends to it, the reader serves it over
    # localhost inside the pod"
    url = f"http://127.0.0.1:{ports[19000]}/log.txt"
    first = wait_http(url).splitlines()
    assert first[0] == "seeded by init"
    # The writer appends a date every 2 s: the served log grows, always after the init line.
    def longer():
        lines = http_get(url).splitlines()
        return lines if len(lines) > max(len(first), 2) else None

    grown = wait_for(longer, "the writer to append dates", timeout=30)
    assert grown[0] == "seeded by init" and grown[:len(first)] == first
    assert all(line.strip() for line in grown[1:])
    # Served from inside the pod too: the reader's port is the pod's, reachable on its localhost.
    local = exec_in(stack, "sidecar-demo", "writer", "wget", "-qO-", "http://127.0.0.1:9000/log.txt").stdout
    assert local.startswith("seeded by init\n")
    # The init container ran to completion before the app containers started.
    init = find_container(stack, "sidecar-demo", "seed")
    assert init.role == "init" and init.state == ContainerState.EXITED and init.exit_code == 0


def check_counter(stack: Stack, m: Path, ports: dict[int, int]) -> None:
    # "A Deployment of two replicas, each with its own host port (replica N listens on 18100+N),
    # a Secret mounted as files and a PersistentVolumeClaim that keeps a visit counter across
    # restarts and `podplay down` (unless --volumes)."
    base = ports[18100]
    token = len("s3cr3t-token")

    def pages() -> list[str]:
        return [wait_http(f"http://127.0.0.1:{base + i}/") for i in (0, 1)]

    assert pages() == [f"counter-{i} start #1, token {token} bytes\n" for i in (0, 1)]
    # The secret file is owner-only (podplay's 0400 default) on a tmpfs, read-only in the container.
    mode = exec_in(stack, "counter-0", "web", "stat", "-L", "-c", "%a", "/etc/auth/token").stdout.strip()
    assert mode == "400"
    fs = exec_in(stack, "counter-0", "web", "stat", "-f", "-c", "%T", "/etc/auth/").stdout.strip()
    assert fs == "tmpfs"

    stack.run("down", str(m))
    assert not stack.containers()
    stack.run("up", "--wait", str(m))
    assert pages() == [f"counter-{i} start #2, token {token} bytes\n" for i in (0, 1)], "the claim kept the count"

    stack.run("down", "--volumes", str(m))
    assert not (stack.paths.claims / "default" / "counter-data").exists()
    stack.run("up", "--wait", str(m))
    assert pages() == [f"counter-{i} start #1, token {token} bytes\n" for i in (0, 1)], "--volumes removed it"


def check_guestbook(stack: Stack, m: Path, ports: dict[int, int]) -> None:
    # "Three tiers that find each other by Service name, the frontend published with a NodePort
    # on the host (127.0.0.1:30080)": web → api (two replicas) → db, each by its Service's name.
    seen = set()
    for _ in range(12):
        page = wait_http(f"http://127.0.0.1:{ports[30080]}/cgi-bin/index")
        lines = page.splitlines()
        assert lines[0] == "web web-0 asked api.default.svc.cluster.local:", page
        assert lines[1].endswith("read from db: hello from the db tier"), page
        seen.add(lines[1].split()[1])
        if len(seen) == 2:
            break
    assert seen == {"api-0", "api-1"}, "both api replicas answer behind their ClusterIP"
    listed = stack.run("services").stdout
    assert "NodePort" in listed and f"80:{ports[30080]}/TCP" in listed, listed


# Example file → (check, hostPort span: room for per-replica ports).
CHECKS = {
    "hello-web.yaml": (check_hello_web, 1),
    "pod-with-sidecar.yaml": (check_sidecar_demo, 1),
    "counter-deployment.yaml": (check_counter, 2),
    "guestbook-services.yaml": (check_guestbook, 1),
}


def test_every_check_names_an_existing_example():
    assert _examples(), f"no examples in {EXAMPLES}"
    assert set(CHECKS) <= set(_examples()), f"checks for examples that are gone: {set(CHECKS) - set(_examples())}"


@pytest.mark.parametrize("name", _examples())
def test_example(stack, name):
    check, span = CHECKS.get(name, (None, 1))
    m, ports = play_copy(stack, name, span)
    assert stack.run("validate", str(m)).returncode == 0

    up = stack.run("up", "--wait", str(m))
    assert "+ created pod" in up.stdout
    # Every container of every pod the example describes runs (or, where its restart policy lets
    # it stop, finished successfully).
    from reconciler.desired import build_desired
    from reconciler.manifests import load_manifests

    desired = build_desired(load_manifests([str(m)]).objects)
    for pod in desired.pods.values():
        listed = pod_containers(stack, pod.name, pod.namespace)
        assert {c.pod_uid for c in listed} == {pod.uid}, "exactly one instance of each pod"
        for c in pod.containers:
            oc = find_container(stack, pod.name, c.name, pod.namespace)
            finished = oc.state == ContainerState.EXITED and oc.exit_code == 0 and pod.spec.restart_policy != "Always"
            assert oc.state == ContainerState.RUNNING or finished, f"{pod.ref}/{c.name}: {oc.state} {oc.exit_code}"
    if check is not None:
        check(stack, m, ports)

    again = stack.run("up", str(m))
    assert "No changes" in again.stdout

    stack.run("down", "--volumes", str(m))
    assert host_leftovers(stack) == []
