"""podman's kube-play test manifests, validated by podplay (see /work/shared/fixtures/podman-kube/index.txt).

Each fixture comes from a podman test that states what podman does with it. The table says what
podplay does at the validation level: the errors (field path and a message fragment) and the
warnings it reports. Where podplay deliberately differs from podman, the entry says why, and
``fix`` is the smallest edit that makes the manifest valid for podplay *and* for a Kubernetes
API server; the test applies it and checks that the manifest then loads cleanly, so that the
difference is exactly the one named and nothing else.

The fixtures are read in place, never copied: CI has the same directory, and a missing
directory fails the test rather than skipping it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired import build_desired
from reconciler.manifests import load_manifests

FIXTURES = Path("/work/shared/fixtures/podman-kube")

# The reasons podplay rejects what podman accepts. Each is a rule of the Kubernetes API server;
# podplay's manifests must keep working when they are `kubectl apply`-ed to a real cluster.
DNS_NAMES = "object, container and volume names are DNS-1123 (lowercase) in Kubernetes; podman accepts any case"
PULL_MISSING = "imagePullPolicy 'missing' is a podman value the API server rejects; Kubernetes calls it IfNotPresent"
DEPLOYMENT_RESTART = "a Deployment's pod template must have restartPolicy Always in Kubernetes; podman accepts Never"
LOWER_PROTOCOL = "the API server takes protocol UDP, not udp; podman lower-cases it"
CONTAINER_NAME = "the API server requires a container name; podman makes one up from the pod name"
HOSTPORT_ONLY = "the API server requires containerPort; podman copies hostPort into it"

NAME_ERR = "is not a valid"

# fixture → (errors, warnings, fix, why). errors/warnings: {path: message fragment}.
EXPECT: dict[str, tuple[dict[str, str], dict[str, str], list[tuple[str, str]], str]] = {
    # podman: container named "libpod-test-"; podplay: a container needs a name.
    "01-simple-pod-unnamed-ctr.yaml": (
        {"spec.containers[0].name": "every container needs a name"}, {},
        [("  - image:", "  - name: app\n    image:")], CONTAINER_NAME),
    "02-no-pod-prefix.yaml": (
        {"spec.containers[0].name": "e.g. 'simplewithoutpodprefix'"}, {},
        [("simpleWithoutPodPrefix", "simplewithoutpodprefix")], DNS_NAMES),
    "03-podname-equals-ctrname.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR}, {},
        [("podnameEqualsContainerNameYaml", "podname-equals-ctrname")], DNS_NAMES),
    # podman: "pod does not have a name". podplay says the same, at the field, and goes on to
    # report the container name as well (all problems at once).
    "04-error-pod-without-name.yaml": (
        {"metadata": "every object needs metadata with a name", "spec.containers[0].name": NAME_ERR}, {},
        [], ""),
    # podman: container "podDoesntHaveAnImage" is missing the required 'image' field: the same words.
    "05-error-ctr-without-image.yaml": (
        {"spec.containers[0].image": "container 'podDoesntHaveAnImage' is missing the required 'image' field",
         "metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR}, {},
        [], ""),
    # podman: "YAML document does not contain any supported kube kind".
    "06-error-unknown-kind.yaml": (
        {"": "no supported object (Pod, Deployment, ConfigMap, Secret, PersistentVolumeClaim"},
        {"": "UnknownKind unknown: kind not supported, skipped"},
        [], ""),
    # Exported YAML: creationTimestamp, status: {} and empty seLinuxOptions/capabilities pass silently.
    "07-shared-pid-namespace.yaml": ({}, {}, [], ""),
    "08-deployment-liveness-exec.yaml": ({}, {}, [], ""),
    "09-deployment-liveness-unhealthy.yaml": (
        {"spec.template.spec.restartPolicy": "must have restartPolicy Always, not Never"}, {},
        [("restartPolicy: Never", "restartPolicy: Always")], DEPLOYMENT_RESTART),
    "10-deployment-startup-probe.yaml": (
        {"spec.template.spec.restartPolicy": "must have restartPolicy Always, not Never"}, {},
        [("restartPolicy: Never", "restartPolicy: Always")], DEPLOYMENT_RESTART),
    "11-secret-volume.yaml": ({}, {}, [], ""),
    "12-secret-volume-multi.yaml": ({}, {}, [], ""),
    "13-secret-optional-missing.yaml": ({}, {}, [], ""),
    # podman: secret "oldsecret" not found. podplay: the same, at the field, before anything runs.
    "14-error-secret-required-missing.yaml": (
        {"spec.volumes[0].secret.secretName": "Secret 'oldsecret' not found"}, {}, [], ""),
    # A claim without a PersistentVolumeClaim document is made on first use, as podman does.
    "15-pvc-subpath.yaml": ({}, {}, [], ""),
    "16-graceful-shutdown-sigterm.yaml": ({}, {}, [], ""),
    # podman: no such ConfigMap "mycm".
    "17-error-configmap-volume-missing.yaml": (
        {"spec.volumes[0].configMap.name": "ConfigMap 'mycm' not found"}, {}, [], ""),
    "18-configmap-volume-default-mode.yaml": ({}, {}, [], ""),
    "19-containerport-not-published.yaml": (
        {"spec.containers[0].imagePullPolicy": "podman's 'missing' is 'IfNotPresent' in Kubernetes"}, {},
        [("imagePullPolicy: missing", "imagePullPolicy: IfNotPresent")], PULL_MISSING),
    "20-hostport-published.yaml": (
        {"spec.containers[0].imagePullPolicy": "podman's 'missing' is 'IfNotPresent' in Kubernetes"}, {},
        [("imagePullPolicy: missing", "imagePullPolicy: IfNotPresent")], PULL_MISSING),
    "21-hostport-udp-two-ctrs.yaml": (
        {"spec.containers[0].ports[0].protocol": 'did you mean "UDP"?'}, {},
        [("protocol: udp", "protocol: UDP")], LOWER_PROTOCOL),
    "22-host-pid.yaml": ({}, {}, [], ""),
    "23-host-ipc.yaml": ({}, {}, [], ""),
    "24-pod-sysctls.yaml": ({}, {}, [], ""),
    # podman: "... since Network Namespace set to host: invalid argument".
    "25-error-sysctl-with-hostnetwork.yaml": (
        {"spec.securityContext.sysctls[1].name": "cannot be set since the network namespace is the host's"}, {},
        [], ""),
    "26-list-kind-configmap-env.yaml": ({}, {}, [], ""),
    "27-stopsignal-sigusr1.yaml": ({}, {}, [], ""),
    # podman: "invalid signal: noSuchSignal"; the pod name is not DNS-1123 either.
    "28-error-stopsignal-invalid.yaml": (
        {"spec.containers[0].lifecycle.stopSignal": "invalid signal: noSuchSignal", "metadata.name": NAME_ERR}, {},
        [], ""),
    # hostname with hostNetwork: accepted (the host's UTS namespace wins at run time, as in podman).
    "29-hostnetwork-hostname.yaml": ({}, {}, [], ""),
    # The Service is skipped with a warning (podman skips it silently).
    "30-multidoc-pvc-service-deployment.yaml": (
        {"metadata.name": NAME_ERR, "spec.template.spec.volumes[0].persistentVolumeClaim.claimName": NAME_ERR},
        {"": "Service multiFoo: kind not supported, skipped"},
        [("multiFoo", "multi-foo")], DNS_NAMES),
    # podman limits replicas to 1; podplay runs all 10 (no hostPort, so they do not collide).
    "31-deployment-replicas-10.yaml": (
        {"metadata.name": NAME_ERR, "spec.template.spec.containers[0].name": NAME_ERR}, {},
        [("testDeployment", "test-deployment"), ("testCtr", "test-ctr")], DNS_NAMES),
    "32-template-default-pod.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR,
         "spec.containers[0].imagePullPolicy": "podman's 'missing' is 'IfNotPresent'"}, {},
        [("testPod", "test-pod"), ("testCtr", "test-ctr"), ("imagePullPolicy: missing", "imagePullPolicy: Always")],
        DNS_NAMES + "; " + PULL_MISSING),
    "33-restart-policy-onfailure.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR}, {},
        [("testPod3", "test-pod3"), ("testCtr", "test-ctr")], DNS_NAMES),
    # The podman annotation is not an error: podplay says it does not act on it.
    "34-init-container-always.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR},
        {"metadata.annotations.io.podman.annotations.init.container.type": "podman annotation"},
        [("testPod", "test-pod"), ("testCtr", "test-ctr")], DNS_NAMES),
    "35-env-precedence-over-envfrom.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR}, {},
        [("testPod", "test-pod"), ("testCtr", "test-ctr")], DNS_NAMES),
    "36-emptydir-two-ctrs.yaml": (
        {"spec.volumes[0].name": "e.g. 'testvol'"}, {},
        [("testVol", "test-vol")], DNS_NAMES),
    "37-resource-limits.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR}, {},
        [("testPod", "test-pod"), ("testCtr", "test-ctr")], DNS_NAMES),
    "38-host-aliases.yaml": (
        {"metadata.name": NAME_ERR, "spec.containers[0].name": NAME_ERR}, {},
        [("testPod", "test-pod"), ("testCtr", "test-ctr")], DNS_NAMES),
    # volumes-from is podman's own feature: a warning says podplay does not act on it.
    "39-volumes-from-annotation.yaml": (
        {}, {"metadata.annotations.io.podman.annotations.volumes-from/tgtctr": "podman annotation"}, [], ""),
    "40-bats-init-container-shm.yaml": ({}, {}, [], ""),
    "41-bats-liveness-initialdelay.yaml": ({}, {}, [], ""),
    "42-bats-wait-pod-exit.yaml": ({}, {}, [], ""),
    "43-bats-hostport-no-containerport.yaml": (
        {"spec.containers[0].ports[0].containerPort": "podman takes hostPort, Kubernetes does not"}, {},
        [("      - name: hostp\n", "      - name: hostp\n        containerPort: 18181\n")], HOSTPORT_ONLY),
}


def _fixtures() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.yaml"))


def test_the_fixture_directory_is_there_and_fully_covered():
    assert FIXTURES.is_dir(), f"{FIXTURES} is missing: the podman compatibility corpus must be present"
    assert len(_fixtures()) == 43
    assert set(_fixtures()) == set(EXPECT), "every fixture needs an entry in EXPECT (and no stale ones)"


def _by_path(diags) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in diags:
        out.setdefault(d.path, []).append(d.message)
    return out


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_podman_fixture(name, tmp_path):
    errors, warnings, fix, why = EXPECT[name]
    result = load_manifests([str(FIXTURES / name)])
    got_errors, got_warnings = _by_path(result.errors), _by_path(result.warnings)
    assert set(got_errors) == set(errors), f"errors: {result.errors}"
    for path, fragment in errors.items():
        assert any(fragment in m for m in got_errors[path]), (path, got_errors[path])
    assert set(got_warnings) == set(warnings), f"warnings: {result.warnings}"
    for path, fragment in warnings.items():
        assert any(fragment in m for m in got_warnings[path]), (path, got_warnings[path])
    assert all(d.line > 0 for d in result.errors if d.path), "errors at a field carry its line"
    if not errors:
        assert result.ok and result.objects
        build_desired(result.objects)
    if fix:
        assert why, "a deliberate difference says why"
        text = (FIXTURES / name).read_text()
        for old, new in fix:
            assert old in text
            text = text.replace(old, new)
        fixed = tmp_path / name
        fixed.write_text(text)
        again = load_manifests([str(fixed)])
        assert again.ok, f"after the documented fix ({why}): {again.errors}"
        build_desired(again.objects)
