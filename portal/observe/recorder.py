"""Write what an observer saw: replica rows, the placement's summary, history, audit, the change feed.

Every runtime (kubernetes watcher, local supervisor) reports a placement's replicas through `record`
in one transaction. Only differences are written: a replica whose state did not change keeps its row
and its `state_since`; each transition (of a replica or of the placement) adds a `ServingEvent`; a
replica or placement that enters `failed` is audited as a system event; when what the gateway may
route to changed (ready count, ready addresses), the change feed is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from portal import audit
from portal.observe.states import ReplicaObservation, State, summarise
from store.db import utcnow
from store.feed import announce
from store.models import ServingEvent, ServingPlacement, ServingReplica

ACTOR = "system:observer"


def record(
    session: Session,
    placement: ServingPlacement,
    observed: Sequence[ReplicaObservation],
    *,
    now: datetime | None = None,
) -> bool:
    """Bring `placement`'s rows to `observed`; True when anything routable changed."""
    now = now or utcnow()
    before = _routable(placement)
    rows = {r.name: r for r in placement.replicas}
    for seen in observed:
        row = rows.pop(seen.name, None)
        if row is None:
            row = ServingReplica(name=seen.name, state=seen.state.value, state_since=now)
            placement.replicas.append(row)
            _transition(session, placement, seen, now)
        elif row.state != seen.state.value:
            row.state, row.state_since = seen.state.value, now
            _transition(session, placement, seen, now)
        row.reason, row.message, row.url = seen.reason, seen.message, seen.url
        row.restarts, row.exit_code, row.details = seen.restarts, seen.exit_code, dict(seen.details)
    for gone in rows.values():
        placement.replicas.remove(gone)
    summary = summarise(placement.desired_replicas, observed)
    if placement.state != summary.state.value:
        placement.state, placement.state_since = summary.state.value, now
        session.add(_event(placement, None, summary.state, summary.reason, summary.message, now))
        if summary.state is State.FAILED:
            _audit_failure(session, placement, None, summary.reason, summary.message)
    placement.ready_replicas = summary.ready
    placement.reason, placement.message = summary.reason, summary.message
    placement.observed_at = now
    changed = _routable(placement) != before
    if changed:
        announce(session, f"{placement.stack}/{placement.serving}")
    return changed


def _routable(placement: ServingPlacement) -> tuple[object, ...]:
    ready = sorted((r.name, r.url) for r in placement.replicas if r.state == State.READY)
    return (placement.state, placement.ready_replicas, placement.desired_replicas, tuple(ready))


def _transition(
    session: Session, placement: ServingPlacement, seen: ReplicaObservation, now: datetime
) -> None:
    session.add(_event(placement, seen.name, seen.state, seen.reason, seen.message, now))
    if seen.state is State.FAILED:
        _audit_failure(session, placement, seen.name, seen.reason, seen.message)


def _event(
    placement: ServingPlacement,
    replica: str | None,
    state: State,
    reason: str | None,
    message: str | None,
    now: datetime,
) -> ServingEvent:
    return ServingEvent(
        stack=placement.stack,
        serving=placement.serving,
        workspace=placement.workspace,
        region=placement.region,
        pool=placement.pool,
        replica=replica,
        state=state.value,
        reason=reason,
        message=message,
        at=now,
    )


def _audit_failure(
    session: Session,
    placement: ServingPlacement,
    replica: str | None,
    reason: str | None,
    message: str | None,
) -> None:
    where = f"{placement.stack}/{placement.serving}/{placement.region}/{placement.pool}"
    audit.record(
        session,
        actor=ACTOR,
        action="ServingFailed",
        resource_type="Serving",
        resource_id=where + (f"/{replica}" if replica else ""),
        workspace=placement.workspace,
        after={"state": "failed", "reason": reason, "message": (message or "")[:2000]},
        result="failure",
        detail=f"{reason or 'Failed'}: {(message or '')[:500]}",
    )
