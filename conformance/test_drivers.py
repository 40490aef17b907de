"""The driver contract (reconciler/drivers/base.py), checked the same way for every kit.

Each test names a promise the engine relies on: idempotent creation and removal, relisting
from the host rather than memory, clean errors, and the pieces fitting together for one pod.
"""

from __future__ import annotations

import pytest

from conformance.kits import pod_from_yaml
from reconciler.desired import DesiredClaim
from reconciler.errors import ContainerRuntimeError, ImageError, NetworkError, PodplayError
from reconciler.observed import LABEL_PROBE_GATED, ContainerState


def bring_up(kit, pod):
    """The engine's create sequence for a one-container pod, straight through the drivers."""
    d = kit.drivers
    image = d.images.ensure_image(pod.containers[0].spec.image, "IfNotPresent")
    for v in pod.volumes:
        if v.claim:
            d.volumes.ensure_claim(DesiredClaim(v.claim, pod.source, False))
    paths = d.volumes.prepare_pod_volumes(pod.uid, pod.volumes) if pod.volumes else {}
    d.runtime.create_infra(pod)
    info = d.runtime.infra_info(pod.uid)
    status = d.network.attach(pod, info.namespaces["network"]) if pod.network else None
    for c in pod.containers:
        rootfs = d.snapshots.prepare(c.id, image)
        d.runtime.create_container(pod, c, rootfs=rootfs, image=image, volumes=paths, network=status)
        d.runtime.start_container(c.id)
    return status


def tear_down(kit, pod):
    d = kit.drivers
    for c in pod.containers:
        d.runtime.stop_container(c.id, timeout=1)
        d.runtime.remove_container(c.id)
    d.network.detach(pod.uid)
    d.runtime.remove_infra(pod.uid)
    for c in pod.containers:
        d.snapshots.remove(c.id)
    d.volumes.remove_pod_volumes(pod.uid)


# --- images ---------------------------------------------------------------------------------------

def test_image_pull_policies(kit):
    images = kit.drivers.images
    ref = kit.image()
    first = images.ensure_image(ref, "IfNotPresent")
    assert images.ensure_image(ref, "IfNotPresent").id == first.id
    assert images.ensure_image(ref, "Never").id == first.id
    assert images.get_image(ref).id == first.id
    assert images.get_image(first.id).id == first.id
    assert first.id in {i.id for i in images.list_images()}
    assert first.layers, "an image has at least one layer"
    with images.open_blob(first.layers[0].digest) as f:
        f.read(1)


def test_missing_image_with_never_is_a_clean_image_error(kit):
    with pytest.raises(ImageError):
        kit.drivers.images.ensure_image(kit.image() + "-absent", "Never")


def test_image_removal_is_idempotent(kit):
    images = kit.drivers.images
    info = images.ensure_image(kit.image(), "IfNotPresent")
    images.remove_image(info.id)
    images.remove_image(info.id)
    assert images.get_image(kit.image()) is None


# --- snapshots ------------------------------------------------------------------------------------

def test_snapshot_prepare_is_idempotent_and_remove_is_too(kit):
    d = kit.drivers
    image = d.images.ensure_image(kit.image(), "IfNotPresent")
    key = "0123456789ab.main"
    path = d.snapshots.prepare(key, image)
    assert d.snapshots.prepare(key, image) == path
    assert key in {s.key for s in d.snapshots.list_snapshots()}
    assert key in {s.key for s in kit.reopen().snapshots.list_snapshots()}
    kit.drivers.snapshots.remove(key)
    kit.drivers.snapshots.remove(key)
    assert key not in {s.key for s in kit.drivers.snapshots.list_snapshots()}


# --- volumes --------------------------------------------------------------------------------------

def test_pod_volumes_and_claims(kit):
    pod = kit.pod("vols", volumes=[{"name": "scratch", "emptyDir": {}},
                                   {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}])
    v = kit.drivers.volumes
    with pytest.raises(PodplayError):
        v.prepare_pod_volumes(pod.uid, pod.volumes)  # the claim does not exist yet
    v.ensure_claim(DesiredClaim("default/data", "/x.yaml", True))
    v.ensure_claim(DesiredClaim("default/data", "/x.yaml", True))
    paths = v.prepare_pod_volumes(pod.uid, pod.volumes)
    assert set(paths) == {"scratch", "data"}
    assert pod.uid in kit.reopen().volumes.list_pod_volumes()
    v = kit.drivers.volumes
    v.remove_pod_volumes(pod.uid)
    v.remove_pod_volumes(pod.uid)
    assert pod.uid not in v.list_pod_volumes()
    assert "default/data" in v.list_claims(), "claims outlive the pods that use them"
    v.remove_claim("default/data")
    v.remove_claim("default/data")
    assert "default/data" not in v.list_claims()


# --- runtime and network --------------------------------------------------------------------------

def test_a_pod_runs_relists_and_goes_away(kit):
    pod = kit.pod("life")
    status = bring_up(kit, pod)
    assert status is not None and status.ip
    d = kit.reopen()
    mine = {c.id: c for c in d.runtime.list_containers() if c.pod_uid == pod.uid}
    assert mine[pod.uid].role == "infra" and mine[pod.uid].state == ContainerState.RUNNING
    main = mine[pod.containers[0].id]
    assert (main.role, main.name, main.pod, main.state) == ("app", "main", "default/life", ContainerState.RUNNING)
    assert main.spec_hash == pod.spec_hash
    assert [a.status.ip for a in d.network.list_attachments() if a.pod_uid == pod.uid] == [status.ip]
    d.network.check(pod.uid)
    tear_down(kit, pod)
    tear_down(kit, pod)  # everything again: idempotent
    assert not [c for c in kit.drivers.runtime.list_containers() if c.pod_uid == pod.uid]
    assert not [a for a in kit.drivers.network.list_attachments() if a.pod_uid == pod.uid]
    with pytest.raises(NetworkError):
        kit.drivers.network.check(pod.uid)


