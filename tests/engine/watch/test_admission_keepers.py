"""Pod security in the keepers: `watch` keeps the last good version of a file that a level
refuses (and says why); `sync` refuses a commit that asks for more than the host allows."""

from __future__ import annotations

from tests.engine.watch.conftest import eventually, pod
from tests.engine.watch.test_sync import repo, sync_once  # noqa: F401 - a fixture

HOSTNET = "  hostNetwork: true\n"


def with_host_network(name: str, **kw) -> str:
    return pod(name, **kw).replace("spec:\n", "spec:\n" + HOSTNET)


def test_watch_keeps_the_last_good_version_of_a_refused_file(site):
    site.write("a.yaml", pod("a"))
    site.write("b.yaml", with_host_network("b"))
    w = site.watch()
    bad = w.wait_event("file_invalid", lambda e: e["file"].endswith("/b.yaml"))
    assert bad["using"] == "nothing" and "refused by pod-security level 'baseline'" in bad["error"]
    assert "spec.hostNetwork" in bad["error"]
    eventually(lambda: set(site.running()) == {"default/a"}, "the admitted pod to run")

    # An edit of a running pod that asks for the host's PID namespace: the old version stays.
    site.write("a.yaml", pod("a").replace("spec:\n", "spec:\n  hostPID: true\n"))
    bad = w.wait_event("file_invalid", lambda e: e["file"].endswith("/a.yaml"))
    assert bad["using"] == "last good" and "hostPID" in bad["error"]
    assert set(site.running()) == {"default/a"}
    assert w.stop() == 0


def test_watch_under_privileged_runs_it(site):
    site.write("b.yaml", with_host_network("b"))
    w = site.keeper("--pod-security", "privileged", "watch", str(site.dir), "--relist", "0.2")
    eventually(lambda: set(site.running()) == {"default/b"}, "the pod to run")
    assert w.stop() == 0


def test_sync_refuses_a_commit_beyond_the_hosts_level(site, repo):  # noqa: F811
    c1 = repo.commit({"apps/a.yaml": pod("a")})
    assert sync_once(site, repo).returncode == 0
    bad = repo.commit({"apps/a.yaml": with_host_network("a")})
    res = sync_once(site, repo)
    assert res.returncode == 1, res.stderr
    [k] = site.status()["keepers"]
    assert k["source"]["applied"] == c1 and bad.startswith(k["source"]["refused"][0]["commit"][:12])
    assert "a.yaml:" in k["source"]["problem"] and "pod-security" in k["source"]["problem"]
    # A Namespace label in the repository may tighten the host's level, never loosen it.
    repo.commit({"apps/a.yaml": pod("a", namespace="strict"),
                 "apps/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: strict\n  labels:\n"
                                 "    pod-security.kubernetes.io/enforce: restricted\n"})
    res = sync_once(site, repo)
    assert res.returncode == 1 and "refused by pod-security level 'restricted'" in res.stderr + str(site.status())
