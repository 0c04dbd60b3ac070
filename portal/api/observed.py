"""What a serving is observed doing: its status, replicas, history of transitions (also streamed as
server-sent events) and its replicas' logs. Scoped like every servings route: a workspace's members
see its servings; another workspace's serving is a 404.

Everything here reads what the region observers recorded (`portal/observe/recorder.py`); nothing is
inferred from the desired state but the `committed` a serving shows until an observer reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from portal.api.common import Page, PageParams, page_params
from portal.auth import Principal, PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.errors import Invalid, NotFound, Unsupported
from portal.messages import language, msg, translate
from portal.observe import status as observed
from portal.observe.logs import LogMissing, LogsUnavailable, log_source_for
from portal.services import Services
from portal.serving_models import resolve_stack
from store.models import ServingEvent, ServingPlacement, ServingReplica
from store.vocabulary import badge

router = APIRouter(prefix="/api/workspaces/{ws}/servings/{name}", tags=["servings"])

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 300  # a stream ends after this; EventSource reconnects (resuming with Last-Event-ID)
TAIL_DEFAULT = 200
TAIL_MAX = 5000
# Replica details shown to users; the rest (log paths, process ids) stays with the control plane.
PUBLIC_DETAILS = ("node", "image", "pod", "group", "engine")

StackQuery = Annotated[
    str | None, Query(max_length=63, description="the stack; default: the only one, if there is one")
]


class PlacementStatusOut(BaseModel):
    region: str
    pool: str
    runtime: str = Field(description="kubernetes or local")
    state: str = Field(
        description="committed (nothing observed yet), pending, pulling, downloading, loading, ready, "
        "degraded, failed, stopped"
    )
    reason: str | None = Field(description="a machine word: Unschedulable, ErrImagePull, OOMKilled …")
    message: str | None = Field(description="the cluster's or the process's own words")
    ready: int
    desired: int
    since: datetime = Field(description="when the placement entered its state")
    observed_at: datetime | None = Field(description="the observer's last report; null: never")
    restarts: int = Field(description="restarts of its replicas, summed")


class StatusOut(BaseModel):
    serving: str
    stack: str
    workspace: str
    state: str = Field(description="the placements summed up (same words as a placement's state)")
    badge: str = Field(
        description="the state in the console's words: committed, starting, ready, degraded, failed, stopped"
    )
    reason: str | None
    message: str | None
    since: datetime | None
    ready: int
    desired: int
    placements: list[PlacementStatusOut]


class ReplicaOut(BaseModel):
    region: str
    pool: str
    name: str
    state: str
    reason: str | None
    message: str | None
    url: str | None = Field(description="where the replica answers (local regions)")
    restarts: int
    exit_code: int | None
    since: datetime
    updated_at: datetime
    details: dict[str, Any] = Field(description="node, image, pod … as the runtime reports them")


class ReplicasOut(BaseModel):
    items: list[ReplicaOut]


class EventOut(BaseModel):
    id: int
    at: datetime
    region: str
    pool: str
    replica: str | None = Field(description="null: a transition of the placement")
    state: str
    reason: str | None
    message: str | None


class LogOut(BaseModel):
    replica: str
    previous: bool
    lines: list[str]
    note: str | None = Field(description="why the log is empty, when it is")


# -- reading ------------------------------------------------------------------------------------------


def _placements(
    session: Session, principal: Principal, ws: str, stack: str, name: str
) -> list[ServingPlacement]:
    """The serving's placement rows; 404 unless it has some (or had: its history) in `ws`."""
    workspace = workspace_for(session, principal, ws)
    rows = observed.placements_of(session, stack, workspace.slug, [name]).get(name, [])
    if not rows and not _has_history(session, stack, workspace.slug, name):
        raise NotFound(msg("serving {name!r} not found in workspace {ws!r}", name=name, ws=ws))
    return rows


def _has_history(session: Session, stack: str, workspace: str, name: str) -> bool:
    found = session.scalar(select(ServingEvent.id).where(*_events_of(stack, workspace, name)).limit(1))
    return found is not None


def _events_of(stack: str, workspace: str, name: str) -> tuple[Any, ...]:
    return (ServingEvent.stack == stack, ServingEvent.workspace == workspace, ServingEvent.serving == name)


def status_of(stack: str, workspace: str, name: str, rows: list[ServingPlacement]) -> StatusOut:
    summary = observed.overall(rows)
    state = summary.state.value if rows else "deleted"  # placements gone, history left: deleted
    return StatusOut(
        serving=name,
        stack=stack,
        workspace=workspace,
        state=state,
        badge=badge(state),
        reason=summary.reason,
        message=summary.message,
        since=summary.since,
        ready=summary.ready,
        desired=summary.desired,
        placements=[
            PlacementStatusOut(
                region=p.region,
                pool=p.pool,
                runtime=p.runtime,
                state=p.state,
                reason=p.reason,
                message=p.message,
                ready=p.ready_replicas,
                desired=p.desired_replicas,
                since=p.state_since,
                observed_at=p.observed_at,
                restarts=sum(r.restarts for r in p.replicas),
            )
            for p in rows
        ],
    )


