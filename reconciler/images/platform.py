"""Platforms (os/architecture/variant): parsing, the host's own, and choosing from an index.

Matching follows containerd's rules so that podplay picks the same image a cluster node
would: names are normalised (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``, ``arm`` → ``arm/v7``);
a host of amd64 level v3 also runs v2, v1 and 386 images, preferring the highest; arm64 also
runs arm v8…v5; arm/v7 runs v6 and v5. Among equally good entries the first in the index wins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from reconciler.errors import InputError


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def normalize(p: Platform) -> Platform:
    os_name = (p.os or "linux").lower()
    if os_name == "macos":
        os_name = "darwin"
    arch, variant = p.architecture.lower(), p.variant.lower()
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch = "amd64"
        if variant == "v1":
            variant = ""
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        if variant in ("8", "v8"):
            variant = ""
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return Platform(os_name, arch, variant)


_PLATFORM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` or ``arch`` (os defaults to linux), as ``--platform`` takes it."""
    parts = text.strip().split("/")
    if not 1 <= len(parts) <= 3 or not all(_PLATFORM_RE.match(x) for x in parts):
        raise InputError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64/v8")
    if len(parts) == 1:
        p = Platform("linux", parts[0])
    else:
        p = Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
    return normalize(p)


def _uname_machine() -> str:
    return os.uname().machine


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == name.lower():
                    return value.strip()
    except OSError:
        pass
    return ""


def _amd64_level(flags: set[str]) -> str:
    # The x86-64 micro-architecture levels, by the cpuinfo flags each one adds.
    levels = (
        ("v2", {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
        ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
        ("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    )
    level = "v1"
    for name, needed in levels:
        if not needed <= flags:
            break
        level = name
    return level


def _arm_variant() -> str:
    value = _cpuinfo_field("CPU architecture").lower()
    if not value:
        machine = _uname_machine().lower()
        value = "8" if machine == "aarch64" else machine[4:5] if machine.startswith("armv") else ""
    return {"8": "v8", "aarch64": "v8", "7": "v7", "6": "v6", "5": "v5"}.get(value[:1] if value else "", "")


def host_platform() -> Platform:
    """The platform of this host, with the amd64 micro-architecture level or arm variant."""
    machine = _uname_machine()
    p = normalize(Platform("linux", machine))
    if p.architecture == "amd64":
        flags = set(_cpuinfo_field("flags").split())
        p = normalize(Platform("linux", "amd64", _amd64_level(flags) if flags else ""))
    elif p.architecture in ("arm", "arm64"):
        variant = _arm_variant()
        if variant:
            p = normalize(Platform("linux", p.architecture, variant))
    return p


def compatible(want: Platform) -> list[Platform]:
    """Platforms that ``want`` can run, best first."""
    want = normalize(want)
    out = [want]
    arch, variant = want.architecture, want.variant
    if arch == "amd64":
        level = int(variant[1:]) if re.fullmatch(r"v\d+", variant) else 1
        out += [Platform(want.os, "amd64", f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)]
        out.append(Platform(want.os, "386"))
    elif arch == "arm":
        level = int(variant[1:]) if re.fullmatch(r"v\d+", variant) else 7
        out += [Platform(want.os, "arm", f"v{n}") for n in range(level - 1, 4, -1)]
    elif arch == "arm64":
        m = re.fullmatch(r"v(\d+)(?:\.(\d+))?", variant or "v8")
        if m:
            major, minor = int(m.group(1)), int(m.group(2) or 0)
            if major == 9:
                out += [Platform(want.os, "arm64", f"v9.{n}" if n else "v9") for n in range(minor - 1, -1, -1)]
                major, minor = 8, minor + 5
                out.append(Platform(want.os, "arm64", f"v8.{minor}"))
            if major == 8:
                out += [Platform(want.os, "arm64", f"v8.{n}" if n else "") for n in range(minor - 1, -1, -1)]
        out += compatible(Platform(want.os, "arm", "v8"))
    seen: list[Platform] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def rank(want: Platform, have: Platform) -> int | None:
    """How good ``have`` is for a host that wants ``want`` (0 best), or None if it cannot run."""
    have = normalize(have)
    for i, p in enumerate(compatible(want)):
        if p == have:
            return i
    return None
