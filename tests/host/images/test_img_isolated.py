"""A keeper's drivers (``open_drivers(isolate=True)``) pull and unpack in forked children: after
a pull from a real registry and a snapshot of the image, the keeper's process holds neither the
registry client nor TLS nor OpenSSL, and the image, the layer and the snapshot are all usable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.images import make_busybox_image

REPO = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import json, os, sys
from pathlib import Path
from reconciler.errors import PodplayError
from reconciler.host import open_drivers
from reconciler.paths import HostPaths

root, run, net, ref, missing = sys.argv[1:]
paths = HostPaths(Path(root), Path(run), Path(net))
drivers = open_drivers(paths, "host", isolate=True)
info = drivers.images.ensure_image(ref, "Always")
again = drivers.images.ensure_image(ref, "Always")  # the tag has not moved: a HEAD, no pull
rootfs = drivers.snapshots.prepare("isolated-1", info)
busybox = os.path.isfile(os.path.join(rootfs, "bin", "busybox"))
drivers.snapshots.remove("isolated-1")
try:
    drivers.images.ensure_image(missing, "IfNotPresent")
    failure = None
except PodplayError as exc:
    failure = [type(exc).__name__, str(exc)]
watched = ("requests", "urllib3", "ssl", "_ssl", "_hashlib", "tarfile", "jsonschema")
heavy = sorted(m for m in watched if m in sys.modules)
drivers.close()

# The same failure from an image store that works in this process.
plain = open_drivers(paths, "host")
try:
    plain.images.ensure_image(missing, "IfNotPresent")
    expected = None
except PodplayError as exc:
    expected = [type(exc).__name__, str(exc)]
plain.close()
print(json.dumps({"id": info.id, "again": again.id, "busybox": busybox, "heavy": heavy,
                  "failure": failure, "expected": expected}))
"""


def test_a_keepers_pull_and_unpack_leave_no_registry_client_or_openssl_behind(registry, repo, host_paths,
                                                                               no_registries_conf):
    pushed = make_busybox_image(registry, repo, layers=2)
    missing = f"{registry.host}/{repo}:no-such-tag"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(host_paths.root), str(host_paths.runroot),
                          str(host_paths.network_dir), pushed.ref, missing],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["heavy"] == ["tarfile"]  # the unpacker's module is imported, the unpacking done elsewhere
    assert out["busybox"] is True
    assert out["again"] == out["id"]
    assert out["failure"] is not None and out["failure"] == out["expected"]
    # what the children stored is the store's: listed and verified by this process
    from reconciler.images.driver import LocalImageStore

    store = LocalImageStore(host_paths)
    assert [i.id for i in store.list_images()] == [out["id"]]