def _replica_out(p: ServingPlacement, r: ServingReplica) -> ReplicaOut:
    return ReplicaOut(
        region=p.region,
        pool=p.pool,
        name=r.name,
        state=r.state,
        reason=r.reason,
        message=r.message,
        url=r.url,
        restarts=r.restarts,
        exit_code=r.exit_code,
        since=r.state_since,
        updated_at=r.updated_at,
        details={k: v for k, v in (r.details or {}).items() if k in PUBLIC_DETAILS},
    )


def _event_out(e: ServingEvent) -> EventOut:
    return EventOut(
        id=e.id,
        at=e.at,
        region=e.region,
        pool=e.pool,
        replica=e.replica,
        state=e.state,
        reason=e.reason,
        message=e.message,
    )


# -- endpoints ----------------------------------------------------------------------------------------


@router.get("/status", response_model=StatusOut)
def serving_status(
    ws: str,
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    stack: StackQuery = None,
) -> StatusOut:
    """Per placement: observed state, reason, message, ready/desired replicas, since when, restarts;
    and the serving's state summed up (`committed` until an observer reports)."""
    stack_name = resolve_stack(services.repository, stack)
    with session.begin():
        rows = _placements(session, principal, ws, stack_name, name)
        return status_of(stack_name, ws, name, rows)


@router.get("/replicas", response_model=ReplicasOut)
def serving_replicas(
    ws: str,
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    stack: StackQuery = None,
) -> ReplicasOut:
    """Every replica of every placement, as last observed."""
    stack_name = resolve_stack(services.repository, stack)
    with session.begin():
        rows = _placements(session, principal, ws, stack_name, name)
        return ReplicasOut(items=[_replica_out(p, r) for p in rows for r in p.replicas])


@router.get("/events", response_model=Page[EventOut])
def serving_events(
    ws: str,
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    paging: Annotated[PageParams, Depends(page_params)],
    stack: StackQuery = None,
) -> Page[EventOut]:
    """The serving's transitions (placements and replicas), newest first."""
    stack_name = resolve_stack(services.repository, stack)
    with session.begin():
        _placements(session, principal, ws, stack_name, name)  # 404 unless the serving is theirs
        where = _events_of(stack_name, ws, name)
        total = session.scalar(select(func.count(ServingEvent.id)).where(*where)) or 0
        rows = session.scalars(
            select(ServingEvent)
            .where(*where)
            .order_by(ServingEvent.id.desc())
            .offset(paging.offset)
            .limit(paging.page_size)
        ).all()
        items = [_event_out(e) for e in rows]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, ensure_ascii=False)}\n\n"


def _read_since(
    services: Services, stack: str, workspace: str, name: str, after: int | None
) -> tuple[StatusOut, list[EventOut]]:
    """The serving's status now, and its transitions after the event `after` (none when None)."""
    with services.sessions() as session, session.begin():
        events = (
            []
            if after is None
            else session.scalars(
                select(ServingEvent)
                .where(*_events_of(stack, workspace, name), ServingEvent.id > after)
                .order_by(ServingEvent.id)
                .limit(500)
            ).all()
        )
        rows = observed.placements_of(session, stack, workspace, [name]).get(name, [])
        return status_of(stack, workspace, name, rows), [_event_out(e) for e in events]


def _last_event_id(services: Services, stack: str, workspace: str, name: str) -> int:
    with services.sessions() as session, session.begin():
        last = session.scalar(select(func.max(ServingEvent.id)).where(*_events_of(stack, workspace, name)))
    return int(last or 0)


async def _status_stream(
    services: Services, stack: str, workspace: str, name: str, after: int | None, seconds: float
) -> AsyncIterator[str]:
    """`status` (the current state) first, then each new transition (`transition`) followed by the
    status it led to; keep-alive comments while nothing happens; `end` after `seconds`."""
    if after is None:
        after = await run_in_threadpool(_last_event_id, services, stack, workspace, name)
    yield "retry: 2000\n\n"
    status, _ = await run_in_threadpool(_read_since, services, stack, workspace, name, None)
    yield _sse("status", status.model_dump(mode="json"))
    deadline = time.monotonic() + seconds
    quiet = 0.0
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        status, events = await run_in_threadpool(_read_since, services, stack, workspace, name, after)
        if events:
            for event in events:
                after = event.id
                yield _sse("transition", event.model_dump(mode="json"), event.id)
            yield _sse("status", status.model_dump(mode="json"))
            quiet = 0.0
            continue
        quiet += POLL_SECONDS
        if quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
    yield _sse("end", {"reason": "time limit; reconnect to go on"})


SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/status:stream", response_class=StreamingResponse, responses=SSE_RESPONSE)
def stream_status(
    ws: str,
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    stack: StackQuery = None,
    max_seconds: Annotated[
        float, Query(gt=0, le=3600, description="end the stream after this long")
    ] = STREAM_SECONDS,
    last_event_id: Annotated[
        str | None, Header(max_length=20, description="resume after this transition")
    ] = None,
) -> StreamingResponse:
    """Server-sent events: `status` (the current state) at once, then `transition` (id: the
    event's) for each new transition followed by the new `status`; `end` when the time is up.
    Send `Last-Event-ID` to receive the transitions missed since."""
    stack_name = resolve_stack(services.repository, stack)
    with session.begin():
        _placements(session, principal, ws, stack_name, name)
    after = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else None
    return StreamingResponse(
        _status_stream(services, stack_name, ws, name, after, max_seconds),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def _replica(rows: list[ServingPlacement], wanted: str | None) -> tuple[ServingPlacement, ServingReplica]:
    pairs = [(p, r) for p in rows for r in p.replicas]
    if not pairs:
        raise NotFound(msg("the serving has no replicas observed yet"))
    if wanted is None:
        if len(pairs) > 1:
            names = ", ".join(r.name for _, r in pairs)
            raise Invalid.field("replica", msg("choose one of its replicas: {names}", names=names))
        return pairs[0]
    for pair in pairs:
        if pair[1].name == wanted:
            return pair
    raise NotFound(msg("replica {replica!r} not found", replica=wanted))


async def _follow_stream(lines_out: AsyncIterator[str], seconds: float) -> AsyncIterator[str]:
    """`line` events as the source yields them, keep-alives while it is quiet, `end` when the time is
    up. The source runs in its own task feeding a queue: waiting on the queue with a timeout is safe,
    while cancelling the source's own `__anext__` at each timeout would finish it for good."""
    queue: asyncio.Queue[str | Exception | None] = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        try:
            async for line in lines_out:
                await queue.put(line)
        except Exception as exc:  # told to the client, not lost in the task
            await queue.put(exc)
            return
        await queue.put(None)

    task = asyncio.create_task(pump())
    yield "retry: 2000\n\n"
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(left, KEEPALIVE_SECONDS))
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                break
            if isinstance(item, Exception):
                yield _sse("error", {"message": str(item)})
                return
            yield _sse("line", {"line": item})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    yield _sse("end", {"reason": "time limit; reconnect to go on"})


@router.get(
    "/logs",
    response_model=LogOut,
    responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}},
)
async def serving_logs(
    ws: str,
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    replica: Annotated[str | None, Query(max_length=253, description="default: the only replica")] = None,
    tail: Annotated[int, Query(ge=0, le=TAIL_MAX, description="how many of the last lines")] = TAIL_DEFAULT,
    previous: Annotated[bool, Query(description="the run before the last restart")] = False,
    follow: Annotated[bool, Query(description="stream new lines as server-sent events (`line`)")] = False,
    max_seconds: Annotated[
        float, Query(gt=0, le=3600, description="end a follow after this long")
    ] = STREAM_SECONDS,
    stack: StackQuery = None,
    accept_language: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """A replica's log: the last `tail` lines (of the previous run with `previous`), or, with
    `follow`, those lines then each new one as server-sent events. 501 when the region's runtime
    cannot show logs here."""

    def read() -> tuple[ServingPlacement, ServingReplica]:
        stack_name = resolve_stack(services.repository, stack)
        with session.begin():
            rows = _placements(session, principal, ws, stack_name, name)
            placement, chosen = _replica(rows, replica)
            session.expunge_all()  # read on after the transaction (in the stream)
            return placement, chosen

    placement, chosen = await run_in_threadpool(read)
    if follow and previous:
        raise Invalid.field("previous", msg("a previous run's log cannot be followed"))
    try:
        source = log_source_for(placement.runtime)
        if follow:
            lines_out = source.follow(placement, chosen, tail)  # a source that cannot, refuses here
            return StreamingResponse(
                _follow_stream(lines_out, max_seconds), media_type="text/event-stream", headers=SSE_HEADERS
            )
        try:
            lines, note = await run_in_threadpool(source.tail, placement, chosen, tail, previous), None
        except LogMissing as exc:
            lines, note = [], translate(exc.args[0], language(accept_language))
    except LogsUnavailable as exc:
        raise Unsupported(exc.args[0]) from None
    return LogOut(replica=chosen.name, previous=previous, lines=lines, note=note)
