"""build_desired: expansion, reference resolution and the spec hash (table-driven)."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest

from reconciler.desired import DesiredState, EnvEntry, build_desired, default_pull_policy
from reconciler.manifests import load_objects


def desired_from(*texts: str) -> DesiredState:
    """Each text is dedented on its own, then they are joined as one multi-document stream."""
    import yaml

    docs = [d for t in texts for d in yaml.safe_load_all(textwrap.dedent(t)) if d]
    loaded = load_objects(docs, source="/m/test.yaml")
    assert loaded.ok, "\n".join(map(str, loaded.errors))
    return build_desired(loaded.objects)


def pod(extra_spec: str = "", container: str = "", name: str = "web", labels: str = "") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  containers:
  - name: app
    image: busybox:1.36
{textwrap.indent(textwrap.dedent(container), "    ")}
{textwrap.indent(textwrap.dedent(extra_spec), "  ")}
"""


CM = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {A: from-cm, B: b-value, 1BAD: x}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
data: {token: c2VjcmV0}
---
"""


def env_of(state: DesiredState, ref: str = "default/web") -> dict[str, EnvEntry]:
    return {e.name: e for e in state.pods[ref].containers[0].env}


def test_env_from_then_env_with_env_winning_and_invalid_names_skipped():
    state = desired_from(CM + pod(container="""
        envFrom:
        - configMapRef: {name: cfg}
        - secretRef: {name: sec}
          prefix: S_
        env:
        - {name: A, value: literal}
        - name: T
          valueFrom: {secretKeyRef: {name: sec, key: token}}
        - name: MISSING
          valueFrom: {configMapKeyRef: {name: nope, key: x, optional: true}}
        """))
    env = env_of(state)
    assert env["A"].value == "literal"
    assert env["B"].value == "b-value"
    assert env["S_token"].value == "secret"
    assert env["T"].value == "secret"
    assert "MISSING" not in env and "1BAD" not in env


@pytest.mark.parametrize(("field", "expected", "deferred"), [
    ("metadata.name", "web", ""),
    ("metadata.namespace", "default", ""),
    ("metadata.labels['tier']", "front", ""),
    ("status.podIP", "", "status.podIP"),
    ("metadata.uid", "", "metadata.uid"),
])
def test_field_refs_resolve_now_or_are_deferred_to_run_time(field, expected, deferred):
    state = desired_from(pod(labels="tier: front", container=f"""
        env:
        - name: V
          valueFrom: {{fieldRef: {{fieldPath: "{field}"}}}}
        """))
    e = env_of(state)["V"]
    assert (e.value, e.deferred) == (expected, deferred)


def test_resource_field_ref_divides_and_rounds_up():
    state = desired_from(pod(container="""
        resources: {limits: {memory: 100Mi, cpu: 250m}}
        env:
        - name: MEM_MI
          valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
        - name: CPU
          valueFrom: {resourceFieldRef: {resource: limits.cpu}}
        """))
    env = env_of(state)
    assert env["MEM_MI"].value == "100"
    assert env["CPU"].value == "1"


def test_deployment_expands_to_ordinal_names_sharing_one_spec_hash():
    state = desired_from("""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api}
        spec:
          replicas: 3
          selector: {matchLabels: {app: api}}
          template:
            metadata: {labels: {app: api}}
            spec:
              containers: [{name: app, image: busybox:1.36}]
        """)
    assert sorted(state.pods) == ["default/api-0", "default/api-1", "default/api-2"]
    hashes = {p.spec_hash for p in state.pods.values()}
    assert len(hashes) == 1
    assert len({p.uid for p in state.pods.values()}) == 3
    assert {p.hostname for p in state.pods.values()} == {"api-0", "api-1", "api-2"}
    assert all(str(p.owner) == "Deployment/default/api" for p in state.pods.values())


def test_per_replica_host_ports_with_the_annotation():
    state = desired_from("""
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: api
          annotations: {podplay.io/host-port-per-replica: "true"}
        spec:
          replicas: 2
          selector: {matchLabels: {app: api}}
          template:
            metadata: {labels: {app: api}}
            spec:
              containers:
              - name: app
                image: busybox:1.36
                ports: [{containerPort: 80, hostPort: 8000}]
        """)
    ports = {ref: p.containers[0].spec.ports[0].host_port for ref, p in state.pods.items()}
    assert ports == {"default/api-0": 8000, "default/api-1": 8001}


SPEC_HASH_CASES = [
    # (description, second manifest, hash changes?)
    ("same text", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]"), False),
    ("label only", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]", labels="x: y"), False),
    ("consumed configmap data",
     CM.replace("from-cm", "other") + pod(container="envFrom: [{configMapRef: {name: cfg}}]"), True),
    ("image", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]").replace("1.36", "1.37"), True),
    ("podplay annotation", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]").replace(
        "metadata:\n  name: web", "metadata:\n  name: web\n  annotations: {podplay.io/network: other}"), True),
    ("other annotation", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]").replace(
        "metadata:\n  name: web", "metadata:\n  name: web\n  annotations: {team: blue}"), False),
    ("restart policy", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]", extra_spec="restartPolicy: Never"),
     True),
    ("default made explicit", CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]",
                                       extra_spec="restartPolicy: Always"), False),
]


@pytest.mark.parametrize(("what", "second", "changes"), SPEC_HASH_CASES, ids=[c[0] for c in SPEC_HASH_CASES])
def test_spec_hash_changes_exactly_when_the_running_pod_would(what, second, changes):
    first = desired_from(CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]")).pods["default/web"]
    other = desired_from(second).pods["default/web"]
    assert (first.spec_hash != other.spec_hash) is changes
    assert (first.uid != other.uid) is changes


def test_unconsumed_configmap_change_does_not_touch_the_hash():
    a = desired_from(CM + pod()).pods["default/web"]
    b = desired_from(CM.replace("from-cm", "zzz") + pod()).pods["default/web"]
    assert a.spec_hash == b.spec_hash


def test_volume_files_items_and_modes():
    state = desired_from(CM + pod(extra_spec="""
        volumes:
        - name: conf
          configMap:
            name: cfg
            items: [{key: A, path: sub/a.txt, mode: 0600}, {key: B, path: b.txt}]
        - name: creds
          secret: {secretName: sec}
        - name: creds-open
          secret: {secretName: sec, defaultMode: 0444}
        """))
    vols = {v.name: v for v in state.pods["default/web"].volumes}
    assert [(f.path, f.data, f.mode) for f in vols["conf"].files] == [("sub/a.txt", b"from-cm", 0o600),
                                                                      ("b.txt", b"b-value", 0o644)]
    assert [(f.path, f.data, f.mode) for f in vols["creds"].files] == [("token", b"secret", 0o400)]
    assert vols["creds-open"].files[0].mode == 0o444


def test_pull_secrets_decode_dockerconfigjson():
    config = {"auths": {"registry.example:5000": {"auth": base64.b64encode(b"alice:pw").decode()}}}
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    state = desired_from(f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: regcred}}
        type: kubernetes.io/dockerconfigjson
        data: {{.dockerconfigjson: {encoded}}}
        """, pod(extra_spec="imagePullSecrets: [{name: regcred}]"))
    (cred,) = state.pods["default/web"].pull_secrets
    assert (cred.registry, cred.username, cred.password) == ("registry.example:5000", "alice", "pw")


@pytest.mark.parametrize(("image", "policy"), [
    ("busybox", "Always"), ("busybox:latest", "Always"), ("busybox:1.36", "IfNotPresent"),
    ("localhost:5000/x", "Always"), ("localhost:5000/x:1", "IfNotPresent"),
    ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
])
def test_default_pull_policy(image, policy):
    assert default_pull_policy(image) == policy


def test_claims_from_pvc_objects_and_from_bare_references():
    state = desired_from("""
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata: {name: declared}
        spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
        """, pod(extra_spec="""
        volumes:
        - {name: a, persistentVolumeClaim: {claimName: declared}}
        - {name: b, persistentVolumeClaim: {claimName: implicit}}
        """))
    assert {r: c.declared for r, c in state.claims.items()} == {"default/declared": True, "default/implicit": False}


def test_desired_pod_json_round_trip():
    state = desired_from(CM + pod(container="envFrom: [{configMapRef: {name: cfg}}]", extra_spec="""
        volumes: [{name: s, secret: {secretName: sec}}]
        """))
    p = state.pods["default/web"]
    from reconciler.desired import DesiredPod

    assert DesiredPod.from_json(json.loads(json.dumps(p.to_json()))) == p
