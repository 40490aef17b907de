"""PURE  seccomp profiles in the containers-common / Docker format → the OCI ``linux.seccomp`` object.

/usr/share/containers/seccomp.json (and most Localhost profiles people write) is not in OCI
form: it names architectures through an ``archMap`` and makes rules conditional on the
container's capabilities, the CPU architecture and the kernel version (``includes`` /
``excludes``). The rules are settled here, once per container, against its bounding
capability set — the way podman and CRI-O do it — so that runc receives a plain rule list.
A profile already in OCI form (``architectures``, no conditions) passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from reconciler.errors import ContainerRuntimeError

# Go / libseccomp architecture names (what the profile's includes/excludes use) → OCI names.
_NATIVE = {
    "amd64": "SCMP_ARCH_X86_64",
    "x86": "SCMP_ARCH_X86",
    "386": "SCMP_ARCH_X86",
    "x32": "SCMP_ARCH_X32",
    "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM",
    "mips": "SCMP_ARCH_MIPS",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel": "SCMP_ARCH_MIPSEL",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mipsel64n32": "SCMP_ARCH_MIPSEL64N32",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
}

# uname -m → the Go name above.
MACHINE_TO_ARCH = {
    "x86_64": "amd64", "i386": "386", "i686": "386", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64",
}

ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})
OPERATORS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})
FLAGS = frozenset({"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                   "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"})
ARCHES = frozenset(_NATIVE.values()) | {"SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64"}


def _bad(where: str, message: str) -> ContainerRuntimeError:
    return ContainerRuntimeError(f"seccomp profile {where}: {message}")


def _kernel(text: Any, where: str) -> tuple[int, int]:
    try:
        major, _, minor = str(text).partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        raise _bad(where, f"minKernel {text!r} is not a version like 4.8") from None


def _applies(rule: Mapping, caps: Collection[str], arch: str, kernel: tuple[int, int], where: str) -> bool:
    """containers-common's filter: any exclude that matches drops the rule; every include must match."""
    excludes = rule.get("excludes") or {}
    includes = rule.get("includes") or {}
    if arch in (excludes.get("arches") or ()):
        return False
    if any(c in caps for c in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and kernel >= _kernel(excludes["minKernel"], where):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not all(c in caps for c in includes["caps"]):
        return False
    return not (includes.get("minKernel") and kernel < _kernel(includes["minKernel"], where))


def _syscall(rule: Mapping, where: str) -> dict | None:
    names = list(rule.get("names") or ())
    if rule.get("name"):
        names.append(rule["name"])
    if not names:
        return None
    if not all(isinstance(n, str) and n for n in names):
        raise _bad(where, "syscall names must be non-empty strings")
    action = rule.get("action")
    if action not in ACTIONS:
        raise _bad(where, f"unknown action {action!r} (expected one of {', '.join(sorted(ACTIONS))})")
    out: dict[str, Any] = {"names": names, "action": action}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = _uint(rule["errnoRet"], 2**32 - 1, f"{where}.errnoRet")
    args = []
    for j, arg in enumerate(rule.get("args") or ()):
        aw = f"{where}.args[{j}]"
        if not isinstance(arg, Mapping):
            raise _bad(aw, "must be an object")
        if arg.get("op") not in OPERATORS:
            raise _bad(aw, f"unknown operator {arg.get('op')!r}")
        item = {"index": _uint(arg.get("index", 0), 5, f"{aw}.index"),
                "value": _uint(arg.get("value", 0), 2**64 - 1, f"{aw}.value"),
                "op": arg["op"]}
        if arg.get("valueTwo"):
            item["valueTwo"] = _uint(arg["valueTwo"], 2**64 - 1, f"{aw}.valueTwo")
        args.append(item)
    if args:
        out["args"] = args
    return out


def _uint(value: Any, maximum: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _bad(where, f"{value!r} is not an integer between 0 and {maximum}")
    return value


def convert_profile(profile: Mapping, *, capabilities: Collection[str], arch: str,
                    kernel: tuple[int, int]) -> dict | None:
    """The OCI seccomp object for a container with these bounding capabilities, or None when the
    profile confines nothing (no default action and no rules, the containers-common convention)."""
    if not isinstance(profile, Mapping):
        raise _bad("", "must be a JSON object")
    default = profile.get("defaultAction") or ""
    rules = profile.get("syscalls") or []
    if not default and not rules:
        return None
    if default not in ACTIONS:
        raise _bad("defaultAction", f"unknown action {default!r}")
    if not isinstance(rules, list):
        raise _bad("syscalls", "must be a list")
    if profile.get("architectures") and profile.get("archMap"):
        raise _bad("", "give either architectures or archMap, not both")
    caps = frozenset(capabilities)
    out: dict[str, Any] = {"defaultAction": default}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = _uint(profile["defaultErrnoRet"], 2**32 - 1, "defaultErrnoRet")

    arches: list[str] = []
    if profile.get("architectures"):
        arches = list(profile["architectures"])
    else:
        native = _NATIVE.get(arch, "")
        for entry in profile.get("archMap") or ():
            if entry.get("architecture") == native:
                arches = [native, *(entry.get("subArchitectures") or ())]
                break
    for a in arches:
        if a not in ARCHES:
            raise _bad("architectures", f"unknown architecture {a!r}")
    if arches:
        out["architectures"] = arches
    flags = list(profile.get("flags") or ())
    for f in flags:
        if f not in FLAGS:
            raise _bad("flags", f"unknown flag {f!r}")
    if flags:
        out["flags"] = flags

    syscalls = []
    for i, rule in enumerate(rules):
        where = f"syscalls[{i}]"
        if not isinstance(rule, Mapping):
            raise _bad(where, "must be an object")
        if not _applies(rule, caps, arch, kernel, where):
            continue
        call = _syscall(rule, where)
        if call is not None:
            syscalls.append(call)
    if syscalls:
        out["syscalls"] = syscalls
    return out
