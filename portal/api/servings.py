"""Self-service servings: deploy a model in a workspace, scale it, stop and start it, delete it.

Nothing is applied inside a request. Each change is validated, checked by preflight against the
stack at HEAD, and queued as a `StackRequest` (with its audit row, in one transaction); the answer is
202 with the request, which the stack worker then applies with others (see portal/stacks/jobs.py).
Reads combine the stack at HEAD with the requests still pending, so a user sees what they asked for.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import audit, preflight
from portal.api.common import Page, PageParams, page_params
from portal.auth import Principal, PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.context import current_request_id
from portal.errors import Conflict, FieldError, Invalid, NotFound
from portal.messages import msg
from portal.observe import status as observed_status
from portal.repository import StackSnapshot
from portal.services import Services
from portal.serving_models import ServingSpecIn, resolve_stack
from portal.stacks.changes import FILES_ACTION, Refused, replicas_of, with_replicas
from store.models import RequestStatus, ServingRecord, StackJob, StackRequest, Workspace
from store.models.stackops import PENDING
from store.vocabulary import badge

router = APIRouter(prefix="/api/workspaces/{ws}", tags=["servings"])

Replicas = Annotated[int, Field(ge=0, le=1000)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="makes a retry safe: the same key and body return the first request (200); "
        "the same key with another body is a 409",
    ),
]
StackQuery = Annotated[
    str | None, Query(max_length=63, description="the stack; default: the only one, if there is one")
]


# -- request and response shapes ----------------------------------------------------------------------


class ServingIn(ServingSpecIn):
    """The serving to deploy (the body `:preflight` and `:preview` take), plus a default replica count."""

    replicas: Replicas | None = Field(
        None, description="replicas of every placement that does not set its own"
    )

    def to_serving(self, workspace: str) -> dict[str, Any]:
        out = super().to_serving(workspace)
        if self.replicas is not None:
            for given, placement in zip(self.placements, out["placements"], strict=True):
                if "replicas" not in given.model_fields_set:
                    placement["replicas"] = self.replicas
        return out


class ReplicasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stack: str | None = Field(None, max_length=63)
    replicas: Replicas | list[Replicas] = Field(
        description="one number for every placement, or one per placement in their order"
    )


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stack: str | None = Field(None, max_length=63)
    action: Literal["start", "stop"]


class DeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stack: str | None = Field(None, max_length=63)
    confirm: str | None = Field(None, description="the serving's name, typed again")


class CheckOut(BaseModel):
    rule: str
    level: str
    subject: str
    message: str


class RequestLinks(BaseModel):
    request: str
    serving: str
    job: str | None = None
    events: str | None = None


class RequestOut(BaseModel):
    id: int
    stack: str
    workspace: str
    serving: str
    action: str
    status: str = Field(
        description="queued, applying, proposed (in a pull request), applied, rejected, failed"
    )
    job_id: int | None
    error: str | None
    fields: list[FieldError] = Field(description="what made a failed request fail, by field")
    checks: list[CheckOut] = Field(description="preflight findings that did not block")
    actor: str
    created_at: datetime
    updated_at: datetime
    links: RequestLinks


class PlacementOut(BaseModel):
    region: str
    pool: str
    replicas: int = Field(description="desired, counting pending requests")
    committed_replicas: int | None = Field(description="in the stack at HEAD; null if not there yet")


class PullRequestOut(BaseModel):
    number: int
    url: str
    state: str


class JobBrief(BaseModel):
    id: int
    status: str
    error: str | None
    commit: str | None
    pull_request: PullRequestOut | None


class ServingOut(BaseModel):
    name: str
    stack: str
    workspace: str
    state: str = Field(
        description="deploying, updating, deleting (a request is pending), deleted, failed (its "
        "creation failed), or what is observed running: committed (nothing observed yet), pending, "
        "pulling, downloading, loading, ready, degraded, failed, stopped"
    )
    badge: str = Field(
        description="the state in the console's words (the start-up phases are all `starting`)"
    )
    reason: str | None = Field(description="why, for an observed state that has a reason")
    model: Any
    template: str | None
    placements: list[PlacementOut]
    stopped: bool
    in_stack: bool = Field(description="whether the stack at HEAD has it")
    pending: list[RequestOut]
    latest_request: RequestOut | None
    latest_job: JobBrief | None


class ServingDetail(ServingOut):
    commit: str = Field(description="the stack's HEAD commit these facts were read at")
    spec: dict[str, Any] | None = Field(description="the desired serving file, counting pending requests")
    committed_spec: dict[str, Any] | None
    stopped_replicas: list[int] | None = Field(description="replicas a start restores")


# -- reading: the stack at HEAD plus what is pending ---------------------------------------------------


@dataclass
class ServingState:
    name: str
    committed: dict[str, Any] | None
    desired: dict[str, Any] | None
    pending: list[StackRequest] = field(default_factory=list)
    stopped_replicas: list[int] | None = None
    workspace_id: int | None = None  # of a pending creation

    def belongs_to(self, workspace: Workspace) -> bool:
        spec = self.desired or self.committed
        if spec is not None:
            return spec.get("workspace") == workspace.slug
        return self.workspace_id == workspace.id


def _stack_name(services: Services, given: str | None) -> str:
    return resolve_stack(services.repository, given)


def _pending(session: Session, stack: str, name: str | None = None) -> list[StackRequest]:
    query = select(StackRequest).where(
        StackRequest.stack == stack,
        StackRequest.status.in_(PENDING),
        StackRequest.action != FILES_ACTION,  # model-files files are no servings
    )
    if name is not None:
        query = query.where(StackRequest.serving == name)
    return list(session.scalars(query.order_by(StackRequest.id)))


def _fold(
    name: str, committed: dict[str, Any] | None, stopped: list[int] | None, pending: list[StackRequest]
) -> ServingState:
    """Where the serving ends up once its pending requests apply, in order."""
    state = ServingState(name, committed, committed, list(pending), stopped)
    for request in pending:
        change = request.change or {}
        try:
            if request.action == "create":
                state.desired, state.workspace_id, state.stopped_replicas = (
                    request.desired,
                    request.workspace_id,
                    None,
                )
            elif request.action == "delete":
                state.desired = None
            elif state.desired is not None and isinstance(change.get("replicas"), list):
                state.desired = with_replicas(state.desired, change["replicas"])
                state.stopped_replicas = change.get("stopped_replicas") if request.action == "stop" else None
        except Refused:
            continue  # the job will refuse it too
    return state


def _states(
    session: Session, snapshot: StackSnapshot, *, name: str | None = None, workspace: Workspace | None = None
) -> dict[str, ServingState]:
    """Each serving (or just `name`; or those of `workspace`) folded with its pending requests."""
    committed = {
        s.name: s.model_dump(mode="json", exclude_none=True)
        for s in snapshot.fleet.servings
        if (name is None or s.name == name) and (workspace is None or s.workspace == workspace.slug)
    }
    pending: dict[str, list[StackRequest]] = defaultdict(list)
    for request in _pending(session, snapshot.stack, name):
        pending[request.serving].append(request)
    records = session.scalars(
        select(ServingRecord).where(
            ServingRecord.stack == snapshot.stack, *([ServingRecord.name == name] if name else [])
        )
    )
    stopped = {r.name: r.stopped_replicas for r in records}
    return {
        n: _fold(n, committed.get(n), stopped.get(n), pending.get(n, []))
        for n in set(committed) | set(pending)
    }


def _latest(session: Session, stack: str, name: str, workspace: Workspace) -> StackRequest | None:
    return session.scalar(
        select(StackRequest)
        .where(
            StackRequest.stack == stack,
            StackRequest.serving == name,
            StackRequest.workspace_id == workspace.id,
        )
        .order_by(StackRequest.id.desc())
        .limit(1)
    )


def _state_label(state: ServingState, latest: StackRequest | None, seen: str) -> str:
    """A pending request's word, else what is observed (`seen`; see portal/api/observed.py)."""
    if state.desired is None and state.committed is None:
        return "failed" if latest is not None and latest.status == RequestStatus.failed else "deleted"
    if state.pending:
        last = state.pending[-1].action
        if last == "delete":
            return "deleting"
        return "deploying" if state.committed is None else "updating"
    spec = state.desired or {}
    if not any(replicas_of(spec)) and seen == "committed":
        return "stopped"  # nothing was ever observed running, and nothing should run
    return seen


