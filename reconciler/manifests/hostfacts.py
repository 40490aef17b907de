"""What the checks need to know about the host the manifests are for.

The checks take these facts as a value and stay pure; the loader's entry points read them from
this host when the caller does not pass them (a test, or a tool validating for another host).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class HostFacts:
    memory: int = 0  # bytes of RAM (MemTotal); 0: unknown, and nothing is checked against it


@cache
def this_host() -> HostFacts:
    """This host's facts, read once per process (RAM does not change under a running podplay)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return HostFacts(memory=int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return HostFacts()
