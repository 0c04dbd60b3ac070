"""Usage statistics: requests, tokens, cost and latency by API key, model, workspace and period.

`GET /api/workspaces/{ws}/usage` reports one workspace; `GET /api/usage` (platform admins) reports
every workspace and can group by workspace. Both have a CSV twin (`…/usage/export.csv`) taking the
same parameters. Figures are exact and current: rollups for the bulk of the range plus the usage rows
not rolled up yet (see `portal.usage.report`).

Who sees what: workspace admins (and platform admins) see every key of the workspace; a plain member
sees the usage of the keys they created, the same keys the API-key endpoints let them manage, and
naming another member's key answers 404 as it does there. Usage of a deleted key stays visible to
admins (the rows keep the key's id) but no longer to the member who created it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AfterValidator, BaseModel, Field, PlainSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth import AdminDep, PrincipalDep, SessionDep, workspace_for
from portal.errors import Invalid, NotFound
from portal.keys import utc_field
from portal.messages import msg
from portal.usage.export import to_csv
from portal.usage.measures import Sums
from portal.usage.report import DIMENSION_ORDER, Dimension, Line, Report, UsageQuery, usage_report
from store.buckets import Period, default_range, is_aligned
from store.db import utcnow
from store.models import ApiKey, Workspace, WorkspaceRole

router = APIRouter(prefix="/api", tags=["usage"])

MAX_HOURLY_RANGE = timedelta(days=31)  # 744 hourly buckets per group
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # keeps bucket arithmetic (a year back, a month on) in range
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

Money = Annotated[
    Decimal,
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    Field(description="exact decimal string, 9 places (sum of per-request costs at the prices in force)"),
]
WorkspaceGroup = Literal["api_key", "model", "period"]
PlatformGroup = Literal["workspace", "api_key", "model", "period"]


class UsageFigures(BaseModel):
    requests: int
    errors: int = Field(description="requests answered with a status >= 400 (rate limits included)")
    prompt_tokens: int
    completion_tokens: int = Field(description="includes reasoning tokens")
    cached_tokens: int = Field(description="part of prompt_tokens")
    reasoning_tokens: int = Field(description="part of completion_tokens")
    units: int = Field(
        0, description="images, audio seconds, characters spoken or documents reranked (per model: one kind)"
    )
    total_tokens: int = Field(description="prompt_tokens + completion_tokens")
    estimated_requests: int = Field(description="requests whose tokens the gateway counted itself")
    cost: Money
    avg_latency_ms: float | None
    avg_ttft_ms: float | None = Field(description="mean time to first token over requests that have one")


class UsageGroup(BaseModel):
    """What a line is about: the dimensions grouped by (the others are null)."""

    bucket: datetime | None = Field(
        None, description="start of the period bucket (UTC) when grouped by period"
    )
    workspace: str | None = None
    api_key: str | None = None
    api_key_name: str | None = Field(None, description="the key's name; null once the key is deleted")
    model: str | None = None


class UsageLine(UsageFigures, UsageGroup):  # the group's fields first (pydantic orders bases in reverse)
    pass


class UsageReportOut(BaseModel):
    since: datetime
    until: datetime
    period: Period
    group_by: list[str]
    items: list[UsageLine]
    totals: UsageFigures
    raw_rows: int = Field(description="usage rows read raw because the rollups had not reached them yet")


@dataclass(frozen=True)
class ReportParams:
    group_by: tuple[Dimension, ...]
    period: Period
    since: datetime | None
    until: datetime | None
    api_key: str | None
    model: str | None
    workspace: str | None = None


_SINCE = Query(description="inclusive, a whole UTC hour (or a date); default depends on `period`")
_UNTIL = Query(description="exclusive, a whole UTC hour (or a date); default: the end of the current hour")
_PERIOD = Query(description="bucket size when grouping by period: hour, day, week (ISO, Monday) or month")
_GROUP = Query(description="repeatable; lines are grouped by every dimension given")
UtcTime = Annotated[datetime | None, AfterValidator(utc_field)]


def workspace_params(
    group_by: Annotated[list[WorkspaceGroup], _GROUP] = ["period"],  # noqa: B006 (FastAPI copies it)
    period: Annotated[Period, _PERIOD] = "day",
    since: Annotated[UtcTime, _SINCE] = None,
    until: Annotated[UtcTime, _UNTIL] = None,
    api_key: Annotated[str | None, Query(max_length=16, description="one key's public id")] = None,
    model: Annotated[str | None, Query(max_length=128, description="one MaaS model id")] = None,
) -> ReportParams:
    return ReportParams(_ordered(group_by), period, since, until, api_key, model)


def platform_params(
    group_by: Annotated[list[PlatformGroup], _GROUP] = ["period"],  # noqa: B006
    period: Annotated[Period, _PERIOD] = "day",
    since: Annotated[UtcTime, _SINCE] = None,
    until: Annotated[UtcTime, _UNTIL] = None,
    workspace: Annotated[str | None, Query(max_length=63, description="one workspace")] = None,
    api_key: Annotated[str | None, Query(max_length=16, description="one key's public id")] = None,
    model: Annotated[str | None, Query(max_length=128, description="one MaaS model id")] = None,
) -> ReportParams:
    return ReportParams(_ordered(group_by), period, since, until, api_key, model, workspace)


WorkspaceParams = Annotated[ReportParams, Depends(workspace_params)]
PlatformParams = Annotated[ReportParams, Depends(platform_params)]


def _ordered(group_by: Sequence[str]) -> tuple[Dimension, ...]:
    return tuple(d for d in DIMENSION_ORDER if d in group_by)


def _range(p: ReportParams) -> tuple[datetime, datetime]:
    """The report's range, checked: whole hours (rollups are hourly), in order, not too many hours."""
    for name, given in (("since", p.since), ("until", p.until)):
        if given is None:
            continue
        if not EARLIEST <= given < LATEST:
            raise Invalid.field(
                name, msg("must be between {a} and {b}", a=f"{EARLIEST:%Y-%m-%d}", b=f"{LATEST:%Y-%m-%d}")
            )
        if not is_aligned(given, "hour"):
            raise Invalid.field(
                name, "must be a whole UTC hour (usage is kept per hour), e.g. 2026-11-01T10:00Z"
            )
    until = p.until or default_range(utcnow(), p.period)[1]
    # Without `since`, the default span ends at `until` and starts on a bucket boundary of `period`
    # (30 whole days back, 12 whole weeks, ...), whichever `until` was given: shifting today's span
    # back would start the first bucket mid-day, mid-week or mid-month.
    since = p.since or default_range(until, p.period)[0]
    if since >= until:
        if p.until is None:  # a `since` in the future, against the default `until`
            raise Invalid.field(
                "since",
                msg(
                    "must be before until (default: the end of this hour, {until})",
                    until=f"{until:%Y-%m-%dT%H:%MZ}",
                ),
            )
        raise Invalid.field("until", "must be after since")
    if "period" in p.group_by and p.period == "hour" and until - since > MAX_HOURLY_RANGE:
        raise Invalid.field(
            "since", msg("hourly reports cover at most {days} days; group by day", days=MAX_HOURLY_RANGE.days)
        )
    return since, until


