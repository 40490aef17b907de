"""Every generated config.json validates against the OCI runtime-spec JSON schema.

The schema comes from Debian's golang-github-opencontainers-specs-dev (installed by
scripts/setup.sh); its files refer to each other with relative ``$ref``s, resolved here locally.
The default seccomp profile is the host's real containers-common one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.runtime import oci
from reconciler.runtime.oci import HostDevice
from reconciler.runtime.users import ResolvedUser
from tests.unit.runtime.pods import image, make_pod

SCHEMA_DIR = Path("/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema")
SECCOMP = Path("/usr/share/containers/seccomp.json")


@pytest.fixture(scope="module")
def validator():
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    resources = [(p.name, Resource.from_contents(json.loads(p.read_text()), default_specification=DRAFT4))
                 for p in SCHEMA_DIR.glob("*.json")]
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / "config-schema.json").read_text())
    return Draft4Validator(schema, registry=registry)


@pytest.fixture(scope="module")
def default_profile():
    return json.loads(SECCOMP.read_text())


def context(profile, **kw):
    base = dict(
        rootfs="/var/lib/podplay/snapshots/abc/rootfs", cgroup_path="/podplay/abc/abc.c",
        namespaces={"network": "/proc/9/ns/net", "ipc": "/proc/9/ns/ipc", "uts": "/proc/9/ns/uts",
                    "pid": "/proc/9/ns/pid"},
        hosts_file="/run/podplay/pods/abc/hosts", resolv_conf_file="/run/podplay/pods/abc/resolv.conf",
        hostname_file="/run/podplay/pods/abc/hostname", shm_dir="/run/podplay/pods/abc/shm",
        host_rlimits={"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": oci.RLIM_MAX}, seccomp_default=profile,
        kernel=(6, 1), volumes={"data": "/vol/data", "cfg": "/vol/cfg", "secret": "/vol/secret"},
        subpaths={("data", "a/b"): "/vol/data/a/b"}, pod_ip="10.88.0.7",
        user=ResolvedUser(1000, 1000, (5, 2000), "app", "/home/app"),
    )
    base.update(kw)
    return oci.RuntimeContext(**base)


VOLUMES = [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cm", "optional": True}},
           {"name": "secret", "secret": {"secretName": "s", "optional": True}}]

SHAPES = {
    "plain": ([{"name": "c"}], {}),
    "command-env-workdir": ([{"name": "c", "command": ["/bin/sh", "-c"], "args": ["echo $(X)"], "workingDir": "/srv",
                              "env": [{"name": "X", "value": "1"},
                                      {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}],
                            {}),
    "privileged": ([{"name": "c", "securityContext": {"privileged": True}}], {}),
    "host-namespaces": ([{"name": "c"}], {"hostNetwork": True, "hostPID": True, "hostIPC": True}),
    "shared-pid": ([{"name": "c"}, {"name": "d"}], {"shareProcessNamespace": True}),
    "resources": ([{"name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "256Mi"},
                                               "requests": {"cpu": "100m", "memory": "64Mi"}}}], {}),
    "volumes": ([{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                {"name": "data", "mountPath": "/sub", "subPath": "a/b"},
                                                {"name": "cfg", "mountPath": "/etc/app"},
                                                {"name": "secret", "mountPath": "/run/secret", "readOnly": True}]}],
                {"volumes": VOLUMES}),
    "read-only-root": ([{"name": "c", "securityContext": {"readOnlyRootFilesystem": True}}], {}),
    "tty-stdin": ([{"name": "c", "tty": True, "stdin": True, "stdinOnce": True}], {}),
    "caps": ([{"name": "c", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"],
                                                                "drop": ["ALL"]}}}], {}),
    "caps-all": ([{"name": "c", "securityContext": {"capabilities": {"add": ["ALL"]}}}], {}),
    "unconfined": ([{"name": "c"}], {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
    "users": ([{"name": "c", "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}}],
              {"securityContext": {"fsGroup": 2000, "supplementalGroups": [5]}}),
    "stop-signal": ([{"name": "c", "lifecycle": {"stopSignal": "SIGUSR1"}}], {}),
    "sysctls": ([{"name": "c"}], {"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"},
                                                                    {"name": "kernel.msgmax", "value": "65536"}]}}),
    "dns-and-aliases": ([{"name": "c"}], {"hostAliases": [{"ip": "10.1.1.1", "hostnames": ["db"]}],
                                          "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}}),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_container_configs_validate(shape, validator, default_profile):
    containers, spec = SHAPES[shape]
    pod = make_pod("shape", containers, init=[{"name": "setup", "command": ["true"]}], **spec)
    ctx = context(default_profile, host_devices=(HostDevice("/dev/fuse", "c", 10, 229),))
    for c in pod.init_containers + pod.containers:
        cfg = oci.container_config(pod, c, image(entrypoint=("/entry",), user="app"), ctx)
        errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    infra = oci.infra_config(pod, context(default_profile, rootfs="/var/lib/podplay/containers/.infra-rootfs"))
    errors = list(validator.iter_errors(infra))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_validator_does_reject_a_broken_config(validator, default_profile):
    pod = make_pod("shape", [{"name": "c"}])
    cfg = oci.container_config(pod, pod.containers[0], image(), context(default_profile))
    cfg["process"]["rlimits"][0]["hard"] = -1
    cfg["linux"]["namespaces"].append({"type": "nonsense"})
    assert len(list(validator.iter_errors(cfg))) >= 2


def test_default_profile_becomes_a_plain_rule_list(default_profile):
    pod = make_pod("shape", [{"name": "c"}])
    cfg = oci.container_config(pod, pod.containers[0], image(), context(default_profile))
    sec = cfg["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO"
    assert sec["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert all(set(rule) <= {"names", "action", "args", "errnoRet"} for rule in sec["syscalls"])
