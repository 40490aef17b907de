"""podplay's /etc/subuid and /etc/subgid entry, and the store's table of ranges pods hold."""

from __future__ import annotations

import os
import stat

import pytest

from reconciler import subids
from reconciler.errors import EnvironmentProblem
from reconciler.idmap import RANGE_SIZE, IdMap
from reconciler.store.db import connect
from reconciler.store.idranges import IdRanges, PodIdAllocator


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
    alloc = PodIdAllocator(tmp_path / "state.db", str(tmp_path / "subuid"), str(tmp_path / "subgid"))
    first = alloc.allocate("pod1")
    alloc.close()
    again = PodIdAllocator(tmp_path / "state.db", str(tmp_path / "subuid"), str(tmp_path / "subgid"))
    assert again.lookup("pod1") == first  # recorded in the store, not in memory
    assert again.allocate("pod2") != first
    again.release("pod1")
    assert again.lookup("pod1") is None
    again.close()
