"""ManifestFiles: which version of each file a watcher converges to, and what may be pruned."""

from __future__ import annotations

import os

import pytest

from reconciler.state import StateStore
from reconciler.watch.files import ManifestFiles
from tests.engine.watch.conftest import pod

BROKEN = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: app}]}\n"


@pytest.fixture
def state(tmp_path):
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def d(tmp_path):
    p = tmp_path / "m"
    p.mkdir()
    return p


def hashes(comp) -> dict[str, str]:
    return {ref: p.spec_hash for ref, p in comp.desired.pods.items()}


def test_an_invalid_file_is_replaced_by_its_last_good_version_until_fixed(d, state):
    (d / "a.yaml").write_text(pod("a"))
    (d / "b.yaml").write_text(pod("b"))
    files = ManifestFiles([str(d)], state)
    good = files.refresh()
    assert set(good.desired.pods) == {"default/a", "default/b"} and good.scope.prune

    (d / "a.yaml").write_text(BROKEN)
    comp = files.refresh()
    assert hashes(comp) == hashes(good), "the broken file's pod must stay exactly as it was"
    assert comp.scope.prune, "everything is known: the last good version stands in for the broken file"
    report = comp.files[str(d / "a.yaml")]
    assert (report.state, report.using) == ("invalid", "last good")
    assert any("a.yaml:4" in e and "image" in e for e in report.errors), report.errors

    (d / "a.yaml").write_text(pod("a", command="sleep 5"))
    fixed = files.refresh()
    assert fixed.files[str(d / "a.yaml")].state == "ok"
    assert hashes(fixed)["default/a"] != hashes(good)["default/a"]
    assert hashes(fixed)["default/b"] == hashes(good)["default/b"]


def test_a_file_never_seen_valid_holds_every_delete(d, state):
    (d / "a.yaml").write_text(pod("a"))
    files = ManifestFiles([str(d)], state)
    files.refresh()
    (d / "new.yaml").write_text("kind: Pod\nmetadata: {name: [\n")
    comp = files.refresh()
    assert not comp.scope.prune
    assert comp.files[str(d / "new.yaml")].using == "nothing"
    assert str(d / "new.yaml") in comp.manifests.unreadable
    assert set(comp.desired.pods) == {"default/a"}


def test_a_deleted_file_is_a_real_delete(d, state):
    (d / "a.yaml").write_text(pod("a"))
    (d / "b.yaml").write_text(pod("b"))
    files = ManifestFiles([str(d)], state)
    files.refresh()
    (d / "b.yaml").unlink()
    comp = files.refresh()
    assert set(comp.desired.pods) == {"default/a"} and comp.scope.prune
    assert comp.files[str(d / "b.yaml")].state == "deleted"
    assert str(d / "b.yaml") not in state.meta.last_good()


def test_an_emptied_file_keeps_its_last_good_version(d, state):
    """A file truncated by an editor mid-save must not look like "delete every pod in it"."""
    (d / "a.yaml").write_text(pod("a"))
    files = ManifestFiles([str(d)], state)
    files.refresh()
    (d / "a.yaml").write_text("# nothing here yet\n")
    comp = files.refresh()
    assert set(comp.desired.pods) == {"default/a"}
    assert "empty" in comp.files[str(d / "a.yaml")].errors[0]


def test_the_last_good_version_survives_a_restart_of_the_watcher(d, state):
    (d / "a.yaml").write_text(pod("a"))
    (d / "b.yaml").write_text(pod("b"))
    before = hashes(ManifestFiles([str(d)], state).refresh())
    assert set(state.meta.last_good()) == {str(d / "a.yaml"), str(d / "b.yaml")}

    (d / "a.yaml").write_text(BROKEN)  # broken while no watcher ran
    (d / "b.yaml").unlink()  # deleted while no watcher ran
    comp = ManifestFiles([str(d)], state).refresh()
    assert hashes(comp) == {"default/a": before["default/a"]}
    assert comp.files[str(d / "a.yaml")].using == "last good"
    assert set(state.meta.last_good()) == {str(d / "a.yaml")}, "the deleted file's saved version is stale now"
    assert "containers" in state.meta.last_good()[str(d / "a.yaml")][1], "the saved version is the good one"


