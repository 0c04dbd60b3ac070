"""Usage statistics over a time range, grouped by workspace, API key, model and/or period.

Figures come from three disjoint sources that together hold every usage row exactly once:

- day rollups for the whole UTC days of the range (unless grouping by hour),
- hour rollups for the hours at its ragged edges (or for everything when grouping by hour),
- the raw rows above the rollup watermark (the "tail" not rolled up yet), so figures are current.

Long ranges therefore read a few rollup rows per day, never the raw rows; weeks and months are
folded from days. The watermark is read before and after (a rollup pass committing in between
would move rows from the tail into the rollups mid-read); on a change the report is read again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from portal.usage.measures import Sums, raw_sums, rollup_sums
from portal.usage.rollup import watermark
from portal.usage.sql import hour_start
from store.buckets import Period, ceil, floor, utc
from store.models import UsageRecord, UsageRollup

Dimension = Literal["workspace", "api_key", "model", "period"]
DIMENSION_ORDER: tuple[Dimension, ...] = ("period", "workspace", "api_key", "model")
READ_ATTEMPTS = 5

GroupKey = tuple[Any, ...]  # (bucket or None, workspace or None, api_key or None, model or None)


@dataclass(frozen=True)
class UsageQuery:
    """What to report. `since` (inclusive) and `until` (exclusive) are whole UTC hours.

    `workspaces` / `api_keys` restrict what the caller may see (None: no restriction); `api_key`
    and `model` are the caller's filters."""

    since: datetime
    until: datetime
    group_by: tuple[Dimension, ...] = ("period",)
    period: Period = "day"
    workspaces: Collection[str] | None = None
    api_keys: Collection[str] | None = None
    api_key: str | None = None
    model: str | None = None

    def grouped(self, dimension: Dimension) -> bool:
        return dimension in self.group_by


@dataclass(frozen=True, slots=True)
class Line:
    bucket: datetime | None
    workspace: str | None
    api_key: str | None
    model: str | None
    sums: Sums


@dataclass(slots=True)
class Report:
    lines: list[Line]
    totals: Sums
    raw_rows: int  # usage rows read from the not-yet-rolled-up tail
    watermark: int


def _filters(q: UsageQuery, model: Any) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if q.workspaces is not None:
        out.append(model.workspace.in_(list(q.workspaces)))
    if q.api_keys is not None:
        out.append(model.api_key.in_(list(q.api_keys)))
    if q.api_key is not None:
        out.append(model.api_key == q.api_key)
    if q.model is not None:
        out.append(model.model == q.model)
    return out


def _dimension_columns(q: UsageQuery, model: Any) -> list[ColumnElement[Any]]:
    return [getattr(model, d) for d in ("workspace", "api_key", "model") if q.grouped(d)]


def _grouped(
    columns: Sequence[ColumnElement[Any]],
    sums: Sequence[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
) -> Select[Any]:
    query = select(*columns, *sums).where(*where)
    return query.group_by(*columns) if columns else query


def _rollup_select(q: UsageQuery, period: Literal["hour", "day"], lo: datetime, hi: datetime) -> Select[Any]:
    r = UsageRollup
    columns = _dimension_columns(q, r)
    if q.grouped("period"):
        columns = [r.bucket.label("bucket"), *columns]
    where = [r.period == period, r.bucket >= lo, r.bucket < hi, *_filters(q, r)]
    return _grouped(columns, rollup_sums(), where)


def _tail_select(q: UsageQuery, after: int) -> Select[Any]:
    r = UsageRecord
    columns = _dimension_columns(q, r)
    if q.grouped("period"):
        columns = [hour_start(r.at).label("bucket"), *columns]
    where = [r.id > after, r.at >= q.since, r.at < q.until, *_filters(q, r)]
    return _grouped(columns, raw_sums(), where)


def _rollup_selects(q: UsageQuery) -> list[Select[Any]]:
    """Day rollups for the whole days of the range, hour rollups for the rest."""
    if q.grouped("period") and q.period == "hour":
        return [_rollup_select(q, "hour", q.since, q.until)]
    first_day, last_day = ceil(q.since, "day"), floor(q.until, "day")
    if first_day >= last_day:
        return [_rollup_select(q, "hour", q.since, q.until)]
    out = [_rollup_select(q, "day", first_day, last_day)]
    if q.since < first_day:
        out.append(_rollup_select(q, "hour", q.since, first_day))
    if last_day < q.until:
        out.append(_rollup_select(q, "hour", last_day, q.until))
    return out


def _key(q: UsageQuery, row: Any) -> GroupKey:
    bucket = floor(utc(row["bucket"]), q.period) if q.grouped("period") else None
    return (
        bucket,
        row["workspace"] if q.grouped("workspace") else None,
        row["api_key"] if q.grouped("api_key") else None,
        row["model"] if q.grouped("model") else None,
    )


def _read(session: Session, q: UsageQuery, after: int) -> tuple[dict[GroupKey, Sums], int]:
    groups: dict[GroupKey, Sums] = defaultdict(Sums)
    for query in _rollup_selects(q):
        for row in session.execute(query).mappings():
            if row["requests"]:  # an aggregate without GROUP BY yields one row of NULLs when empty
                groups[_key(q, row)].add(Sums.of(row))
    raw_rows = 0
    for row in session.execute(_tail_select(q, after)).mappings():
        if row["requests"]:
            raw_rows += int(row["requests"])
            groups[_key(q, row)].add(Sums.of(row))
    return groups, raw_rows


def _sort_key(key: GroupKey) -> tuple[Any, ...]:
    return tuple((value is not None, value) for value in key)


def usage_report(session: Session, q: UsageQuery) -> Report:
    """The report for `q`, consistent with one watermark (see the module docstring)."""
    for _ in range(READ_ATTEMPTS):
        before = watermark(session)
        groups, raw_rows = _read(session, q, before)
        if watermark(session) == before:
            break
    lines = [
        Line(key[0], key[1], key[2], key[3], sums)
        for key, sums in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    ]
    totals = Sums()
    for line in lines:
        totals.add(line.sums)
    return Report(lines=lines, totals=totals, raw_rows=raw_rows, watermark=before)
