"""Rate-limit rules (ops): what the gateway enforces per request, on top of token quotas.

A rule names a scope (global, model, workspace, api_key, or api_key_model: a key's limit for each
model separately), optionally a MaaS model, the subject the scope needs (a workspace slug or an API
key's public id), a unit (rps, rpm, tpm, tpd, upm, upd, concurrency) and a limit.
`store.models.gateway.applicable` is the selection the gateway applies; the table in
`RateLimitRule`'s docstring says which traffic each combination counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import audit
from portal.api.common import Page, PageParams, page_params
from portal.auth import AdminDep, Principal, SessionDep
from portal.errors import Conflict, Invalid, NotFound
from store.models import ApiKey, MaasModel, RateLimitRule, Workspace
from store.models.gateway import PERIOD_SECONDS
from store.periods import aware

router = APIRouter(prefix="/api/rate-limits", tags=["rate-limits"])

Scope = Literal["global", "model", "workspace", "api_key", "api_key_model"]
KEY_SCOPES = ("api_key", "api_key_model")  # the scopes whose subject is an API key's public id
Unit = Literal["rps", "rpm", "tpm", "tpd", "upm", "upd", "concurrency"]
# The gateway keeps exact integer arithmetic inside Redis' Lua doubles: limits fit in 31 bits, and a
# burst may not take more than 30 days to refill.
MAX_LIMIT = 2**31 - 1
MAX_REFILL_SECONDS = 30 * 86_400


class RuleIn(BaseModel):
    scope: Scope
    model: str | None = Field(None, max_length=128, description="a MaaS model's public id; null: all")
    subject: str | None = Field(
        None, max_length=128, description="workspace slug (scope workspace) or API key id (scope api_key)"
    )
    unit: Unit
    # strict: JSON `true` would otherwise pass as the limit 1 (and `false` as 0), a silent wrong rule.
    limit: int = Field(
        ge=1, le=MAX_LIMIT, strict=True, description="requests or tokens per period, or requests in flight"
    )
    burst: int | None = Field(
        None,
        ge=1,
        le=MAX_LIMIT,
        strict=True,
        description="rates only: how many may come at once; null: the limit",
    )
    enabled: bool = True
    description: str = Field("", max_length=500)


class RuleOut(BaseModel):
    id: int
    scope: str
    model: str | None
    subject: str | None
    workspace: str | None = Field(description="the workspace the subject belongs to, if any")
    unit: str
    limit: int
    burst: int | None
    period_seconds: int | None
    enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime


def _subject_workspace(session: Session, rule: RateLimitRule) -> str | None:
    if rule.scope == "workspace":
        return rule.subject
    if rule.scope in KEY_SCOPES:
        return session.scalar(
            select(Workspace.slug)
            .join(ApiKey, ApiKey.workspace_id == Workspace.id)
            .where(ApiKey.public_id == rule.subject)
        )
    return None


def _out(session: Session, rule: RateLimitRule) -> RuleOut:
    return RuleOut(
        id=rule.id,
        scope=rule.scope,
        model=rule.model,
        subject=rule.subject,
        workspace=_subject_workspace(session, rule),
        unit=rule.unit,
        limit=rule.limit,
        burst=rule.burst,
        period_seconds=rule.period_seconds,
        enabled=rule.enabled,
        description=rule.description,
        created_at=aware(rule.created_at),
        updated_at=aware(rule.updated_at),
    )


def rule_state(rule: RateLimitRule) -> dict[str, object]:
    return {
        "scope": rule.scope,
        "model": rule.model,
        "subject": rule.subject,
        "unit": rule.unit,
        "limit": rule.limit,
        "burst": rule.burst,
        "enabled": rule.enabled,
        "description": rule.description,
    }


def _validate(session: Session, body: RuleIn) -> None:
    if body.scope in ("global", "model") and body.subject is not None:
        raise Invalid.field("subject", f"not allowed for scope {body.scope!r}")
    if body.scope == "global" and body.model is not None:
        raise Invalid.field("model", "not allowed for scope 'global'; use scope 'model' to limit one model")
    if body.scope == "workspace":
        if body.subject is None:
            raise Invalid.field("subject", "scope 'workspace' needs a workspace slug")
        if session.scalar(select(Workspace.id).where(Workspace.slug == body.subject)) is None:
            raise Invalid.field("subject", f"no workspace {body.subject!r}")
    if body.scope in KEY_SCOPES:
        if body.subject is None:
            raise Invalid.field("subject", f"scope {body.scope!r} needs an API key id")
        if session.scalar(select(ApiKey.id).where(ApiKey.public_id == body.subject)) is None:
            raise Invalid.field("subject", f"no API key {body.subject!r}")
    if body.model is not None and (
        session.scalar(select(MaasModel.id).where(MaasModel.public_id == body.model)) is None
    ):
        raise Invalid.field("model", f"no MaaS model {body.model!r}")
    if body.unit == "concurrency" and body.burst is not None:
        raise Invalid.field("burst", "only for rates (rps, rpm, tpm, tpd, upm, upd), not concurrency")
    period = PERIOD_SECONDS.get(body.unit)
    if (
        body.burst is not None
        and period is not None
        and body.burst * period > MAX_REFILL_SECONDS * body.limit
    ):
        raise Invalid.field("burst", "too large for the rate: the bucket would take over 30 days to refill")


def _duplicate(body: RuleIn) -> Conflict:
    return Conflict(
        f"a rule for scope {body.scope!r}, model {body.model or '*'!r}, subject {body.subject or '*'!r} "
        f"and unit {body.unit!r} already exists; change that one"
    )


def _identity(body: RuleIn) -> str:
    return RateLimitRule.identity_of(body.scope, body.model, body.subject, body.unit)


def _apply(rule: RateLimitRule, body: RuleIn) -> None:
    rule.scope, rule.model, rule.subject, rule.unit = body.scope, body.model, body.subject, body.unit
    rule.limit, rule.burst, rule.enabled, rule.description = (
        body.limit,
        body.burst,
        body.enabled,
        body.description,
    )
    rule.identity = _identity(body)


def _record(
    session: Session,
    principal: Principal,
    action: str,
    rule: RateLimitRule,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
) -> None:
    """Rows about a workspace's or a key's limits carry the workspace, so its admins see them."""
    audit.record(
        session,
        actor=principal.username,
        action=action,
        resource_type="RateLimitRule",
        resource_id=rule.id,
        workspace=_subject_workspace(session, rule),
        before=before,
        after=after,
    )


def _rule(session: Session, rule_id: int) -> RateLimitRule:
    rule = session.get(RateLimitRule, rule_id)
    if rule is None:
        raise NotFound(f"rate-limit rule {rule_id} not found")
    return rule


@router.get("", response_model=Page[RuleOut])
def list_rules(
    session: SessionDep,
    _: AdminDep,
    paging: Annotated[PageParams, Depends(page_params)],
    scope: Annotated[Scope | None, Query()] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    subject: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[RuleOut]:
    query = select(RateLimitRule)
    if scope is not None:
        query = query.where(RateLimitRule.scope == scope)
    if model is not None:
        query = query.where(RateLimitRule.model == model)
    if subject is not None:
        query = query.where(RateLimitRule.subject == subject)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(RateLimitRule.id).offset(paging.offset).limit(paging.page_size)
    ).all()
    return Page(
        items=[_out(session, r) for r in rows], total=total, page=paging.page, page_size=paging.page_size
    )


@router.post("", response_model=RuleOut, status_code=201)
def create_rule(body: RuleIn, session: SessionDep, principal: AdminDep) -> RuleOut:
    try:
        with session.begin():
            _validate(session, body)
            if session.scalar(select(RateLimitRule.id).where(RateLimitRule.identity == _identity(body))):
                raise _duplicate(body)
            rule = RateLimitRule()
            _apply(rule, body)
            session.add(rule)
            session.flush()
            _record(session, principal, "CreateRateLimitRule", rule, after=rule_state(rule))
    except IntegrityError as exc:  # a concurrent create of the same rule won the race
        raise _duplicate(body) from exc
    return _out(session, rule)


@router.get("/{rule_id}", response_model=RuleOut)
def get_rule(rule_id: int, session: SessionDep, _: AdminDep) -> RuleOut:
    return _out(session, _rule(session, rule_id))


@router.put("/{rule_id}", response_model=RuleOut)
def update_rule(rule_id: int, body: RuleIn, session: SessionDep, principal: AdminDep) -> RuleOut:
    try:
        with session.begin():
            rule = _rule(session, rule_id)
            _validate(session, body)
            clash = session.scalar(select(RateLimitRule.id).where(RateLimitRule.identity == _identity(body)))
            if clash is not None and clash != rule.id:
                raise _duplicate(body)
            before = rule_state(rule)
            _apply(rule, body)
            session.flush()
            _record(session, principal, "UpdateRateLimitRule", rule, before=before, after=rule_state(rule))
    except IntegrityError as exc:
        raise _duplicate(body) from exc
    return _out(session, rule)


@router.delete("/{rule_id}", status_code=204)
def delete_rule(rule_id: int, session: SessionDep, principal: AdminDep) -> Response:
    with session.begin():
        rule = _rule(session, rule_id)
        _record(session, principal, "DeleteRateLimitRule", rule, before=rule_state(rule))
        session.delete(rule)
    return Response(status_code=204)
