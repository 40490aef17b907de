"""PURE  CronJob schedule math: is a schedule valid, when was it last due, when is it next due, and
the same schedule as systemd OnCalendar= lines (for `generate systemd` timers).

Schedules are read by ``croniter`` (standard five fields and the @hourly/@daily… macros, with
Kubernetes' day-of-month OR day-of-week rule); time zones come from ``zoneinfo``. Without
``timeZone`` a schedule is in the host's local time, as kube-controller-manager reads it in its own.
Both imports stay inside the functions: `ps` and the watcher's idle loop do not pay for them.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

DOW_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def schedule_problem(schedule: str) -> str:
    """What is wrong with a schedule, or "" when croniter reads it as five fields (or a macro)."""
    from croniter import croniter

    text = schedule.strip()
    expr = MACROS.get(text, text)
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        return (f"{schedule!r} is not a cron schedule: use five fields (minute hour day-of-month month "
                "day-of-week), e.g. \"*/15 * * * *\", or @hourly, @daily, @weekly, @monthly, @yearly")
    return ""


def zone_problem(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a time zone this host knows (an IANA name such as Europe/Berlin or Etc/UTC)"
    return ""


def zone(name: str | None) -> tzinfo:
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    local = datetime.now().astimezone().tzinfo
    assert local is not None
    return local


def _expr(schedule: str) -> str:
    text = schedule.strip()
    return MACROS.get(text, text)


def last_due(schedule: str, tz: str | None, now: float) -> float:
    """The latest time at or before `now` the schedule fires."""
    from croniter import croniter

    start = datetime.fromtimestamp(now + 0.001, zone(tz))  # get_prev is strictly before its start
    return croniter(_expr(schedule), start).get_prev(float)


def next_due(schedule: str, tz: str | None, now: float) -> float:
    """The first time after `now` the schedule fires."""
    from croniter import croniter

    return croniter(_expr(schedule), datetime.fromtimestamp(now, zone(tz))).get_next(float)


def _field(values, names: tuple[str, ...] | None = None, width: int = 2) -> str:
    if values == ["*"]:
        return "*"
    if names:
        return ",".join(dict.fromkeys(names[v % 7] for v in values))
    return ",".join(f"{v:0{width}d}" for v in values)


def to_calendar(schedule: str, tz: str | None) -> list[str]:
    """systemd OnCalendar= values that fire exactly when the schedule does. cron fires on a day
    that matches day-of-month OR day-of-week when both are restricted; systemd ANDs them within
    one value, so that case gives two values (a timer fires on the union of its OnCalendar=)."""
    from croniter import croniter

    (minutes, hours, days, months, dows), _ = croniter.expand(_expr(schedule))
    suffix = f" {tz}" if tz else ""
    time_part = f"{_field(hours)}:{_field(minutes)}:00"

    def value(dow, dom) -> str:
        head = f"{_field(dow, DOW_NAMES)} " if dow != ["*"] else ""
        return f"{head}*-{_field(months)}-{_field(dom)} {time_part}{suffix}"

    if days != ["*"] and dows != ["*"]:
        return [value(["*"], days), value(dows, ["*"])]
    return [value(dows, days)]
