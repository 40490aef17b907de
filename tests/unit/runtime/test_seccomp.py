"""containers-common seccomp profiles → OCI: the conditions are settled per container."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.errors import ContainerRuntimeError
from reconciler.runtime.seccomp import convert_profile

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["newcall"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"name": "single", "action": "SCMP_ACT_LOG", "args": None},
    ],
}


def names(out) -> list[tuple[str, str]]:
    return [(n, r["action"]) for r in out["syscalls"] for n in r["names"]]


def test_arch_map_picks_the_native_architecture_and_its_companions():
    out = convert_profile(PROFILE, capabilities=(), arch="amd64", kernel=(6, 1))
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    assert out["defaultErrnoRet"] == 38
    out = convert_profile(PROFILE, capabilities=(), arch="arm64", kernel=(6, 1))
    assert out["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert ("arch_prctl", "SCMP_ACT_ALLOW") not in names(out)


def test_rules_depend_on_capabilities():
    without = names(convert_profile(PROFILE, capabilities=["CAP_CHOWN"], arch="amd64", kernel=(6, 1)))
    assert ("bpf", "SCMP_ACT_ERRNO") in without and ("bpf", "SCMP_ACT_ALLOW") not in without
    with_admin = names(convert_profile(PROFILE, capabilities=["CAP_SYS_ADMIN"], arch="amd64", kernel=(6, 1)))
    assert ("bpf", "SCMP_ACT_ALLOW") in with_admin and ("bpf", "SCMP_ACT_ERRNO") not in with_admin


def test_rules_depend_on_the_kernel():
    assert ("newcall", "SCMP_ACT_ALLOW") in names(convert_profile(PROFILE, capabilities=(), arch="amd64",
                                                                  kernel=(5, 8)))
    assert ("newcall", "SCMP_ACT_ALLOW") not in names(convert_profile(PROFILE, capabilities=(), arch="amd64",
                                                                      kernel=(5, 4)))


def test_rule_shape_is_oci():
    out = convert_profile(PROFILE, capabilities=(), arch="amd64", kernel=(6, 1))
    assert out["syscalls"][0] == {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}
    assert out["syscalls"][1]["args"] == [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]
    assert {"names": ["single"], "action": "SCMP_ACT_LOG"} in out["syscalls"]
    errno_rule = next(r for r in out["syscalls"] if r["names"] == ["bpf"])
    assert errno_rule["errnoRet"] == 1


def test_an_oci_profile_passes_through():
    oci = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    assert convert_profile(oci, capabilities=(), arch="amd64", kernel=(6, 1)) == oci


def test_an_empty_profile_confines_nothing():
    assert convert_profile({}, capabilities=(), arch="amd64", kernel=(6, 1)) is None


@pytest.mark.parametrize("profile,message", [
    ({"defaultAction": "SCMP_ACT_DANCE"}, "unknown action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "nope"}]}, "unknown action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
     "not an integer"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW",
                                                       "args": [{"index": 0, "value": 1, "op": "LIKE"}]}]},
     "unknown operator"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "archMap": []}, None),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "all"}, "must be a list"),
    (["not", "an", "object"], "JSON object"),
])
def test_hostile_profiles_give_clear_errors(profile, message):
    if message is None:  # an empty archMap is harmless
        convert_profile(profile, capabilities=(), arch="amd64", kernel=(6, 1))
        return
    with pytest.raises(ContainerRuntimeError, match=message):
        convert_profile(profile, capabilities=(), arch="amd64", kernel=(6, 1))


def test_the_hosts_default_profile_converts():
    profile = json.loads(Path("/usr/share/containers/seccomp.json").read_text())
    base = convert_profile(profile, capabilities=["CAP_CHOWN"], arch="amd64", kernel=(6, 1))
    admin = convert_profile(profile, capabilities=["CAP_SYS_ADMIN"], arch="amd64", kernel=(6, 1))
    allowed = {n for r in base["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}
    assert {"read", "write", "clone", "arch_prctl"} <= allowed
    assert "kexec_load" not in allowed
    assert "bpf" not in allowed
    admin_allowed = {n for r in admin["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert "bpf" in admin_allowed
