"""Detaching after the pod's namespace is gone: after a crash, a killed infra process, a reboot-like
loss of the netns. DEL must still release the address and every iptables rule."""

from __future__ import annotations

import json
import os

import pytest

from reconciler.errors import NetworkError
from reconciler.network import CniNetwork
from tests.support.network import free_port


def test_del_after_the_netns_vanished_releases_everything(test_network, host_paths):
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    pod = test_network.pod("web", [(80, free_port())])
    status = driver.attach(pod, ns)
    assert test_network.allocations() == [f"{test_network.name}/{status.ip}"]
    assert test_network.iptables_rules()  # masquerade, hostPort DNAT, forward accept

    test_network.delete_netns(ns)
    driver.detach(pod.uid)

    assert test_network.allocations() == []
    # Includes the bridge plugin's masquerade rules, which its own DEL leaves without a netns.
    assert test_network.iptables_rules() == []
    assert driver.list_attachments() == []


def test_del_after_a_crash_in_a_new_process(test_network, host_paths):
    """The infra process died with podplay: a fresh driver (as after a restart) still finds the
    attachment in its record and removes it."""
    proc, netns = test_network.netns_process()
    port = free_port()
    pod = test_network.pod("web", [(80, port)])
    status = CniNetwork(host_paths).attach(pod, netns)
    proc.kill()
    proc.wait()

    fresh = CniNetwork(host_paths)
    [seen] = fresh.list_attachments()
    assert (seen.pod_uid, seen.status.ip, seen.netns) == (pod.uid, status.ip, netns)
    fresh.detach(pod.uid)

    assert test_network.allocations() == []
    assert test_network.iptables_rules() == []
    assert fresh.list_attachments() == []


def test_del_never_touches_a_new_namespace_at_the_old_path(test_network, host_paths):
    """After a crash the recorded path may name another namespace (a recreated /run/netns
    name, a reused pid): DEL must not delete that namespace's eth0."""
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    pod = test_network.pod("web")
    driver.attach(pod, ns)
    test_network.delete_netns(ns)
    assert test_network.make_netns(ns.rsplit("/", 1)[1]) == ns
    made = test_network.exec_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"])
    assert made.returncode == 0, made.stderr

    driver.detach(pod.uid)

    assert test_network.exec_in(ns, ["ip", "link", "show", "eth0"]).returncode == 0, "DEL deleted another eth0"
    assert test_network.allocations() == []
    assert test_network.iptables_rules() == []


def test_crash_between_plugins_is_cleaned_up_by_detach(test_network, host_paths):
    """A record written before ADD finished (podplay died half-way) still drives a full DEL."""
    driver = CniNetwork(host_paths)
    ns = test_network.make_netns()
    pod = test_network.pod("web", [(80, free_port())])
    driver.attach(pod, ns)
    record = host_paths.cni / "results" / f"{pod.uid}.json"
    entry = json.loads(record.read_text())
    # As the record looks after the bridge plugin returned and before the rest of the chain ran
    # (the rest did run here, so its rules exist: DEL must remove them all the same).
    entry["state"] = "adding"
    record.write_text(json.dumps(entry))
    [seen] = driver.list_attachments()
    assert seen.status.ip == ""  # not a usable attachment

    driver.detach(pod.uid)

    assert test_network.allocations() == []
    assert test_network.iptables_rules() == []
    assert not record.exists()


def test_a_failed_del_keeps_the_record_and_a_retry_finishes(test_network, host_paths, tmp_path):
    """DEL runs every plugin even when one fails, and the record stays until a DEL succeeds."""
    plugin_dir = tmp_path / "cni"
    plugin_dir.mkdir()
    for plugin in os.listdir("/usr/lib/cni"):
        (plugin_dir / plugin).symlink_to(f"/usr/lib/cni/{plugin}")
    driver = CniNetwork(host_paths, plugin_dirs=(str(plugin_dir),))
    pod = test_network.pod("web", [(80, free_port())])
    driver.attach(pod, test_network.make_netns())
    (plugin_dir / "portmap").unlink()  # e.g. a package upgrade removed a plugin

    with pytest.raises(NetworkError, match=r"CNI plugin 'portmap' not found.*record is kept|record is kept.*"
                                           r"CNI plugin 'portmap' not found"):
        driver.detach(pod.uid)
    assert [a.pod_uid for a in driver.list_attachments()] == [pod.uid]
    assert test_network.allocations() == []  # the other plugins' DEL still ran

    (plugin_dir / "portmap").symlink_to("/usr/lib/cni/portmap")
    driver.detach(pod.uid)
    assert driver.list_attachments() == []
    assert test_network.iptables_rules() == []


def test_detach_uses_the_recorded_config_after_the_file_changed(test_network, host_paths):
    """The spec says the config must not change between ADD and DEL; users edit files anyway."""
    driver = CniNetwork(host_paths)
    pod = test_network.pod("web", [(80, free_port())])
    driver.attach(pod, test_network.make_netns())
    test_network.conflist.unlink()

    CniNetwork(host_paths).detach(pod.uid)

    assert test_network.allocations() == []
    assert test_network.iptables_rules() == []


def test_two_storage_roots_running_the_same_pod_do_not_share_rules(test_network, host_paths, tmp_path):
    """The same pod (same uid) under two podplay roots on one host: each attachment has its own
    CNI container id, so tearing one down leaves the other's address and rules intact."""
    from dataclasses import replace as dc_replace

    other_paths = dc_replace(host_paths, root=tmp_path / "other-root", runroot=tmp_path / "other-run")
    first, second = CniNetwork(host_paths), CniNetwork(other_paths)
    pod = test_network.pod("web", [(80, free_port())])
    one, two = test_network.make_netns(), test_network.make_netns()
    a = first.attach(pod, one)
    pod_b = dc_replace(pod, containers=tuple(dc_replace(c, spec=dc_replace(c.spec, ports=())) for c in pod.containers))
    b = second.attach(pod_b, two)
    assert a.ip != b.ip
    rules = test_network.iptables_rules()
    second.detach(pod.uid)
    assert test_network.allocations() == [f"{test_network.name}/{a.ip}"]
    assert rules and set(test_network.iptables_rules()) <= set(rules)
    first.check(pod.uid)
    assert test_network.iptables_rules(), "the first root's rules survive the second's teardown"
    first.detach(pod.uid)
    assert test_network.iptables_rules() == []
    test_network.delete_netns(one)
    test_network.delete_netns(two)
