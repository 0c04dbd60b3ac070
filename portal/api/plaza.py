"""The model plaza: providers and models (ops manage them, everyone signed in browses the published
ones), publishing, and importing models from an index URL."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from portal import audit
from portal.api.common import Page, PageParams, page_params
from portal.auth import AdminDep, Principal, PrincipalDep, ServicesDep, SessionDep
from portal.errors import Conflict, Invalid, NotFound
from portal.plaza import deploy, importer, store
from portal.plaza.schemas import (
    REQUIRED_FIELDS,
    BatchCreateIn,
    BatchCreateOut,
    FacetCount,
    Facets,
    FieldProblem,
    ModelDetail,
    ModelIn,
    ModelOut,
    ModelPatch,
    ParsedModel,
    ParseIn,
    ParseOut,
    ProviderIn,
    ProviderOut,
    ProviderPatch,
    SortKey,
)
from portal.plaza.views import model_detail, model_out, visible_model
from store.models import MaasModel, PlazaModel, Provider
from store.vocabulary import CAPABILITIES, Capability

router = APIRouter(prefix="/api/plaza", tags=["plaza"])


# -------------------------------------------------------------------------------------- providers


def _provider_out(p: Provider, models: int) -> ProviderOut:
    return ProviderOut(
        id=p.id,
        name=p.name,
        description=p.description,
        icon=p.icon,
        models=models,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def _provider(session: Session, provider_id: str) -> Provider:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFound(f"provider {provider_id!r} not found")
    return provider


@router.get("/providers", response_model=Page[ProviderOut])
def list_providers(
    session: SessionDep, principal: PrincipalDep, paging: Annotated[PageParams, Depends(page_params)]
) -> Page[ProviderOut]:
    counts = store.model_counts(session, published_only=not principal.is_platform_admin)
    total = session.scalar(select(func.count()).select_from(Provider)) or 0
    rows = session.scalars(
        select(Provider).order_by(Provider.name, Provider.id).offset(paging.offset).limit(paging.page_size)
    ).all()
    return Page(
        items=[_provider_out(p, counts.get(p.id, 0)) for p in rows],
        total=total,
        page=paging.page,
        page_size=paging.page_size,
    )


@router.post("/providers", response_model=ProviderOut, status_code=201)
def create_provider(body: ProviderIn, session: SessionDep, principal: AdminDep) -> ProviderOut:
    with session.begin():
        provider = store.create_provider(session, principal.username, body)
    return _provider_out(provider, 0)


@router.get("/providers/{provider_id}", response_model=ProviderOut)
def get_provider(provider_id: str, session: SessionDep, principal: PrincipalDep) -> ProviderOut:
    provider = _provider(session, provider_id)
    counts = store.model_counts(session, published_only=not principal.is_platform_admin)
    return _provider_out(provider, counts.get(provider.id, 0))


@router.patch("/providers/{provider_id}", response_model=ProviderOut)
def update_provider(
    provider_id: str, body: ProviderPatch, session: SessionDep, principal: AdminDep
) -> ProviderOut:
    with session.begin():
        provider = _provider(session, provider_id)
        before = store.provider_state(provider)
        for key in body.model_fields_set:
            value = getattr(body, key)
            if value is None and key in ("name", "description"):
                raise Invalid.field(key, "may not be null")
            setattr(provider, key, value)
        session.flush()
        audit.record(
            session,
            actor=principal.username,
            action="UpdateProvider",
            resource_type=store.PROVIDER,
            resource_id=provider.id,
            before=before,
            after=store.provider_state(provider),
        )
    return _provider_out(provider, store.model_counts(session, published_only=False).get(provider.id, 0))


@router.delete("/providers/{provider_id}", status_code=204)
def delete_provider(provider_id: str, session: SessionDep, principal: AdminDep) -> Response:
    with session.begin():
        provider = _provider(session, provider_id)
        used = session.scalars(
            select(PlazaModel.id)
            .where(PlazaModel.provider_id == provider_id)
            .order_by(PlazaModel.id)
            .limit(6)
        ).all()
        if used:
            more = ", …" if len(used) > 5 else ""
            raise Conflict(
                f"provider {provider_id!r} still has models ({', '.join(used[:5])}{more}); "
                "delete or move them first"
            )
        audit.record(
            session,
            actor=principal.username,
            action="DeleteProvider",
            resource_type=store.PROVIDER,
            resource_id=provider.id,
            before=store.provider_state(provider),
        )
        session.delete(provider)
    return Response(status_code=204)


# ----------------------------------------------------------------------------------------- models

_SORTS = {
    "name": func.lower(PlazaModel.name),
    "created": PlazaModel.created_at,
    "params": PlazaModel.params_b,
}


@router.get("/models", response_model=Page[ModelOut])
def list_models(
    session: SessionDep,
    principal: PrincipalDep,
    paging: Annotated[PageParams, Depends(page_params)],
    provider: Annotated[
        list[str] | None, Query(max_length=50, description="provider ids; any of them")
    ] = None,
    capability: Annotated[list[Capability] | None, Query(max_length=20, description="any of them")] = None,
    tag: Annotated[list[str] | None, Query(max_length=20, description="tags; all of them")] = None,
    q: Annotated[str | None, Query(max_length=200, description="in id, name, description, tags")] = None,
    published: Annotated[bool | None, Query(description="admins only: filter on publication")] = None,
    sort: SortKey = "-created",
) -> Page[ModelOut]:
    query = select(PlazaModel)
    if not principal.is_platform_admin:
        query = query.where(PlazaModel.published.is_(True))
    elif published is not None:
        query = query.where(PlazaModel.published.is_(published))
    if provider:
        query = query.where(PlazaModel.provider_id.in_(provider))
    if capability:
        query = query.where(
            or_(*[PlazaModel.facet_index.contains(f"|cap:{c}|", autoescape=True) for c in capability])
        )
    for t in tag or []:
        query = query.where(PlazaModel.facet_index.contains(f"|tag:{t.strip().lower()}|", autoescape=True))
    if q and q.strip():
        query = query.where(PlazaModel.search_text.contains(q.strip().lower(), autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    column = _SORTS[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    if sort.endswith("params"):
        order = order.nulls_last()
    rows = session.scalars(
        query.order_by(order, PlazaModel.id).offset(paging.offset).limit(paging.page_size)
    ).all()
    return Page(items=[model_out(m) for m in rows], total=total, page=paging.page, page_size=paging.page_size)


@router.get("/facets", response_model=Facets)
def facets(session: SessionDep, principal: PrincipalDep) -> Facets:
    """Providers, capabilities and tags with how many visible models have each: the filter bar."""
    query = select(PlazaModel.provider_id, PlazaModel.capabilities, PlazaModel.tags)
    if not principal.is_platform_admin:
        query = query.where(PlazaModel.published.is_(True))
    providers: Counter[str] = Counter()
    caps: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    labels: dict[str, str] = {}
    for provider_id, capabilities, model_tags in session.execute(query).tuples():
        providers[provider_id] += 1
        caps.update(capabilities)
        for t in model_tags:
            tags[t.lower()] += 1
            labels.setdefault(t.lower(), t)
    names = dict(session.execute(select(Provider.id, Provider.name)).tuples().all())
    return Facets(
        providers=[
            FacetCount(value=p, label=names.get(p, p), count=n)
            for p, n in sorted(providers.items(), key=lambda kv: names.get(kv[0], kv[0]).lower())
        ],
        capabilities=[FacetCount(value=c, label=c, count=caps[c]) for c in CAPABILITIES if caps[c]],
        tags=[FacetCount(value=t, label=labels[t], count=n) for t, n in sorted(tags.items())],
    )


@router.post("/models", response_model=ModelDetail, status_code=201)
def create_model(
    body: ModelIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> ModelDetail:
    with session.begin():
        model = store.create_model(session, principal.username, body)
    session.refresh(model)
    return model_detail(model, services.settings)


@router.get("/models/{model_id}", response_model=ModelDetail)
def get_model(
    model_id: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> ModelDetail:
    return model_detail(visible_model(session, principal, model_id), services.settings)


@router.patch("/models/{model_id}", response_model=ModelDetail)
def update_model(
    model_id: str, body: ModelPatch, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> ModelDetail:
    """Change any field but the id; publication stays as it was (use :publish / :unpublish)."""
    with session.begin():
        model = visible_model(session, principal, model_id)
        before = store.model_state(model)
        for key in sorted(body.model_fields_set):
            value = getattr(body, key)
            if value is None and key in REQUIRED_FIELDS:
                raise Invalid.field(key, "may not be null")
            if key == "name" and (owner := store.name_owner(session, value, exclude=model.id)) is not None:
                raise Conflict(f"name {value!r} is already used by model {owner!r}")
            if key == "provider":
                if session.get(Provider, value) is None:
                    raise Invalid.field("provider", f"unknown provider {value!r}; create it first")
                model.provider_id = value
                continue
            setattr(model, key, value)
        session.flush()
        session.refresh(model, ["provider"])
        audit.record(
            session,
            actor=principal.username,
            action="UpdateModel",
            resource_type=store.MODEL,
            resource_id=model.id,
            before=before,
            after=store.model_state(model),
        )
    return model_detail(model, services.settings)


@router.delete("/models/{model_id}", status_code=204)
def delete_model(model_id: str, session: SessionDep, principal: AdminDep, services: ServicesDep) -> Response:
    """Refused while a serving in any stack runs the model or a MaaS model routes to it."""
    with session.begin():
        model = visible_model(session, principal, model_id)
        servings = deploy.used_by_servings(services, model)
        maas = session.scalars(select(MaasModel.public_id).where(MaasModel.plaza_model_id == model.id)).all()
        if servings or maas:
            uses = [f"serving {s}" for s in servings] + [f"MaaS model {m}" for m in maas]
            raise Conflict(f"model {model.id!r} is in use by {', '.join(uses)}; remove those first")
        audit.record(
            session,
            actor=principal.username,
            action="DeleteModel",
            resource_type=store.MODEL,
            resource_id=model.id,
            before=store.model_state(model),
        )
        session.delete(model)
    return Response(status_code=204)


def _set_published(session: Session, principal: Principal, model_id: str, published: bool) -> ModelOut:
    with session.begin():
        model = visible_model(session, principal, model_id)
        if model.published != published:
            model.published = published
            audit.record(
                session,
                actor=principal.username,
                action="PublishModel" if published else "UnPublishModel",
                resource_type=store.MODEL,
                resource_id=model.id,
                before={"published": not published},
                after={"published": published},
            )
    return model_out(model)


@router.post("/models/{model_id}:publish", response_model=ModelOut)
def publish_model(model_id: str, session: SessionDep, principal: AdminDep) -> ModelOut:
    """Show the model in every signed-in user's plaza."""
    return _set_published(session, principal, model_id, True)


