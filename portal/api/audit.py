"""Reading the audit log: a filtered, paged list (newest first), a CSV export, and chain verification.

Who sees which rows: platform admins see every row; everyone else sees the rows of the workspaces
they administer plus their own actions (a plain member sees only what they did themselves). Naming a
workspace one does not belong to answers 404, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel
from sqlalchemy import Select, false, func, or_, select
from sqlalchemy.orm import Session

from portal import audit, audit_checkpoint
from portal.api.common import Page, PageParams, page_params
from portal.auth import AdminDep, Principal, PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.keys import utc_field
from store.models import AuditEvent, WorkspaceRole

router = APIRouter(prefix="/api/audit", tags=["audit"])
EXPORT_BATCH = 1000


class AuditFilters(BaseModel):
    action: list[str] | None = None
    actor: str | None = None
    workspace: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    result: Literal["success", "failure"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None


def audit_filters(
    action: Annotated[list[str] | None, Query(description="one or more event names")] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    workspace: Annotated[str | None, Query(max_length=63)] = None,
    resource_type: Annotated[str | None, Query(max_length=32)] = None,
    resource_id: Annotated[str | None, Query(max_length=255)] = None,
    result: Annotated[Literal["success", "failure"] | None, Query()] = None,
    since: Annotated[
        datetime | None, Query(description="inclusive; without an offset, UTC"), AfterValidator(utc_field)
    ] = None,
    until: Annotated[
        datetime | None, Query(description="exclusive; without an offset, UTC"), AfterValidator(utc_field)
    ] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditFilters:
    return AuditFilters(
        action=action,
        actor=actor,
        workspace=workspace,
        resource_type=resource_type,
        resource_id=resource_id,
        result=result,
        since=since,
        until=until,
        request_id=request_id,
    )


FiltersDep = Annotated[AuditFilters, Depends(audit_filters)]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    workspace: str | None
    action: str
    resource_type: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    result: str
    detail: str
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    broken_at: int | None
    reason: str
    sealed_through: int | None = None  # the row of the newest signed checkpoint the chain matched


def _utc(value: datetime) -> datetime:
    """Stored times are UTC (SQLite keeps them without an offset), so bounds are compared in UTC."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _query(session: Session, principal: Principal, f: AuditFilters) -> Select[AuditEvent]:
    query = select(AuditEvent)
    if f.workspace is not None:
        workspace_for(session, principal, f.workspace)  # 404 to outsiders
        query = query.where(AuditEvent.workspace == f.workspace)
    if not principal.is_platform_admin:
        administered = [ws for ws, role in principal.roles.items() if role == WorkspaceRole.admin]
        query = query.where(
            or_(
                AuditEvent.actor == principal.username,
                AuditEvent.workspace.in_(administered) if administered else false(),
            )
        )
    if f.action:
        query = query.where(AuditEvent.action.in_(f.action))
    for column, value in (
        (AuditEvent.actor, f.actor),
        (AuditEvent.resource_type, f.resource_type),
        (AuditEvent.resource_id, f.resource_id),
        (AuditEvent.result, f.result),
        (AuditEvent.request_id, f.request_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if f.since is not None:
        query = query.where(AuditEvent.at >= f.since)
    if f.until is not None:
        query = query.where(AuditEvent.at < f.until)
    return query


def _out(e: AuditEvent) -> AuditOut:
    return AuditOut(
        id=e.id,
        at=_utc(e.at),
        actor=e.actor,
        workspace=e.workspace,
        action=e.action,
        resource_type=e.resource_type,
        resource_id=e.resource_id,
        before=e.before,
        after=e.after,
        request_id=e.request_id,
        result=e.result,
        detail=e.detail,
        hash=e.hash,
    )


@router.get("", response_model=Page[AuditOut])
def list_audit(
    session: SessionDep,
    principal: PrincipalDep,
    filters: FiltersDep,
    paging: Annotated[PageParams, Depends(page_params)],
) -> Page[AuditOut]:
    """Newest first."""
    query = _query(session, principal, filters)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(AuditEvent.id.desc()).offset(paging.offset).limit(paging.page_size)
    ).all()
    return Page(items=[_out(e) for e in rows], total=total, page=paging.page, page_size=paging.page_size)


@router.get("/export.csv", response_class=StreamingResponse)
def export_audit(
    session: SessionDep, principal: PrincipalDep, services: ServicesDep, filters: FiltersDep
) -> StreamingResponse:
    """The same rows as the list, oldest first (chain order, so the hashes can be re-checked from
    the file), streamed in batches so an export of millions of rows needs little memory."""
    base = _query(session, principal, filters)  # authorises now, before the first byte is sent

    def rows() -> Iterator[AuditEvent]:
        last = 0
        with services.sessions() as own:
            while True:
                batch = own.scalars(
                    base.where(AuditEvent.id > last).order_by(AuditEvent.id).limit(EXPORT_BATCH)
                ).all()
                if not batch:
                    return
                yield from batch
                last = batch[-1].id
                own.expunge_all()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        audit.to_csv(rows()),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )


@router.get("/verify", response_model=VerifyOut)
def verify_audit(session: SessionDep, services: ServicesDep, _: AdminDep) -> VerifyOut:
    """Walk the whole chain and compare it with the newest signed checkpoint; the first row that was
    changed, removed or reordered, or rows cut from the end, are reported. An intact chain is
    checkpointed anew."""
    report = audit_checkpoint.verify(services, session)
    return VerifyOut(
        ok=report.ok,
        checked=report.checked,
        broken_at=report.broken_at,
        reason=report.reason,
        sealed_through=report.sealed_through,
    )
