"""Model files: ops request a plaza model's files into chosen regions' stores, follow the copies, retry,
cancel and delete them (`/api/model-files`, platform admins only). Any signed-in user may read a
model's availability per region (the plaza page shows it).

The body is checked field by field: an unknown model, region, source, repository shape or pattern
is a 422 naming the field. The download itself runs in the control plane's worker for `local`
regions, and in a Job per region on clusters (`fleet.files_job`): every change to a request with
cluster regions queues a stack update that writes (or removes) its file
`stacks/<stack>/model-files/<model>.yaml`, which `pulumi up` applies (`portal.files.desired`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from fleet import catalog
from portal import audit
from portal.api.common import Page, PageParams, page_params
from portal.auth import AdminDep, PrincipalDep, ServicesDep, SessionDep
from portal.errors import ERROR_RESPONSES, Conflict, Invalid, NotFound
from portal.files import desired, purge, records, targets
from portal.files.errors import SourceRefused
from portal.files.huggingface import REPOSITORY
from portal.files.listing import check_pattern
from portal.files.worker import wake
from portal.messages import msg
from portal.serving_models import resolve_stack
from store.models import ModelFiles, PlazaModel
from store.models.files import ACTIVE_STATES

router = APIRouter(prefix="/api", tags=["model-files"], responses=ERROR_RESPONSES)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
FOLLOW_SECONDS = 600.0
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

Pattern = Annotated[str, Field(min_length=1, max_length=200)]


class ModelFilesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="the plaza model's id")
    regions: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(min_length=1, max_length=64)
    stack: str | None = Field(
        default=None, min_length=1, max_length=63, description="default: the only stack"
    )
    source: Literal["hf", "modelscope", "s3", "https"] | None = Field(
        default=None, description="default: the plaza model's source_uri (or the catalog's source)"
    )
    repository: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="org/name (hf, modelscope), s3://bucket/prefix (s3), or the file's https URL",
    )
    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="branch, tag or commit (hf, modelscope; resolved to a commit); "
        "for https, the file's sha256",
    )
    include: list[Pattern] = Field(
        default_factory=list, max_length=100, description="glob patterns; all if empty"
    )
    exclude: list[Pattern] = Field(default_factory=list, max_length=100)


class RegionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regions: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, max_length=64, description="default: every region the action applies to"
    )


class LocationOut(BaseModel):
    region: str
    runtime: str
    uri: str
    state: str = Field(description="queued, downloading, verifying, ready, failed, cancelled")
    reason: str | None
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    rate: float = Field(description="bytes per second")
    eta_seconds: float | None
    attempt: int
    cancel_requested: bool
    state_since: str | None
    heartbeat_at: str | None


class EventOut(BaseModel):
    region: str
    state: str
    reason: str | None
    bytes_done: int
    files_done: int
    at: str


class ModelFilesOut(BaseModel):
    id: int
    stack: str
    model_id: str
    source: str
    repository: str
    revision: str
    commit: str | None = Field(description="the commit the revision resolved to (pinned), once known")
    include: list[str]
    exclude: list[str]
    requested_by: str
    created_at: str | None
    updated_at: str | None
    locations: list[LocationOut]
    shared: list[str] = Field(
        default_factory=list, description="regions this request joined (already copying)"
    )
    history: list[EventOut] = Field(default_factory=list)


class AvailabilityOut(BaseModel):
    region: str
    state: str
    bytes_done: int
    bytes_total: int
    reason: str | None


def _source(body: ModelFilesIn, model: PlazaModel) -> tuple[str, str, str]:
    if body.source is None and body.repository is not None:
        raise Invalid.field("source", msg("give the source (hf, modelscope, s3, https) with a repository"))
    if body.source is not None:
        if body.repository is None:
            raise Invalid.field("repository", msg("required with source"))
        kind, repository, revision = body.source, body.repository, body.revision or ""
    else:
        uri = model.source_uri or (
            catalog.models()[model.id].source if model.id in catalog.models() else None
        )
        if uri is None:
            raise Invalid.field(
                "model", msg("{model!r} has no source_uri; give source and repository", model=model.id)
            )
        try:
            kind, repository, revision = targets.parse_source_uri(uri)
        except SourceRefused as exc:
            raise Invalid.field("model", str(exc)) from exc
        revision = body.revision or revision
    if kind in ("hf", "modelscope") and not REPOSITORY.match(repository):
        raise Invalid.field("repository", msg("expected org/name"))
    if kind == "s3" and not re.match(r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?$", repository):
        raise Invalid.field("repository", msg("expected s3://bucket/prefix"))
    if kind == "https" and not repository.startswith("https://"):
        raise Invalid.field("repository", msg("expected an https:// URL"))
    if kind == "https" and revision and not SHA256.match(revision):
        raise Invalid.field("revision", msg("for an https file, the revision is its sha256 (64 hex digits)"))
    if kind == "s3" and revision:
        raise Invalid.field("revision", msg("an s3 source has no revision"))
    if revision and (revision.startswith("/") or ".." in revision or any(c.isspace() for c in revision)):
        raise Invalid.field("revision", msg("not a branch, tag or commit"))
    return kind, repository, revision


def _patterns(name: str, patterns: list[str]) -> tuple[str, ...]:
    for i, p in enumerate(patterns):
        if (problem := check_pattern(p)) is not None:
            raise Invalid.field(f"{name}[{i}]", problem)
    return tuple(dict.fromkeys(patterns))


def get_row(session: SessionDep, files_id: int) -> ModelFiles:
    row = session.get(ModelFiles, files_id)
    if row is None:
        raise NotFound(msg("model files {id} not found", id=files_id))
    return row


def _out(row: ModelFiles, **extra: Any) -> ModelFilesOut:
    return ModelFilesOut.model_validate({**records.view(row), **extra})


def _sync(
    session: SessionDep, row: ModelFiles, services: ServicesDep, actor: str, *, removed: bool = False
) -> None:
    """Queue the request's stack file (cluster regions' Jobs) after a change; 409 without a report URL."""
    try:
        desired.sync(session, row, services.settings, actor, removed=removed)
    except desired.NoReportUrl as exc:
        raise Conflict(
            msg("set MODELFLEET_FILES_REPORT_URL (the portal's URL as clusters reach it) first")
        ) from exc


@router.post("/model-files", response_model=ModelFilesOut, status_code=202)
def request_files(
    body: ModelFilesIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> ModelFilesOut:
    """Queue a copy of a plaza model's files into each of `regions`' stores (joined where one runs)."""
    stack = resolve_stack(services.repository, body.stack)
    fleet = services.repository.snapshot(stack).fleet
    for i, name in enumerate(body.regions):
        if name not in fleet.regions:
            raise Invalid.field(
                f"regions[{i}]",
                msg(
                    "no region {name!r} in stack {stack!r} (have: {have})",
                    name=name,
                    stack=stack,
                    have=", ".join(fleet.regions),
                ),
            )
    include, exclude = _patterns("include", body.include), _patterns("exclude", body.exclude)
    with session.begin():
        model = session.get(PlazaModel, body.model)
        if model is None:
            raise Invalid.field("model", msg("no plaza model {model!r}", model=body.model))
        kind, repository, revision = _source(body, model)
        wanted = records.Wanted(stack, model.id, kind, repository, revision, include, exclude)
        regions = [fleet.regions[name] for name in dict.fromkeys(body.regions)]
        try:
            row, shared = records.request(session, wanted, regions, principal.username)
        except records.FilesConflict as exc:
            raise Conflict(str(exc)) from exc
        _sync(session, row, services, principal.username)
        out = _out(row, shared=shared)
    wake(services)
    return out


@router.get("/model-files", response_model=Page[ModelFilesOut])
def list_files(
    session: SessionDep,
    _: AdminDep,
    paging: Annotated[PageParams, Depends(page_params)],
    model: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    stack: Annotated[str | None, Query(min_length=1, max_length=63)] = None,
) -> Page[ModelFilesOut]:
    with session.begin():
        query = select(ModelFiles)
        if model is not None:
            query = query.where(ModelFiles.model_id == model)
        if stack is not None:
            query = query.where(ModelFiles.stack == stack)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(ModelFiles.id.desc()).offset(paging.offset).limit(paging.page_size)
        )
        items = [_out(r) for r in rows]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get("/model-files:availability", response_model=list[AvailabilityOut])
def availability(
    session: SessionDep,
    _: PrincipalDep,
    model: Annotated[str, Query(min_length=1, max_length=128)],
    stack: Annotated[str | None, Query(min_length=1, max_length=63)] = None,
) -> list[AvailabilityOut]:
    """A model's files per region: what the plaza page shows (no store addresses)."""
    with session.begin():
        query = select(ModelFiles).where(ModelFiles.model_id == model)
        if stack is not None:
            query = query.where(ModelFiles.stack == stack)
        return [
            AvailabilityOut(
                region=loc.region,
                state=loc.state,
                bytes_done=loc.bytes_done,
                bytes_total=loc.bytes_total,
                reason=loc.reason if loc.state == "failed" else None,
            )
            for row in session.scalars(query)
            for loc in row.locations
        ]


