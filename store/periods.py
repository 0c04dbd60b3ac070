"""Time as both planes count it: UTC normalisation and the calendar periods of quota refresh cycles."""

from __future__ import annotations

import calendar
import functools
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

# How often a token quota refreshes: each UTC calendar day, ISO week (from Monday) or month.
# None (no cycle) is a lifetime quota.
QuotaRefresh = Literal["day", "week", "month"]
QUOTA_REFRESH_CYCLES: tuple[str, ...] = get_args(QuotaRefresh)


def aware(value: datetime) -> datetime:
    """`value` in UTC. Naive times are UTC: SQLite hands stored times back without an offset, and
    it stores an aware time's wall clock without converting it, so times are normalised before saving."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def period_bounds(cycle: str | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The UTC calendar period containing `now` for a refresh cycle; (None, None) for no cycle."""
    if cycle is None:
        return None, None
    return _bounds(cycle, now.year, now.month, now.day)


@functools.lru_cache(maxsize=64)  # the gateway asks per request; the answer changes once a day
def _bounds(cycle: str, year: int, month: int, day_of_month: int) -> tuple[datetime, datetime]:
    day = datetime(year, month, day_of_month, tzinfo=UTC)
    if cycle == "day":
        return day, day + timedelta(days=1)
    if cycle == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if cycle == "month":
        start = day.replace(day=1)
        return start, start + timedelta(days=calendar.monthrange(year, month)[1])
    raise ValueError(f"unknown quota refresh cycle {cycle!r}")
