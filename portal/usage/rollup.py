"""Fold new usage rows into hourly and daily rollups, incrementally and exactly once.

A watermark (`usage_rollup_state.last_id`) says how far the rollups have read: every usage row with
`id <= last_id` is counted in them, no row above it is. One pass reads the rows above the watermark
(in chunks of ids), adds their sums to the hour and day buckets with upserts (`INSERT … ON CONFLICT
DO UPDATE SET n = n + excluded.n`, on SQLite and PostgreSQL alike) and moves the watermark in the
same transaction, so a pass that fails changes nothing and a rerun never counts a row twice.
Statistics read the rollups plus the rows above the watermark: the same figures as the raw rows,
which is also why rows behind the watermark may be deleted once old (`portal.usage.retention`).

The watermark is only safe if no row below it can still appear. On PostgreSQL ids come from a
sequence and concurrent writers may commit out of order (id 11 visible while id 10 is still being
inserted), so the upper bound of a pass is read under a SHARE lock on `usage_records`, which waits
for the inserts in flight to commit and holds new ones back for the instant it takes to read
`max(id)`. SQLite has one writer at a time, so `max(id)` is already safe there.

Runs periodically in the portal (`portal.usage.background`, every `usage_rollup_interval_seconds`)
and on demand with `python -m portal rollup`. Several portal replicas may run it at once: the state
row is locked (`SELECT … FOR UPDATE`; SQLite serialises writers), so passes queue instead of double
counting.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from portal.usage.measures import MEASURES, Sums, raw_sums
from portal.usage.sql import hour_start
from store.buckets import floor, utc
from store.db import utcnow
from store.models import UsageRecord, UsageRollup, UsageRollupState

STATE = "usage"  # the state row's name
CHUNK_IDS = 20_000  # usage rows per transaction: bounded work and lock time per step
LOCK_TIMEOUT = "2s"  # how long a pass waits for in-flight inserts before giving up until next time
DIMENSIONS = ("workspace", "api_key", "model")
CONFLICT = ("period", "bucket", *DIMENSIONS)

BucketKey = tuple[str, datetime, str, str, str]  # period, bucket, workspace, api_key, model


@dataclass(frozen=True, slots=True)
class RollupRun:
    rows: int  # usage rows folded in by this pass
    buckets: int  # rollup rows (hour + day) written
    last_id: int  # the watermark afterwards


def watermark(session: Session) -> int:
    """The id up to which usage rows are in the rollups (0 before the first pass)."""
    return session.scalar(select(UsageRollupState.last_id).where(UsageRollupState.name == STATE)) or 0


def committed_high_water(sessions: sessionmaker[Session]) -> int:
    """The largest usage row id below which no row can appear any more (see the module docstring)."""
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            session.execute(text("LOCK TABLE usage_records IN SHARE MODE"))
        return session.scalar(select(UsageRecord.id).order_by(UsageRecord.id.desc()).limit(1)) or 0


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    module: Any = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        raise RuntimeError(f"usage rollups support SQLite and PostgreSQL, not {dialect}")
    return module.insert


def _locked_state(session: Session) -> UsageRollupState:
    insert = _insert(session)
    session.execute(
        insert(UsageRollupState.__table__)
        .values(name=STATE, last_id=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    state = session.scalar(select(UsageRollupState).where(UsageRollupState.name == STATE).with_for_update())
    assert state is not None  # inserted above if it was missing
    return state


def _delta(session: Session, after: int, upto: int) -> dict[BucketKey, Sums]:
    """Sums of the rows with `after < id <= upto` per hour and per day bucket × dimensions."""
    r = UsageRecord
    hour = hour_start(r.at).label("hour")
    rows = session.execute(
        select(hour, r.workspace, r.api_key, r.model, *raw_sums())
        .where(r.id > after, r.id <= upto)
        .group_by(hour, r.workspace, r.api_key, r.model)
    ).mappings()
    out: dict[BucketKey, Sums] = defaultdict(Sums)
    for row in rows:
        sums = Sums.of(row)
        start = utc(row["hour"])
        dims = (row["workspace"], row["api_key"], row["model"])
        out[("hour", start, *dims)].add(sums)
        out[("day", floor(start, "day"), *dims)].add(sums)
    return out


def _upsert(session: Session, delta: dict[BucketKey, Sums]) -> None:
    if not delta:
        return
    table = UsageRollup.__table__
    stmt = _insert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(CONFLICT), set_={name: table.c[name] + stmt.excluded[name] for name in MEASURES}
    )
    params = [
        {
            "period": period,
            "bucket": bucket,
            "workspace": workspace,
            "api_key": api_key,
            "model": model,
            **{name: getattr(sums, name) for name in MEASURES},
        }
        for (period, bucket, workspace, api_key, model), sums in delta.items()
    ]
    session.execute(stmt, params)


def rollup_once(sessions: sessionmaker[Session], *, chunk: int = CHUNK_IDS) -> RollupRun:
    """Fold every committed usage row above the watermark into the rollups; safe to run anywhere,
    any number of times, concurrently."""
    upto = committed_high_water(sessions)
    rows = buckets = 0
    last = 0
    while True:
        with sessions() as session, session.begin():
            state = _locked_state(session)
            last = state.last_id
            if last >= upto:
                break
            step = min(upto, last + chunk)
            delta = _delta(session, last, step)
            _upsert(session, delta)
            rows += sum(s.requests for (period, *_), s in delta.items() if period == "hour")
            buckets += len(delta)
            state.last_id = last = step
            state.updated_at = utcnow()
    return RollupRun(rows=rows, buckets=buckets, last_id=last)
