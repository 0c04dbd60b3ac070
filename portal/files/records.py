"""Model-files requests in SQL: request, transitions (each one kept as history), retry, cancel, delete,
each audited; and the read shape the API and console show.

A request names a plaza model and regions. There is one request per (stack, model): asking again
for the same source, revision and patterns joins it (regions already queued or downloading are
shared, never downloaded twice); asking for another revision while a copy is running is refused
until that copy is cancelled or done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.spec import Region
from portal import audit
from portal.files import targets
from portal.files.progress import Progress
from store.db import utcnow
from store.models import ModelFiles, ModelFilesEvent, ModelFilesLocation
from store.models.files import ACTIVE_STATES

RESOURCE = "ModelFiles"


class FilesConflict(Exception):
    """The request conflicts with a running copy (the message says which and what to do)."""


@dataclass(frozen=True)
class Wanted:
    stack: str
    model_id: str
    source: str
    repository: str
    revision: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]


def same_files(row: ModelFiles, wanted: Wanted) -> bool:
    return (row.source, row.repository, row.revision, tuple(row.include), tuple(row.exclude)) == (
        wanted.source,
        wanted.repository,
        wanted.revision,
        wanted.include,
        wanted.exclude,
    )


def request(
    session: Session, wanted: Wanted, regions: Sequence[Region], actor: str
) -> tuple[ModelFiles, list[str]]:
    """Queue `wanted` into `regions`; returns the request and the regions that joined a copy already
    queued, running or ready (shared)."""
    row = session.scalar(
        select(ModelFiles).where(ModelFiles.stack == wanted.stack, ModelFiles.model_id == wanted.model_id)
    )
    if row is not None and not same_files(row, wanted):
        running = [loc.region for loc in row.locations if loc.state in ACTIVE_STATES]
        if running:
            raise FilesConflict(
                f"model {wanted.model_id!r} is being copied from "
                f"{row.source}:{row.repository}@{row.revision or '-'} into {', '.join(running)}; "
                "cancel that copy before asking for other files"
            )
    before = view(row) if row is not None else None
    if row is None:
        row = ModelFiles(stack=wanted.stack, model_id=wanted.model_id, requested_by=actor)
        session.add(row)
    changed = not same_files(row, wanted) if row.id is not None else True
    row.source, row.repository, row.revision = wanted.source, wanted.repository, wanted.revision
    row.include, row.exclude = list(wanted.include), list(wanted.exclude)
    if changed:
        row.commit = None
    row.requested_by = actor
    session.flush()
    shared: list[str] = []
    by_region = {loc.region: loc for loc in row.locations}
    for region in regions:
        loc = by_region.get(region.name)
        if loc is not None and not changed and loc.state in (*ACTIVE_STATES, "ready"):
            shared.append(region.name)
            continue
        if loc is None:
            loc = ModelFilesLocation(
                region=region.name, runtime=region.runtime, uri=targets.uri(region, wanted.model_id)
            )
            row.locations.append(loc)
        loc.runtime, loc.uri = region.runtime, targets.uri(region, wanted.model_id)
        _queue(session, row, loc, "requested")
    if changed:  # the other regions' stores hold the files asked before: they are copied again too
        asked = {r.name for r in regions}
        for loc in row.locations:
            if loc.region not in asked and loc.id is not None:
                _queue(session, row, loc, "the requested files changed (source, revision or patterns)")
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="RequestModelFiles",
        resource_type=RESOURCE,
        resource_id=row.id,
        before=before,
        after=view(row),
        detail=f"{wanted.model_id} into {', '.join(r.name for r in regions)}"
        + (f" (joined: {', '.join(shared)})" if shared else ""),
    )
    return row, shared


def _queue(session: Session, row: ModelFiles, loc: ModelFilesLocation, reason: str) -> None:
    loc.bytes_done = loc.files_done = 0
    loc.rate, loc.eta_seconds = 0.0, None
    loc.cancel_requested = False
    loc.worker = None
    transition(session, row, loc, "queued", reason)


def transition(
    session: Session, row: ModelFiles, loc: ModelFilesLocation, state: str, reason: str | None = None
) -> None:
    """Set `loc`'s state (a change is kept as history); the same state only refreshes the reason."""
    if loc.state != state or loc.id is None:
        loc.state_since = utcnow()
        session.add(
            ModelFilesEvent(
                files_id=row.id,
                stack=row.stack,
                model_id=row.model_id,
                region=loc.region,
                state=state,
                reason=reason,
                bytes_done=loc.bytes_done,
                files_done=loc.files_done,
            )
        )
    loc.state, loc.reason = state, reason


def report(loc: ModelFilesLocation, p: Progress) -> None:
    """The downloader's progress onto the row (the phase is the caller's to turn into a transition)."""
    loc.bytes_done, loc.bytes_total = p.bytes_done, p.bytes_total
    loc.files_done, loc.files_total = p.files_done, p.files_total
    loc.rate, loc.eta_seconds = p.rate, p.eta_seconds
    loc.heartbeat_at = utcnow()


