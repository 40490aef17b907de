"""`podplay watch DIR` as a user runs it: a real process reacting to file edits on the fake host."""

from __future__ import annotations

import signal
import time

from tests.engine.watch.conftest import eventually, pod

CONFIG_AND_POD = """apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello}
---
""" + pod("uses-cfg", extra="""    env:
    - name: GREETING
      valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}
""")


def test_new_file_edit_and_delete_converge_and_touch_only_their_pod(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")

    site.write("b.yaml", pod("b"))
    eventually(lambda: site.running() == {"default/a": {"app"}, "default/b": {"app"}}, "new file's pod b to run")
    before = site.pods()

    site.write("b.yaml", pod("b", command="sleep 2000"))
    eventually(lambda: site.pods().get("default/b") not in (None, before["default/b"]), "pod b to be replaced")
    eventually(lambda: site.running().get("default/b") == {"app"}, "new pod b to run")
    assert site.pods()["default/a"] == before["default/a"], "editing b.yaml must not touch pod a"
    assert w.wait_event("replaced", lambda e: e["pod"] == "default/b")["reason"] == "spec changed"

    site.remove("b.yaml")
    eventually(lambda: "default/b" not in site.pods(), "pod b to be pruned after its file was deleted")
    assert site.pods()["default/a"] == before["default/a"]
    w.wait_event("deleted", lambda e: e["pod"] == "default/b")

    site.write("new/deeper/c.yaml", pod("c"))  # a directory made after the watch began
    eventually(lambda: "default/c" in site.running(), "a pod from a new sub-directory")
    assert w.stop() == 0


def test_bad_edit_keeps_the_last_good_version_running_and_says_why(site):
    site.write("a.yaml", pod("a"))
    site.write("b.yaml", pod("b"))
    w = site.watch()
    eventually(lambda: len(site.running()) == 2, "both pods to run")
    before = site.pods()

    site.write("a.yaml", pod("a").replace("containers:", "containers: [") + "  bogus\n")
    bad = w.wait_event("file_invalid")
    assert bad["file"].endswith("/a.yaml") and bad["using"] == "last good"
    assert "a.yaml:" in bad["error"]
    # Another file's edit still applies while a.yaml is broken.
    site.write("b.yaml", pod("b", command="sleep 3000"))
    eventually(lambda: site.pods().get("default/b") != before["default/b"], "pod b to be replaced")
    assert site.pods()["default/a"] == before["default/a"], "the broken file's pod keeps running untouched"

    st = site.status()
    [keeper] = st["keepers"]
    assert keeper["running"] and keeper["kind"] == "watch"
    [problem] = keeper["files"]
    assert problem["path"].endswith("/a.yaml") and problem["state"] == "invalid" and problem["using"] == "last good"
    assert any("a.yaml:" in e for e in problem["errors"])
    text = site.podplay("status").stdout
    assert "a.yaml: invalid" in text and "last good version stays in use" in text

    # Fixed: the file is used again (its content changed, so its pod is replaced).
    site.write("a.yaml", pod("a", command="sleep 4000"))
    w.wait_event("file_ok")
    eventually(lambda: site.pods().get("default/a") != before["default/a"], "the fixed file to apply")
    eventually(lambda: not site.status()["keepers"][0]["files"], "status to clear the file's error")
    assert w.stop() == 0


def test_a_file_that_was_never_valid_holds_every_delete(site):
    site.write("a.yaml", pod("a"))
    site.write("b.yaml", pod("b"))
    w = site.watch()
    eventually(lambda: len(site.running()) == 2, "both pods to run")

    # A new, broken file might describe anything (pod a, for example): nothing may be pruned.
    site.write("c.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: c\n")
    w.wait_event("file_invalid", lambda e: e["file"].endswith("/c.yaml") and e["using"] == "nothing")
    site.remove("a.yaml")
    w.wait_then("file_deleted", lambda e: e["file"].endswith("/a.yaml"), "pass")
    assert "default/a" in site.running(), "a delete was applied while a file could not be read"
    assert site.status()["keepers"][0]["prune"] is False
    assert "deletes are held" in site.podplay("status").stdout

    site.write("c.yaml", pod("c"))
    eventually(lambda: set(site.running()) == {"default/b", "default/c"}, "the held delete to happen once all read")
    assert w.stop() == 0


def test_removing_a_config_map_a_running_pod_needs_is_held_with_the_reason(site):
    site.write("cfg.yaml", CONFIG_AND_POD.split("---\n")[0])
    site.write("pod.yaml", CONFIG_AND_POD.split("---\n")[1])
    w = site.watch()
    eventually(lambda: site.running() == {"default/uses-cfg": {"app"}}, "the pod to run")
    uid = site.pods()["default/uses-cfg"]

    site.write("cfg.yaml", "# the ConfigMap moved away\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n")
    held = w.wait_event("held")
    assert "cfg" in held["reason"] and "not found" in held["reason"]
    assert site.pods()["default/uses-cfg"] == uid
    assert "not found" in site.status()["keepers"][0]["held"]

    site.write("cfg.yaml", CONFIG_AND_POD.split("---\n")[0].replace("hello", "bonjour"))
    eventually(lambda: site.pods().get("default/uses-cfg") not in (None, uid), "the new ConfigMap value to apply")
    eventually(lambda: not site.status()["keepers"][0]["held"], "the hold to clear")
    assert w.stop() == 0


def test_many_files_written_at_once_are_one_pass(site):
    site.write("seed.yaml", pod("seed"))
    w = site.watch("--debounce", "1")
    w.wait_event("pass", lambda e: e["trigger"] == "start")
    n = len(w.events("pass"))
    for i in range(20):  # like `git checkout` of a branch with twenty more pods
        site.write(f"p{i:02}.yaml", pod(f"p{i:02}"))
    e = w.wait_event("pass", after=n)
    assert e["trigger"] == "files" and e["changes"] == 20
    eventually(lambda: len(site.running()) == 21, "all 21 pods to run")
    time.sleep(1.5)  # a second pass would come within the debounce window; there must be none
    assert len(w.events("pass")) == n + 1, w.events("pass")[n:]
    assert w.stop() == 0


def test_touching_a_file_without_changing_it_changes_nothing(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")
    uid = site.pods()["default/a"]
    w.wait_event("pass", lambda e: e["trigger"] == "start")
    n = len(w.events("pass"))
    (site.dir / "a.yaml").write_text((site.dir / "a.yaml").read_text())
    e = w.wait_event("pass", after=n)
    assert e["changes"] == 0 and site.pods()["default/a"] == uid
    assert w.stop() == 0


def test_sigterm_leaves_the_pods_running(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")
    assert w.stop(signal.SIGTERM) == 0
    assert site.running() == {"default/a": {"app"}}
    assert w.events("stop")[-1]["down"] is False
    [keeper] = site.status()["keepers"]
    assert keeper["running"] is False
    assert "not running" in site.podplay("status").stdout


def test_down_on_exit_removes_the_pods_it_kept(site):
    site.write("a.yaml", pod("a"))
    site.write("b.yaml", pod("b"))
    w = site.watch("--down-on-exit")
    eventually(lambda: len(site.running()) == 2, "both pods to run")
    assert w.stop(signal.SIGINT) == 0
    assert site.pods() == {}
    assert not site.host().snapshots and not site.host().attachments
    assert w.events("down")[-1]["removed"] == 2


def test_a_pod_removed_behind_its_back_is_recreated(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")
    down = site.podplay("down", str(site.dir / "a.yaml"))
    assert down.returncode == 0, down.stderr
    e = w.wait_event("drift", lambda e: e["pod"] == "default/a")
    assert e["action"] == "create"
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to be recreated by the relist")
    assert w.stop() == 0


def test_watcher_restart_keeps_the_last_good_version_it_saved(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    eventually(lambda: site.running() == {"default/a": {"app"}}, "pod a to run")
    uid = site.pods()["default/a"]
    assert w.stop() == 0

    site.write("a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: 7}\n")
    w2 = site.watch()
    w2.wait_event("file_invalid", lambda e: e["using"] == "last good")
    w2.wait_event("pass", lambda e: e["trigger"] == "start")
    assert site.pods() == {"default/a": uid}, "a new watcher must neither prune nor replace the pod"
    assert w2.stop() == 0


def test_a_second_watcher_of_the_same_files_is_refused(site):
    site.write("a.yaml", pod("a"))
    w = site.watch()
    w.wait_event("pass")
    second = site.podplay("watch", str(site.dir))
    assert second.returncode == 4
    assert "already kept by pid" in second.stderr
    assert w.stop() == 0


def test_bad_arguments_are_clear_errors(site):
    res = site.podplay("watch", str(site.tmp / "nope"))
    assert res.returncode == 1 and "nope: no such file or directory" in res.stderr
    res = site.podplay("watch", str(site.dir), "--relist", "0")
    assert res.returncode == 2 and "positive number of seconds" in res.stderr
