"""Append to and verify the audit chain.

Each row's hash covers its own fields and the previous row's hash, so editing, deleting or
reordering any row breaks every hash after it. Appends lock the single `audit_head` row (a row lock
on PostgreSQL; SQLite serialises writers already), which gives the chain one total order even with
many portal processes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.context import current_request_id
from store.db import utcnow
from store.models import AuditEvent, AuditHead

GENESIS = "0" * 64
HASHED_FIELDS = (
    "id",
    "at",
    "actor",
    "workspace",
    "action",
    "resource_type",
    "resource_id",
    "before",
    "after",
    "request_id",
    "result",
    "detail",
)


def row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """`fields` as `_fields` gives them (the time already a UTC ISO string), or as read back from the
    CSV export, so the chain can be re-verified from the file alone."""
    payload = json.dumps(
        {k: fields[k] for k in HASHED_FIELDS}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def _utc_stamp(value: datetime) -> datetime:
    """Timestamps are hashed at microsecond precision in UTC, as every backend stores them."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _fields(event: AuditEvent) -> dict[str, Any]:
    out = {k: getattr(event, k) for k in HASHED_FIELDS}
    out["at"] = _utc_stamp(event.at).isoformat(timespec="microseconds")
    return out


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    resource_type: str,
    resource_id: str | int,
    workspace: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    result: str = "success",
    detail: str = "",
) -> AuditEvent:
    """Add one event to `session`; it commits with the change it describes, or not at all."""
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, last_id=0, last_hash=GENESIS)
        session.add(head)
        session.flush()
    event = AuditEvent(
        id=head.last_id + 1,
        at=_utc_stamp(utcnow()),
        actor=actor,
        workspace=workspace,
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id),
        before=_jsonable(before),
        after=_jsonable(after),
        request_id=current_request_id(),
        result=result,
        detail=detail,
        prev_hash=head.last_hash,
        hash="",
    )
    event.hash = row_hash(head.last_hash, _fields(event))
    head.last_id, head.last_hash = event.id, event.hash
    session.add(event)
    session.flush()
    return event


def _jsonable(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else json.loads(json.dumps(value, default=str))


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    broken_at: int | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(session: Session, batch: int = 5000) -> ChainReport:
    """Walk the chain in id order; the first row whose link or hash does not hold is reported."""
    prev, expected_id, checked, last_id = GENESIS, 1, 0, 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            break
        for event in rows:
            if event.id != expected_id:
                return ChainReport(checked, expected_id, f"row {expected_id} is missing")
            if event.prev_hash != prev:
                return ChainReport(checked, event.id, "prev_hash does not match the row before")
            if row_hash(prev, _fields(event)) != event.hash:
                return ChainReport(checked, event.id, "row content does not match its hash")
            prev, expected_id, checked, last_id = event.hash, event.id + 1, checked + 1, event.id
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_id != last_id or head.last_hash != prev):
        return ChainReport(
            checked, last_id + 1, f"rows after {last_id} were removed (head is at {head.last_id})"
        )
    return ChainReport(checked, None)


CSV_COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")


def to_csv(events: Iterable[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for event in events:
        fields = _fields(event)
        writer.writerow(
            [
                json.dumps(fields[c], sort_keys=True)
                if c in ("before", "after") and fields[c] is not None
                else (fields[c] if c in fields else getattr(event, c))
                for c in CSV_COLUMNS
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
