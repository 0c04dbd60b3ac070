"""Workspace API keys: `sk-…` credentials applications send to the gateway.

The full key is returned once, at creation; afterwards only its masked form is shown. Members create
keys in their workspaces and manage the ones they created; workspace admins manage every key of the
workspace. Another member's key answers 404, like another workspace's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import audit
from portal.api.common import Page, PageParams, page_params
from portal.api.limits import KEY_SCOPES, rule_state
from portal.api.maas import visible_to
from portal.auth import Principal, PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.errors import Invalid, NotFound
from portal.keys import (
    is_expired,
    mint_api_key,
    quota_resets_at,
    set_quota_refresh,
    status,
    used_in_period,
    utc_field,
)
from portal.messages import msg
from store.db import utcnow
from store.models import ApiKey, MaasModel, RateLimitRule, Workspace, WorkspaceRole
from store.periods import QUOTA_REFRESH_CYCLES, QuotaRefresh, aware
from store.security import API_KEY_PREFIX

router = APIRouter(prefix="/api/workspaces/{ws}/api-keys", tags=["api-keys"])


def _unique(models: list[str] | None) -> list[str] | None:
    return None if models is None else list(dict.fromkeys(models))


def _one_of_the_cycles(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """Pydantic's own message would not say that null is allowed too."""
    try:
        return handler(value)
    except ValidationError as exc:
        raise ValueError(
            f"must be one of {', '.join(QUOTA_REFRESH_CYCLES)}, or null for a quota that never refreshes"
        ) from exc


RefreshIn = Annotated[QuotaRefresh | None, WrapValidator(_one_of_the_cycles)]


REFRESH_HELP = (
    "when the token quota starts afresh: day, week (from Monday) or month, UTC calendar periods; "
    "null: never (a lifetime quota)"
)


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_at: Annotated[datetime | None, AfterValidator(utc_field)] = Field(
        None, description="must be in the future; null never expires; without an offset, UTC"
    )
    allowed_models: Annotated[list[str] | None, AfterValidator(_unique)] = Field(
        None, max_length=200, description="MaaS model ids this key may call; null: every visible model"
    )
    # strict: JSON `false` would otherwise pass as a quota of 0 tokens (and `true` as 1).
    token_quota: int | None = Field(
        None, ge=0, strict=True, description="tokens this key may use per refresh period; null is unlimited"
    )
    quota_refresh: RefreshIn = Field(None, description=REFRESH_HELP)


class StatusIn(BaseModel):
    enabled: bool


class KeyQuotaIn(BaseModel):
    token_quota: int | None = Field(ge=0, strict=True, description="null is unlimited")
    quota_refresh: RefreshIn = Field(None, description=f"{REFRESH_HELP}; left out: unchanged")


class ApiKeyOut(BaseModel):
    id: str = Field(description="the key's public id (also what rate-limit rules name)")
    name: str
    key: str = Field(description="masked: sk-<public id>…<last 4>")
    workspace: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    enabled: bool
    status: str = Field(description="active | disabled | expired | exhausted")
    allowed_models: list[str] | None
    token_quota: int | None
    quota_refresh: str | None = Field(description="day | week | month; null: a lifetime quota")
    used_tokens: int = Field(description="in the current quota period (lifetime: ever)")
    remaining_tokens: int | None
    quota_resets_at: datetime | None = Field(description="when the current period ends; null: never")
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret_key: str = Field(description="the full key, shown only in this response")


def _out(key: ApiKey, workspace: str) -> ApiKeyOut:
    now = utcnow()
    used = used_in_period(key, now)
    return ApiKeyOut(
        id=key.public_id,
        name=key.name,
        key=f"{API_KEY_PREFIX}{key.public_id}…{key.last4}",
        workspace=workspace,
        created_by=key.created_by,
        created_at=aware(key.created_at),
        expires_at=aware(key.expires_at) if key.expires_at else None,
        enabled=key.enabled,
        status=status(key, now),
        allowed_models=key.allowed_models,
        token_quota=key.token_quota,
        quota_refresh=key.quota_refresh,
        used_tokens=used,
        remaining_tokens=None if key.token_quota is None else max(key.token_quota - used, 0),
        quota_resets_at=quota_resets_at(key, now),
        last_used_at=aware(key.last_used_at) if key.last_used_at else None,
    )


