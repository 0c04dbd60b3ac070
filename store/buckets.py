"""Time buckets, all in UTC: hours, days, ISO weeks (starting Monday) and calendar months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

Period = Literal["hour", "day", "week", "month"]
PERIODS: tuple[Period, ...] = get_args(Period)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utc(value: datetime) -> datetime:
    """`value` as an aware UTC time; naive times are UTC (SQLite hands stored times back naive)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def floor(value: datetime, period: Period) -> datetime:
    """The start of the bucket of `period` that holds `value`."""
    t = utc(value)
    hour = t.replace(minute=0, second=0, microsecond=0)
    if period == "hour":
        return hour
    day = hour.replace(hour=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(start: datetime, period: Period) -> datetime:
    """The start of the bucket after the one starting at `start`."""
    if period == "hour":
        return start + HOUR
    if period == "day":
        return start + DAY
    if period == "week":
        return start + timedelta(days=7)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def ceil(value: datetime, period: Period) -> datetime:
    """The first bucket start at or after `value`."""
    start = floor(value, period)
    return start if start == utc(value) else next_start(start, period)


def is_aligned(value: datetime, period: Period) -> bool:
    return floor(value, period) == utc(value)


def default_range(now: datetime, period: Period) -> tuple[datetime, datetime]:
    """What a report covers when the caller gives no range: up to the end of the current hour, back
    24 hours, 30 days, 12 weeks or 12 months (whole buckets of `period`)."""
    until = ceil(now, "hour")
    if period == "hour":
        return until - timedelta(hours=24), until
    if period == "day":
        return floor(until - timedelta(days=30), "day"), until
    if period == "week":
        return floor(until - timedelta(weeks=12), "week"), until
    start = floor(until, "month")
    for _ in range(11):
        start = floor(start - DAY, "month")
    return start, until
