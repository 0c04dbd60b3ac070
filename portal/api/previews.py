"""Preflight and preview of a serving request, before anything is queued.

`POST /api/workspaces/{ws}/servings:preflight` answers 200 with every check (blocking or not) and
the facts learnt (plan, pool use, model files); `POST /api/workspaces/{ws}/servings:preview`
answers the diff of the rendered Kubernetes objects against the stack at HEAD. Both take the
servings API's create body, and only a workspace's members may ask.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import preflight
from portal.auth import PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.errors import Conflict, FieldError
from portal.messages import language, msg, translate
from portal.preview import preview_change
from portal.repository import StackSnapshot
from portal.services import Services
from portal.serving_models import ServingSpecIn, resolve_stack
from store.models import StackRequest
from store.models.stackops import PENDING

router = APIRouter(prefix="/api", tags=["servings"])


class CheckOut(BaseModel):
    rule: str = Field(description="the rule or check: spec, plan, render, a policy name, model-store, ...")
    level: Literal["mandatory", "advisory", "info"] = Field(description="mandatory checks block")
    subject: str = Field(description="what it is about: a YAML path or a rendered object id")
    message: str


class PreflightOut(BaseModel):
    ok: bool = Field(description="nothing blocks the request")
    serving: str
    stack: str
    commit: str = Field(description="the stack commit checked against")
    checks: list[CheckOut]
    facts: dict[str, Any] = Field(
        description="plan per placement, pools after the change, the model and, per region, the "
        "files found in its model store (model_files, model_bytes)"
    )


class ObjectChangeOut(BaseModel):
    id: str = Field(description="region/Kind/namespace/name")
    region: str
    kind: str
    namespace: str | None
    name: str
    action: Literal["add", "remove", "change"]
    diff: str = Field(description="unified diff of the object's YAML")


class PreviewOut(BaseModel):
    serving: str
    stack: str
    commit: str = Field(description="the deployed side: the stack at this commit, rendered")
    action: Literal["create", "update", "delete"]
    summary: str
    objects: list[ObjectChangeOut] = Field(description="objects added, changed or removed")
    unchanged: int = Field(description="objects of the serving left as they are")
    text: str = Field(description="all diffs, one unified diff")


def _snapshot(services: Services, body: ServingSpecIn) -> StackSnapshot:
    return services.repository.snapshot(resolve_stack(services.repository, body.stack))


@router.post("/workspaces/{ws}/servings:preflight", response_model=PreflightOut)
def preflight_serving(
    ws: str,
    body: ServingSpecIn,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    accept_language: Annotated[str | None, Header(max_length=200)] = None,
    action: Annotated[
        Literal["create"] | None,
        Query(
            description="create: a name the stack or a pending request already has is refused, as "
            "deploying refuses it; default: a serving of that name is checked as its replacement"
        ),
    ] = None,
) -> PreflightOut:
    """Everything that would stop (or should worry) this request, without queuing it."""
    workspace_for(session, principal, ws)
    snapshot = _snapshot(services, body)
    report = preflight.run(services, snapshot, body.to_serving(ws), session=session)
    checks = [CheckOut.model_validate(c, from_attributes=True) for c in report.checks]
    taken = _name_taken(session, snapshot, body.name, language(accept_language)) if action else None
    if taken is not None and not any(c.rule == preflight.NAME_TAKEN for c in checks):
        checks.insert(0, taken)
    return PreflightOut(
        ok=not any(c.level == "mandatory" for c in checks),
        serving=report.serving,
        stack=snapshot.stack,
        commit=report.commit,
        checks=checks,
        facts=report.facts,
    )


def _name_taken(session: Session, snapshot: StackSnapshot, name: str, lang: str) -> CheckOut | None:
    """Deploying creates: a name the stack has, or a pending request creates, is refused by Deploy
    (409 on `name`), so the preflight the deploy form runs refuses it too."""
    pending = session.scalar(
        select(StackRequest.id)
        .where(
            StackRequest.stack == snapshot.stack,
            StackRequest.serving == name,
            StackRequest.action == "create",
            StackRequest.status.in_(PENDING),
        )
        .limit(1)
    )
    if name not in snapshot.index.servings and pending is None:
        return None
    text = msg("a serving named {name!r} already exists in stack {stack!r}", name=name, stack=snapshot.stack)
    return CheckOut(
        rule=preflight.NAME_TAKEN, level="mandatory", subject="name", message=translate(text, lang)
    )


@router.post("/workspaces/{ws}/servings:preview", response_model=PreviewOut)
def preview_serving(
    ws: str, body: ServingSpecIn, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> PreviewOut:
    """The Kubernetes objects this request adds, changes or removes, as diffs against the stack at HEAD."""
    workspace_for(session, principal, ws)
    snapshot = _snapshot(services, body)
    current = snapshot.index.servings.get(body.name)
    if current is not None and current.workspace != ws:
        text = msg("the name {name!r} is not available in this stack; choose another", name=body.name)
        raise Conflict(text, [FieldError(field="name", message=text)])
    preview = preview_change(snapshot, body.name, body.to_serving(ws))
    return PreviewOut(
        serving=preview.serving,
        stack=preview.stack,
        commit=preview.commit,
        action=preview.action,
        summary=preview.summary,
        objects=[ObjectChangeOut.model_validate(o, from_attributes=True) for o in preview.objects],
        unchanged=preview.unchanged,
        text=preview.text,
    )
