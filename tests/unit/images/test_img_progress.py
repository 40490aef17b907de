"""Pull progress: a live display on terminals (bytes, total, rate per layer; a total line), plain
lines elsewhere (one per layer done, one per stalled download tried again), nothing when quiet."""

from __future__ import annotations

import io

import pytest

from reconciler.errors import InputError
from reconciler.images.progress import LineProgress, Progress, TerminalProgress, for_stream
from reconciler.images.registry import STALL_RESET_BYTES, RegistryClient, RegistryStallError, _Stalls

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_terminal_progress_lines():
    out, clock = io.StringIO(), Clock()
    p = TerminalProgress(out, interval=0, clock=clock)
    p.begin("quay.io/a/b:c")
    p.blob_queued(A, 2048, present=True)
    p.blob_queued(B, 4 << 20, present=False)
    p.blob_start(B, 4 << 20)
    clock.now += 1.0
    p.blob_advance(B, 2 << 20)
    text = out.getvalue()
    assert text.startswith("Pulling quay.io/a/b:c\n")
    assert "aaaaaaaaaaaa: exists 2.0KiB" in text
    assert "bbbbbbbbbbbb: [" in text and "2.0MiB/4.0MiB 2.0MiB/s" in text
    assert "total: 2.0MiB/4.0MiB, 1/2 layers, 2.0MiB/s, 1s" in text
    p.blob_done(B)
    p.end()
    last = out.getvalue().rsplit("\x1b[3A", 1)[-1]  # the final redraw: two layers and the total
    assert "bbbbbbbbbbbb: done 4.0MiB" in last and "total: 4.0MiB/4.0MiB, 2/2 layers" in last


def test_a_second_image_is_drawn_below_the_first():
    out = io.StringIO()
    p = TerminalProgress(out, interval=0)
    p.begin("one")
    p.blob_queued(A, 10, present=False)
    p.end()
    p.begin("two")
    p.blob_queued(B, 10, present=False)
    second = out.getvalue().split("Pulling two\n", 1)[1]
    assert "A" not in second.split("\x1b[2K", 1)[0], "no cursor move up over the first image's lines"
    assert second.startswith("\x1b[2Kbbbbbbbbbbbb: waiting 10B\n") and "aaaaaaaaaaaa" not in second


def test_line_progress_is_one_plain_line_per_layer_and_per_retry():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, clock=clock)
    p.begin("r/app:1")
    p.blob_queued(A, 1 << 20, present=True)
    p.blob_queued(B, 3 << 20, present=False)
    p.blob_start(B, 3 << 20)
    p.blob_advance(B, 1 << 20)
    p.blob_retry(B, 1 << 20, "no data for 30s from r, trying again (1 of 2)")
    clock.now += 2.0
    p.blob_advance(B, 2 << 20)
    p.blob_done(B)
    p.end()
    assert out.getvalue().splitlines() == [
        "r/app:1: layer bbbbbbbbbbbb stalled at 1.0MiB of 3.0MiB: no data for 30s from r, trying again (1 of 2)",
        "r/app:1: layer bbbbbbbbbbbb done, 3.0MiB in 2.0s (1.5MiB/s)",
        "r/app:1: 1 of 2 layers downloaded (3.0MiB of 4.0MiB) in 2.0s",
    ]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_display_follows_the_stream():
    assert type(for_stream(io.StringIO())) is LineProgress
    assert type(for_stream(Tty())) is TerminalProgress
    assert type(for_stream(Tty(), quiet=True)) is Progress
    closed = io.StringIO()
    closed.close()
    assert type(for_stream(closed)) is Progress


def test_a_default_display_holds_only_for_its_block():
    from reconciler.images.progress import default_progress, used_by_default

    with used_by_default(lambda: LineProgress(io.StringIO())):
        assert type(default_progress()) is LineProgress
    assert type(default_progress()) is Progress, "a command's display must not outlive it"


