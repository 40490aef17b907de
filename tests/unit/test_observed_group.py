"""group_pods: the one grouping of what the drivers list into pod instances (observe_host and
`ps` both use it)."""

from __future__ import annotations

from reconciler.observed import (
    LABEL_GRACE,
    LABEL_OWNER,
    LABEL_SOURCE,
    ContainerState,
    NetworkStatus,
    ObservedAttachment,
    ObservedContainer,
    group_pods,
)

RUN = ContainerState.RUNNING


def ctr(uid: str, name: str, role: str = "app", pod: str = "default/web", **labels) -> ObservedContainer:
    return ObservedContainer(id=f"{uid}.{name}" if name else uid, pod_uid=uid, pod=pod, name=name, role=role,
                             state=RUN, spec_hash=f"h-{name or 'infra'}", labels=labels)


def test_containers_attachments_snapshots_and_volumes_of_one_uid_are_one_pod():
    pods = group_pods(
        [ctr("u1", "app", **{LABEL_SOURCE: "/m/app.yaml"}), ctr("u1", "setup", "init"),
         ctr("u1", "", "infra", **{LABEL_SOURCE: "/m/web.yaml", LABEL_OWNER: "Pod/default/web", LABEL_GRACE: "5"})],
        [ObservedAttachment("u1", NetworkStatus("podplay", ip="10.0.0.2"))],
        ["u1.app", "u1.setup"], ["u1"])
    (web,) = pods.values()
    assert (web.uid, web.key, web.spec_hash) == ("u1", "default/web", "h-infra")
    # The infra container's labels speak for the pod.
    assert (web.source, web.owner, web.grace_period) == ("/m/web.yaml", "Pod/default/web", 5)
    assert list(web.containers) == ["app"] and list(web.init_containers) == ["setup"]
    assert web.network.status.ip == "10.0.0.2" and web.snapshots == ("u1.app", "u1.setup") and web.has_volumes


def test_leftovers_of_a_crash_are_pods_without_a_name():
    pods = group_pods([], [ObservedAttachment("u2", NetworkStatus("podplay"))], ["u3.app"], ["u4"])
    assert sorted(pods) == ["u2", "u3", "u4"]
    assert all(p.key == "" and p.infra is None for p in pods.values())
    assert pods["u3"].snapshots == ("u3.app",) and pods["u4"].has_volumes


def test_without_an_infra_the_first_app_container_labels_the_pod_and_a_bad_grace_is_30():
    pods = group_pods([ctr("u5", "a", **{LABEL_SOURCE: "/m/a.yaml", LABEL_GRACE: "soon"}), ctr("u5", "b")])
    assert (pods["u5"].source, pods["u5"].grace_period, pods["u5"].spec_hash) == ("/m/a.yaml", 30, "h-a")


def test_a_root_filesystem_deleted_or_unmounted_under_a_container_is_lost():
    from reconciler.observed import ObservedSnapshot, lost_snapshots

    containers = [ctr("u1", "", "infra"), ctr("u1", "app"), ctr("u1", "side"), ctr("u1", "gone"),
                  ObservedContainer(id="u1.old", pod_uid="u1", pod="default/web", name="old", role="app",
                                    state=ContainerState.UNKNOWN)]
    snaps = [ObservedSnapshot("u1.app", "/r/u1.app/rootfs", True),  # whole
             ObservedSnapshot("u1.side", "/r/u1.side/rootfs", False),  # unmounted
             ObservedSnapshot("u1.vol_data", "/r/u1.vol_data/rootfs", True, present=False)]  # dir deleted
    # u1.gone has neither; u1.old is UNKNOWN (a reboot: other repairs cover it); infra has none.
    lost = lost_snapshots(containers, snaps)
    assert lost == ["u1.gone", "u1.side", "u1.vol_data"]
    (pod,) = group_pods(containers, [], [s.key for s in snaps], [], lost=lost).values()
    assert pod.lost_snapshots == ("u1.gone", "u1.side", "u1.vol_data")
    assert "u1.vol_data" in pod.snapshots, "a mount whose directory is gone is still torn down"