# -- shaping answers ----------------------------------------------------------------------------------


def request_out(request: StackRequest, workspace: str) -> RequestOut:
    base = f"/api/workspaces/{workspace}"
    job = request.job_id
    return RequestOut(
        id=request.id,
        stack=request.stack,
        workspace=workspace,
        serving=request.serving,
        action=request.action,
        status=request.status,
        job_id=job,
        error=request.error,
        fields=[FieldError(**f) for f in request.fields or []],
        checks=[CheckOut(**c) for c in request.checks or []],
        actor=request.actor,
        created_at=request.created_at,
        updated_at=request.updated_at,
        links=RequestLinks(
            request=f"{base}/stack-requests/{request.id}",
            serving=f"{base}/servings/{request.serving}?stack={request.stack}",
            job=f"/api/jobs/{job}" if job else None,
            events=f"/api/jobs/{job}/events" if job else None,
        ),
    )


def _job_brief(job: StackJob | None) -> JobBrief | None:
    if job is None:
        return None
    pr = (job.result or {}).get("pull_request")
    return JobBrief(
        id=job.id,
        status=job.status,
        error=job.error,
        commit=(job.result or {}).get("commit"),
        pull_request=PullRequestOut(number=pr["number"], url=pr.get("url", ""), state=pr.get("state", "open"))
        if isinstance(pr, dict)
        else None,
    )


