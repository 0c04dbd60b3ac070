"""Append to and verify the audit chain.

Each row's hash covers its own fields and the previous row's hash, so editing, deleting or
reordering any row breaks every hash after it. The hash is an HMAC under a key the database does not
hold (`portal.audit_keys`; the row names it by `key_id`, so keys rotate): rewriting rows and
rehashing the chain needs that key. Rows written before keys existed (`key_id` NULL) carry plain
SHA-256 and are accepted only before the first keyed row. What the chain alone cannot show, rows cut
from its end with the head moved back, the signed checkpoints outside the database do
(`portal.audit_checkpoint`).

Appends lock the single `audit_head` row (a row lock on PostgreSQL; SQLite serialises writers
already), which gives the chain one total order even with many portal processes. The sessions that
append carry the keys in `session.info` (the portal's session factory puts them there).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.audit_keys import AuditKeys
from portal.context import current_request_id
from store.db import utcnow
from store.models import AuditEvent, AuditHead


@dataclass(frozen=True, slots=True)
class Checkpoint:
    last_id: int
    last_hash: str
    at: str  # UTC, ISO 8601
    key_id: str

    def message(self) -> str:
        fields = {"last_id": self.last_id, "last_hash": self.last_hash, "at": self.at, "key_id": self.key_id}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


GENESIS = "0" * 64
KEYS = "audit_keys"  # where a session's info holds the AuditKeys
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


def _message(prev_hash: str, fields: dict[str, Any], key_id: str | None) -> str:
    hashed = {k: fields[k] for k in HASHED_FIELDS}
    if key_id is not None:
        hashed["key_id"] = key_id
    payload = json.dumps(hashed, sort_keys=True, separators=(",", ":"), default=str)
    return f"{prev_hash}\n{payload}"


def row_hash(keys: AuditKeys, key_id: str, prev_hash: str, fields: dict[str, Any]) -> str:
    """`fields` as `_fields` gives them (the time already a UTC ISO string), or as read back from the
    CSV export, so the chain can be re-verified from the file alone (with the keys)."""
    return keys.seal(key_id, _message(prev_hash, fields, key_id))


def legacy_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The unkeyed SHA-256 of rows written before the chain had keys."""
    return hashlib.sha256(_message(prev_hash, fields, None).encode()).hexdigest()


def session_keys(session: Session) -> AuditKeys:
    keys = session.info.get(KEYS)
    if not isinstance(keys, AuditKeys):
        raise RuntimeError("this session has no audit keys (sessions come from the portal's Services)")
    return keys


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
    keys = session_keys(session)
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
        key_id=keys.current_id,
    )
    event.hash = row_hash(keys, keys.current_id, head.last_hash, _fields(event))
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
    sealed_through: int | None = None  # the row of the newest checkpoint the chain matched
    verified_head: tuple[int, str] = (0, GENESIS)  # the last row verified: (id, hash)

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _row_problem(keys: AuditKeys, event: AuditEvent, prev: str, keyed_seen: bool) -> str | None:
    if event.key_id is None:
        if keyed_seen:
            return "row has no key after keyed rows (rewritten with the unkeyed hash)"
        return (
            None if legacy_hash(prev, _fields(event)) == event.hash else "row content does not match its hash"
        )
    if event.key_id not in keys.keys:
        return f"row is sealed with audit key {event.key_id!r}, which this portal does not hold"
    if not keys.matches(event.key_id, _message(prev, _fields(event), event.key_id), event.hash):
        return "row content does not match its hash"
    return None


def verify(
    session: Session,
    checkpoints: Sequence[Checkpoint] = (),
    batch: int = 5000,
    keys: AuditKeys | None = None,
) -> ChainReport:
    """Walk the chain in id order; the first row whose link or hash does not hold is reported. Then
    the chain must reach every one of `checkpoints` (signed, kept outside the database) with the hash
    it recorded: rows cut from the end, or a chain rewritten wholesale, do not."""
    keys = keys or session_keys(session)
    sealed = {c.last_id: c for c in checkpoints}
    prev, expected_id, checked, last_id, keyed_seen = GENESIS, 1, 0, 0, False
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
            problem = _row_problem(keys, event, prev, keyed_seen)
            if problem is not None:
                return ChainReport(checked, event.id, problem)
            checkpoint = sealed.get(event.id)
            if checkpoint is not None and checkpoint.last_hash != event.hash:
                return ChainReport(
                    checked,
                    event.id,
                    f"row {event.id} differs from the checkpoint of {checkpoint.at}: the chain was rewritten",
                )
            keyed_seen = keyed_seen or event.key_id is not None
            prev, expected_id, checked, last_id = event.hash, event.id + 1, checked + 1, event.id
        session.expunge_all()
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_id != last_id or head.last_hash != prev):
        return ChainReport(
            checked, last_id + 1, f"rows after {last_id} were removed (head is at {head.last_id})"
        )
    newest = max(checkpoints, key=lambda c: c.last_id, default=None)
    if newest is not None and newest.last_id > last_id:
        return ChainReport(
            checked,
            last_id + 1,
            f"rows after {last_id} were removed (the checkpoint of {newest.at} saw row {newest.last_id})",
        )
    return ChainReport(
        checked, None, sealed_through=newest.last_id if newest else None, verified_head=(last_id, prev)
    )


def keys_problem(session: Session) -> str | None:
    """Whether this process's keys seal like the ones that sealed the newest row: replicas with
    different keys (each generated its own) would fork a chain that never verifies again."""
    keys = session_keys(session)
    newest = session.scalars(
        select(AuditEvent).where(AuditEvent.key_id.is_not(None)).order_by(AuditEvent.id.desc()).limit(1)
    ).first()
    if newest is None or newest.key_id is None:
        return None
    if newest.key_id not in keys.keys:
        return f"audit row {newest.id} is sealed with key {newest.key_id!r}, which this portal does not hold"
    if not keys.matches(
        newest.key_id, _message(newest.prev_hash, _fields(newest), newest.key_id), newest.hash
    ):
        return (
            f"audit row {newest.id} does not verify with this portal's key {newest.key_id!r}: another "
            "replica has other keys (set the same MODELFLEET_AUDIT_KEYS everywhere) or the row was changed"
        )
    return None


def head_of(session: Session) -> tuple[int, str]:
    """(last id, last hash) of the chain."""
    head = session.get(AuditHead, 1)
    return (head.last_id, head.last_hash) if head is not None else (0, GENESIS)


CSV_COLUMNS = (*HASHED_FIELDS, "key_id", "prev_hash", "hash")


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