def _state(key: ApiKey, workspace: str) -> dict[str, object]:
    """What the audit log keeps about a key: never the secret nor its hash."""
    return _out(key, workspace).model_dump(
        mode="json",
        include={
            "id",
            "name",
            "key",
            "expires_at",
            "enabled",
            "allowed_models",
            "token_quota",
            "quota_refresh",
        },
    )


def _is_admin(principal: Principal, ws: str) -> bool:
    return principal.role_in(ws) == WorkspaceRole.admin


def _key_for(session: Session, principal: Principal, workspace: Workspace, key_id: str) -> ApiKey:
    """The key if it belongs to the workspace and the caller may manage it; 404 otherwise."""
    key = session.scalar(
        select(ApiKey).where(ApiKey.public_id == key_id, ApiKey.workspace_id == workspace.id)
    )
    if key is None or not (_is_admin(principal, workspace.slug) or key.created_by == principal.username):
        raise NotFound(msg("API key {key!r} not found in workspace {ws!r}", key=key_id, ws=workspace.slug))
    return key


def _check_models(session: Session, workspace: Workspace, models: list[str] | None) -> None:
    if not models:
        return
    known = {
        m.public_id: m for m in session.scalars(select(MaasModel).where(MaasModel.public_id.in_(models)))
    }
    for i, model in enumerate(models):
        found = known.get(model)
        if found is None or not visible_to(found, workspace.slug):
            raise Invalid.field(f"allowed_models[{i}]", msg("unknown model {model!r}", model=model))


def _check_quota(
    session: Session, workspace: Workspace, quota: int | None, exclude: int | None = None
) -> None:
    """Keys may not be promised more tokens than the workspace has. Expired keys hold nothing.

    The workspace row is locked first, so two concurrent requests cannot both take the last tokens.
    """
    session.refresh(workspace, with_for_update=True)
    if workspace.token_quota is None or quota is None:
        return
    query = select(ApiKey.token_quota, ApiKey.expires_at).where(
        ApiKey.workspace_id == workspace.id, ApiKey.token_quota.is_not(None)
    )
    if exclude is not None:
        query = query.where(ApiKey.id != exclude)
    now = utcnow()
    allocated = sum(
        q or 0 for q, expires in session.execute(query) if expires is None or aware(expires) > now
    )
    left = max(workspace.token_quota - allocated, 0)
    if quota > left:
        raise Invalid.field(
            "token_quota",
            msg(
                "{quota} exceeds what is left of workspace {ws!r}'s token quota: "
                "{left} of {total} (already given to other keys: {allocated})",
                quota=quota,
                ws=workspace.slug,
                left=left,
                total=workspace.token_quota,
                allocated=allocated,
            ),
        )


@router.post("", response_model=ApiKeyCreated, status_code=201)
def create_api_key(
    ws: str, body: ApiKeyIn, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> ApiKeyCreated:
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise Invalid.field("expires_at", "must be in the future")
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        _check_models(session, workspace, body.allowed_models)
        _check_quota(session, workspace, body.token_quota)
        key, secret = mint_api_key(
            session,
            services.hasher,
            workspace,
            name=body.name,
            created_by=principal.username,
            expires_at=body.expires_at,
            allowed_models=body.allowed_models,
            token_quota=body.token_quota,
            quota_refresh=body.quota_refresh,
        )
        audit.record(
            session,
            actor=principal.username,
            action="CreateWSAPIKey",
            resource_type="APIKey",
            resource_id=key.public_id,
            workspace=ws,
            after=_state(key, ws),
        )
    return ApiKeyCreated(**_out(key, ws).model_dump(), secret_key=secret.value)


@router.get("", response_model=Page[ApiKeyOut])
def list_api_keys(
    ws: str,
    session: SessionDep,
    principal: PrincipalDep,
    paging: Annotated[PageParams, Depends(page_params)],
) -> Page[ApiKeyOut]:
    """Workspace admins see every key of the workspace; members see the keys they created."""
    workspace = workspace_for(session, principal, ws)
    query = select(ApiKey).where(ApiKey.workspace_id == workspace.id)
    if not _is_admin(principal, ws):
        query = query.where(ApiKey.created_by == principal.username)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(ApiKey.id).offset(paging.offset).limit(paging.page_size)).all()
    return Page(items=[_out(k, ws) for k in rows], total=total, page=paging.page, page_size=paging.page_size)