def _serving_out(
    session: Session, stack: str, state: ServingState, workspace: Workspace, *, detail: bool, commit: str = ""
) -> ServingOut:
    latest = _latest(session, stack, state.name, workspace)
    job = session.get(StackJob, latest.job_id) if latest is not None and latest.job_id else None
    spec = state.desired or state.committed or (latest.desired if latest is not None else None) or {}
    committed = replicas_of(state.committed) if state.committed else []
    placements = [
        PlacementOut(
            region=str(p.get("region", "")),
            pool=str(p.get("pool", "")),
            replicas=int(p.get("replicas", 1)),
            committed_replicas=committed[i] if i < len(committed) else None,
        )
        for i, p in enumerate(spec.get("placements") or [])
        if isinstance(p, dict)
    ]
    rows = observed_status.placements_of(session, stack, workspace.slug, [state.name]).get(state.name, [])
    seen = observed_status.overall(rows)
    label = _state_label(state, latest, seen.state.value)
    values: dict[str, Any] = {
        "name": state.name,
        "stack": stack,
        "workspace": workspace.slug,
        "state": label,
        "badge": badge(label),
        "reason": seen.reason if label == seen.state.value else None,
        "model": spec.get("model"),
        "template": spec.get("template"),
        "placements": placements,
        "stopped": bool(placements) and not any(p.replicas for p in placements),
        "in_stack": state.committed is not None,
        "pending": [request_out(r, workspace.slug) for r in state.pending if r.workspace_id == workspace.id],
        "latest_request": request_out(latest, workspace.slug) if latest is not None else None,
        "latest_job": _job_brief(job),
    }
    if not detail:
        return ServingOut(**values)
    return ServingDetail(
        **values,
        commit=commit,
        spec=state.desired,
        committed_spec=state.committed,
        stopped_replicas=state.stopped_replicas,
    )


# -- writing: validate, preflight, queue --------------------------------------------------------------


def _fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(session: Session, workspace: Workspace, key: str | None, fingerprint: str) -> StackRequest | None:
    if key is None:
        return None
    found = session.scalar(
        select(StackRequest).where(
            StackRequest.workspace_id == workspace.id, StackRequest.idempotency_key == key
        )
    )
    if found is not None and found.idempotency_hash != fingerprint:
        raise Conflict(
            msg("Idempotency-Key {key!r} was already used for a different request in this workspace", key=key)
        )
    return found


def _field(subject: str, name: str) -> str:
    prefix = f"servings[{name}]"
    if subject == prefix:
        return "serving"
    return subject.removeprefix(prefix + ".") if subject.startswith(prefix + ".") else subject


