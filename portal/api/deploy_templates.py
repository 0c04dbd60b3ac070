"""Deploy templates of a plaza model: how ops say a model runs on an accelerator, checked by the core
when saved, and the serving body a template pre-fills in the deploy form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import audit
from portal.auth import AdminDep, Principal, PrincipalDep, ServicesDep, SessionDep
from portal.errors import Conflict, NotFound
from portal.messages import msg
from portal.plaza import deploy, store
from portal.plaza.schemas import DeployTemplateIn, DeployTemplateOut, TemplateCheck
from portal.plaza.views import template_out, visible_model
from portal.services import Services
from portal.serving_models import ServingSpecIn
from store.models import ModelDeployTemplate, PlazaModel

router = APIRouter(prefix="/api/plaza/models/{model_id}/deploy-templates", tags=["plaza"])


def _template(session: Session, principal: Principal, model_id: str, template_id: int) -> ModelDeployTemplate:
    visible_model(session, principal, model_id)
    row = session.scalar(
        select(ModelDeployTemplate).where(
            ModelDeployTemplate.id == template_id, ModelDeployTemplate.model_id == model_id
        )
    )
    if row is None:
        raise NotFound(
            msg("deploy template {id} of model {model!r} not found", id=template_id, model=model_id)
        )
    return row


def _state(row: ModelDeployTemplate) -> dict[str, Any]:
    return {
        "template": row.name,
        "stack": row.stack,
        "stack_template": row.stack_template,
        "accelerator": row.accelerator,
        "engine": row.engine,
        "engine_version": row.engine_version,
        **{k: v for k, v in row.spec.items() if k != "checked_commit"},
    }


def _apply(row: ModelDeployTemplate, body: DeployTemplateIn, check: TemplateCheck) -> None:
    row.name, row.description = body.name, body.description
    row.stack, row.stack_template, row.accelerator = body.stack, body.stack_template, body.accelerator
    row.engine, row.engine_version = check.engine, check.engine_version
    row.spec = {
        **body.spec(),
        "pools": [p.pool for p in check.pools if p.fits],
        "checked_commit": check.commit,
    }


def _name_taken(session: Session, model_id: str, name: str, exclude: int | None = None) -> None:
    query = select(ModelDeployTemplate.id).where(
        ModelDeployTemplate.model_id == model_id, ModelDeployTemplate.name == name
    )
    if exclude is not None:
        query = query.where(ModelDeployTemplate.id != exclude)
    if session.scalar(query) is not None:
        raise Conflict(f"model {model_id!r} already has a deploy template named {name!r}")


def _record(
    session: Session,
    actor: str,
    model: PlazaModel,
    first: bool,
    detail: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    # The source product audits templates on the model: AddDeployTemplates for a model's first
    # template, UpdateDeployTemplates for every later change.
    audit.record(
        session,
        actor=actor,
        action="AddDeployTemplates" if first else "UpdateDeployTemplates",
        resource_type=store.MODEL,
        resource_id=model.id,
        before=before,
        after=after,
        detail=detail,
    )


def create_template(
    session: Session, services: Services, actor: str, model: PlazaModel, body: DeployTemplateIn
) -> ModelDeployTemplate:
    """Check `body` with the core and save it, in the caller's transaction (the API and the demo)."""
    _name_taken(session, model.id, body.name)
    check = deploy.require_fit(services, model, body)
    first = not model.deploy_templates
    row = ModelDeployTemplate(model_id=model.id)
    _apply(row, body, check)
    model.deploy_templates.append(row)
    session.flush()
    _record(session, actor, model, first, f"created deploy template {row.name!r}", after=_state(row))
    return row


@router.get("", response_model=list[DeployTemplateOut])
def list_templates(model_id: str, session: SessionDep, principal: PrincipalDep) -> list[DeployTemplateOut]:
    model = visible_model(session, principal, model_id)
    return [template_out(t) for t in model.deploy_templates]


@router.post("", response_model=DeployTemplateOut, status_code=201)
def add_template(
    model_id: str, body: DeployTemplateIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> DeployTemplateOut:
    """Save a template once the core accepts it: 422 names the field that is wrong (stack,
    stack_template, accelerator, extra_args[i], max_model_len, …) and, when the model fits no pool
    of the accelerator, says why per pool."""
    with session.begin():
        model = visible_model(session, principal, model_id)
        row = create_template(session, services, principal.username, model, body)
    return template_out(row)


@router.post(":check", response_model=TemplateCheck)
def check_template(
    model_id: str, body: DeployTemplateIn, session: SessionDep, principal: AdminDep, services: ServicesDep
) -> TemplateCheck:
    """What the core says about a template, pool by pool, without saving it."""
    model = visible_model(session, principal, model_id)
    return deploy.check_template(services, model, body)


@router.get("/{template_id}", response_model=DeployTemplateOut)
def get_template(
    model_id: str, template_id: int, session: SessionDep, principal: PrincipalDep
) -> DeployTemplateOut:
    return template_out(_template(session, principal, model_id, template_id))


@router.put("/{template_id}", response_model=DeployTemplateOut)
def replace_template(
    model_id: str,
    template_id: int,
    body: DeployTemplateIn,
    session: SessionDep,
    principal: AdminDep,
    services: ServicesDep,
) -> DeployTemplateOut:
    with session.begin():
        row = _template(session, principal, model_id, template_id)
        _name_taken(session, model_id, body.name, exclude=row.id)
        check = deploy.require_fit(services, row.model, body)
        before = _state(row)
        _apply(row, body, check)
        session.flush()
        _record(
            session,
            principal.username,
            row.model,
            False,
            f"updated deploy template {row.name!r}",
            before,
            _state(row),
        )
    return template_out(row)


@router.delete("/{template_id}", status_code=204)
def delete_template(model_id: str, template_id: int, session: SessionDep, principal: AdminDep) -> Response:
    with session.begin():
        row = _template(session, principal, model_id, template_id)
        _record(
            session,
            principal.username,
            row.model,
            False,
            f"deleted deploy template {row.name!r}",
            before=_state(row),
        )
        session.delete(row)
    return Response(status_code=204)


@router.get("/{template_id}/serving-draft", response_model=ServingSpecIn)
def serving_draft(
    model_id: str,
    template_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    pool: Annotated[
        str | None, Query(max_length=63, description="default: the first pool the model fits")
    ] = None,
) -> ServingSpecIn:
    """The serving body the deploy form starts from: model, stack template, one placement on `pool`,
    parallelism, extra arguments, env and max_model_len from the template."""
    row = _template(session, principal, model_id, template_id)
    return deploy.serving_draft(services, row.model, row, pool)
