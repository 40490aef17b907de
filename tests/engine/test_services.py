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


# --- service links ---------------------------------------------------------------------------------

def created_env(engine, monkeypatch) -> dict[str, dict[str, str]]:
    """pod ref → the env of its app container as the runtime was asked to create it."""
    seen: dict[str, dict[str, str]] = {}
    real = engine.drivers.runtime.create_container

    def spy(pod, container, **kw):
        if not container.init:
            seen[pod.ref] = {e.name: e.value for e in container.env}
        return real(pod, container, **kw)

    monkeypatch.setattr(engine.drivers.runtime, "create_container", spy)
    return seen


def test_enable_service_links_false_gives_a_pod_no_service_variables(engine, monkeypatch):
    env = created_env(engine, monkeypatch)
    quiet = """\
---
apiVersion: v1
kind: Pod
metadata: {name: quiet}
spec:
  enableServiceLinks: false
  containers: [{name: app, image: busybox:1.36}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop}
spec:
  containers: [{name: app, image: busybox:1.36}]
"""
    engine.write("app.yaml", APP + quiet)
    r = engine.up()
    assert r.ok
    assert not any("enableServiceLinks" in str(d) for d in r.manifests.diagnostics), r.manifests.diagnostics
    ip = served(engine)["default/web"]["cluster_ip"]
    assert env["default/web-0"]["WEB_SERVICE_HOST"] == ip and env["default/web-0"]["WEB_PORT_80_TCP_ADDR"] == ip
    assert not any(k.startswith("WEB_") for k in env["default/quiet"]), env["default/quiet"]
    # Only the Services of the pod's own namespace are linked.
    assert not any(k.startswith("WEB_") for k in env["shop/other"]), env["shop/other"]


# --- session affinity, traffic policies, ExternalName, hostNetwork endpoints ----------------------------

def test_session_affinity_and_local_policy_reach_the_served_entry(engine):
    engine.write("app.yaml", APP + "---\n" + NODEPORT.replace(
        "  type: NodePort\n", "  type: NodePort\n  externalTrafficPolicy: Local\n  internalTrafficPolicy: Local\n"
        "  sessionAffinity: ClientIP\n"))
    r = engine.up()
    assert r.ok
    pub = served(engine)["default/pub"]
    assert pub["affinity"] == 10800 and pub["local"] is True
    assert "affinity" not in served(engine)["default/web"]  # other Services' entries are as before
    assert not [d for d in r.manifests.diagnostics if "TrafficPolicy" in str(d) or "sessionAffinity" in str(d)]
    engine.write("app.yaml", APP + "---\n" + NODEPORT.replace(
        "  type: NodePort\n", "  type: NodePort\n  sessionAffinity: ClientIP\n"
        "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n"))
    r = engine.up()
    assert any(c.key.name == "pub" and c.action == "replace" for c in r.plan.changes)
    assert served(engine)["default/pub"]["affinity"] == 60 and "local" not in served(engine)["default/pub"]


EXTERNAL = """\
---
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
  externalName: web.default.svc.cluster.local
"""


def test_an_external_name_is_resolved_on_the_host_and_a_service_name_to_its_address(engine, monkeypatch):
    from reconciler import converged, reconcile

    env = created_env(engine, monkeypatch)
    engine.write("app.yaml", APP + EXTERNAL)
    r = engine.up()
    assert r.ok
    s = served(engine)
    assert s["default/ext"]["addresses"] == ["127.0.0.1"] and s["default/ext"]["cluster_ip"] == ""
    assert s["default/alias"]["addresses"] == [s["default/web"]["cluster_ip"]]
    assert not any(k.startswith(("EXT_", "ALIAS_")) for k in env["default/web-0"])  # no ClusterIP, no links
    # A lookup that fails keeps the last addresses; a changed answer is served at the next pass.
    monkeypatch.setattr(reconcile, "resolve_ipv4", lambda name, timeout=3.0: ())
    assert engine.up().plan.empty
    monkeypatch.setattr(reconcile, "resolve_ipv4", lambda name, timeout=3.0: ("192.0.2.77",))
    r = engine.up()
    assert [c.key.name for c in r.plan.changes if c.action == "replace"] == ["ext"]
    assert served(engine)["default/ext"]["addresses"] == ["192.0.2.77"]
    # Paths with an ExternalName take the full pass every time (the no-change check would skip the lookup).
    assert converged.unchanged(engine.state, [str(engine.dir)], engine.drivers) is None
    rows = {r["name"]: r for r in reconcile.services_status(engine.drivers, engine.state)}
    assert rows["ext"]["externalIPs"] == ["localhost"] and rows["ext"]["addresses"] == ["192.0.2.77"]