def _preflight(
    services: Services, snapshot: StackSnapshot, desired: dict[str, Any], session: Session
) -> list[dict[str, Any]]:
    """422 with one field per blocking check; the other findings are kept with the request."""
    name = str(desired.get("name", ""))
    report = preflight.run(services, snapshot, desired, session=session)
    if report.blocking:
        fields = [
            FieldError(field=_field(c.subject, name), message=c.message.removeprefix(f"{c.subject}: "))
            for c in report.checks
            if c.blocking
        ]
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:3])
        raise Invalid(msg("preflight refused {name!r}: {summary}", name=name, summary=summary), fields)
    return [
        {"rule": c.rule, "level": c.level, "subject": c.subject, "message": c.message} for c in report.checks
    ]


@dataclass
class Queued:
    request: StackRequest
    replayed: bool


def _queue(
    session: Session,
    principal: Principal,
    workspace: Workspace,
    key: str | None,
    fingerprint: str,
    *,
    audit_action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    **values: Any,
) -> Queued:
    """Insert the request and its audit row together; a lost race on the idempotency key replays."""
    try:
        with session.begin():
            replay = _replay(session, workspace, key, fingerprint)
            if replay is not None:
                return Queued(replay, True)
            request = StackRequest(
                workspace_id=workspace.id,
                actor=principal.username,
                idempotency_key=key,
                idempotency_hash=fingerprint if key else None,
                request_id=current_request_id(),
                status=RequestStatus.queued,
                **values,
            )
            session.add(request)
            session.flush()
            audit.record(
                session,
                actor=principal.username,
                action=audit_action,
                resource_type="ModelServing",
                resource_id=f"{request.stack}/{request.serving}",
                workspace=workspace.slug,
                before=before,
                after=after,
                detail=f"stack request {request.id}",
            )
    except IntegrityError:
        with session.begin():
            replay = _replay(session, workspace, key, fingerprint)
        if replay is not None:
            return Queued(replay, True)
        raise Conflict(
            msg(
                "serving {name!r} is already being created in stack {stack!r}",
                name=values.get("serving"),
                stack=values.get("stack"),
            )
        ) from None
    return Queued(request, False)


def _answer(queued: Queued, workspace: Workspace, response: Response) -> RequestOut:
    response.status_code = 200 if queued.replayed else 202
    return request_out(queued.request, workspace.slug)


@dataclass
class Target:
    """A serving a mutation is about, read in one short transaction."""

    workspace: Workspace
    snapshot: StackSnapshot
    state: ServingState
    replay: StackRequest | None


def _target(
    session: Session,
    services: Services,
    principal: Principal,
    ws: str,
    name: str,
    stack: str | None,
    key: str | None,
    fingerprint: str,
) -> Target:
    stack_name = _stack_name(services, stack)
    snapshot = services.repository.snapshot(stack_name)  # outside any database transaction
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        replay = _replay(session, workspace, key, fingerprint)
        state = _states(session, snapshot, name=name).get(name)
    if replay is not None:
        return Target(workspace, snapshot, state or ServingState(name, None, None), replay)
    if state is None or not state.belongs_to(workspace):
        raise NotFound(msg("serving {name!r} not found in workspace {ws!r}", name=name, ws=ws))
    if state.desired is None:
        raise Conflict(msg("serving {name!r} is being deleted", name=name))
    return Target(workspace, snapshot, state, None)


# -- endpoints ----------------------------------------------------------------------------------------


@router.get("/servings", response_model=Page[ServingOut])
def list_servings(
    ws: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    paging: Annotated[PageParams, Depends(page_params)],
    stack: StackQuery = None,
) -> Page[ServingOut]:
    """The workspace's servings in the stack at HEAD, and those its pending requests create."""
    stack_name = _stack_name(services, stack)
    snapshot = services.repository.snapshot(stack_name)
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        states = [
            s for s in _states(session, snapshot, workspace=workspace).values() if s.belongs_to(workspace)
        ]
        states.sort(key=lambda s: s.name)
        window = states[paging.offset : paging.offset + paging.page_size]
        items = [_serving_out(session, stack_name, s, workspace, detail=False) for s in window]
    return Page(items=items, total=len(states), page=paging.page, page_size=paging.page_size)