def test_moving_a_pod_between_files_in_two_saves_never_breaks_it(d, state):
    (d / "a.yaml").write_text(pod("x") + "---\n" + pod("y"))
    (d / "b.yaml").write_text(pod("z"))
    files = ManifestFiles([str(d)], state)
    files.refresh()

    (d / "b.yaml").write_text(pod("z") + "---\n" + pod("x"))  # first save: x is in both files
    comp = files.refresh()
    assert set(comp.desired.pods) == {"default/x", "default/y", "default/z"}
    assert comp.desired.pods["default/x"].source == str(d / "a.yaml")
    b = comp.files[str(d / "b.yaml")]
    assert b.using == "last good" and any("defined twice" in e for e in b.errors)
    assert comp.files[str(d / "a.yaml")].state == "ok"

    (d / "a.yaml").write_text(pod("y"))  # second save: x left a.yaml
    comp = files.refresh()
    assert comp.desired.pods["default/x"].source == str(d / "b.yaml")
    assert not comp.problems and not comp.held


def test_a_reference_that_only_an_old_version_satisfies_is_held(d, state):
    (d / "cfg.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: v}\n")
    (d / "pod.yaml").write_text(pod("p", extra="    envFrom: [{configMapRef: {name: cfg}}]\n"))
    files = ManifestFiles([str(d)], state)
    good = files.refresh()
    (d / "cfg.yaml").unlink()
    comp = files.refresh()
    assert "ConfigMap 'cfg' not found" in comp.held
    assert hashes(comp) == hashes(good), "the pod keeps converging to what it was"
    (d / "pod.yaml").unlink()
    comp = files.refresh()
    assert not comp.held and not comp.desired.pods


def test_only_changed_files_are_read_and_parsed_again(d, state):
    for i in range(10):
        (d / f"p{i}.yaml").write_text(pod(f"p{i}"))
    files = ManifestFiles([str(d)], state)
    files.refresh()
    assert (files.reads, files.parses) == (10, 10)
    files.refresh()
    assert (files.reads, files.parses) == (10, 10), "nothing changed: nothing read"
    (d / "p3.yaml").write_text(pod("p3", command="sleep 1"))
    files.refresh()
    assert (files.reads, files.parses) == (11, 11)
    os.utime(d / "p4.yaml", (1, 1))  # touched, same content: read, not parsed
    files.refresh()
    assert (files.reads, files.parses) == (12, 11)
    files.refresh(full=True)
    assert (files.reads, files.parses) == (22, 11)


def test_a_named_file_that_vanishes_is_not_taken_for_a_delete(d, state):
    (d / "a.yaml").write_text(pod("a"))
    files = ManifestFiles([str(d / "a.yaml")], state)
    files.refresh()
    (d / "a.yaml").unlink()
    comp = files.refresh()
    assert set(comp.desired.pods) == {"default/a"}
    assert comp.files[str(d / "a.yaml")].using == "last good"


TWO_PODS_WITH_DISK_LIMITS = "---\n".join(f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{io.podman.annotations.autoremove: "TRUE"}}
spec:
  containers: [{{name: app, image: busybox:1.36, terminationMessagePath: /tmp/t}}]
  volumes: [{{name: scratch, emptyDir: {{sizeLimit: 1Gi}}}}]