def test_a_host_network_pod_is_an_endpoint_at_the_hosts_address(engine, monkeypatch):
    from reconciler import reconcile

    monkeypatch.setattr(reconcile, "host_addresses", lambda: ["192.0.2.44"])
    engine.write("app.yaml", """\
apiVersion: v1
kind: Pod
metadata: {name: hostly, labels: {app: hostly}}
spec:
  hostNetwork: true
  containers:
  - name: app
    image: busybox:1.36
    ports: [{name: http, containerPort: 18080}]
---
apiVersion: v1
kind: Service
metadata: {name: hostly}
spec:
  selector: {app: hostly}
  ports: [{port: 80, targetPort: http}]
""")
    assert engine.up().ok
    entry = served(engine)["default/hostly"]
    assert [(e[1], e[2], e[3]) for e in entry["endpoints"]] == [("default/hostly", "192.0.2.44", [18080])]
    assert entry["selected"] == 1
    assert engine.up().plan.empty


# --- the Service range of a storage root ----------------------------------------------------------

def test_each_storage_root_has_its_own_service_range_kept_once_allocated(tmp_path, monkeypatch):
    import ipaddress

    from tests.engine.conftest import Engine

    monkeypatch.delenv("PODPLAY_SERVICE_CIDR", raising=False)
    a, b = Engine(tmp_path / "a"), Engine(tmp_path / "b")
    try:
        for e in (a, b):
            e.write("app.yaml", APP)
            assert e.up().ok
        ra, rb = (ipaddress.ip_network(e.state.meta.get("service-range")) for e in (a, b))
        assert ra != rb and not ra.overlaps(rb)
        ip = served(a)["default/web"]["cluster_ip"]
        assert ipaddress.ip_address(ip) in ra and ipaddress.ip_address(served(b)["default/web"]["cluster_ip"]) in rb
        # A third root whose tag would pick an occupied range skips the ranges other roots serve from.
        c = Engine(tmp_path / "c")
        c.paths = a.paths.__class__(a.paths.root, c.paths.runroot, c.paths.network_dir)  # same tag as a
        c.host.cluster_ips_elsewhere = [ip]
        c.write("app.yaml", APP)
        assert c.up().ok
        rc = ipaddress.ip_network(c.state.meta.get("service-range"))
        assert rc != ra and ipaddress.ip_address(ip) not in rc
        c.state.close()
        # Kept: the range recorded stays, even once nothing is served (and PODPLAY_SERVICE_CIDR overrides).
        a.down()
        a.up()
        assert served(a)["default/web"]["cluster_ip"] == ip
    finally:
        a.state.close()
        b.state.close()


def test_a_root_with_clusterips_from_the_shared_range_keeps_them(engine):
    import json

    engine.write("app.yaml", APP)
    engine.up()
    # As a podplay before ranges per root left it: a ClusterIP of 10.43.0.0/16 recorded, no range.
    entry = {**served(engine)["default/web"], "cluster_ip": "10.43.12.34"}
    engine.state.db.execute("UPDATE services SET entry = ?", (json.dumps(entry),))
    engine.state.meta.forget("service-range")
    engine.up()
    assert served(engine)["default/web"]["cluster_ip"] == "10.43.12.34"
    assert engine.state.meta.get("service-range") == "10.43.0.0/16"


