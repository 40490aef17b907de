"""Services on the fake host: addresses kept, endpoints following the pods, exact teardown."""

from __future__ import annotations

import pytest

from reconciler.errors import ManifestError

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def served(engine) -> dict:
    return {ref: v["entry"] for ref, v in engine.host.services.items()}


def test_up_serves_a_service_with_its_ready_endpoints_and_keeps_the_address(engine):
    engine.write("app.yaml", APP)
    r = engine.up()
    assert r.ok
    entry = served(engine)["default/web"]
    import ipaddress

    assert ipaddress.ip_address(entry["cluster_ip"]) in ipaddress.ip_network(engine.state.meta.get("service-range"))
    assert sorted(e[1] for e in entry["endpoints"]) == ["default/web-0", "default/web-1"]
    assert {tuple(e[3]) for e in entry["endpoints"]} == {(8080,)}
    ip = entry["cluster_ip"]
    again = engine.up()
    assert again.plan.empty, again.plan.render()
    engine.down()
    assert engine.host.services == {} and engine.host.service_hosts == ""
    engine.up()
    assert served(engine)["default/web"]["cluster_ip"] == ip


def test_service_links_reach_the_plan_of_the_pods_created_with_it(engine):
    engine.write("app.yaml", APP)
    r = engine.up()
    ip = served(engine)["default/web"]["cluster_ip"]
    assert dict(r.plan.service_env["default"]) == {
        "WEB_SERVICE_HOST": ip, "WEB_SERVICE_PORT": "80", "WEB_PORT": f"tcp://{ip}:80",
        "WEB_PORT_80_TCP": f"tcp://{ip}:80", "WEB_PORT_80_TCP_PROTO": "tcp", "WEB_PORT_80_TCP_PORT": "80",
        "WEB_PORT_80_TCP_ADDR": ip}
    from reconciler.plan import Plan

    assert Plan.from_json(r.plan.to_json()).service_env == r.plan.service_env


def test_removing_the_service_from_the_manifest_prunes_it(engine):
    engine.write("app.yaml", APP)
    engine.up()
    engine.write("app.yaml", APP.split("---", maxsplit=1)[0])
    r = engine.up()
    assert any(c.key.kind == "Service" and c.action == "delete" for c in r.plan.changes)
    assert engine.host.services == {}


def test_a_clusterip_outside_the_range_is_a_clear_error_before_anything_changes(engine):
    engine.write("app.yaml", APP.replace("spec:\n  selector", "spec:\n  clusterIP: 192.168.7.7\n  selector"))
    with pytest.raises(ManifestError) as exc:
        engine.up()
    assert "spec.clusterIP" in str(exc.value) and "192.168.7.7" in str(exc.value)
    assert engine.empty()


NODEPORT = """\
apiVersion: v1
kind: Service
metadata: {name: pub}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_a_nodeport_is_allocated_in_range_and_kept(engine):
    engine.write("app.yaml", APP + "---\n" + NODEPORT)
    engine.up()
    [port] = served(engine)["default/pub"]["ports"]
    assert 30000 <= port[3] <= 32767
    engine.down()
    engine.up()
    assert served(engine)["default/pub"]["ports"] == [port]


def test_a_nodeport_that_is_a_pods_hostport_is_an_error_before_anything_changes(engine):
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: holder}
spec:
  containers:
  - name: app
    image: busybox:1.36
    ports: [{containerPort: 80, hostPort: 30080}]
---
"""
    engine.write("app.yaml", pod + NODEPORT.replace("targetPort: 8080", "targetPort: 8080, nodePort: 30080"))
    with pytest.raises(ManifestError) as exc:
        engine.up()
    assert "spec.ports[0].nodePort" in str(exc.value) and "hostPort of pod default/holder" in str(exc.value)
    assert engine.empty()


def test_a_loadbalancer_port_held_by_a_host_process_is_an_error(engine):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        engine.write("app.yaml", NODEPORT.replace("NodePort", "LoadBalancer").replace("port: 80,", f"port: {port},"))
        with pytest.raises(ManifestError) as exc:
            engine.up()
        assert "spec.ports[0].port" in str(exc.value) and "held by a process" in str(exc.value)
    finally:
        s.close()