def _figures(s: Sums) -> dict[str, object]:
    return {
        "requests": s.requests,
        "errors": s.errors,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "cached_tokens": s.cached_tokens,
        "reasoning_tokens": s.reasoning_tokens,
        "units": s.units,
        "total_tokens": s.total_tokens,
        "estimated_requests": s.estimated_requests,
        "cost": s.cost,
        "avg_latency_ms": s.avg_latency_ms,
        "avg_ttft_ms": s.avg_ttft_ms,
    }


def _key_names(session: Session, lines: list[Line]) -> dict[str, str]:
    ids = sorted({line.api_key for line in lines if line.api_key})
    if not ids:
        return {}
    rows = session.execute(select(ApiKey.public_id, ApiKey.name).where(ApiKey.public_id.in_(ids)))
    return {public_id: name for public_id, name in rows.tuples()}


def _report(session: Session, q: UsageQuery) -> tuple[Report, dict[str, str]]:
    report = usage_report(session, q)
    return report, _key_names(session, report.lines)


def _json(session: Session, q: UsageQuery) -> UsageReportOut:
    report, names = _report(session, q)
    items = [
        UsageLine(
            bucket=line.bucket,
            workspace=line.workspace,
            api_key=line.api_key,
            api_key_name=names.get(line.api_key) if line.api_key else None,
            model=line.model,
            **_figures(line.sums),  # type: ignore[arg-type]
        )
        for line in report.lines
    ]
    return UsageReportOut(
        since=q.since,
        until=q.until,
        period=q.period,
        group_by=list(q.group_by),
        items=items,
        totals=UsageFigures(**_figures(report.totals)),  # type: ignore[arg-type]
        raw_rows=report.raw_rows,
    )


