"""Pod Security Standards admission (reconciler.admission): one table row per rule, then the
policy (host level, Namespace labels, warn/audit, the operator's lists) and where errors point."""

from __future__ import annotations

import textwrap

import pytest

from reconciler import admission
from reconciler.admission import Policy
from reconciler.errors import Severity
from reconciler.manifests import load_manifests, load_objects

BASELINE = Policy()


def pod(spec: dict | None = None, container: dict | None = None, annotations: dict | None = None) -> dict:
    c = {"name": "app", "image": "busybox", **(container or {})}
    meta = {"name": "p", **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [c], **(spec or {})}}


# A container that restricted admits: the starting point of the restricted rows.
GOOD = {"securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}


def restricted(**sc) -> dict:
    out = {**GOOD["securityContext"], **sc}
    return {"securityContext": {k: v for k, v in out.items() if v is not None}}


C = "spec.containers[0]"

# (case, manifest, [(level, field path)…] that the restricted level finds)
CASES = [
    ("nothing asked", pod(container=GOOD), []),
    # baseline
    ("hostNetwork", pod({"hostNetwork": True}, GOOD), [("baseline", "spec.hostNetwork")]),
    ("hostPID", pod({"hostPID": True}, GOOD), [("baseline", "spec.hostPID")]),
    ("hostIPC", pod({"hostIPC": True}, GOOD), [("baseline", "spec.hostIPC")]),
    ("host namespaces false", pod({"hostNetwork": False, "hostPID": False}, GOOD), []),
    ("privileged", pod(container=restricted(privileged=True)),
     [("baseline", f"{C}.securityContext.privileged")]),
    ("privileged false", pod(container=restricted(privileged=False)), []),
    ("capability outside the default set",
     pod(container=restricted(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]})),
     [("baseline", f"{C}.securityContext.capabilities.add[0]")]),
    ("NET_RAW is not in baseline's set", pod(container=restricted(capabilities={"drop": ["ALL"], "add": ["NET_RAW"]})),
     [("baseline", f"{C}.securityContext.capabilities.add[0]")]),
    ("a default capability is baseline, not restricted",
     pod(container=restricted(capabilities={"drop": ["ALL"], "add": ["CHOWN"]})),
     [("restricted", f"{C}.securityContext.capabilities.add[0]")]),
    ("NET_BIND_SERVICE is restricted's one addition",
     pod(container=restricted(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})), []),
    ("hostPath", pod({"volumes": [{"name": "v", "hostPath": {"path": "/etc"}}]}, GOOD),
     [("baseline", "spec.volumes[0].hostPath")]),
    ("hostPort below 1024", pod(container={**GOOD, "ports": [{"containerPort": 80, "hostPort": 80}]}),
     [("baseline", f"{C}.ports[0].hostPort")]),
    ("unprivileged hostPort (the default known list)",
     pod(container={**GOOD, "ports": [{"containerPort": 80, "hostPort": 8080}]}), []),
    ("AppArmor unconfined", pod(container=GOOD, annotations={
        "container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
     [("baseline", "metadata.annotations.container.apparmor.security.beta.kubernetes.io/app")]),
    ("AppArmor runtime/default and localhost", pod(container=GOOD, annotations={
        "container.apparmor.security.beta.kubernetes.io/app": "localhost/mine",
        "container.apparmor.security.beta.kubernetes.io/b": "runtime/default"}), []),
    ("seccomp Unconfined on the pod", pod({"securityContext": {"seccompProfile": {"type": "Unconfined"}}},
                                          restricted(seccompProfile=None)),
     [("baseline", "spec.securityContext.seccompProfile.type"),
      ("restricted", f"{C}.securityContext.seccompProfile")]),
    ("seccomp Unconfined on a container", pod(container=restricted(seccompProfile={"type": "Unconfined"})),
     [("baseline", f"{C}.securityContext.seccompProfile.type")]),
    ("unsafe sysctl", pod({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                                             {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}},
                          GOOD),
     [("baseline", "spec.securityContext.sysctls[0].name")]),
    ("probe host", pod(container={**GOOD, "livenessProbe": {"tcpSocket": {"port": 80, "host": "10.0.0.1"}}}),
     [("baseline", f"{C}.livenessProbe.tcpSocket.host")]),
    # restricted
    ("restricted: nothing set", pod(),
     [("restricted", f"{C}.securityContext.allowPrivilegeEscalation"),
      ("restricted", f"{C}.securityContext.runAsNonRoot"),
      ("restricted", f"{C}.securityContext.seccompProfile"),
      ("restricted", f"{C}.securityContext.capabilities.drop")]),
    ("allowPrivilegeEscalation true", pod(container=restricted(allowPrivilegeEscalation=True)),
     [("restricted", f"{C}.securityContext.allowPrivilegeEscalation")]),
    ("runAsNonRoot on the pod is enough", pod({"securityContext": {"runAsNonRoot": True}},
                                              restricted(runAsNonRoot=None)), []),
    ("runAsNonRoot false on the pod", pod({"securityContext": {"runAsNonRoot": False}}, GOOD),
     [("restricted", "spec.securityContext.runAsNonRoot")]),
    ("runAsNonRoot false on the container", pod({"securityContext": {"runAsNonRoot": True}},
                                                restricted(runAsNonRoot=False)),
     [("restricted", f"{C}.securityContext.runAsNonRoot")]),
    ("runAsUser 0", pod({"securityContext": {"runAsUser": 0}}, restricted(runAsUser=0)),
     [("restricted", "spec.securityContext.runAsUser"), ("restricted", f"{C}.securityContext.runAsUser")]),
    ("runAsUser 1000", pod(container=restricted(runAsUser=1000)), []),
    ("seccomp on the pod is enough", pod({"securityContext": {"seccompProfile": {"type": "Localhost",
                                                                                "localhostProfile": "x.json"}}},
                                         restricted(seccompProfile=None)), []),
    ("capabilities not dropped", pod(container=restricted(capabilities={"drop": ["CHOWN"]})),
     [("restricted", f"{C}.securityContext.capabilities.drop")]),
    # hostUsers: false (Kubernetes' user-namespace relaxation): root inside is an unprivileged host
    # user, so the two non-root controls are relaxed, and only they.
    ("hostUsers false: root allowed", pod({"hostUsers": False, "securityContext": {"runAsUser": 0,
                                                                                  "runAsNonRoot": False}},
                                          restricted(runAsUser=0, runAsNonRoot=False)), []),
    ("hostUsers false: runAsNonRoot unset allowed", pod({"hostUsers": False}, restricted(runAsNonRoot=None)), []),
    ("hostUsers false: the other restricted controls hold", pod({"hostUsers": False}),
     [("restricted", f"{C}.securityContext.allowPrivilegeEscalation"),
      ("restricted", f"{C}.securityContext.seccompProfile"),
      ("restricted", f"{C}.securityContext.capabilities.drop")]),
    ("hostUsers false: baseline holds", pod({"hostUsers": False}, restricted(privileged=True, runAsUser=0)),
     [("baseline", f"{C}.securityContext.privileged")]),
    ("hostUsers true: no relaxation", pod({"hostUsers": True}, restricted(runAsUser=0, runAsNonRoot=None)),
     [("restricted", f"{C}.securityContext.runAsNonRoot"), ("restricted", f"{C}.securityContext.runAsUser")]),
]


@pytest.mark.parametrize(("manifest", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule(manifest, want):
    loaded = load_objects([manifest])
    assert loaded.ok, loaded.diagnostics
    got = admission.check_object(loaded.objects[0].obj, BASELINE, "restricted")
    assert sorted((v.level, admission.fmt_path(v.path)) for v in got) == sorted(want)
    # baseline finds exactly the baseline rows; privileged finds nothing
    base = admission.check_object(loaded.objects[0].obj, BASELINE, "baseline")
    assert sorted(admission.fmt_path(v.path) for v in base) == sorted(p for lv, p in want if lv == "baseline")
    assert admission.check_object(loaded.objects[0].obj, BASELINE, "privileged") == []


def test_user_namespaced_deployment_runs_as_root_under_restricted(tmp_path):
    """Through the loader with restricted enforced: a Deployment whose pods have their own user
    namespace may run as root; the same template sharing the host's users is refused, by field."""
    template = textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: d}
        spec:
          selector: {matchLabels: {a: b}}
          template:
            metadata: {labels: {a: b}}
            spec:
              hostUsers: %s
              containers:
              - name: c
                image: busybox
                securityContext:
                  runAsUser: 0
                  allowPrivilegeEscalation: false
                  capabilities: {drop: [ALL]}
                  seccompProfile: {type: RuntimeDefault}
        """)
    own, shared = tmp_path / "own.yaml", tmp_path / "shared.yaml"
    own.write_text(template % "false")
    shared.write_text(template % "true")
    with admission.enforcing(Policy(enforce="restricted")):
        assert load_manifests([str(own)]).ok
        refused = load_manifests([str(shared)])
    assert sorted(e.path for e in refused.errors) == ["spec.template.spec.containers[0].securityContext.runAsNonRoot",
                                                      "spec.template.spec.containers[0].securityContext.runAsUser"]


def test_init_containers_and_deployment_templates_are_checked():
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"initContainers": [{"name": "i", "image": "busybox",
                                                              "securityContext": {"privileged": True}}],
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    obj = load_objects([dep]).objects[0].obj
    got = admission.check_object(obj, BASELINE, "baseline")
    want = "spec.template.spec.initContainers[0].securityContext.privileged"
    assert [admission.fmt_path(v.path) for v in got] == [want]


@pytest.mark.parametrize(("path", "prefixes", "ok"), [
    ("/dev/ttyUSB0", ("/dev/ttyUSB0",), True),
    ("/dev/ttyUSB01", ("/dev/ttyUSB0",), False),
    ("/run/app/app.sock", ("/run/app",), True),
    ("/run/app/../../etc", ("/run/app",), False),
    ("/run/app//x/", ("/run/app/",), True),
    ("/etc", ("/run/app",), False),
    ("relative", ("/",), False),
])
def test_allowed_host_path_prefixes(path, prefixes, ok):
    assert admission._allowed_host_path(path, prefixes) is ok


@pytest.mark.parametrize("path", ["/var/lib/podplay", "/var/lib/podplay/state.db", "/var/lib", "/run/podplay/x"])
def test_podplays_own_roots_are_never_allowed(path):
    protected = ("/var/lib/podplay", "/run/podplay")
    assert not admission._allowed_host_path(path, ("/",  "/var", "/run"), protected)
    m = pod({"volumes": [{"name": "v", "hostPath": {"path": path}}]})
    obj = load_objects([m]).objects[0].obj
    policy = Policy(allowed_host_paths=("/var", "/run"), protected_paths=protected)
    [v] = admission.check_object(obj, policy, "baseline")
    assert "podplay's own storage or run root" in v.message


def test_operator_lists_widen_baseline():
    m = pod({"volumes": [{"name": "tty", "hostPath": {"path": "/dev/ttyUSB0", "type": "CharDevice"}}]},
            {"ports": [{"containerPort": 80, "hostPort": 80}]})
    obj = load_objects([m]).objects[0].obj
    assert len(admission.check_object(obj, BASELINE, "baseline")) == 2
    wide = Policy(allowed_host_paths=("/dev/ttyUSB0",), allowed_host_ports=((80, 80), (8000, 9000)))
    assert admission.check_object(obj, wide, "baseline") == []
    none = Policy(allowed_host_ports=())
    ok_port = load_objects([pod(container={"ports": [{"containerPort": 80, "hostPort": 8080}]})]).objects[0].obj
    assert [v.control for v in admission.check_object(ok_port, none, "baseline")] == ["Host Ports"]


# --- review: the policy in force, over files ------------------------------------------------------

def write(tmp_path, text: str):
    f = tmp_path / "m.yaml"
    f.write_text(textwrap.dedent(text).lstrip())
    return str(f)


HOSTNET = """
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: %s}
    spec:
      hostNetwork: true
      containers:
      - name: app
        image: busybox
    """


def test_no_policy_in_force_checks_nothing(tmp_path):
    assert load_manifests([write(tmp_path, HOSTNET % "default")]).ok


def test_refusal_names_file_line_field_and_the_level(tmp_path):
    f = write(tmp_path, HOSTNET % "default")
    with admission.enforcing(Policy(source="--pod-security")):
        result = load_manifests([f])
    assert not result.ok
    (err,) = result.errors
    assert (err.file, err.line, err.path) == (f, 5, "spec.hostNetwork")
    assert "refused by pod-security level 'baseline' (from --pod-security)" in err.message
    with admission.enforcing(Policy(enforce="privileged")):
        assert load_manifests([f]).ok


def test_namespace_label_only_tightens(tmp_path):
    f = write(tmp_path, """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: tight
          labels:
            pod-security.kubernetes.io/enforce: restricted
            pod-security.kubernetes.io/warn: restricted
        ---
        apiVersion: v1
        kind: Namespace
        metadata:
          name: loose
          labels: {pod-security.kubernetes.io/enforce: privileged}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: tight}
        spec:
          containers: [{name: app, image: busybox}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: b, namespace: loose}
        spec:
          hostPID: true
          containers: [{name: app, image: busybox}]
        """)
    with admission.enforcing(Policy()):
        result = load_manifests([f])
    errors = {(d.line, d.path) for d in result.errors}
    assert (19, "spec.containers[0].securityContext.allowPrivilegeEscalation") in errors  # restricted in "tight"
    assert (25, "spec.hostPID") in errors  # "loose" cannot loosen the host's baseline
    assert all("restricted" in d.message for d in result.errors if d.line == 19)
    assert any(d.line == 13 and "may only tighten" in d.message for d in result.warnings)
    # No "kind not supported" warning for a Namespace: podplay reads its labels.
    assert not any("not supported" in d.message for d in result.diagnostics)


def test_a_bad_namespace_label_is_an_error(tmp_path):
    f = write(tmp_path, """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: x
          labels: {pod-security.kubernetes.io/enforce: strict}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: x}
        spec:
          containers: [{name: app, image: busybox}]
        """)
    result = load_manifests([f])
    (err,) = result.errors
    assert err.line == 5 and "not a pod-security level" in err.message


def test_warn_and_audit_report_without_refusing(tmp_path):
    f = write(tmp_path, HOSTNET % "default")
    with admission.enforcing(Policy(enforce="privileged", warn="baseline", audit="restricted")):
        result = load_manifests([f])
    assert result.ok
    assert [d.path for d in result.warnings] == ["spec.hostNetwork"]
    assert "(warn) would refuse" in result.warnings[0].message
    audit = [d for d in result.diagnostics if d.severity == Severity.INFO and "(audit)" in d.message]
    assert audit and all("restricted" in d.message for d in audit)


def test_settings_precedence_and_errors(tmp_path):
    flags = ("--pod-security", {"pod-security": "restricted"})
    env = ("$PODPLAY_POD_SECURITY", {"pod-security": "privileged", "allowed-host-paths": "/dev/ttyUSB0:/run/a.sock"})
    conf = admission.parse_config("# the host\npod-security = privileged\nallowed-host-ports = 80, 1024-65535\n",
                                  "/etc/podplay/config")
    p = admission.make_policy([flags, env, ("/etc/podplay/config", conf)])
    assert (p.enforce, p.source) == ("restricted", "--pod-security")
    assert p.allowed_host_paths == ("/dev/ttyUSB0", "/run/a.sock")
    assert p.allowed_host_ports == ((80, 80), (1024, 65535))
    assert admission.make_policy([]) == Policy()
    with pytest.raises(admission.PolicyError, match="config:2"):
        admission.parse_config("pod-security = baseline\npodsecurity = x\n", "config")
    with pytest.raises(admission.PolicyError, match="'strict' is not a pod-security level"):
        admission.make_policy([("$PODPLAY_POD_SECURITY", {"pod-security": "strict"})])
    with pytest.raises(admission.PolicyError, match="absolute path"):
        admission.make_policy([("x", {"allowed-host-paths": "/"})])
    with pytest.raises(admission.PolicyError, match="port"):
        admission.make_policy([("x", {"allowed-host-ports": "80-70"})])


# --- fields the model drops, judged on the raw document ---------------------------------------------

RAW_CASES = [
    ("procMount Unmasked", pod(container={"securityContext": {"procMount": "Unmasked"}}),
     [f"{C}.securityContext.procMount"]),
    ("procMount Default", pod(container={"securityContext": {"procMount": "Default"}}), []),
    ("SELinux type", pod({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
     ["spec.securityContext.seLinuxOptions.type"]),
    ("SELinux container_t and level", pod(container={"securityContext": {"seLinuxOptions": {
        "type": "container_t", "level": "s0:c1"}}}), []),
    ("SELinux user and role", pod(container={"securityContext": {"seLinuxOptions": {"user": "u", "role": "r"}}}),
     [f"{C}.securityContext.seLinuxOptions.user", f"{C}.securityContext.seLinuxOptions.role"]),
    ("AppArmor field Unconfined", pod({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
     ["spec.securityContext.appArmorProfile.type"]),
    ("AppArmor field Localhost", pod(container={"securityContext": {"appArmorProfile": {
        "type": "Localhost", "localhostProfile": "p"}}}), []),
    ("hostProcess", pod({"securityContext": {"windowsOptions": {"hostProcess": True}}}),
     ["spec.securityContext.windowsOptions.hostProcess"]),
    ("lifecycle host", pod(container={"lifecycle": {"preStop": {"httpGet": {"port": 80, "host": "10.0.0.1"}}}}),
     [f"{C}.lifecycle.preStop.httpGet.host"]),
]


@pytest.mark.parametrize(("manifest", "want"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_each_rule_on_fields_the_model_drops(manifest, want):
    found = admission.unmodelled_findings(manifest, "m.yaml", lambda path: (1, 1))
    assert sorted(f.path for f in found) == sorted(want)
    assert all(f.severity == Severity.INFO and f.level == "baseline" for f in found)


def test_fields_the_model_drops_are_refused_in_place(tmp_path):
    f = write(tmp_path, """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: d}
        spec:
          selector: {matchLabels: {a: b}}
          template:
            metadata: {labels: {a: b}}
            spec:
              containers:
              - name: app
                image: busybox
                securityContext:
                  procMount: Unmasked
        """)
    assert load_manifests([f]).ok  # no policy in force
    with admission.enforcing(Policy()):
        result = load_manifests([f])
    (err,) = result.errors
    assert (err.line, err.path) == (13, "spec.template.spec.containers[0].securityContext.procMount")
    assert "refused by pod-security level 'baseline'" in err.message and "/proc Mount Type" in err.message
    with admission.enforcing(Policy(enforce="privileged", warn="baseline")):
        result = load_manifests([f])
    assert result.ok and [d.path for d in result.warnings if "(warn)" in d.message] == [err.path]
