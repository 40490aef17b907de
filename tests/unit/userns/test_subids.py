"""podplay's /etc/subuid and /etc/subgid entry, and the store's table of ranges pods hold."""

from __future__ import annotations

import json
import os
import stat

import pytest

from reconciler import subids
from reconciler.errors import EnvironmentProblem
from reconciler.idmap import RANGE_SIZE, IdMap
from reconciler.store.db import connect
from reconciler.store.idranges import IdRanges, PodIdAllocator, sweep_vanished


def test_parse_keeps_only_well_formed_lines():
    text = "alice:100000:65536\n# comment\nbroken\nbob:x:1\nzero:5:0\n1000:300000:65536\n"
    assert subids.parse(text) == [subids.SubIdRange("alice", 100000, 65536),
                                  subids.SubIdRange("1000", 300000, 65536)]


@pytest.mark.parametrize("existing, start", [
    ([], subids.DEFAULT_START),
    ([subids.SubIdRange("alice", 100000, 65536)], subids.DEFAULT_START),
    ([subids.SubIdRange("big", subids.DEFAULT_START - 10, 100)], subids.DEFAULT_START + RANGE_SIZE),
    ([subids.SubIdRange("huge", 0, 3 << 30)], 3 << 30),
])
def test_a_new_range_lies_above_every_existing_one_aligned(existing, start):
    r = subids.new_range(existing)
    assert r.start == start and r.start % RANGE_SIZE == 0
    assert r.count == subids.DEFAULT_SLOTS * RANGE_SIZE
    assert all(r.start >= e.end for e in existing)


def test_no_room_is_a_clear_error():
    with pytest.raises(EnvironmentProblem, match="podplay:START:COUNT"):
        subids.new_range([subids.SubIdRange("all", 0, (1 << 32) - 100)])