def test_containers_with_probes_are_labelled_so_ps_waits_for_a_verdict(kit):
    pod = pod_from_yaml(f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: gated}}
        spec:
          terminationGracePeriodSeconds: 2
          containers:
          - name: probed
            image: {kit.image()}
            imagePullPolicy: IfNotPresent
            command: [sleep, "600"]
            readinessProbe: {{tcpSocket: {{port: 8080}}}}
          - name: plain
            image: {kit.image()}
            imagePullPolicy: IfNotPresent
            command: [sleep, "600"]
        """, "gated")
    bring_up(kit, pod)
    labels = {c.name: c.labels for c in kit.reopen().runtime.list_containers() if c.pod_uid == pod.uid}
    assert labels["probed"].get(LABEL_PROBE_GATED) == "true"
    assert LABEL_PROBE_GATED not in labels["plain"] and LABEL_PROBE_GATED not in labels[""]
    tear_down(kit, pod)


def test_container_needs_its_pod_infra(kit):
    pod = kit.pod("orphan")
    d = kit.drivers
    image = d.images.ensure_image(pod.containers[0].spec.image, "IfNotPresent")
    rootfs = d.snapshots.prepare(pod.containers[0].id, image)
    try:
        with pytest.raises(ContainerRuntimeError):
            d.runtime.create_container(pod, pod.containers[0], rootfs=rootfs, image=image, volumes={},
                                       network=None)
    finally:
        d.snapshots.remove(pod.containers[0].id)


def test_exit_code_is_reported(kit):
    pod = kit.pod("exits", exit_code=3)
    bring_up(kit, pod)
    try:
        cid = pod.containers[0].id
        assert kit.drivers.runtime.wait_container(cid, timeout=30) == 3
        (c,) = [c for c in kit.reopen().runtime.list_containers() if c.id == cid]
        assert (c.state, c.exit_code) == (ContainerState.EXITED, 3)
    finally:
        tear_down(kit, pod)


def test_stop_is_idempotent_and_leaves_an_exited_container(kit):
    pod = kit.pod("stops")
    bring_up(kit, pod)
    try:
        cid = pod.containers[0].id
        kit.drivers.runtime.stop_container(cid, timeout=2)
        kit.drivers.runtime.stop_container(cid, timeout=2)
        (c,) = [c for c in kit.drivers.runtime.list_containers() if c.id == cid]
        assert c.state == ContainerState.EXITED
    finally:
        tear_down(kit, pod)


def test_a_taken_host_port_is_refused_before_anything_changes(kit):
    port = kit.free_port() if hasattr(kit, "free_port") else 18080
    first = kit.pod("porta", host_port=port)
    second = kit.pod("portb", host_port=port)
    bring_up(kit, first)
    try:
        conflicts = kit.drivers.network.port_conflicts(second)
        assert conflicts and str(port) in conflicts[0]
        kit.drivers.runtime.create_infra(second)
        info = kit.drivers.runtime.infra_info(second.uid)
        with pytest.raises(NetworkError):
            kit.drivers.network.attach(second, info.namespaces["network"])
        assert not [a for a in kit.drivers.network.list_attachments() if a.pod_uid == second.uid]
    finally:
        kit.drivers.runtime.remove_infra(second.uid)
        tear_down(kit, first)


# --- services -------------------------------------------------------------------------------------

def test_services_sync_is_whole_idempotent_and_an_empty_one_removes_everything(kit):
    """ServiceDriver: a sync installs exactly its entries (endpoints made in the tick resolved from
    their attachments), twice is once, observe reads back each entry's hash, an empty sync
    leaves nothing (the host kit's leak check then finds no rule named after the root)."""
    from dataclasses import replace

    from reconciler.services import Endpoint, ServiceEntry, ServicePortEntry, ServiceSync, entry_hash

    d = kit.drivers
    pod = kit.pod("svc-endpoint")
    bring_up(kit, pod)
    try:
        # 10.223.0.0/24: beside the test networks' Service ranges (10.223.<slot>.0/24, slot ≥ 1).
        entry = ServiceEntry("default/web", "", "ClusterIP", "10.223.0.10",
                             (ServicePortEntry("http", "tcp", 80, 0),), (Endpoint(pod.uid, pod.ref, "", (8080,)),), 1)
        sync = ServiceSync((entry,), ((pod.uid, "default"),))
        d.services.sync(sync)
        d.services.sync(sync)
        [ip] = [a.status.ip for a in d.network.list_attachments() if a.pod_uid == pod.uid]
        served, hosts = d.services.observe()
        resolved = replace(entry, endpoints=(replace(entry.endpoints[0], ip=ip),))
        assert served == {"default/web": entry_hash(resolved)}
        assert hosts
        assert "10.223.0.10" not in d.services.addresses_elsewhere()  # its own are not "elsewhere"
        d.services.sync(ServiceSync((), ((pod.uid, "default"),)))
        assert d.services.observe() == ({}, "")
        d.services.sync(ServiceSync())  # nothing to remove: not an error
    finally:
        d.services.sync(ServiceSync())
        tear_down(kit, pod)
