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


def test_watch_refuses_an_unsigned_image_and_runs_the_signed_one(stack, registry, tmp_path, request):
    from tests.host.e2e.conftest import wait_for
    from tests.host.e2e.test_e2e_watch import Watcher, write

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
    stack.env.update(trust.env())
    directory = tmp_path / "watched"
    pod = textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {pod}}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: app
            image: {image}
            command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
        """)
    write(directory / "bad.yaml", pod.format(pod="bad", image=f"{registry.host}/{name}-unsigned:v1"))
    write(directory / "good.yaml", pod.format(pod="good", image=f"{registry.host}/{name}-signed:v1"))
    watcher = Watcher(stack, directory, tmp_path / "watch.log")
    try:
        wait_for(lambda: watcher.alive() and pod_containers(stack, "good"), "the signed image's pod")
        wait_for(lambda: watcher.alive() and "refused by the signature policy" in watcher.text(),
                 "the refusal in the watcher's log")
        assert "signedBy requires a signature and none was found" in watcher.text()
        assert not pod_containers(stack, "bad"), "nothing of the refused pod may exist"
        assert watcher.stop() == 0
    finally:
        watcher.stop()
    stack.run("down", str(directory))
    assert host_leftovers(stack) == []