@router.post("/models/{model_id}:unpublish", response_model=ModelOut)
def unpublish_model(model_id: str, session: SessionDep, principal: AdminDep) -> ModelOut:
    """Hide the model from users; its settings and deploy templates are kept."""
    return _set_published(session, principal, model_id, False)


# ----------------------------------------------------------------------------------------- import


@router.post("/models:parse", response_model=ParseOut)
def parse_models(body: ParseIn, session: SessionDep, services: ServicesDep, _: AdminDep) -> ParseOut:
    """Read an index (fetched from `url`, or given as `content`) and preview its models: what would be
    created, what exists already (skipped on import) and what is wrong, field by field."""
    if (body.url is None) == (body.content is None):
        raise Invalid.field("url", "give either url or content")
    if body.url is not None:
        settings = services.settings
        gate = services.extras.setdefault(
            "plaza_imports", importer.ImportGate(settings.plaza_import_concurrency)
        )
        limits = importer.FetchLimits(
            settings.plaza_import_deadline_seconds,
            settings.plaza_import_max_bytes,
            settings.private_urls_allowed,
        )
        with gate:
            fetched = importer.fetch(body.url, limits)
        index = importer.parse_text(importer.decode(fetched), "url")
    else:
        index = importer.parse_text(body.content or "", "content")
    ids = [e.model.id for e in index.entries if e.model is not None]
    names = [e.model.name for e in index.entries if e.model is not None]
    existing = set(session.scalars(select(PlazaModel.id).where(PlazaModel.id.in_(ids))))
    named = dict(
        session.execute(select(PlazaModel.name, PlazaModel.id).where(PlazaModel.name.in_(names)))
        .tuples()
        .all()
    )
    seen: dict[str, int] = {}
    out: list[ParsedModel] = []
    for i, entry in enumerate(index.entries):
        problems = list(entry.problems)
        model = entry.model
        exists = model is not None and model.id in existing
        if model is not None and not exists:
            if model.id in seen:
                problems.append(
                    FieldProblem(field="id", message=f"also entry {seen[model.id]} of this index")
                )
            elif model.name in named:
                problems.append(
                    FieldProblem(field="name", message=f"already used by model {named[model.name]!r}")
                )
            seen.setdefault(model.id, i)
        out.append(
            ParsedModel(
                index=i,
                format=entry.format,  # type: ignore[arg-type]
                model=model.model_dump(mode="json") if model is not None else entry.raw,
                provider=entry.provider,
                exists=exists,
                error="; ".join(f"{p.field}: {p.message}" for p in problems) or None,
                fields=problems,
            )
        )
    return ParseOut(
        models=out,
        providers=list(index.providers.values()),
        importable=sum(1 for m in out if not m.exists and m.error is None),
        warnings=index.problems,
    )


@router.post("/models:batch_create", response_model=BatchCreateOut)
def batch_create_models(body: BatchCreateIn, session: SessionDep, principal: AdminDep) -> BatchCreateOut:
    """Create the models that are not in the plaza yet, and the providers they name, in one
    transaction; models whose id or name exists are skipped."""
    with session.begin():
        result = store.batch_create(session, principal.username, body.models, body.providers)
    return BatchCreateOut(
        created=result.created, skipped=result.skipped, providers_created=result.providers_created
    )