""" for name in ("a", "b"))


@pytest.mark.parametrize("loader", ["in process", "in a child"])
def test_up_and_watch_warn_once_alike_about_what_podplay_does_not_act_on(d, loader):
    # One policy for both paths: `up` loads the directory in one go, a watcher file by file
    # (possibly in a child process) and combines them; each once-only warning is said once.
    from reconciler.manifests import load_manifests
    from reconciler.watch.parse import load_in_child, load_in_process

    (d / "pods.yaml").write_text(TWO_PODS_WITH_DISK_LIMITS)
    (d / "more.yaml").write_text(TWO_PODS_WITH_DISK_LIMITS.replace("name: a", "name: c").replace("name: b", "name: e"))
    up = load_manifests([str(d)])
    files = ManifestFiles([str(d)], loader=load_in_process if loader == "in process" else load_in_child)
    watch = files.refresh().manifests

    def said(result):
        return [(os.path.basename(w.file), w.line, w.path, w.message) for w in result.warnings]

    assert said(up) == said(watch)
    assert [(f, path) for f, _, path, _ in said(up)] == [
        ("more.yaml", "spec.containers[0].terminationMessagePath"),
        ("more.yaml", "metadata.annotations.io.podman.annotations.autoremove"),
        ("more.yaml", "spec.volumes[0].emptyDir.sizeLimit")]


def test_a_watcher_does_not_follow_a_link_out_of_the_directory(d, tmp_path):
    (tmp_path / "shadow").write_text("root:$y$j9T$not-a-real-hash:19000:0:99999:7:::\n")
    (d / "a.yaml").write_text(pod("a"))
    os.symlink(tmp_path / "shadow", d / "x.yaml")
    comp = ManifestFiles([str(d)]).refresh()
    report = comp.files[str(d / "x.yaml")]
    assert (report.state, report.using) == ("unread", "nothing")
    assert "a symbolic link to " + str(tmp_path / "shadow") + ", outside the manifest directory" in report.errors[0]
    assert "not-a-real-hash" not in repr(comp.files) + repr(comp.manifests.diagnostics)
    assert set(comp.desired.pods) == {"default/a"} and not comp.scope.prune


CLAIM = ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\n"
         "spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n")


class WallClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_pod_that_leaves_a_file_written_in_place_is_pruned_only_when_a_later_read_agrees(d, state):
    from reconciler.watch.files import HOLD_GRACE

    path = d / "app.yaml"
    whole = CLAIM + "---\n" + pod("a")
    path.write_text(whole)
    clock = WallClock()
    files = ManifestFiles([str(d)], state, clock=clock)
    assert set(files.refresh().desired.pods) == {"default/a"}

    with open(path, "r+") as f:  # a writer halfway through: the claim is there, the pod not yet
        f.truncate(0)
        f.write(CLAIM + "---\n")
    half = files.refresh()
    assert "default/a" not in half.desired.pods and half.scope.hold == {"default/a"}, "not pruned on one read"
    assert files.confirm_at() == clock.now + HOLD_GRACE

    clock.now += 1.0
    with open(path, "a") as f:  # the writer finishes
        f.write(pod("a"))
    done = files.refresh()
    assert set(done.desired.pods) == {"default/a"} and not done.scope.hold and files.confirm_at() is None

    with open(path, "r+") as f:  # really removed, in place: held, then a read after the grace agrees
        f.truncate(0)
        f.write(CLAIM)
    assert files.refresh().scope.hold == {"default/a"}
    clock.now += HOLD_GRACE
    assert not files.refresh().scope.hold, "a later read agrees: now it is pruned"


def test_a_pod_that_leaves_a_file_replaced_by_a_rename_is_pruned_at_once(d, state):
    path = d / "app.yaml"
    path.write_text(CLAIM + "---\n" + pod("a"))
    files = ManifestFiles([str(d)], state, clock=WallClock())
    files.refresh()
    tmp = d / ".app.yaml.swp"
    tmp.write_text(CLAIM)
    os.rename(tmp, path)  # an atomic save: the new content is complete
    comp = files.refresh()
    assert "default/a" not in comp.desired.pods and not comp.scope.hold and files.confirm_at() is None


def test_strict_watch_keeps_the_last_good_version_of_a_file_in_podmans_dialect(d, state):
    # watch --strict: a file edited into podman's spelling is invalid (its last good version
    # keeps running); without --strict it is converged to, with the warning.
    (d / "a.yaml").write_text(pod("a"))
    strict = ManifestFiles([str(d)], state, strict=True)
    good = strict.refresh()
    podman = pod("a").replace("name: app", "name: App")
    assert podman != pod("a")
    (d / "a.yaml").write_text(podman)
    comp = strict.refresh()
    report = comp.files[str(d / "a.yaml")]
    assert (report.state, report.using) == ("invalid", "last good")
    assert any("would be rejected by a Kubernetes API server: use 'App' → 'app'" in e for e in report.errors)
    assert hashes(comp) == hashes(good)
    lenient = ManifestFiles([str(d)], None).refresh()
    assert lenient.files[str(d / "a.yaml")].state == "ok"
    assert hashes(lenient) != hashes(good)


def _touch(path, when: float) -> None:
    os.utime(path, ns=(int(when * 1e9), int(when * 1e9)))


def test_a_file_changed_in_place_is_read_only_once_it_has_been_quiet_for_the_settle_time(d, state):
    path = d / "app.yaml"
    path.write_text(pod("a", image="busybox:1"))
    _touch(path, 900.0)
    clock = WallClock()
    files = ManifestFiles([str(d)], state, clock=clock, settle=0.5)
    first = hashes(files.refresh())

    with open(path, "r+") as f:  # a slow writer, halfway through a line: `image: busyb`
        f.truncate(0)
        f.write(pod("a", image="busybox:2")[:-20])
    _touch(path, clock.now)  # written just now
    comp = files.refresh()
    assert hashes(comp) == first, "a file still being written is not read: its previous version stands"
    assert files.confirm_at() == clock.now + 0.5, "the next look is due when it has been quiet long enough"

    clock.now += 0.3
    with open(path, "r+") as f:  # the writer finishes
        f.truncate(0)
        f.write(pod("a", image="busybox:2"))
    _touch(path, clock.now)
    assert hashes(files.refresh()) == first and files.confirm_at() == clock.now + 0.5
    clock.now += 0.5
    done = files.refresh()
    assert hashes(done) != first and done.desired.pods["default/a"].containers[0].spec.image == "busybox:2"
    assert files.confirm_at() is None


def test_a_file_whose_mtime_says_nothing_is_read_when_two_looks_apart_agree(d, state):
    path = d / "app.yaml"
    path.write_text(pod("a", image="busybox:1"))
    clock = WallClock()  # 1000.0: the file's real mtime lies far in this clock's future
    files = ManifestFiles([str(d)], state, clock=clock, settle=0.5)
    first = hashes(files.refresh())  # the first look (the watcher starting) takes files as they are
    path.write_text(pod("a", image="busybox:2"))
    assert hashes(files.refresh()) == first
    clock.now += 0.5
    assert hashes(files.refresh()) != first, "the same size and mtime half a second apart: complete"


def test_a_new_file_still_being_written_holds_every_delete_until_it_is_read(d, state):
    (d / "a.yaml").write_text(pod("a"))
    clock = WallClock()
    files = ManifestFiles([str(d)], state, clock=clock, settle=0.5)
    files.refresh()
    new = d / "b.yaml"
    new.write_text(CLAIM)
    _touch(new, clock.now)
    comp = files.refresh()
    report = comp.files[str(new)]
    assert report.state == "unread" and "still being written" in report.errors[0]
    assert not comp.scope.prune, "what a half-written file describes is unknown: nothing is pruned meanwhile"
    clock.now += 0.5
    comp = files.refresh()
    assert comp.files[str(new)].state == "ok" and comp.scope.prune


def test_a_file_replaced_by_a_rename_is_read_at_once(d, state):
    path = d / "app.yaml"
    path.write_text(pod("a", image="busybox:1"))
    clock = WallClock()
    files = ManifestFiles([str(d)], state, clock=clock, settle=0.5)
    first = hashes(files.refresh())
    tmp = d / ".app.yaml.tmp"
    tmp.write_text(pod("a", image="busybox:2"))
    _touch(tmp, clock.now)
    os.rename(tmp, path)
    assert hashes(files.refresh()) != first and files.confirm_at() is None


def test_a_look_that_is_due_is_due_before_the_keepers_now_so_the_keeper_does_not_spin(d):
    import time

    from reconciler.watch.dirs import DirSource

    path = d / "app.yaml"
    path.write_text(pod("a", image="busybox:1"))
    source = DirSource([str(d)], None, debounce=0.5)
    clock = WallClock()
    source.files.clock = clock
    source.refresh(True)
    path.write_text(pod("a", image="busybox:2"))
    _touch(path, clock.now)
    source.refresh(False)
    assert source.due() > time.monotonic(), "not quiet yet: the look comes later"
    clock.now += 0.5
    now = time.monotonic()  # what a keeper reads before it asks
    assert source.due() <= now, "due: a keeper acting on `due() <= now` must act now"
    assert source.refresh(False).desired.pods["default/a"].containers[0].spec.image == "busybox:2"
