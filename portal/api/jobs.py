"""Stack jobs: their status, their progress as server-sent events, pull-request status sync, and the
GitHub webhook that reports merges and closes.

A user sees a job when one of its requests comes from one of their workspaces (admins see all), and
sees only those requests and their events: a coalesced job can carry other tenants' changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from portal.api.common import Page, PageParams, page_params
from portal.auth import Principal, PrincipalDep, ServicesDep, SessionDep
from portal.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from portal.messages import msg
from portal.services import Services
from portal.stacks import jobs
from portal.stacks.backends import BackendError
from store.models import JobEvent, StackJob, StackRequest, Workspace

router = APIRouter(prefix="/api", tags=["jobs"])

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
BATCH = 500


class JobRequestOut(BaseModel):
    id: int
    workspace: str | None
    serving: str
    action: str
    status: str
    error: str | None


class JobOut(BaseModel):
    id: int
    stack: str
    backend: str
    status: str = Field(description="queued, running, succeeded, failed")
    attempts: int
    error: str | None
    result: dict[str, Any] = Field(description="commit, pull_request {number, url, state}, update summary")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    requests: list[JobRequestOut]
    events: str


# -- visibility ---------------------------------------------------------------------------------------


def _visible(
    session: Session, principal: Principal, job_id: int
) -> tuple[StackJob, list[tuple[StackRequest, str | None]]]:
    job = session.get(StackJob, job_id)
    rows: list[tuple[StackRequest, str | None]] = [
        (r, slug)
        for r, slug in session.execute(
            select(StackRequest, Workspace.slug)
            .outerjoin(Workspace, Workspace.id == StackRequest.workspace_id)
            .where(StackRequest.job_id == job_id)
            .order_by(StackRequest.id)
        ).all()
    ]
    if job is not None and not principal.is_platform_admin:
        rows = [(r, slug) for r, slug in rows if slug is not None and slug in principal.roles]
        if not rows:
            job = None
    if job is None:
        raise NotFound(msg("job {id} not found", id=job_id))
    return job, rows


def _job_out(job: StackJob, rows: list[tuple[StackRequest, str | None]]) -> JobOut:
    return JobOut(
        id=job.id,
        stack=job.stack,
        backend=job.backend,
        status=job.status,
        attempts=job.attempts,
        error=job.error,
        result=job.result or {},
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        requests=[
            JobRequestOut(
                id=r.id, workspace=slug, serving=r.serving, action=r.action, status=r.status, error=r.error
            )
            for r, slug in rows
        ],
        events=f"/api/jobs/{job.id}/events",
    )


# -- endpoints ----------------------------------------------------------------------------------------


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    paging: Annotated[PageParams, Depends(page_params)],
    stack: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> Page[JobOut]:
    """Jobs, newest first: all of them for admins, those carrying your workspaces' requests otherwise."""
    with session.begin():
        query = select(StackJob)
        if not principal.is_platform_admin:
            mine = select(StackRequest.job_id).where(
                StackRequest.workspace_id.in_(list(principal.workspace_ids.values()))
            )
            query = query.where(StackJob.id.in_(mine))
        if stack:
            query = query.where(StackJob.stack == stack)
        if status:
            query = query.where(StackJob.status == status)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        ids = session.scalars(
            query.with_only_columns(StackJob.id)
            .order_by(StackJob.id.desc())
            .offset(paging.offset)
            .limit(paging.page_size)
        ).all()
        items = [_job_out(*_visible(session, principal, i)) for i in ids]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: int, session: SessionDep, principal: PrincipalDep) -> JobOut:
    with session.begin():
        return _job_out(*_visible(session, principal, job_id))


@router.post("/jobs/{job_id}:sync", response_model=JobOut)
def sync_job(job_id: int, session: SessionDep, principal: PrincipalDep, services: ServicesDep) -> JobOut:
    """Ask GitHub about the job's pull request now: merged -> its requests are applied, closed
    unmerged -> rejected (the worker does this periodically, the webhook at once)."""
    with session.begin():
        job, _ = _visible(session, principal, job_id)
        has_pr = isinstance((job.result or {}).get("pull_request"), dict)
    if not has_pr:
        raise Conflict(msg("job {id} has no pull request to sync", id=job_id))
    try:
        jobs.sync_pull_request(services, job_id, actor=principal.username)
    except BackendError as exc:
        raise Unavailable(str(exc)) from exc
    session.expire_all()  # the sync wrote through its own session; read the job afresh
    with session.begin():
        return _job_out(*_visible(session, principal, job_id))


