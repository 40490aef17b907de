"""Image garbage collection against running pods: what a container uses is never pruned."""

from __future__ import annotations

import json
import os


def layer_dirs(stack) -> list[str]:
    """Unpacked layers (named by chain ID hex), not the store's own bookkeeping directories."""
    d = stack.paths.layers
    return sorted(n for n in os.listdir(d) if n.startswith("sha256-") and (d / n).is_dir()) if d.exists() else []


def test_prune_keeps_what_a_pod_uses_and_frees_the_rest_after_down(stack):
    m = stack.write("p.yaml", """
apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
""")
    stack.run("up", "--wait", str(m))
    assert layer_dirs(stack), "the pod's image was unpacked"
    images = json.loads(stack.run("images", "-o", "json").stdout)
    (image_id,) = [i["Id"] for i in images]
    # A leftover snapshot, as a crash between PrepareSnapshot and CreateContainer would leave.
    d = stack.drivers()
    d.snapshots.prepare("0123456789ab.stray", d.images.get_image(image_id))
    d.close()
    *others, last = images[0]["Names"]
    for name in others:
        stack.run("rmi", name)  # only untags: the image keeps another name
    refused = stack.run("rmi", last, check=False)
    assert refused.returncode == 1 and "used by default/keeper" in refused.stderr
    stack.run("rmi", "--force", last)  # the record goes; the running container keeps its file system
    assert json.loads(stack.run("images", "-o", "json").stdout) == []
    out = stack.run("image", "prune").stdout
    assert "removed 0 unpacked layers and 1 snapshot without a container" in out, \
        "the running container's snapshot still uses the layer; the stray one goes"
    assert layer_dirs(stack)
    assert "running" in stack.run("ps").stdout

    stack.run("down", str(m))
    out = stack.run("image", "prune").stdout
    assert "removed 1 unpacked layer" in out
    assert layer_dirs(stack) == []