# --- crashes and wiped rules ----------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["create", "change", "prune", "down"])
def test_killed_between_writing_the_rules_and_recording_them_converges(tmp_path, scenario):
    from reconciler.apply import Failpoints
    from reconciler.reconcile import services_status
    from reconciler.state import StateStore
    from tests.engine.conftest import Engine

    class Crash(BaseException):
        pass

    def crash():
        raise Crash()

    e = Engine(tmp_path)
    two = APP + "---\n" + NODEPORT
    if scenario != "create":
        e.write("app.yaml", two)
        assert e.up().ok
    if scenario == "change":
        e.write("app.yaml", two.replace("port: 80, targetPort: 8080", "port: 81, targetPort: 8080"))
    elif scenario == "prune":
        e.write("app.yaml", APP)
    else:
        e.write("app.yaml", two)
    run = e.down if scenario == "down" else e.up
    with pytest.raises(Crash):
        run(failpoints=Failpoints("ran:SyncServices", action=crash))
    e.state.close()
    e.state = StateStore(e.paths.state_db)
    if scenario == "down":
        e.down()
        assert e.host.services == {} and e.state.owned.service_records() == {}
        e.state.close()
        return
    r = e.up()
    assert r.ok
    want = {"default/web"} | ({"default/pub"} if scenario != "prune" else set())
    assert set(e.host.services) == want
    # The store's record is repaired too: `podplay services` shows what the host serves.
    rows = services_status(e.drivers, e.state)
    assert {f"{x['namespace']}/{x['name']}" for x in rows} == want and all(x["serving"] for x in rows)
    if scenario == "change":
        assert [p["port"] for p in next(x for x in rows if x["name"] == "pub")["ports"]] == [81]
    assert e.up().plan.empty
    e.down()
    assert e.host.services == {} and e.host.service_hosts == "" and e.state.owned.service_records() == {}
    e.state.close()


def test_rules_wiped_behind_podplays_back_are_noticed_by_the_no_change_check_and_restored(engine):
    from reconciler import converged

    engine.write("app.yaml", APP)
    assert engine.up().ok
    assert converged.unchanged(engine.state, [str(engine.dir)], engine.drivers) is not None
    engine.drivers.services.remove_all()  # `iptables -t nat -F`, or a reboot
    assert converged.unchanged(engine.state, [str(engine.dir)], engine.drivers) is None
    r = engine.up()
    assert [(c.key.name, c.action) for c in r.plan.changes if c.key.kind == "Service"] == [("web", "create")]
    assert "default/web" in engine.host.services


# --- IP families ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, where", [
    ("  ipFamilies: [IPv6]\n", "spec.ipFamilies[0]"),
    ("  ipFamilyPolicy: RequireDualStack\n", "spec.ipFamilyPolicy"),
])
def test_a_service_that_needs_ipv6_stops_up_before_anything_changes(engine, fields, where):
    f = engine.write("app.yaml", APP.replace("spec:\n  selector", "spec:\n" + fields + "  selector"))
    with pytest.raises(ManifestError) as exc:
        engine.up()
    text = str(exc.value)
    assert f"{f}:" in text and where in text and "IPv4 only" in text, text
    assert engine.empty() and engine.host.services == {}


def test_prefer_dual_stack_is_served_as_ipv4(engine):
    engine.write("app.yaml", APP.replace("spec:\n  selector", "spec:\n  ipFamilyPolicy: PreferDualStack\n"
                                         "  ipFamilies: [IPv6, IPv4]\n  selector"))
    r = engine.up()
    assert r.ok and any("PreferDualStack" in str(d) for d in r.manifests.warnings)
    assert "." in served(engine)["default/web"]["cluster_ip"]