def _sse(event: JobEvent) -> str:
    data = {
        "id": event.id,
        "job_id": event.job_id,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "message": event.message,
        "data": event.data,
    }
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data, default=str)}\n\n"


def _stream(services: Services, job_id: int, after: int, workspaces: set[str] | None) -> Iterator[str]:
    """Events after `after`, as they come, until the job has finished and every event is out."""
    last, quiet = after, 0.0
    yield "retry: 2000\n\n"
    while True:
        with services.sessions() as session, session.begin():
            # Status first: once it reads finished, every event of the job is already committed.
            status = session.scalar(select(StackJob.status).where(StackJob.id == job_id))
            events = session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.id > last)
                .order_by(JobEvent.id)
                .limit(BATCH)
            ).all()
        for event in events:
            last = event.id
            tenant = (event.data or {}).get("workspace")
            if workspaces is None or tenant is None or tenant in workspaces:
                yield _sse(event)
        if len(events) < BATCH and (status is None or status in jobs.TERMINAL):
            yield f"event: end\ndata: {json.dumps({'job_id': job_id, 'status': status})}\n\n"
            return
        if events:
            quiet = 0.0
            continue
        time.sleep(POLL_SECONDS)
        quiet += POLL_SECONDS
        if quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
def job_events(
    job_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header(max_length=20, description="resume after this event")] = None,
) -> StreamingResponse:
    """The job's progress as server-sent events (`id:`, `event:` = kind, `data:` JSON), ending with
    an `end` event once the job has finished. Send `Last-Event-ID` to resume."""
    with session.begin():
        _visible(session, principal, job_id)
    after = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else 0
    workspaces = None if principal.is_platform_admin else set(principal.roles)
    return StreamingResponse(
        _stream(services, job_id, after, workspaces),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- GitHub webhook -----------------------------------------------------------------------------------


def _jobs_for_pull_request(services: Services, number: int) -> list[int]:
    out: list[int] = []
    for job_id in jobs.proposed_jobs(services):
        with services.sessions() as session, session.begin():
            job = session.get(StackJob, job_id)
            pr = (job.result or {}).get("pull_request") if job is not None else None
        if isinstance(pr, dict) and pr.get("number") == number:
            out.append(job_id)
    return out


@router.post("/webhooks/github")
async def github_webhook(
    request: Request,
    services: ServicesDep,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
    x_github_event: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """GitHub's `pull_request` events (set the webhook's secret to MODELFLEET_GITHUB_WEBHOOK_SECRET):
    a closed pull request of a job marks its requests applied (merged) or rejected. The signature
    (`X-Hub-Signature-256`, HMAC-SHA256 of the body) is the only credential, so without a configured
    secret every call is refused."""
    settings = services.settings
    if settings.github_webhook_secret is None:
        raise Forbidden("webhooks are refused: MODELFLEET_GITHUB_WEBHOOK_SECRET is not set")
    body = await request.body()
    secret = settings.github_webhook_secret.get_secret_value().encode()
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not x_hub_signature_256 or not hmac.compare_digest(expected, x_hub_signature_256):
        raise Forbidden("X-Hub-Signature-256 is missing or does not match the body")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise Invalid.field("body", "not JSON") from exc
    if x_github_event == "ping":
        return {"status": "pong"}
    if x_github_event != "pull_request" or not isinstance(payload, dict) or payload.get("action") != "closed":
        return {"status": "ignored"}
    repository = str((payload.get("repository") or {}).get("full_name", ""))
    if settings.github_repository and repository.lower() != settings.github_repository.lower():
        return {"status": "ignored", "reason": f"not {settings.github_repository}"}
    pr = payload.get("pull_request") or {}
    number = pr.get("number")
    if not isinstance(number, int):
        raise Invalid.field("pull_request.number", "missing")
    state = "merged" if pr.get("merged") else "closed"
    recorded = []
    for job_id in await run_in_threadpool(_jobs_for_pull_request, services, number):
        if await run_in_threadpool(jobs.record_pull_request, services, job_id, state, actor="github-webhook"):
            recorded.append(job_id)
    return {"status": state, "jobs": recorded}