@router.get("/model-files/{files_id}", response_model=ModelFilesOut)
def get_files(files_id: int, session: SessionDep, _: AdminDep) -> ModelFilesOut:
    with session.begin():
        row = get_row(session, files_id)
        return _out(row, history=records.history(session, row.id))


@router.get("/model-files/{files_id}/follow", response_class=StreamingResponse)
def follow_files(
    files_id: int,
    _: AdminDep,
    services: ServicesDep,
    seconds: Annotated[float, Query(gt=0, le=3600)] = FOLLOW_SECONDS,
) -> StreamingResponse:
    """Server-sent events: `files` with the request's state whenever it changes, `end` once no copy is
    queued or running (or the time is up)."""
    with services.sessions() as session:
        get_row(session, files_id)

    def events() -> Iterator[str]:
        yield "retry: 2000\n\n"
        last = ""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with services.sessions() as session:
                row = session.get(ModelFiles, files_id)
                if row is None:
                    yield _sse("end", {"reason": "deleted"})
                    return
                view = records.view(row)
                active = any(loc.state in ACTIVE_STATES for loc in row.locations)
            now = json.dumps(view, sort_keys=True)
            if now != last:
                last = now
                yield _sse("files", view)
            if not active:
                yield _sse("end", {"reason": "no copy is queued or running"})
                return
            time.sleep(1.0)
        yield _sse("end", {"reason": "time limit; reconnect to go on"})

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _known_regions(row: ModelFiles, regions: list[str]) -> list[str]:
    have = {loc.region for loc in row.locations}
    for i, name in enumerate(regions):
        if name not in have:
            raise Invalid.field(f"regions[{i}]", msg("no copy into region {name!r} was requested", name=name))
    return regions