@router.get("/servings/{name}", response_model=ServingDetail)
def get_serving(
    ws: str,
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    stack: StackQuery = None,
) -> ServingOut:
    """Desired spec and replicas per placement, pending requests, the latest request and its job
    (commit or pull request), and whether the serving is stopped."""
    stack_name = _stack_name(services, stack)
    snapshot = services.repository.snapshot(stack_name)
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        state = _states(session, snapshot, name=name).get(name)
        latest = _latest(session, stack_name, name, workspace)
        if state is None or not state.belongs_to(workspace):
            if latest is None:  # never here, or not theirs: the same answer either way
                raise NotFound(msg("serving {name!r} not found in workspace {ws!r}", name=name, ws=ws))
            state = ServingState(name, None, None)
        return _serving_out(session, stack_name, state, workspace, detail=True, commit=snapshot.commit)


@router.post("/servings", response_model=RequestOut, status_code=202)
def create_serving(
    ws: str,
    body: ServingIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> RequestOut:
    """Deploy a model: 202 with the queued request; 422 names what preflight refused."""
    fingerprint = _fingerprint("POST", f"/api/workspaces/{ws}/servings", body.model_dump(mode="json"))
    stack_name = _stack_name(services, body.stack)
    snapshot = services.repository.snapshot(stack_name)
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        replay = _replay(session, workspace, idempotency_key, fingerprint)
        taken = any(s.name == body.name for s in snapshot.fleet.servings) or any(
            r.action == "create" for r in _pending(session, stack_name, body.name)
        )
    if replay is not None:
        return _answer(Queued(replay, True), workspace, response)
    if taken:  # on the name field, as the deploy form's preflight says it (portal/api/previews.py)
        text = msg(
            "a serving named {name!r} already exists in stack {stack!r}", name=body.name, stack=stack_name
        )
        raise Conflict(text, [FieldError(field="name", message=text)])
    desired = body.to_serving(ws)
    checks = _preflight(services, snapshot, desired, session)
    queued = _queue(
        session,
        principal,
        workspace,
        idempotency_key,
        fingerprint,
        audit_action="CreateWSModelServing",
        before=None,
        after=desired,
        stack=stack_name,
        serving=body.name,
        action="create",
        desired=desired,
        checks=checks,
    )
    return _answer(queued, workspace, response)


@router.patch("/servings/{name}/replicas", response_model=RequestOut, status_code=202)
def scale_serving(
    ws: str,
    name: str,
    body: ReplicasIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> RequestOut:
    """Set the replicas: one number for every placement, or one per placement."""
    path = f"/api/workspaces/{ws}/servings/{name}/replicas"
    fingerprint = _fingerprint("PATCH", path, body.model_dump(mode="json"))
    target = _target(session, services, principal, ws, name, body.stack, idempotency_key, fingerprint)
    if target.replay is not None:
        return _answer(Queued(target.replay, True), target.workspace, response)
    current = target.state.desired or {}
    old = replicas_of(current)
    replicas = [body.replicas] * len(old) if isinstance(body.replicas, int) else list(body.replicas)
    if len(replicas) != len(old):
        raise Invalid.field(
            "replicas",
            msg(
                "{given} value(s) for {have} placement(s); give one per placement",
                given=len(replicas),
                have=len(old),
            ),
        )
    desired = with_replicas(current, replicas)
    checks = _preflight(services, target.snapshot, desired, session)
    queued = _queue(
        session,
        principal,
        target.workspace,
        idempotency_key,
        fingerprint,
        audit_action="UpdateWSModelServingReplicas",
        before={"replicas": old},
        after={"replicas": replicas},
        stack=target.snapshot.stack,
        serving=name,
        action="scale",
        desired=desired,
        change={"replicas": replicas},
        checks=checks,
    )
    return _answer(queued, target.workspace, response)


@router.post("/servings/{name}/actions", response_model=RequestOut, status_code=202)
def serving_action(
    ws: str,
    name: str,
    body: ActionIn,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> RequestOut:
    """Stop (every placement to 0 replicas, remembering them) or start (restore them)."""
    path = f"/api/workspaces/{ws}/servings/{name}/actions"
    fingerprint = _fingerprint("POST", path, body.model_dump(mode="json"))
    target = _target(session, services, principal, ws, name, body.stack, idempotency_key, fingerprint)
    if target.replay is not None:
        return _answer(Queued(target.replay, True), target.workspace, response)
    current = target.state.desired or {}
    old = replicas_of(current)
    change: dict[str, Any]
    if body.action == "stop":
        if not any(old):
            raise Conflict(msg("serving {name!r} is already stopped", name=name))
        change = {"replicas": [0] * len(old), "stopped_replicas": old}
    else:
        if any(old):
            raise Conflict(msg("serving {name!r} is not stopped", name=name))
        remembered = target.state.stopped_replicas
        usable = remembered if remembered and len(remembered) == len(old) and any(remembered) else None
        change = {"replicas": usable or [1] * len(old)}
    desired = with_replicas(current, change["replicas"])
    checks = _preflight(services, target.snapshot, desired, session)
    queued = _queue(
        session,
        principal,
        target.workspace,
        idempotency_key,
        fingerprint,
        audit_action="DoModelWSServingAction",
        before={"replicas": old},
        after={"action": body.action, "replicas": change["replicas"]},
        stack=target.snapshot.stack,
        serving=name,
        action=body.action,
        desired=desired,
        change=change,
        checks=checks,
    )
    return _answer(queued, target.workspace, response)


@router.delete("/servings/{name}", response_model=RequestOut, status_code=202)
def delete_serving(
    ws: str,
    name: str,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    body: Annotated[DeleteIn | None, Body()] = None,
    confirm: Annotated[str | None, Query(description="the serving's name, typed again")] = None,
    stack: StackQuery = None,
    idempotency_key: IdempotencyKey = None,
) -> RequestOut:
    """Delete for good; `confirm` (body or query) must repeat the serving's name."""
    typed = body.confirm if body is not None and body.confirm is not None else confirm
    if typed != name:
        raise Invalid.field(
            "confirm",
            msg("type the serving's name ({name!r}) to confirm; deleting cannot be undone", name=name),
        )
    stack = body.stack if body is not None and body.stack is not None else stack
    path = f"/api/workspaces/{ws}/servings/{name}"
    fingerprint = _fingerprint("DELETE", path, {"stack": stack, "confirm": typed})
    target = _target(session, services, principal, ws, name, stack, idempotency_key, fingerprint)
    if target.replay is not None:
        return _answer(Queued(target.replay, True), target.workspace, response)
    queued = _queue(
        session,
        principal,
        target.workspace,
        idempotency_key,
        fingerprint,
        audit_action="DeleteWSModelServing",
        before=target.state.desired,
        after=None,
        stack=target.snapshot.stack,
        serving=name,
        action="delete",
        desired=None,
    )
    return _answer(queued, target.workspace, response)


@router.get("/stack-requests", response_model=Page[RequestOut])
def list_requests(
    ws: str,
    session: SessionDep,
    principal: PrincipalDep,
    paging: Annotated[PageParams, Depends(page_params)],
    serving: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> Page[RequestOut]:
    """The workspace's requests, newest first."""
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        query = select(StackRequest).where(StackRequest.workspace_id == workspace.id)
        if serving:
            query = query.where(StackRequest.serving == serving)
        if status:
            query = query.where(StackRequest.status == status)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(
            query.order_by(StackRequest.id.desc()).offset(paging.offset).limit(paging.page_size)
        ).all()
        items = [request_out(r, ws) for r in rows]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get("/stack-requests/{request_id}", response_model=RequestOut)
def get_request(ws: str, request_id: int, session: SessionDep, principal: PrincipalDep) -> RequestOut:
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        request = session.get(StackRequest, request_id)
        if request is None or request.workspace_id != workspace.id:
            raise NotFound(msg("request {id} not found in workspace {ws!r}", id=request_id, ws=ws))
        return request_out(request, ws)