def finish(
    session: Session,
    row: ModelFiles,
    loc: ModelFilesLocation,
    state: str,
    reason: str | None,
    commit: str | None,
) -> None:
    """A copy ended: ready, failed (reason) or cancelled; audited as the system's doing."""
    if commit:
        row.commit = commit[:64]  # a commit sha; an https file's etag could be longer
    loc.worker = None
    loc.rate, loc.eta_seconds = 0.0, (0.0 if state == "ready" else None)
    transition(session, row, loc, state, reason)
    action = {"ready": "ModelFilesReady", "failed": "ModelFilesFailed", "cancelled": "ModelFilesCancelled"}[
        state
    ]
    audit.record(
        session,
        actor="system",
        action=action,
        resource_type=RESOURCE,
        resource_id=row.id,
        after={"region": loc.region, "state": state, "commit": row.commit, "bytes": loc.bytes_done},
        result="success" if state != "failed" else "failure",
        detail=f"{row.model_id} in {loc.region}" + (f": {reason}" if reason else ""),
    )


def cancel(session: Session, row: ModelFiles, regions: Sequence[str], actor: str) -> list[str]:
    """Cancel the queued or running copies in `regions` (all when empty); the regions cancelled."""
    done: list[str] = []
    for loc in row.locations:
        if (regions and loc.region not in regions) or loc.state not in ACTIVE_STATES:
            continue
        if loc.state == "queued":
            transition(session, row, loc, "cancelled", f"cancelled by {actor}")
        elif loc.runtime == "kubernetes":
            # Its Job leaves the stack file, so the stack update deletes it: it may never report
            # again. Until then, its reports are answered with the cancel, so it stops by itself.
            loc.cancel_requested = True
            transition(
                session, row, loc, "cancelled", f"cancelled by {actor}; the stack update removes its Job"
            )
        else:  # the downloader stops at its next read and reports `cancelled` itself
            loc.cancel_requested = True
        done.append(loc.region)
    _audit_regions(session, row, actor, "CancelModelFiles", done)
    return done


def retry(session: Session, row: ModelFiles, regions: Sequence[str], actor: str) -> list[str]:
    """Queue again the failed or cancelled copies in `regions` (all such when empty)."""
    done: list[str] = []
    for loc in row.locations:
        if (regions and loc.region not in regions) or loc.state not in ("failed", "cancelled"):
            continue
        _queue(session, row, loc, f"retried by {actor}")
        done.append(loc.region)
    _audit_regions(session, row, actor, "RetryModelFiles", done)
    return done


def _audit_regions(session: Session, row: ModelFiles, actor: str, action: str, regions: list[str]) -> None:
    """What an ops action did to the copies in `regions` (nothing to say when it touched none)."""
    if regions:
        audit.record(
            session,
            actor=actor,
            action=action,
            resource_type=RESOURCE,
            resource_id=row.id,
            after={"regions": regions},
            detail=f"{row.model_id} in {', '.join(regions)}",
        )


def delete(session: Session, row: ModelFiles, actor: str) -> None:
    """Forget the request (running copies are asked to stop first by the caller's cancel, what they
    wrote is purged by the caller, `portal.files.purge`); the history stays."""
    before = view(row)
    audit.record(
        session,
        actor=actor,
        action="DeleteModelFiles",
        resource_type=RESOURCE,
        resource_id=row.id,
        before=before,
        detail=row.model_id,
    )
    session.delete(row)


def location_view(loc: ModelFilesLocation) -> dict[str, Any]:
    return {
        "region": loc.region,
        "runtime": loc.runtime,
        "uri": loc.uri,
        "state": loc.state,
        "reason": loc.reason,
        "bytes_done": loc.bytes_done,
        "bytes_total": loc.bytes_total,
        "files_done": loc.files_done,
        "files_total": loc.files_total,
        "rate": loc.rate,
        "eta_seconds": loc.eta_seconds,
        "attempt": loc.attempt,
        "cancel_requested": loc.cancel_requested,
        "state_since": loc.state_since.isoformat() if loc.state_since else None,
        "heartbeat_at": loc.heartbeat_at.isoformat() if loc.heartbeat_at else None,
    }


def view(row: ModelFiles) -> dict[str, Any]:
    return {
        "id": row.id,
        "stack": row.stack,
        "model_id": row.model_id,
        "source": row.source,
        "repository": row.repository,
        "revision": row.revision,
        "commit": row.commit,
        "include": list(row.include),
        "exclude": list(row.exclude),
        "requested_by": row.requested_by,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        "locations": [location_view(loc) for loc in row.locations],
    }


def history(session: Session, files_id: int, limit: int = 200) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ModelFilesEvent)
        .where(ModelFilesEvent.files_id == files_id)
        .order_by(ModelFilesEvent.id.desc())
        .limit(limit)
    )
    return [
        {
            "region": e.region,
            "state": e.state,
            "reason": e.reason,
            "bytes_done": e.bytes_done,
            "files_done": e.files_done,
            "at": e.at.isoformat(),
        }
        for e in rows
    ]


def describe(loc: ModelFilesLocation) -> str:
    """How far a region's copy is, in one line (for the deploy preflight)."""
    if loc.state in ("downloading", "verifying"):
        pct = 100.0 * loc.bytes_done / loc.bytes_total if loc.bytes_total else 0.0
        eta = (
            f", about {int(loc.eta_seconds)} s left"
            if loc.eta_seconds is not None and loc.state == "downloading"
            else ""
        )
        return (
            f"{loc.state}: {pct:.0f}% ({loc.bytes_done} of {loc.bytes_total} bytes, "
            f"{loc.files_done} of {loc.files_total} files){eta}"
        )
    if loc.state in ("failed", "cancelled"):
        return f"{loc.state}" + (f": {loc.reason}" if loc.reason else "")
    return loc.state


__all__ = [
    "FilesConflict",
    "Wanted",
    "cancel",
    "delete",
    "describe",
    "finish",
    "history",
    "location_view",
    "report",
    "request",
    "retry",
    "transition",
    "view",
]
