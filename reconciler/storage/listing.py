"""The snapshots on the host as observe sees them, without the snapshotter's imports.

A relist (and the no-change check of most `up`s) needs only directory names and mountinfo;
the snapshotter itself pulls in the layer store and the unpacker. For key K a snapshot is
``HostPaths.snapshots/K`` with its ``snapshot.json``, and its root filesystem is mounted at
``HostPaths.mounts/K/rootfs``. A root filesystem still mounted there whose snapshot directory
was deleted is listed too (``present`` False): observe reports it, a teardown unmounts it.
"""

from __future__ import annotations

import os
import re

from reconciler.observed import ObservedSnapshot
from reconciler.paths import HostPaths
from reconciler.storage import mounts

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
META = "snapshot.json"


def stored_keys(paths: HostPaths) -> list[str]:
    """Keys of the snapshots whose directory (with its metadata) exists."""
    try:
        names = os.listdir(paths.snapshots)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if KEY.match(n) and (paths.snapshots / n / META).is_file())


def list_snapshots(paths: HostPaths) -> list[ObservedSnapshot]:
    mounted = {m for m, _, _ in mounts.mount_points()}
    stored = set(stored_keys(paths))
    base = os.path.realpath(paths.mounts) + "/"
    orphans = set()
    for m in mounted:
        if m.startswith(base) and m.endswith("/rootfs"):
            key = m[len(base):-len("/rootfs")]
            if "/" not in key and KEY.match(key):
                orphans.add(key)
    out = []
    for key in sorted(stored | orphans):
        rootfs = paths.mounts / key / "rootfs"
        out.append(ObservedSnapshot(key, str(rootfs), os.path.realpath(rootfs) in mounted, present=key in stored))
    return out