@router.post("/model-files/{files_id}:retry", response_model=ModelFilesOut)
def retry_files(
    files_id: int, body: RegionsIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> ModelFilesOut:
    """Queue failed or cancelled copies again (they resume: finished files and parts stay)."""
    with session.begin():
        row = get_row(session, files_id)
        done = records.retry(session, row, _known_regions(row, body.regions), principal.username)
        if not done:
            raise Conflict(msg("no failed or cancelled copy to retry"))
        _sync(session, row, services, principal.username)
        out = _out(row)
    wake(services)
    return out


@router.post("/model-files/{files_id}:cancel", response_model=ModelFilesOut)
def cancel_files(
    files_id: int, body: RegionsIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> ModelFilesOut:
    """Cancel queued or running copies; a running one stops at its next read and reads `cancelled`.
    A cluster region's Job leaves the stack file (a stack update removes it)."""
    with session.begin():
        row = get_row(session, files_id)
        done = records.cancel(session, row, _known_regions(row, body.regions), principal.username)
        if not done:
            raise Conflict(msg("no queued or running copy to cancel"))
        _sync(session, row, services, principal.username)
        return _out(row)


class PurgedOut(BaseModel):
    objects: int = Field(description="objects this request's copies wrote, deleted")
    uploads: int = Field(description="unfinished multipart uploads, aborted")


class DeletedOut(BaseModel):
    id: int
    purged: dict[str, PurgedOut] = Field(description="per region: what was deleted from its store")
    kept: dict[str, str] = Field(description="per region: why its files stay (who else reads them)")


@router.delete("/model-files/{files_id}", response_model=DeletedOut)
def delete_files(
    files_id: int, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> DeletedOut:
    """Forget the request: running copies are cancelled, its stack file removed, and what its copies
    wrote into each region's store deleted (with unfinished uploads), unless another request or a
    serving still reads that folder: then the files stay and the answer says who reads them."""
    with session.begin():  # first stop what runs, so a copy does not write on after the purge
        row = get_row(session, files_id)
        records.cancel(session, row, [], principal.username)
        targets_ = purge.plan(session, services.repository, row)
    outcome = purge.purge(services.settings, targets_)  # the stores, outside any transaction
    with session.begin():
        row = get_row(session, files_id)
        _sync(session, row, services, principal.username, removed=True)
        audit.record(
            session,
            actor=principal.username,
            action="PurgeModelFiles",
            resource_type=records.RESOURCE,
            resource_id=row.id,
            after=outcome.as_dict(),
            result="failure" if outcome.failed else "success",
            detail=f"{row.model_id}: {outcome.describe()}",
        )
        records.delete(session, row, principal.username)
    return DeletedOut(
        id=files_id,
        purged={r: PurgedOut(**n) for r, n in outcome.purged.items()},
        kept=outcome.kept,
    )
