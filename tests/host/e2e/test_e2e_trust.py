"""`up` under a signature policy: a pod whose image is refused fails alone, before anything of it
is made; a pod whose image skopeo signed with the release key runs."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from tests.host.e2e.conftest import host_leftovers, pod_containers
from tests.support.registry import unique_repo
from tests.support.signing import GpgKey, TrustDir, sign_and_push

pytestmark = pytest.mark.skipif(shutil.which("gpgv") is None, reason="needs gpgv")


def test_up_refuses_an_unsigned_image_and_creates_nothing_of_its_pod(stack, registry, tmp_path, request):
    key = GpgKey.make(tmp_path / "gpg")
    try:
        trust = TrustDir.make(tmp_path / "trust")
        name = unique_repo(request, "fleet")
        sign_and_push(registry, f"{name}-signed", "v1", key, trust.registries_d)
        sign_and_push(registry, f"{name}-unsigned", "v1", None, trust.registries_d)
    finally:
        key.close()
    trust.policy({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{registry.host}/fleet": [trust.signed_by(key)]}}})
    pod = """
        apiVersion: v1
        kind: Pod
        metadata: {{name: {pod}}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: app
            image: {image}
            command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
        """
    docs = [textwrap.dedent(pod.format(pod=p, image=f"{registry.host}/{name}-{kind}:v1"))
            for p, kind in (("good", "signed"), ("bad", "unsigned"))]
    m = stack.write("pods.yaml", "---\n".join(docs))
    res = stack.run("up", "--wait", str(m), check=False, env=trust.env())
    assert res.returncode == 3, res.stdout + res.stderr
    assert "default/bad" in res.stderr and "refused by the signature policy" in res.stderr, res.stderr
    assert f"scope docker '{registry.host}/fleet': signedBy requires a signature and none was found" in res.stderr
    assert "Traceback" not in res.stderr
    assert not pod_containers(stack, "bad"), "nothing of the refused pod may exist"
    assert pod_containers(stack, "good"), "the signed image's pod runs"
    stack.run("down", str(m), env=trust.env())
    assert host_leftovers(stack) == []