@router.get("/{key_id}", response_model=ApiKeyOut)
def get_api_key(ws: str, key_id: str, session: SessionDep, principal: PrincipalDep) -> ApiKeyOut:
    workspace = workspace_for(session, principal, ws)
    return _out(_key_for(session, principal, workspace, key_id), ws)


@router.put("/{key_id}/status", response_model=ApiKeyOut)
def update_api_key_status(
    ws: str, key_id: str, body: StatusIn, session: SessionDep, principal: PrincipalDep
) -> ApiKeyOut:
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        key = _key_for(session, principal, workspace, key_id)
        before = _state(key, ws)
        key.enabled = body.enabled
        audit.record(
            session,
            actor=principal.username,
            action="UpdateWSAPIKeyStatus",
            resource_type="APIKey",
            resource_id=key.public_id,
            workspace=ws,
            before=before,
            after=_state(key, ws),
        )
    return _out(key, ws)


@router.put("/{key_id}/quota", response_model=ApiKeyOut)
def update_api_key_quota(
    ws: str, key_id: str, body: KeyQuotaIn, session: SessionDep, principal: PrincipalDep
) -> ApiKeyOut:
    """Sets the token quota and, when `quota_refresh` is given, the refresh cycle; a new cycle counts
    what the key used in its current period from the usage records (`portal.keys.set_quota_refresh`)."""
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        key = _key_for(session, principal, workspace, key_id)
        # The key's row before the workspace's, the order the usage writer charges a request in (the
        # reverse could deadlock with it); the lock also keeps a batch that already charged the key
        # out of the gap between its charge and the recount below.
        session.refresh(key, with_for_update=True)
        _check_quota(session, workspace, body.token_quota, exclude=key.id)
        before = _state(key, ws)
        key.token_quota = body.token_quota
        if "quota_refresh" in body.model_fields_set:
            set_quota_refresh(session, key, body.quota_refresh)
        audit.record(
            session,
            actor=principal.username,
            action="UpdateWSAPIKeyQuota",
            resource_type="APIKey",
            resource_id=key.public_id,
            workspace=ws,
            before=before,
            after=_state(key, ws),
        )
    return _out(key, ws)


@router.delete("/{key_id}", status_code=204)
def delete_api_key(ws: str, key_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """Irreversible: the key stops working at once, and the rate-limit rules naming it (scopes
    `api_key` and `api_key_model`) go with it, in the same transaction."""
    with session.begin():
        workspace = workspace_for(session, principal, ws)
        key = _key_for(session, principal, workspace, key_id)
        rules = session.scalars(
            select(RateLimitRule)
            .where(RateLimitRule.scope.in_(KEY_SCOPES), RateLimitRule.subject == key_id)
            .order_by(RateLimitRule.id)
        ).all()
        before = {**_state(key, ws), "expired": is_expired(key), "rate_limit_rules": [r.id for r in rules]}
        for rule in rules:  # each gone rule is audited as if deleted alone, under the key's workspace
            audit.record(
                session,
                actor=principal.username,
                action="DeleteRateLimitRule",
                resource_type="RateLimitRule",
                resource_id=rule.id,
                workspace=ws,
                before=rule_state(rule),
                detail=f"deleted with API key {key_id}",
            )
            session.delete(rule)
        session.delete(key)
        audit.record(
            session,
            actor=principal.username,
            action="DeleteWSAPIKey",
            resource_type="APIKey",
            resource_id=key_id,
            workspace=ws,
            before=before,
        )
    return Response(status_code=204)
