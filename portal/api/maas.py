"""MaaS models: the `model` names the gateway serves, each routed to one or more upstream targets.

A target is either a serving of a stack (checked against the stack at HEAD, so a typo fails here and
not on the first request) or an external OpenAI-compatible API whose key is given by reference
(`env:NAME` or `file:/path`), never by value: the portal database holds no upstream secrets.
Ops manage them under `/api/maas-models`; workspace users list what their workspace may call.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AnyHttpUrl, BaseModel, Field, UrlConstraints
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet.errors import IssuesError
from gateway import secrets
from portal import addresses, audit
from portal.api.common import Page, PageParams, page_params
from portal.auth import AdminDep, PrincipalDep, ServicesDep, SessionDep, workspace_for
from portal.errors import Conflict, Invalid, NotFound
from portal.services import Services
from store.models import MaasModel, MaasTarget, PlazaModel, RateLimitRule, Workspace
from store.periods import aware
from store.vocabulary import Capability, Strategy

router = APIRouter(prefix="/api", tags=["maas"])

PUBLIC_ID = r"^[A-Za-z0-9][-A-Za-z0-9._:/]{0,127}$"
SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:/[^\s\x00]{1,190})$")
# Shapes of raw credentials people paste where a reference belongs: provider key prefixes, bearer
# values, or one long unbroken token.
_RAW_KEY = re.compile(r"^(sk-|sk_|pk-|rk-|AKIA|ghp_|gho_|xox[abp]-|AIza|Bearer\s)|^[A-Za-z0-9_\-+/=.]{24,}$")


class TargetIn(BaseModel):
    """`serving`: stack + serving (+ region); `external`: base_url + upstream_model (+ secret_ref);
    `simulator`: the engine simulator the gateway runs in the demo (`gateway_simulate_servings`), which
    speaks every modality (+ upstream_model); nothing answers it elsewhere."""

    kind: Literal["serving", "external", "simulator"]
    stack: str | None = Field(None, max_length=63)
    serving: str | None = Field(None, max_length=63)
    region: str | None = Field(None, max_length=63, description="one of the serving's regions; null: all")
    base_url: Annotated[AnyHttpUrl, UrlConstraints(max_length=2048)] | None = Field(
        None, description="OpenAI-compatible base, e.g. https://host/v1"
    )
    upstream_model: str | None = Field(None, max_length=200, description="the model name upstream")
    secret_ref: str | None = Field(
        None, max_length=200, description="where the upstream key is: env:NAME or file:/path (never the key)"
    )
    weight: int = Field(100, ge=0, le=10_000, strict=True)  # strict: `true` is not a weight of 1
    priority: int = Field(
        0, ge=0, le=100, strict=True, description="lower tiers first; higher tiers are fallbacks"
    )


def _check_target(i: int, t: TargetIn, services: Services) -> None:
    """Each kind's required fields, and nothing of the other kind's, so a mixed target is refused."""
    at = f"targets[{i}]"
    own = {"serving": ("stack", "serving"), "external": ("base_url", "upstream_model"), "simulator": ()}[
        t.kind
    ]
    other = {
        "serving": ("base_url", "upstream_model", "secret_ref"),
        "external": ("stack", "serving", "region"),
        "simulator": ("stack", "serving", "region", "base_url", "secret_ref"),
    }[t.kind]
    for name in own:
        if not getattr(t, name):
            raise Invalid.field(f"{at}.{name}", f"required for {t.kind} targets")
    for name in other:
        if getattr(t, name) is not None:
            raise Invalid.field(f"{at}.{name}", f"not allowed on {t.kind} targets")
    if t.base_url is not None and (t.base_url.username or t.base_url.password):
        raise Invalid.field(f"{at}.base_url", "must not carry credentials; use secret_ref")
    if t.secret_ref is not None and not SECRET_REF.match(t.secret_ref):
        if _RAW_KEY.search(t.secret_ref):
            raise Invalid.field(
                f"{at}.secret_ref",
                "looks like a raw API key; put the key in an environment variable or a file and give "
                "env:NAME or file:/path",
            )
        raise Invalid.field(f"{at}.secret_ref", "must be env:NAME or file:/absolute/path")
    if t.secret_ref is not None and (why := secrets.problem(t.secret_ref, services.settings)) is not None:
        raise Invalid.field(f"{at}.secret_ref", why)
    if t.base_url is not None and t.base_url.host:
        port = t.base_url.port or (443 if t.base_url.scheme == "https" else 80)
        allow = services.settings.private_urls_allowed
        addresses.check_host(f"{at}.base_url", t.base_url.host, port, allow, unresolved_ok=True)


IMAGE_SIZE = r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$"


class MaasModelUpdate(BaseModel):
    plaza_model_id: str | None = Field(None, max_length=128, description="the plaza model this serves")
    targets: list[TargetIn] = Field(default_factory=list, max_length=64)
    strategy: Strategy = "round_robin"
    price_input_per_m: float = Field(0, ge=0, le=1_000_000, description="price per million input tokens")
    price_output_per_m: float = Field(0, ge=0, le=1_000_000)
    price_cached_per_m: float = Field(0, ge=0, le=1_000_000)
    price_per_unit: float = Field(
        0, ge=0, le=1_000_000, description="per image, audio second, character spoken or document reranked"
    )
    capabilities: list[Capability] | None = Field(
        None, max_length=20, description="what the model serves; None: its plaza model's"
    )
    image_sizes: list[Annotated[str, Field(pattern=IMAGE_SIZE)]] | None = Field(
        None, max_length=20, description="sizes offered to /v1/images/generations; None: any"
    )
    enabled: bool = False
    # Offerings are visible to no workspace until ops choose ("all", or "specified" workspaces).
    visibility: Literal["none", "all", "specified"] = "none"
    workspaces: list[str] = Field(
        default_factory=list, max_length=1000, description="workspace slugs when visibility is specified"
    )


class MaasModelIn(MaasModelUpdate):
    public_id: str = Field(pattern=PUBLIC_ID, description="the `model` string clients send")


class TargetOut(BaseModel):
    kind: str
    stack: str | None = None
    serving: str | None = None
    region: str | None = None
    base_url: str | None = None
    upstream_model: str | None = None
    secret_ref: str | None = None
    weight: int
    priority: int


class MaasModelOut(BaseModel):
    id: int
    public_id: str
    plaza_model_id: str | None
    targets: list[TargetOut]
    strategy: str
    price_input_per_m: float
    price_output_per_m: float
    price_cached_per_m: float
    price_per_unit: float
    capabilities: list[str] | None
    image_sizes: list[str] | None
    enabled: bool
    visibility: str
    workspaces: list[str]
    created_at: datetime
    updated_at: datetime


class StatusIn(BaseModel):
    enabled: bool


class WorkspaceModelOut(BaseModel):
    """What a workspace user needs to call a model: its name, prices and where to send requests."""

    model: str
    plaza_model_id: str | None
    price_input_per_m: float
    price_output_per_m: float
    price_cached_per_m: float
    price_per_unit: float = Field(
        0, description="per image, audio second, character spoken or document reranked"
    )
    capabilities: list[str] | None = Field(
        None, description="what it serves (its own list, else its plaza model's); None: not described"
    )
    base_url: str = Field(description="the gateway's OpenAI-compatible base URL")


def visible_to(model: MaasModel, workspace: str) -> bool:
    return model.visibility == "all" or workspace in (model.visible_workspaces or [])


def _target_out(t: MaasTarget) -> TargetOut:
    return TargetOut(
        kind=t.kind,
        stack=t.stack,
        serving=t.serving,
        region=t.region,
        base_url=t.base_url,
        upstream_model=t.upstream_model,
        secret_ref=t.secret_ref,
        weight=t.weight,
        priority=t.priority,
    )


def _out(m: MaasModel) -> MaasModelOut:
    return MaasModelOut(
        id=m.id,
        public_id=m.public_id,
        plaza_model_id=m.plaza_model_id,
        targets=[_target_out(t) for t in m.targets],
        strategy=m.strategy,
        price_input_per_m=m.price_input_per_m,
        price_output_per_m=m.price_output_per_m,
        price_cached_per_m=m.price_cached_per_m,
        price_per_unit=m.price_per_unit,
        capabilities=m.capabilities,
        image_sizes=m.image_sizes,
        enabled=m.enabled,
        visibility=m.visibility,
        workspaces=list(m.visible_workspaces or []),
        created_at=aware(m.created_at),
        updated_at=aware(m.updated_at),
    )


def _state(m: MaasModel) -> dict[str, object]:
    return _out(m).model_dump(mode="json", exclude={"id", "created_at", "updated_at"})


def _check_serving(services: Services, i: int, target: TargetIn) -> None:
    at = f"targets[{i}]"
    assert target.stack is not None and target.serving is not None  # _check_target made sure
    try:
        snapshot = services.repository.snapshot(target.stack)
    except IssuesError as exc:
        problem = exc.issues[0].message if exc.issues else str(exc)
        if exc.issues and exc.issues[0].path == "stack":
            raise Invalid.field(f"{at}.stack", problem) from exc
        raise Invalid.field(f"{at}.stack", f"stack {target.stack!r} at HEAD is invalid: {problem}") from exc
    serving = next((s for s in snapshot.fleet.servings if s.name == target.serving), None)
    if serving is None:
        raise Invalid.field(f"{at}.serving", f"no serving {target.serving!r} in stack {target.stack!r}")
    regions = [p.region for p in serving.placements]
    if target.region is not None and target.region not in regions:
        raise Invalid.field(
            f"{at}.region",
            f"serving {target.serving!r} runs in {', '.join(dict.fromkeys(regions))}, not {target.region!r}",
        )


def _validate(session: Session, services: Services, body: MaasModelUpdate) -> PlazaModel | None:
    plaza = None
    if body.plaza_model_id is not None:
        plaza = session.get(PlazaModel, body.plaza_model_id)
        if plaza is None:
            raise Invalid.field("plaza_model_id", f"no plaza model {body.plaza_model_id!r}")
    for i, target in enumerate(body.targets):
        _check_target(i, target, services)
        if target.kind == "serving":
            _check_serving(services, i, target)
    if body.strategy == "weighted" and body.targets and not any(t.weight for t in body.targets):
        raise Invalid.field("targets", "strategy 'weighted' needs at least one target with a weight above 0")
    if body.visibility != "specified" and body.workspaces:
        raise Invalid.field("workspaces", "only with visibility 'specified'")
    if body.visibility == "specified" and not body.workspaces:
        raise Invalid.field("workspaces", "visibility 'specified' needs at least one workspace")
    if body.workspaces:
        known = set(session.scalars(select(Workspace.slug).where(Workspace.slug.in_(body.workspaces))))
        for i, slug in enumerate(body.workspaces):
            if slug not in known:
                raise Invalid.field(f"workspaces[{i}]", f"no workspace {slug!r}")
    return plaza


def _check_enable(model: MaasModel, plaza: PlazaModel | None) -> None:
    """Only a model that can answer may be offered: it needs a target, and a published plaza entry."""
    if not model.targets:
        raise Invalid.field("enabled", "a MaaS model needs at least one target before it can be enabled")
    if plaza is not None and not plaza.published:
        raise Invalid.field("enabled", f"plaza model {plaza.id!r} is not published; publish it first")


def _apply(model: MaasModel, body: MaasModelUpdate) -> None:
    model.plaza_model_id = body.plaza_model_id
    model.strategy = body.strategy
    model.price_input_per_m = body.price_input_per_m
    model.price_output_per_m = body.price_output_per_m
    model.price_cached_per_m = body.price_cached_per_m
    model.price_per_unit = body.price_per_unit
    model.capabilities = None if body.capabilities is None else list(dict.fromkeys(body.capabilities))
    model.image_sizes = None if body.image_sizes is None else list(dict.fromkeys(body.image_sizes))
    model.enabled = body.enabled
    model.visibility = body.visibility
    model.visible_workspaces = list(dict.fromkeys(body.workspaces))
    model.targets = [
        MaasTarget(
            kind=t.kind,
            stack=t.stack,
            serving=t.serving,
            region=t.region,
            base_url=str(t.base_url).rstrip("/") if t.base_url is not None else None,
            upstream_model=t.upstream_model,
            secret_ref=t.secret_ref,
            weight=t.weight,
            priority=t.priority,
        )
        for t in body.targets
    ]


def _model(session: Session, model_id: int) -> MaasModel:
    model = session.get(MaasModel, model_id)
    if model is None:
        raise NotFound(f"MaaS model {model_id} not found")
    return model


@router.get("/maas-models", response_model=Page[MaasModelOut])
def list_maas_models(
    session: SessionDep,
    _: AdminDep,
    paging: Annotated[PageParams, Depends(page_params)],
    enabled: Annotated[bool | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=128, description="part of the public id")] = None,
) -> Page[MaasModelOut]:
    query = select(MaasModel)
    if enabled is not None:
        query = query.where(MaasModel.enabled.is_(enabled))
    if q:
        query = query.where(MaasModel.public_id.contains(q, autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(MaasModel.public_id).offset(paging.offset).limit(paging.page_size)
    ).all()
    return Page(items=[_out(m) for m in rows], total=total, page=paging.page, page_size=paging.page_size)


@router.post("/maas-models", response_model=MaasModelOut, status_code=201)
def create_maas_model(
    body: MaasModelIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> MaasModelOut:
    with session.begin():
        if session.scalar(select(MaasModel.id).where(MaasModel.public_id == body.public_id)) is not None:
            raise Conflict(f"MaaS model {body.public_id!r} already exists")
        plaza = _validate(session, services, body)
        model = MaasModel(public_id=body.public_id)
        _apply(model, body)
        if model.enabled:
            _check_enable(model, plaza)
        session.add(model)
        session.flush()
        audit.record(
            session,
            actor=principal.username,
            action="CreateMAASModel",
            resource_type="MAASModel",
            resource_id=model.public_id,
            after=_state(model),
        )
    return _out(model)


@router.get("/maas-models/{model_id}", response_model=MaasModelOut)
def get_maas_model(model_id: int, session: SessionDep, _: AdminDep) -> MaasModelOut:
    return _out(_model(session, model_id))


@router.put("/maas-models/{model_id}", response_model=MaasModelOut)
def update_maas_model(
    model_id: int, body: MaasModelUpdate, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> MaasModelOut:
    """Replace everything but the public id (clients, keys and limits refer to it)."""
    with session.begin():
        model = _model(session, model_id)
        plaza = _validate(session, services, body)
        before = _state(model)
        _apply(model, body)
        if model.enabled:
            _check_enable(model, plaza)
        session.flush()
        audit.record(
            session,
            actor=principal.username,
            action="UpdateMAASModel",
            resource_type="MAASModel",
            resource_id=model.public_id,
            before=before,
            after=_state(model),
        )
    return _out(model)


@router.put("/maas-models/{model_id}/status", response_model=MaasModelOut)
def update_maas_model_status(
    model_id: int, body: StatusIn, session: SessionDep, principal: AdminDep
) -> MaasModelOut:
    with session.begin():
        model = _model(session, model_id)
        before = {"enabled": model.enabled}
        if body.enabled:
            plaza = session.get(PlazaModel, model.plaza_model_id) if model.plaza_model_id else None
            _check_enable(model, plaza)
        model.enabled = body.enabled
        audit.record(
            session,
            actor=principal.username,
            action="UpdateMAASModelStatus",
            resource_type="EnabledMAASModel",
            resource_id=model.public_id,
            before=before,
            after={"enabled": model.enabled},
        )
    return _out(model)


@router.delete("/maas-models/{model_id}", status_code=204)
def delete_maas_model(model_id: int, session: SessionDep, principal: AdminDep) -> Response:
    """Refused while rate-limit rules name the model: deleting it would silently widen them."""
    with session.begin():
        model = _model(session, model_id)
        rules = session.scalars(select(RateLimitRule.id).where(RateLimitRule.model == model.public_id)).all()
        if rules:
            raise Conflict(
                f"rate-limit rules {', '.join(map(str, rules))} name MaaS model {model.public_id!r}; "
                "delete or change them first"
            )
        before = _state(model)
        session.delete(model)
        audit.record(
            session,
            actor=principal.username,
            action="DeleteMAASModel",
            resource_type="MAASModel",
            resource_id=model.public_id,
            before=before,
        )
    return Response(status_code=204)


def _workspace_model_out(m: MaasModel, services: Services, session: Session) -> WorkspaceModelOut:
    capabilities = m.capabilities
    if capabilities is None and m.plaza_model_id is not None:  # what the gateway checks, too
        plaza = session.get(PlazaModel, m.plaza_model_id)
        capabilities = list(plaza.capabilities) if plaza is not None and plaza.capabilities else None
    return WorkspaceModelOut(
        model=m.public_id,
        plaza_model_id=m.plaza_model_id,
        price_input_per_m=m.price_input_per_m,
        price_output_per_m=m.price_output_per_m,
        price_cached_per_m=m.price_cached_per_m,
        price_per_unit=m.price_per_unit or 0,
        capabilities=capabilities,
        base_url=f"{services.settings.gateway_base_url.rstrip('/')}/v1",
    )


@router.get("/workspaces/{ws}/models", response_model=Page[WorkspaceModelOut], tags=["maas"])
def list_workspace_models(
    ws: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    paging: Annotated[PageParams, Depends(page_params)],
) -> Page[WorkspaceModelOut]:
    """The enabled MaaS models this workspace may call, with their prices."""
    workspace_for(session, principal, ws)
    models = [
        m
        for m in session.scalars(select(MaasModel).where(MaasModel.enabled).order_by(MaasModel.public_id))
        if visible_to(m, ws)
    ]
    page = models[paging.offset : paging.offset + paging.page_size]
    return Page(
        items=[_workspace_model_out(m, services, session) for m in page],
        total=len(models),
        page=paging.page,
        page_size=paging.page_size,
    )


@router.get("/workspaces/{ws}/models/{model:path}", response_model=WorkspaceModelOut, tags=["maas"])
def get_workspace_model(
    ws: str, model: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> WorkspaceModelOut:
    workspace_for(session, principal, ws)
    found = session.scalar(select(MaasModel).where(MaasModel.public_id == model, MaasModel.enabled))
    if found is None or not visible_to(found, ws):
        raise NotFound(f"model {model!r} not found")
    return _workspace_model_out(found, services, session)
