"""Delete old raw usage rows once the rollups hold them (`MODELFLEET_USAGE_RETENTION_DAYS`).

A row may go only when it is both old (`at` before the cutoff) and behind the rollup watermark
(`id <= last_id`): statistics read rollups below the watermark and raw rows only above it, so their
figures stay the same, and a row the rollups have not counted yet is never lost, however old it is.

Rows are deleted in chunks of at most `CHUNK_ROWS`, one transaction each, so a large backlog (the
first pass after retention is switched on) never holds a long lock on `usage_records`.

The newest row is always kept. SQLite gives a new row `max(id) + 1` (the table has no
AUTOINCREMENT), so deleting the newest rows would let the next insert reuse an id at or below the
watermark: a row the rollups would never count, and the next pass would delete. PostgreSQL's
sequence never reuses ids; keeping one row there costs nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from portal.usage.rollup import watermark
from store.db import utcnow
from store.models import UsageRecord

CHUNK_ROWS = 10_000  # rows deleted per transaction: bounded lock time per step


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    """The arrival time before which rows are older than `days` days."""
    return (now or utcnow()) - timedelta(days=days)


def prune_usage(sessions: sessionmaker[Session], older_than: datetime, *, chunk: int = CHUNK_ROWS) -> int:
    """Delete the usage rows that arrived before `older_than` (UTC) and are already in the rollups;
    returns how many went. Safe to run anywhere, any number of times, next to rollup passes: the
    watermark only moves up, so a row behind the one read here stays counted."""
    with sessions() as session:
        upto = watermark(session)
    r = UsageRecord
    deleted = 0
    while True:
        with sessions() as session, session.begin():
            newest = select(func.max(r.id)).scalar_subquery()
            victims = select(r.id).where(r.at < older_than, r.id <= upto, r.id < newest).limit(chunk)
            result = session.connection().execute(delete(r).where(r.id.in_(victims)))
            step = int(result.rowcount or 0)
        deleted += step
        if step < chunk:
            return deleted
