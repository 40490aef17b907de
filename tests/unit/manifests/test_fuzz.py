"""Hostile and random input never produces a traceback: every problem is a Diagnostic.

Three generators: raw text from YAML's own punctuation, random JSON-like documents dumped as
YAML, and a valid Pod or Deployment with random mutations (deleted, replaced, renamed and
duplicated fields). For the last, a manifest that validates must also expand into desired pods
(validation is the only gate before the engine). A few examples also go through the real CLI.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired import build_desired
from reconciler.errors import Diagnostic, ManifestError, Severity
from reconciler.manifests import load_manifests

REPO = Path(__file__).resolve().parents[3]
# PODPLAY_FUZZ_EXAMPLES=5000 for a deeper run by hand; CI runs the default.
FUZZ = settings(deadline=None, max_examples=int(os.environ.get("PODPLAY_FUZZ_EXAMPLES", "300")),
                suppress_health_check=[HealthCheck.too_slow])

YAML_BITS = [":", ": ", "- ", "-", "[", "]", "{", "}", ",", "'", '"', "#", "&a", "*a", "!", "!!str", "|", ">",
             "%", "@", "`", "\t", "\n", "  ", "---", "...", "<<: ", "? ", "\\", "\x00", "\x07", "\ufeff", "é",
             "kind: Pod", "apiVersion: v1", "metadata:", "name: x", "spec:", "containers:", "image: b", "0x1F",
             "1e3", ".nan", "~", "null", "yes", "2001-12-14", "kind: List", "items:"]

text_input = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=5), max_size=60).map("".join),
)

KEYS = ["apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations", "spec", "containers",
        "initContainers", "image", "ports", "containerPort", "hostPort", "protocol", "env", "value", "valueFrom",
        "configMapKeyRef", "secretKeyRef", "key", "optional", "volumes", "volumeMounts", "mountPath", "subPath",
        "emptyDir", "hostPath", "path", "configMap", "secret", "secretName", "items", "data", "stringData",
        "binaryData", "replicas", "selector", "matchLabels", "template", "resources", "limits", "requests", "cpu",
        "memory", "livenessProbe", "httpGet", "exec", "command", "tcpSocket", "port", "status", "<<", "",
        "restartPolicy", "hostNetwork", "securityContext", "sysctls", "lifecycle", "stopSignal", "accessModes"]
KINDS = ["Pod", "Deployment", "ConfigMap", "Secret", "PersistentVolumeClaim", "List", "Service", "pod", None]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(["v1", "apps/v1", "TCP", "Always", "0.5", "1Gi", "dGVzdA=="]))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    max_leaves=40,
)


@st.composite
def documents(draw):
    doc = draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6))
    kind = draw(st.sampled_from(KINDS))
    if kind is not None:
        doc["kind"] = kind
        doc.setdefault("apiVersion", "apps/v1" if kind == "Deployment" else "v1")
    return doc


VALID_POD = yaml.safe_load("""
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  initContainers:
  - {name: init, image: busybox:1.36, command: ["true"]}
  containers:
  - name: app
    image: busybox:1.36
    env:
    - {name: A, value: x}
    - name: B
      valueFrom: {configMapKeyRef: {name: cfg, key: k}}
    - name: C
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    envFrom: [{secretRef: {name: sec}}]
    ports: [{containerPort: 80, hostPort: 8080, name: http}]
    volumeMounts: [{name: data, mountPath: /data}, {name: conf, mountPath: /conf}]
    resources: {limits: {cpu: 500m, memory: 64Mi}}
    livenessProbe: {httpGet: {path: /, port: http}}
  volumes:
  - {name: data, emptyDir: {sizeLimit: 1Gi}}
  - {name: conf, configMap: {name: cfg, items: [{key: k, path: k.txt}]}}
""")
VALID_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": copy.deepcopy(VALID_POD["spec"])}},
}
VALID_DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["ports"][0].pop("hostPort")
SUPPORT = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}},
           {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"}, "data": {"k": "dGVzdA=="}}]


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


@st.composite
def mutated(draw):
    docs = copy.deepcopy(draw(st.sampled_from([[VALID_POD], [VALID_DEPLOYMENT], [VALID_POD, VALID_DEPLOYMENT]])))
    docs = copy.deepcopy(SUPPORT) + docs
    for _ in range(draw(st.integers(1, 4))):
        doc = draw(st.sampled_from(docs))
        path = draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "replace", "rename", "duplicate"]))
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(json_values)
        elif action == "rename" and isinstance(last, str):
            parent[last + draw(st.sampled_from(["e", "s", "_", "X"]))] = parent.pop(last)
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return docs


def _dump(docs) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def _sane(result) -> None:
    for d in result.diagnostics:
        assert isinstance(d, Diagnostic)
        assert d.line >= 0 and d.column >= 0, d
        assert d.message and "Traceback" not in d.message, d
        assert d.severity in (Severity.ERROR, Severity.WARNING), d


@FUZZ
@given(text_input)
def test_random_text_never_raises(text):
    result = load_manifests(["-"], stdin_text=text)
    _sane(result)
    if not result.objects:
        assert result.errors, "a set with no supported object is an error"


@FUZZ
@given(st.lists(documents(), min_size=1, max_size=3))
def test_random_documents_never_raise(docs):
    text = _dump(docs)
    result = load_manifests(["-"], stdin_text=text)
    _sane(result)
    # The same data as JSON takes the JSON reader's path.
    result = load_manifests(["-"], stdin_text=json.dumps(docs[0]))
    _sane(result)


@FUZZ
@given(mutated())
def test_mutated_manifests_never_raise_and_valid_ones_expand(docs):
    result = load_manifests(["-"], stdin_text=_dump(docs))
    _sane(result)
    for d in result.errors:
        if d.path:
            assert d.line > 0, f"an error at a field has the field's line: {d}"
    if result.ok:
        try:
            build_desired(result.objects)
        except ManifestError as exc:  # a finding the loader should have made
            raise AssertionError(f"validated, but build_desired refused: {exc}") from None


def test_alias_bomb_and_deep_nesting_are_refused_quickly():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")) + "kind: Pod\n"
    result = load_manifests(["-"], stdin_text=bomb)
    assert [d.message for d in result.errors][0].startswith("document has more than")
    deep = "a: " + "[" * 5000 + "]" * 5000 + "\n"
    result = load_manifests(["-"], stdin_text=deep)
    _sane(result)
    assert result.errors and "nested too deeply" in result.errors[0].message


def _cli(stdin: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODPLAY_")}
    return subprocess.run([sys.executable, "-m", "reconciler", "validate", "-"], input=stdin, capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60, check=False)


@settings(deadline=None, max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(mutated() | st.lists(documents(), min_size=1, max_size=2))
def test_cli_exit_code_and_no_traceback(docs):
    text = _dump(docs)
    expected_ok = load_manifests(["-"], stdin_text=text).ok
    proc = _cli(text)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == (0 if expected_ok else 1), (proc.returncode, proc.stderr)


def test_cli_reports_garbage_with_exit_code_1():
    proc = _cli("kind: [\n\t- :\x07")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "-:1:" in proc.stderr or "-:2:" in proc.stderr, proc.stderr