def _workspace_query(session: Session, principal: PrincipalDep, ws: str, p: ReportParams) -> UsageQuery:
    workspace = workspace_for(session, principal, ws)
    keys: set[str] | None = None
    if principal.role_in(ws) != WorkspaceRole.admin:
        keys = set(
            session.scalars(
                select(ApiKey.public_id).where(
                    ApiKey.workspace_id == workspace.id, ApiKey.created_by == principal.username
                )
            )
        )
        if p.api_key is not None and p.api_key not in keys:
            raise NotFound(msg("API key {key!r} not found in workspace {ws!r}", key=p.api_key, ws=ws))
    since, until = _range(p)
    return UsageQuery(
        since=since,
        until=until,
        group_by=p.group_by,
        period=p.period,
        workspaces=[workspace.slug],
        api_keys=keys,
        api_key=p.api_key,
        model=p.model,
    )


def _platform_query(session: Session, p: ReportParams) -> UsageQuery:
    if (
        p.workspace is not None
        and session.scalar(select(Workspace.id).where(Workspace.slug == p.workspace)) is None
    ):
        raise NotFound(msg("workspace {slug!r} not found", slug=p.workspace))
    since, until = _range(p)
    return UsageQuery(
        since=since,
        until=until,
        group_by=p.group_by,
        period=p.period,
        workspaces=None if p.workspace is None else [p.workspace],
        api_key=p.api_key,
        model=p.model,
    )


def _csv(session: Session, q: UsageQuery, scope: str) -> Response:
    report, names = _report(session, q)
    stamp = f"{q.since:%Y%m%dT%H}Z-{q.until:%Y%m%dT%H}Z"
    return Response(
        to_csv(q, report, names),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="usage-{scope}-{stamp}.csv"'},
    )


@router.get("/workspaces/{ws}/usage", response_model=UsageReportOut)
def workspace_usage(
    ws: str, params: WorkspaceParams, session: SessionDep, principal: PrincipalDep
) -> UsageReportOut:
    return _json(session, _workspace_query(session, principal, ws, params))


@router.get(
    "/workspaces/{ws}/usage/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the report as CSV, one line per group"}},
)
def workspace_usage_csv(
    ws: str, params: WorkspaceParams, session: SessionDep, principal: PrincipalDep
) -> Response:
    return _csv(session, _workspace_query(session, principal, ws, params), ws)


@router.get("/usage", response_model=UsageReportOut)
def platform_usage(params: PlatformParams, session: SessionDep, _: AdminDep) -> UsageReportOut:
    return _json(session, _platform_query(session, params))


@router.get(
    "/usage/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the report as CSV, one line per group"}},
)
def platform_usage_csv(params: PlatformParams, session: SessionDep, _: AdminDep) -> Response:
    return _csv(session, _platform_query(session, params), params.workspace or "all")
