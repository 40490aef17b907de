"""What a test may leave behind on the host, and the check that it left nothing.

Every host test runs with its own storage root and run root; anything that still mentions
those paths after the test (a mount, a process, a runc container) is a leak a user would hit
too. Network leaks (netns, veth, IP allocations, iptables rules) are keyed by the test's
network name and subnet, which the network fixtures add through ``extra``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def mounts_under(*roots: Path) -> list[str]:
    prefixes = tuple(str(r) for r in roots)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mountpoint = line.split()[4].replace("\\040", " ")
            if mountpoint.startswith(prefixes):
                out.append(mountpoint)
    return out


def processes_mentioning(*needles: str) -> list[str]:
    me = os.getpid()
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            out.append(f"{pid}: {cmd.strip()}")
    return out


def runc_containers(runc_root: Path) -> list[str]:
    if not runc_root.exists():
        return []
    res = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True)
    return [line for line in res.stdout.split() if line]


def iptables_rules_mentioning(*needles: str) -> list[str]:
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        try:
            res = subprocess.run([tool], capture_output=True, text=True, timeout=10)
        except FileNotFoundError:
            continue
        out += [line for line in res.stdout.splitlines() if any(n in line for n in needles)]
    return out


def find_leaks(root: Path, runroot: Path, extra_needles: tuple[str, ...] = ()) -> list[str]:
    leaks = [f"mount {m}" for m in mounts_under(root, runroot)]
    leaks += [f"process {p}" for p in processes_mentioning(str(root), str(runroot))]
    leaks += [f"runc container {c}" for c in runc_containers(runroot / "runc")]
    if extra_needles:
        leaks += [f"iptables {r}" for r in iptables_rules_mentioning(*extra_needles)]
    return leaks
