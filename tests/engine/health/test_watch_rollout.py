"""`podplay watch` rolls a Deployment out as its readiness allows and rolls a bad update back,
reporting it in its log and in `podplay status` (fake host, probe answers from its table)."""

from __future__ import annotations

from reconciler.desired import build_desired
from reconciler.manifests import load_manifests
from reconciler.state import StateStore
from tests.engine.health.test_rollout_engine import deployment
from tests.engine.watch.conftest import site  # noqa: F401 - the watch suite's fixture


def web(image: str) -> str:
    return deployment(image=image).replace("progressDeadlineSeconds: 60", "progressDeadlineSeconds: 2")


def images(s) -> set[str]:
    return {c["image"] for c in s.host().containers.values() if c["role"] == "app"}


def test_watch_rolls_out_a_good_update_and_rolls_back_a_bad_one(site):  # noqa: F811
    path = site.write("web.yaml", web("busybox:1.36"))
    keeper = site.watch()
    keeper.wait_event("rollout_complete", lambda e: e.get("revision") == 1)

    site.write("web.yaml", web("busybox:1.37"))
    keeper.wait_event("rollout_complete", lambda e: e.get("revision") == 2)
    assert images(site) == {"busybox:1.37"}

    outside = site.tmp / "next.yaml"
    outside.write_text(web("busybox:1.38"))
    bad = build_desired(load_manifests([str(outside)]).objects)
    with site.mutate() as host:
        for pod in bad.pods.values():
            host.set_probe(pod.containers[0].id, False, "readiness")  # revision 3 never gets ready
    before = len(keeper.events("rollout_complete"))
    site.write("web.yaml", web("busybox:1.38"))
    failed = keeper.wait_event("rollout_failed")
    assert failed["revision"] == 3 and failed["rolled_back_to"] == 2, failed
    assert "readiness probe failed" in failed["error"]
    keeper.wait_event("rollout_complete", lambda e: e.get("revision") == 2, after=before)
    assert images(site) == {"busybox:1.37"}

    st = site.status()
    [d] = st["deployments"]
    assert (d["revision"], d["outcome"], d["pinned"]) == (3, "failed", 2)
    state = StateStore(site.paths.state_db)
    try:
        assert any("rolling back to revision 2" in e[3] for e in state.keepers.events())
    finally:
        state.close()
    assert keeper.stop() == 0
    assert path.exists()
