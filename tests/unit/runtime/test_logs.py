"""Reading CRI-format logs: timestamps, partial lines, tail, since, follow."""

from __future__ import annotations

import threading

import pytest

from reconciler.runtime.logs import parse_line, parse_timestamp, read_log


@pytest.mark.parametrize("text,expected", [
    (b"2024-01-02T03:04:05Z", 1704164645.0),
    (b"2024-01-02T03:04:05.5Z", 1704164645.5),
    (b"2024-01-02T03:04:05.123456789+00:00", 1704164645.123456789),
    (b"2024-01-02T05:04:05.25+02:00", 1704164645.25),
    (b"2024-01-01T22:04:05-05:00", 1704164645.0),
])
def test_timestamps(text, expected):
    assert parse_timestamp(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("line", [b"", b"garbage", b"2024-01-02T03:04:05Z stdin F x", b"2024-13-45 stdout F x",
                                  b"2024-01-02T03:04:05Z stdout X x"])
def test_lines_that_are_not_records(line):
    assert parse_line(line) is None


def test_empty_message_and_spaces_are_kept():
    assert parse_line(b"2024-01-02T03:04:05Z stdout F ") == (1704164645.0, "stdout", False, b"")
    assert parse_line(b"2024-01-02T03:04:05Z stderr P a  b ")[3] == b"a  b "


def write(path, records):
    path.write_bytes(b"".join(f"2024-01-02T03:04:{s:02d}.000000000Z {stream} {tag} {text}\n".encode()
                              for s, stream, tag, text in records))


RECORDS = [
    (1, "stdout", "F", "one"),
    (2, "stdout", "P", "tw"),
    (2, "stderr", "F", "err"),
    (3, "stdout", "F", "o"),
    (4, "stdout", "F", "three"),
    (5, "stdout", "P", "unfinished"),
]


def test_partial_lines_are_joined_per_stream(tmp_path):
    log = tmp_path / "ctr.log"
    write(log, RECORDS)
    got = [(stream, text) for _, stream, text in read_log(str(log))]
    assert got == [("stdout", b"one"), ("stderr", b"err"), ("stdout", b"two"), ("stdout", b"three"),
                   ("stdout", b"unfinished")]


def test_tail_and_since(tmp_path):
    log = tmp_path / "ctr.log"
    write(log, RECORDS)
    assert [t for _, _, t in read_log(str(log), tail=2)] == [b"three", b"unfinished"]
    assert [t for _, _, t in read_log(str(log), tail=0)] == []
    assert [t for _, _, t in read_log(str(log), since=1704164644.0)] == [b"three", b"unfinished"]


def test_tail_of_a_big_file_reads_only_its_end(tmp_path):
    log = tmp_path / "ctr.log"
    with open(log, "wb") as f:
        for i in range(50000):
            f.write(f"2024-01-02T03:04:05.{i:09d}Z stdout F line {i}\n".encode())
    got = [t for _, _, t in read_log(str(log), tail=3)]
    assert got == [b"line 49997", b"line 49998", b"line 49999"]


def test_missing_log_is_empty(tmp_path):
    assert list(read_log(str(tmp_path / "none.log"))) == []


def test_follow_reads_until_the_writer_stops(tmp_path):
    log = tmp_path / "ctr.log"
    write(log, RECORDS[:1])
    running = threading.Event()
    running.set()
    more = threading.Event()

    def writer():
        more.wait()
        with open(log, "ab") as f:
            f.write(b"2024-01-02T03:05:00Z stdout P lat\n")
            f.flush()
            f.write(b"2024-01-02T03:05:00Z stdout F er\n")
        running.clear()

    t = threading.Thread(target=writer)
    t.start()
    seen = []
    for _, _, text in read_log(str(log), follow=True, running=running.is_set):
        seen.append(text)
        more.set()
    t.join()
    assert seen == [b"one", b"later"]


def test_follow_keeps_what_was_written_as_the_writer_stopped(tmp_path):
    log = tmp_path / "ctr.log"
    write(log, RECORDS[:1])
    calls = []

    def running():  # the container writes its last line and exits between two of our reads
        if not calls:
            with open(log, "ab") as f:
                f.write(b"2024-01-02T03:05:00Z stdout F last words\n")
        calls.append(1)
        return False

    assert [t for _, _, t in read_log(str(log), follow=True, running=running)] == [b"one", b"last words"]
