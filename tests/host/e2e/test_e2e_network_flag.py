"""--network (or $PODPLAY_NETWORK) puts pods that name no network on another CNI network."""

from __future__ import annotations

import ipaddress
import json


def test_pods_without_an_annotation_join_the_network_the_flag_names(stack):
    m = stack.write("p.yaml", """
apiVersion: v1
kind: Pod
metadata: {name: elsewhere}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
""")
    net = stack.network.name  # the test's own conflist, under its own name
    stack.run("--network", net, "up", "--wait", str(m))
    (pod,) = json.loads(stack.run("pods", "-o", "json").stdout)
    assert ipaddress.ip_address(pod["ip"]) in stack.network.subnet
    (attachment,) = stack.drivers().network.list_attachments()
    assert attachment.status.network == net
    # The same flag in the environment means the same spec: nothing to do; without it, a change.
    assert "No changes" in stack.run("up", str(m), env={"PODPLAY_NETWORK": net}).stdout
    assert "+ created pod default/elsewhere" not in stack.run("plan", str(m)).stdout
    assert "~ replace pod default/elsewhere" in stack.run("plan", str(m)).stdout
    stack.run("--network", net, "stop", "elsewhere")
    stack.run("--network", net, "start", "elsewhere")
    stack.run("down", str(m))
