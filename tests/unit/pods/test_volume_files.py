"""downwardAPI and projected volumes: the files the desired pod carries, and what the loader says
(one message per problem; a service account token is refused with the reason)."""

from __future__ import annotations

from reconciler.manifests import load_objects
from tests.unit.test_desired import desired_from, pod

CM = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: "1", b: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {token: s3cret}
"""

VOLUMES = """
volumes:
- name: info
  downwardAPI:
    items:
    - {path: name, fieldRef: {fieldPath: metadata.name}}
    - {path: uid, fieldRef: {fieldPath: metadata.uid}}
    - {path: labels, fieldRef: {fieldPath: metadata.labels}}
    - {path: tier, fieldRef: {fieldPath: "metadata.labels['tier']"}}
    - {path: mem, mode: 0600, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}
- name: all
  projected:
    sources:
    - configMap: {name: cfg, items: [{key: a, path: conf/a}]}
    - secret: {name: sec}
    - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
- name: plain
  projected:
    defaultMode: 0640
    sources:
    - configMap: {name: cfg}
"""


def files(v) -> dict[str, tuple[bytes, int]]:
    return {f.path: (f.data, f.mode) for f in v.files}


def test_downward_and_projected_volumes_become_files():
    d = desired_from(CM, pod(name="web", labels="tier: front, app: web", extra_spec=VOLUMES,
                             container="resources: {limits: {memory: 64Mi}}"))
    p = d.pods["default/web"]
    info, everything, plain = p.volumes
    assert (info.kind, info.read_only) == ("configMap", True)
    assert files(info) == {"name": (b"web", 0o644), "uid": (p.uid.encode(), 0o644),
                           "labels": (b'app="web"\ntier="front"', 0o644), "tier": (b"front", 0o644),
                           "mem": (b"64", 0o600)}
    # Secret data inside: laid out (tmpfs) and redacted as a secret volume, owner-only by default.
    assert everything.kind == "secret"
    assert files(everything) == {"conf/a": (b"1", 0o644), "token": (b"s3cret", 0o400), "ns": (b"default", 0o644)}
    assert plain.kind == "configMap" and files(plain) == {"a": (b"1", 0o640), "b": (b"2", 0o640)}


def test_the_uid_file_follows_the_pod_and_the_labels_change_the_hash():
    a = desired_from(CM, pod(name="web", labels="tier: front", extra_spec=VOLUMES,
                             container="resources: {limits: {memory: 64Mi}}")).pods["default/web"]
    b = desired_from(CM, pod(name="web", labels="tier: back", extra_spec=VOLUMES,
                             container="resources: {limits: {memory: 64Mi}}")).pods["default/web"]
    assert a.spec_hash != b.spec_hash, "a label the volume shows is part of the running pod"
    assert files(a.volumes[0])["uid"][0] == a.uid.encode() and a.uid != b.uid


def _pod(volume: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "volumes": [{"name": "v", **volume}]}}


def test_what_the_loader_refuses():
    result = load_objects([_pod({"projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "x"}]},
         "secret": {"name": "s"}},
        {"downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "status.podIP"}},
                                   {"path": "y", "resourceFieldRef": {"resource": "limits.cpu"}}]}}]}})])
    got = sorted((d.path, d.message) for d in result.errors)
    assert got == [
        ("spec.volumes[0].projected.sources[0].serviceAccountToken", "a service account token is minted by the "
         "Kubernetes API server, and podplay has none: put a token in a Secret and project that instead"),
        ("spec.volumes[0].projected.sources[1]", "needs exactly one of configMap, secret, downwardAPI (the "
         "projections podplay runs)"),
        ("spec.volumes[0].projected.sources[2].downwardAPI.items[0].fieldRef.fieldPath", "'status.podIP' is not a "
         "field a volume can hold: use one of metadata.name, metadata.namespace, metadata.uid, metadata.labels, "
         "metadata.annotations, or metadata.labels['KEY'] (status fields are for env only)"),
        ("spec.volumes[0].projected.sources[2].downwardAPI.items[1].resourceFieldRef.containerName", "a volume is "
         "the pod's: name the container whose resources it holds"),
    ]
    assert not result.warnings, "refused, not also warned about"


def test_a_volume_type_podplay_cannot_run_is_one_error_naming_what_runs():
    result = load_objects([_pod({"awsElasticBlockStore": {"volumeID": "vol-1"}})])
    assert [(d.severity.value if hasattr(d.severity, "value") else str(d.severity), d.path, d.message)
            for d in result.diagnostics] == [
        ("error", "spec.volumes[0].awsElasticBlockStore", "awsElasticBlockStore volumes need a cloud provider; "
         "podplay runs emptyDir, hostPath, configMap, secret, downwardAPI, projected, image and persistentVolumeClaim")]


def test_an_image_volume_is_a_read_only_snapshot_of_a_pulled_image():
    from reconciler.diff import compute_diff
    from reconciler.plan import make_plan
    from tests.unit.test_diff_plan import SCOPE, host, last

    d = desired_from(pod(name="a", container="volumeMounts: [{name: data, mountPath: /data}]", extra_spec="""
        volumes:
        - name: data
          image: {reference: "registry.test/data:v1", pullPolicy: Always}
        """))
    p = d.pods["default/a"]
    (v,) = p.volumes
    assert (v.kind, v.image, v.image_pull_policy, v.read_only) == ("image", "registry.test/data:v1", "Always", True)
    assert v.snapshot_key(p.uid) == f"{p.uid}.vol_data"
    plan = make_plan(compute_diff(d, host(), last(), SCOPE), d, host())
    pulls = {t.steps[0].step.image: t.steps[0].step.policy for t in plan.txns if t.kind == "shared"}
    assert pulls == {"registry.test/data:v1": "Always", "busybox:1.36": "IfNotPresent"}
    (create,) = [t for t in plan.txns if t.kind == "create"]
    (snap,) = [s for s in create.steps if s.step.verb == "PrepareSnapshot" and s.step.key == v.snapshot_key(p.uid)]
    (vols,) = [s for s in create.steps if s.step.verb == "PrepareVolumes"]
    assert snap.id in vols.depends_on and snap.step.image == "registry.test/data:v1"


def test_an_image_volume_needs_a_reference_and_a_real_pull_policy():
    result = load_objects([_pod({"image": {"reference": "", "pullPolicy": "missing"}})])
    assert sorted((d.path, d.message) for d in result.errors) == [
        ("spec.volumes[0].image.pullPolicy", "'missing' is not a pull policy: use Always, IfNotPresent or Never"),
        ("spec.volumes[0].image.reference", "names no image (e.g. registry.example/data:v1)"),
    ]


def test_a_resource_the_container_does_not_set_is_the_nodes_allocatable_written_by_the_volume_driver(tmp_path):
    from reconciler.model.quantity import NODE_RESOURCE_MARK, node_resource
    from reconciler.storage.volumes import _node_filled

    spec = """
volumes:
- name: info
  downwardAPI:
    items:
    - {path: cpu, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 1m}}
    - {path: req, resourceFieldRef: {containerName: app, resource: requests.memory}}
"""
    d = desired_from(pod(name="a", extra_spec=spec))
    files = {f.path: f.data for f in d.pods["default/a"].volumes[0].files}
    assert files["cpu"] == NODE_RESOURCE_MARK + b"limits.cpu:1m", "left for the host to fill"
    assert _node_filled(files["cpu"]).decode().isdigit() and int(_node_filled(files["cpu"])) >= 1000
    assert _node_filled(files["req"]) == b"0", "an unset request is 0, as the kubelet reports it"
    assert _node_filled(b"plain") == b"plain"
    # The kubelet's arithmetic: the divisor, rounded up; at least one cpu on a node that has any.
    assert node_resource("limits.cpu", "1", 2000, 0) == "2"
    assert node_resource("limits.cpu", "1", 500, 0) == "1"
    assert node_resource("limits.memory", "1Mi", 0, 3 * 1024 * 1024 + 1) == "4"
    assert node_resource("requests.cpu", "1", 2000, 0) == "0"
