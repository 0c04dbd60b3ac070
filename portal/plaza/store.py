"""Plaza writes with their audit rows: one place for what the API, the importer, the seed catalog
and the demo loader do to providers and models, so each path records the same events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal import audit
from portal.errors import Conflict, Invalid
from portal.plaza.schemas import ModelIn, ProviderIn, Skipped
from store.models import PlazaModel, Provider

PROVIDER = "ModelProvider"  # the source product's audit resource types
MODEL = "Model"


def provider_state(p: Provider) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "description": p.description, "icon": _short(p.icon)}


def model_state(m: PlazaModel) -> dict[str, Any]:
    """A model as audit rows record it (a long readme or inline icon is summarised, not copied)."""
    return {
        "id": m.id,
        "name": m.name,
        "provider": m.provider_id,
        "capabilities": list(m.capabilities),
        "tags": list(m.tags),
        "context_length": m.context_length,
        "params_b": m.params_b,
        "dtype": m.dtype,
        "description": m.description,
        "readme": _short(m.readme),
        "icon": _short(m.icon),
        "source_uri": m.source_uri,
        "license": m.license,
        "published": m.published,
    }


def _short(text: str | None, limit: int = 200) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def create_provider(session: Session, actor: str, body: ProviderIn) -> Provider:
    if session.get(Provider, body.id) is not None:
        raise Conflict(f"provider {body.id!r} already exists")
    provider = Provider(**body.model_dump())
    session.add(provider)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="CreateProvider",
        resource_type=PROVIDER,
        resource_id=provider.id,
        after=provider_state(provider),
    )
    return provider


def name_owner(session: Session, name: str, exclude: str | None = None) -> str | None:
    """The id of the model already called `name`, if any (names are unique, case included)."""
    query = select(PlazaModel.id).where(PlazaModel.name == name)
    if exclude is not None:
        query = query.where(PlazaModel.id != exclude)
    return session.scalar(query)


def new_model(body: ModelIn) -> PlazaModel:
    data = body.model_dump()
    provider = data.pop("provider")
    return PlazaModel(**data, provider_id=provider)


def create_model(session: Session, actor: str, body: ModelIn) -> PlazaModel:
    if session.get(PlazaModel, body.id) is not None:
        raise Conflict(f"model {body.id!r} already exists")
    if (owner := name_owner(session, body.name)) is not None:
        raise Conflict(f"name {body.name!r} is already used by model {owner!r}")
    if session.get(Provider, body.provider) is None:
        raise Invalid.field("provider", f"unknown provider {body.provider!r}; create it first")
    model = new_model(body)
    session.add(model)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="CreateModel",
        resource_type=MODEL,
        resource_id=model.id,
        after=model_state(model),
    )
    return model


@dataclass
class BatchResult:
    created: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    providers_created: list[str] = field(default_factory=list)


def batch_create(
    session: Session,
    actor: str,
    models: Sequence[ModelIn],
    providers: Iterable[ProviderIn] = (),
    *,
    publish: bool | None = None,
) -> BatchResult:
    """Create every model that is not in the plaza yet, in the caller's transaction; models whose id
    (or name) exists are skipped, providers they name are created from `providers` or, if not
    described there, with their id as name. One BatchCreateModels row lists what was created."""
    described = {p.id: p for p in providers}
    result = BatchResult()
    existing_ids = set(
        session.scalars(select(PlazaModel.id).where(PlazaModel.id.in_([m.id for m in models])))
    )
    names = dict(
        session.execute(
            select(PlazaModel.name, PlazaModel.id).where(PlazaModel.name.in_([m.name for m in models]))
        )
        .tuples()
        .all()
    )
    for body in models:
        if body.id in existing_ids:
            result.skipped.append(Skipped(id=body.id, reason="exists"))
            continue
        if body.name in names:
            result.skipped.append(
                Skipped(id=body.id, reason=f"name {body.name!r} is used by {names[body.name]!r}")
            )
            continue
        if session.get(Provider, body.provider) is None:
            info = described.get(body.provider) or ProviderIn(
                id=body.provider, name=body.provider, description="", icon=None
            )
            create_provider(session, actor, info)
            result.providers_created.append(body.provider)
        if publish is not None:
            body = body.model_copy(update={"published": publish})
        session.add(new_model(body))
        existing_ids.add(body.id)
        names[body.name] = body.id
        result.created.append(body.id)
    session.flush()
    if result.created:
        audit.record(
            session,
            actor=actor,
            action="BatchCreateModels",
            resource_type=MODEL,
            resource_id=",".join(result.created)[:255],
            after={
                "models": result.created,
                "skipped": [s.model_dump() for s in result.skipped],
                "providers_created": result.providers_created,
            },
        )
    return result


def model_counts(session: Session, published_only: bool) -> dict[str, int]:
    """Models per provider id (published ones only for non-admins)."""
    query = select(PlazaModel.provider_id, func.count()).group_by(PlazaModel.provider_id)
    if published_only:
        query = query.where(PlazaModel.published.is_(True))
    return {pid: count for pid, count in session.execute(query).tuples()}