def test_the_entry_is_appended_once_keeping_the_file_and_its_mode(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536")  # no final newline
    os.chmod(f, 0o640)
    lock = str(tmp_path / "lock")
    first = subids.ensure_entry(str(f), lock)
    assert f.read_text() == f"alice:100000:65536\npodplay:{first.start}:{first.count}\n"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o640
    assert subids.ensure_entry(str(f), lock) == first  # found, not appended again
    assert f.read_text().count("podplay:") == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_missing_file_is_created_root_readable(tmp_path):
    f = tmp_path / "subgid"
    entry = subids.ensure_entry(str(f), str(tmp_path / "lock"))
    assert f.read_text() == f"podplay:{entry.start}:{entry.count}\n"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o644


def test_an_entry_too_small_for_one_pod_is_refused(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("podplay:200000:1000\n")
    with pytest.raises(EnvironmentProblem, match="multiple of 65536"):
        subids.ensure_entry(str(f), str(tmp_path / "lock"))


@pytest.fixture
def ranges(tmp_path):
    db = connect(tmp_path / "state.db")
    yield IdRanges(db)
    db.close()


def test_ranges_are_idempotent_per_pod_disjoint_and_reused_once_freed(ranges):
    uids, gids = (1 << 30, 3 * RANGE_SIZE), (2 << 30, 3 * RANGE_SIZE)
    a = ranges.allocate("a", uids, gids)
    assert a == IdMap(1 << 30, 2 << 30)
    assert ranges.allocate("a", uids, gids) == a
    b = ranges.allocate("b", uids, gids)
    c = ranges.allocate("c", uids, gids)
    assert len({a.uid, b.uid, c.uid}) == 3 and len({a.gid, b.gid, c.gid}) == 3
    with pytest.raises(EnvironmentProblem, match="every one of the 3 ID ranges"):
        ranges.allocate("d", uids, gids)
    ranges.release("b")
    assert ranges.allocate("d", uids, gids) == b
    assert set(ranges.held()) == {"a", "c", "d"}


def test_a_changed_entry_never_overlaps_a_held_range(ranges):
    held = ranges.allocate("a", (1 << 30, RANGE_SIZE * 4), (1 << 30, RANGE_SIZE * 4))
    # The administrator moved the entry by half a range: its first slot now overlaps a's.
    moved = (held.uid + RANGE_SIZE // 2, RANGE_SIZE * 4)
    b = ranges.allocate("b", moved, moved)
    assert b.uid >= held.uid + held.size


def test_the_allocator_makes_the_entries_and_survives_a_new_process(tmp_path):
    (tmp_path / "subuid").write_text("alice:100000:65536\n")
    alloc = PodIdAllocator(tmp_path / "state.db", str(tmp_path / "subuid"), str(tmp_path / "subgid"), tmp_path / "ids")
    first = alloc.allocate("pod1")
    alloc.close()
    again = PodIdAllocator(tmp_path / "state.db", str(tmp_path / "subuid"), str(tmp_path / "subgid"), tmp_path / "ids")
    assert again.lookup("pod1") == first  # recorded in the store, not in memory
    assert again.allocate("pod2") != first
    again.release("pod1")
    assert again.lookup("pod1") is None
    again.close()


# --- the host-wide registry: two storage roots share the subuid entry ---------------------------------

def two_roots(tmp_path, registry: str = "ids") -> tuple[PodIdAllocator, PodIdAllocator]:
    (tmp_path / "subuid").write_text("podplay:1073741824:262144\n")  # room for 4 pods
    (tmp_path / "subgid").write_text("podplay:1073741824:262144\n")
    out = []
    for name in ("root1", "root2"):
        (tmp_path / name).mkdir()
        out.append(PodIdAllocator(tmp_path / name / "state.db", str(tmp_path / "subuid"), str(tmp_path / "subgid"),
                                  tmp_path / (registry if registry else name)))
    return out[0], out[1]


def overlap(a: IdMap, b: IdMap) -> bool:
    return (a.uid < b.uid + b.size and b.uid < a.uid + a.size) or (a.gid < b.gid + b.size and b.gid < a.gid + a.size)


def test_two_roots_never_hand_out_overlapping_ranges(tmp_path):
    one, two = two_roots(tmp_path)
    a = one.allocate("same-uid")
    b = two.allocate("same-uid")  # the very same pod uid in another root is another pod
    c = two.allocate("other")
    d = one.allocate("third")
    assert not any(overlap(x, y) for i, x in enumerate((a, b, c, d)) for y in (a, b, c, d)[i + 1:])
    with pytest.raises(EnvironmentProblem, match="every one of the"):
        two.allocate("fifth")  # the host's 4 ranges are held, whichever root holds them
    # Each claim is an owner-only file naming its root, pod and range.
    claims = sorted((tmp_path / "ids").glob("*.json"))
    assert len(claims) == 4 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in claims)
    two.release("other")
    assert len(list((tmp_path / "ids").glob("*.json"))) == 3
    assert one.allocate("fifth") == c  # freed by root2, taken by root1
    one.close(), two.close()


def test_without_a_shared_registry_they_would_collide(tmp_path):
    """What the registry prevents: each root alone picks the entry's first range."""
    one, two = two_roots(tmp_path, registry="")
    assert one.allocate("a") == two.allocate("b")
    one.close(), two.close()


def test_a_claim_left_by_a_kill_and_a_wiped_roots_claims_are_dropped(tmp_path):
    one, two = two_roots(tmp_path)
    first = one.allocate("a")
    # Killed after the claim, before the row: the claim stands alone.
    one.claims.write(one.root, "ghost", IdMap(first.uid + 65536, first.gid + 65536))
    # root2's whole state wiped (rm -rf of its root) with a range claimed.
    held = two.allocate("b")
    two.close()
    (tmp_path / "root2" / "state.db").unlink()
    again = one.allocate("c")
    assert again.uid == first.uid + 65536  # the kill's leftover did not hold the range
    assert one.allocate("d") == held  # nor did the wiped root's claim
    names = {json.loads(f.read_text())["pod"] for f in (tmp_path / "ids").glob("*.json")}
    assert names == {"a", "c", "d"}
    one.close()


def test_a_sweep_frees_the_ranges_of_pods_that_left_no_trace(tmp_path):
    one, two = two_roots(tmp_path)
    kept, gone = one.allocate("kept"), one.allocate("gone")
    theirs = two.allocate("gone")  # another root's pod of the same uid is not ours to free
    assert one.sweep({"kept", "unrelated"}) == ["gone"]
    assert one.lookup("gone") is None and one.lookup("kept") == kept
    assert two.lookup("gone") == theirs
    assert {json.loads(f.read_text())["pod"] for f in (tmp_path / "ids").glob("*.json")} == {"kept", "gone"}
    assert one.allocate("new") == gone  # its range is free again
    one.close(), two.close()


class _Runtime:
    def __init__(self, allocator, traces):
        self.id_ranges, self._traces = allocator, traces

    def pod_traces(self, observed):
        return self._traces if self._traces is None else self._traces | set(observed)


def test_a_pass_sweeps_only_with_a_complete_relist(tmp_path):
    one, _ = two_roots(tmp_path)
    one.allocate("on-disk")
    one.allocate("observed")
    one.allocate("vanished")
    db = connect(tmp_path / "root1" / "state.db")
    try:
        # A directory that could not be read: nothing is freed.
        assert sweep_vanished(db, _Runtime(one, None), ["observed"]) == []
        assert set(IdRanges(db).held()) == {"on-disk", "observed", "vanished"}
        # The relist (observed) and the directories (on-disk) keep theirs; the vanished pod's goes.
        assert sweep_vanished(db, _Runtime(one, {"on-disk"}), ["observed"]) == ["vanished"]
        assert set(IdRanges(db).held()) == {"on-disk", "observed"}
        # A runtime without ranges (rootless, the fake) sweeps nothing.
        assert sweep_vanished(db, object(), []) == []
    finally:
        db.close()
    one.close()
