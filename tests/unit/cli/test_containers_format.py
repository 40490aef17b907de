"""What `podplay ps`, `pods` and `logs` print: ages, ports, states, pod phases, --since, tables."""

from __future__ import annotations

import calendar
import time

import pytest

from reconciler.cli.logs_exec import exec_env, parse_since
from reconciler.cli.pods import (
    format_port,
    human_duration,
    pod_status,
    render_table,
    rfc3339,
    state_text,
)
from reconciler.errors import EXIT_INVALID, InputError
from reconciler.observed import ContainerState, ObservedContainer, ObservedPod, PortMapping


@pytest.mark.parametrize("seconds,text", [
    (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (200, "3m20s"),
    (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (5 * 3600 + 3 * 60, "5h3m"),
    (8 * 3600, "8h"), (30 * 3600, "30h"), (48 * 3600, "2d"), (3 * 86400 + 4 * 3600, "3d4h"),
    (8 * 86400, "8d"), (40 * 86400, "40d"), (2 * 365 * 86400, "2y"), (2 * 365 * 86400 + 30 * 86400, "2y30d"),
    (9 * 365 * 86400, "9y"),
])
def test_ages_read_like_kubectl(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize("port,text", [
    (PortMapping(8080, 80), "0.0.0.0:8080->80/tcp"),
    (PortMapping(5353, 53, "UDP", "127.0.0.1"), "127.0.0.1:5353->53/udp"),
    (PortMapping(443, 8443, "tcp", "::1"), "[::1]:443->8443/tcp"),
])
def test_ports_use_podmans_notation(port, text):
    assert format_port(port) == text


def _c(name="web", state=ContainerState.RUNNING, exit_code=None, restarts=0, role="app", oom=False,
       pod="default/p", uid="u1", started=100.0) -> ObservedContainer:
    return ObservedContainer(id=f"{uid}.{name}" if name else uid, pod_uid=uid, pod=pod, name=name, role=role,
                             state=state, exit_code=exit_code, restart_count=restarts, oom_killed=oom,
                             started_at=started)


@pytest.mark.parametrize("c,text", [
    (_c(), "running"),
    (_c(state=ContainerState.CREATED), "created"),
    (_c(state=ContainerState.EXITED, exit_code=3), "exited (3)"),
    (_c(state=ContainerState.EXITED, exit_code=137, oom=True), "exited (137, OOM killed)"),
    (_c(state=ContainerState.EXITED), "exited (?)"),
    (_c(state=ContainerState.UNKNOWN), "unknown"),
])
def test_container_states(c, text):
    assert state_text(c) == text


def _pod(*apps: ObservedContainer, infra_state=ContainerState.RUNNING, infra=True) -> ObservedPod:
    return ObservedPod(uid="u1", key="default/p",
                       infra=_c("", infra_state, role="infra") if infra else None,
                       containers={c.name: c for c in apps})


EXITED = ContainerState.EXITED
RUNNING = ContainerState.RUNNING


@pytest.mark.parametrize("pod,stopped,status", [
    (_pod(_c("a"), _c("b")), False, "Running"),
    (_pod(_c("a"), _c("b", ContainerState.CREATED)), False, "Pending"),
    (_pod(), False, "Pending"),
    (_pod(_c("a", EXITED, 0), _c("b", EXITED, 0)), False, "Succeeded"),
    (_pod(_c("a", EXITED, 0), _c("b", EXITED, 2)), False, "Failed"),
    (_pod(_c("a", EXITED, 1, restarts=3)), False, "Restarting"),
    (_pod(_c("a", EXITED, 143), _c("b", EXITED, 0)), True, "Stopped"),
    (_pod(_c("a"), _c("b", EXITED, 1)), False, "Restarting"),
    (_pod(_c("a"), _c("b", EXITED, 0)), False, "Running"),
    (_pod(_c("a"), infra=False), False, "Unknown"),
    (_pod(_c("a"), infra_state=ContainerState.UNKNOWN), False, "Unknown"),
    (_pod(_c("a"), infra_state=EXITED), False, "Unknown"),
])
def test_pod_status(pod, stopped, status):
    assert pod_status(pod, stopped) == status


def test_since_takes_durations_before_now():
    now = 1_000_000.0
    assert parse_since("10s", now) == now - 10
    assert parse_since("5m", now) == now - 300
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("500ms", now) == pytest.approx(now - 0.5)
    assert parse_since("2d", now) == now - 172800
    assert parse_since("1.5h", now) == now - 5400


def test_since_takes_rfc3339_times():
    base = calendar.timegm((2024, 5, 1, 12, 0, 0, 0, 0, 0))
    assert parse_since("2024-05-01T12:00:00Z", 0) == base
    assert parse_since("2024-05-01T14:00:00.25+02:00", 0) == pytest.approx(base + 0.25)


@pytest.mark.parametrize("text", ["", "yesterday", "10", "10x", "5m garbage", "2024-05-01", "-5s"])
def test_since_refuses_what_it_cannot_read(text):
    with pytest.raises(InputError) as err:
        parse_since(text, time.time())
    assert err.value.exit_code == EXIT_INVALID
    assert "10s" in str(err.value)


def test_printed_timestamps_feed_back_into_since_without_skipping_the_line():
    # A log record's time has nanoseconds; the printed one has microseconds, cut (not rounded).
    for ts in (1714564800.9999996, 1714564800.1234567, 1714564800.0):
        assert parse_since(rfc3339(ts), 0) <= ts
    assert rfc3339(1714564800.5) == "2024-05-01T12:00:00.500000Z"
    assert rfc3339(0) is None


def test_tables_align_columns_and_leave_the_last_one_unpadded():
    text = render_table(["POD", "STATE", "SOURCE"], [["web", "running", "a.yaml"], ["database", "exited (1)", "b"]])
    assert text.splitlines() == [
        "POD        STATE        SOURCE",
        "web        running      a.yaml",
        "database   exited (1)   b",
    ]


def test_exec_env_pairs():
    assert exec_env(["A=1", "B=", "C=x=y", "HOME", "UNSET"], {"HOME": "/root"}) == {
        "A": "1", "B": "", "C": "x=y", "HOME": "/root"}
    for bad in ("=1", "A B=1"):
        with pytest.raises(InputError):
            exec_env([bad], {})


def test_log_lines_go_to_the_stream_they_came_from():
    import io
    from types import SimpleNamespace

    from reconciler.cli.logs_exec import _write_records

    out, err = io.StringIO(), io.StringIO()
    records = [(1714564800.25, "stdout", b"one"), (1714564801.0, "stderr", b"bad \xff byte"),
               (1714564802.0, "stdout", b"")]
    _write_records(iter(records), SimpleNamespace(out=out, err=err), timestamps=False, follow=False)
    assert out.getvalue() == "one\n\n"
    assert err.getvalue() == "bad \ufffd byte\n"
    out, err = io.StringIO(), io.StringIO()
    _write_records(iter(records[:1]), SimpleNamespace(out=out, err=err), timestamps=True, follow=True)
    assert out.getvalue() == "2024-05-01T12:00:00.250000Z one\n"