@pytest.mark.parametrize("value", ["0", "-3", "soon", "7200"])
def test_a_bad_timeout_in_the_environment_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("PODPLAY_STALL_TIMEOUT", value)
    with pytest.raises(InputError, match=r"\$PODPLAY_STALL_TIMEOUT: .* is not a number of seconds"):
        RegistryClient("registry.example.com")


def test_timeouts_come_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("PODPLAY_STALL_TIMEOUT", "12.5")
    monkeypatch.setenv("PODPLAY_CONNECT_TIMEOUT", "4")
    c = RegistryClient("registry.example.com")
    assert (c.connect_timeout, c.timeout) == (4.0, 12.5)
    c = RegistryClient("registry.example.com", timeout=3, connect_timeout=2)
    assert (c.connect_timeout, c.timeout) == (2, 3)
    monkeypatch.delenv("PODPLAY_STALL_TIMEOUT")
    monkeypatch.delenv("PODPLAY_CONNECT_TIMEOUT")
    assert RegistryClient("registry.example.com")._timeouts() == (15.0, 30.0)


def test_stalls_are_bounded_and_counted_afresh_only_after_real_progress():
    from reconciler.images import httpconn

    client = RegistryClient("registry.example.com", timeout=30, connect_timeout=15, stall_retries=2)
    stalls = _Stalls(client, "sending blob sha256:x of app")
    told = []
    stalls.notice = lambda exc, n: told.append(n)
    stalls.detail = lambda: " (5 of 9 bytes came)"
    timeout = httpconn.ReadTimeout("read timed out")
    stalls.hit(timeout)
    stalls.moved(STALL_RESET_BYTES - 1)  # a trickle does not make the registry healthy again
    stalls.hit(timeout)
    with pytest.raises(RegistryStallError) as err:
        stalls.hit(timeout)
    assert told == [1, 2]
    assert str(err.value).startswith("registry registry.example.com sent nothing for 30s (3 times in a row) while "
                                     "sending blob sha256:x of app (5 of 9 bytes came); giving up.")
    assert err.value.exit_code == 5 and err.value.temporary

    fresh = _Stalls(client, "x")
    fresh.hit(timeout)
    fresh.hit(timeout)
    fresh.moved(STALL_RESET_BYTES)  # a resumed download that moved a MiB has recovered
    fresh.hit(timeout)
    fresh.hit(timeout)
    with pytest.raises(RegistryStallError, match="could not open a connection within 15s"):
        fresh.hit(httpconn.ConnectTimeout("connect timed out"))


def test_line_progress_says_when_a_pull_stopped_before_its_layers_were_in():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, clock=clock)
    p.begin("r/app:1")
    p.blob_queued(A, 1 << 20, present=False)
    p.blob_queued(B, 1 << 20, present=False)
    p.blob_start(A, 1 << 20)
    p.blob_advance(A, 1 << 20)
    p.blob_done(A)
    p.blob_start(B, 1 << 20)
    clock.now += 1.0
    p.end()  # B never finished: the registry stalled
    assert out.getvalue().splitlines()[-1] == (
        "r/app:1: 1 of 2 layers downloaded before the pull stopped (1.0MiB of 2.0MiB) in 1.0s")



def test_a_tls_handshake_that_times_out_is_reported_with_the_connect_timeout():
    from reconciler.images import httpconn

    client = RegistryClient("registry.example.com", timeout=30, connect_timeout=15, stall_retries=0)
    handshake = httpconn.ReadTimeout("TLS handshake with registry.example.com:443: Read timed out. "
                                     "(read timeout=15)")
    with pytest.raises(RegistryStallError, match=r"sent nothing for 15s \(1 time in a row\) while answering /v2/"):
        _Stalls(client, "answering /v2/").hit(handshake)
    with pytest.raises(RegistryStallError, match="sent nothing for 30s"):
        _Stalls(client, "x").hit(httpconn.ReadTimeout("Read timed out."))
