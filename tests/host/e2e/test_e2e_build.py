"""A built image on the real stack: it runs as a pod, and it pushes to a registry where skopeo
reads it."""

from __future__ import annotations

import json
import subprocess

from tests.host.e2e.conftest import container_logs, wait_exited
from tests.support.images import _tool_env


def test_built_image_runs_as_a_pod_and_pushes(stack, registry):
    ctx = stack.tmp / "app"
    ctx.mkdir()
    (ctx / "msg").write_text("from the context\n")
    (ctx / "Containerfile").write_text(
        "FROM localhost/busybox:latest\n"
        "RUN mkdir /srv && echo built by RUN > /srv/run.txt\n"
        "COPY msg /srv/msg\n"
        "WORKDIR /srv\n"
        'CMD ["sh", "-c", "cat run.txt msg"]\n')
    image_id = stack.run("build", "-q", "-t", "app:v1", str(ctx)).stdout.strip()
    m = stack.write("pod.yaml", """
apiVersion: v1
kind: Pod
metadata: {name: built}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: localhost/app:v1
    imagePullPolicy: Never
""")
    stack.run("up", str(m))
    wait_exited(stack, "built", "app")
    assert container_logs(stack, "built", "app").splitlines()[-2:] == ["built by RUN", "from the context"]
    stack.run("down", str(m))
    dest = f"{registry.host}/built/app:v1"
    stack.run("push", "--tls-verify=false", "localhost/app:v1", f"docker://{dest}")
    res = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{dest}"], capture_output=True,
                         text=True, env=_tool_env(), check=True)
    theirs = json.loads(res.stdout)
    assert len(theirs["Layers"]) == 3
    config = subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{dest}"],
                            capture_output=True, text=True, env=_tool_env(), check=True)
    assert json.loads(config.stdout)["config"]["Cmd"] == ["sh", "-c", "cat run.txt msg"]
    assert image_id  # the id printed on stdout alone
