"""The per-test host: a fresh storage root, run root and network dir, leak-checked afterwards."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from reconciler.paths import HostPaths
from tests.support.leaks import find_leaks, mounts_under


@pytest.fixture
def host_paths(request) -> HostPaths:
    """A fresh storage root, run root and network dir for one test, leak-checked afterwards.

    The run root is kept short (/tmp/pp-XXXX): conmon's attach sockets live under it and a
    unix socket path must fit in 108 bytes.
    """
    base = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    paths = HostPaths(base / "root", base / "run", base / "net.d")
    for p in (paths.root, paths.runroot, paths.network_dir):
        p.mkdir(parents=True)
    yield paths
    # The root's tag names every iptables chain podplay makes for it (Services' <tag>-…, CNI ids).
    leaks = find_leaks(paths.root, paths.runroot, (*getattr(request.node, "leak_needles", ()), paths.tag))
    # Clean up whatever leaked so that one failure does not cascade, then fail the test.
    for m in sorted(mounts_under(paths.root, paths.runroot), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    assert not leaks, "the test left host state behind:\n  " + "\n  ".join(leaks)


def remove_everything(drivers) -> None:
    """Tear down whatever pods a failed test left, through the drivers (as a user's `podplay rm`
    would), so that the leak checks judge podplay's teardown rather than the test's luck."""
    for c in drivers.runtime.list_containers():
        if c.role != "infra":
            drivers.runtime.remove_container(c.id)
    for a in drivers.network.list_attachments():
        drivers.network.detach(a.pod_uid)
    for c in drivers.runtime.list_containers():
        drivers.runtime.remove_infra(c.pod_uid)
    for snap in drivers.snapshots.list_snapshots():
        drivers.snapshots.remove(snap.key)
    for uid in drivers.volumes.list_pod_volumes():
        drivers.volumes.remove_pod_volumes(uid)
    drivers.close()
