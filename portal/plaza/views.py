"""Who sees which plaza model, and how rows are shown: shared by the plaza and template endpoints."""

from __future__ import annotations

from sqlalchemy.orm import Session

from portal.auth import Principal
from portal.errors import NotFound
from portal.messages import msg
from portal.plaza import deploy, examples
from portal.plaza.schemas import DeployTemplateOut, ModelDetail, ModelOut, ParallelismIn, ProviderRef
from portal.settings import Settings
from store.models import ModelDeployTemplate, PlazaModel


def visible_model(session: Session, principal: Principal, model_id: str) -> PlazaModel:
    """The model if the caller may see it: admins see every model, others published ones; 404 alike
    for a model that does not exist and one that is unpublished, so drafts stay unannounced."""
    model = session.get(PlazaModel, model_id)
    if model is None or not (model.published or principal.is_platform_admin):
        raise NotFound(msg("model {model!r} not found", model=model_id))
    return model


def model_out(m: PlazaModel) -> ModelOut:
    return ModelOut(
        id=m.id,
        name=m.name,
        provider=ProviderRef(id=m.provider.id, name=m.provider.name, icon=m.provider.icon),
        capabilities=list(m.capabilities),
        tags=list(m.tags),
        context_length=m.context_length,
        params_b=m.params_b,
        dtype=m.dtype,
        description=m.description,
        icon=m.icon,
        source_uri=m.source_uri,
        license=m.license,
        published=m.published,
        deploy_templates=len(m.deploy_templates),
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def template_out(t: ModelDeployTemplate) -> DeployTemplateOut:
    spec = t.spec
    par = spec.get("parallelism", "auto")
    return DeployTemplateOut(
        id=t.id,
        model_id=t.model_id,
        name=t.name,
        description=t.description,
        stack=t.stack,
        stack_template=t.stack_template,
        accelerator=t.accelerator,
        engine=t.engine,
        engine_version=t.engine_version,
        parallelism="auto" if par == "auto" else ParallelismIn.model_validate(par),
        max_model_len=spec.get("max_model_len"),
        extra_args=list(spec.get("extra_args", [])),
        env=dict(spec.get("env", {})),
        gpu_memory_utilization=spec.get("gpu_memory_utilization"),
        quantization=spec.get("quantization"),
        pools=list(spec.get("pools", [])),
        checked_commit=str(spec.get("checked_commit", "")),
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def model_detail(m: PlazaModel, settings: Settings) -> ModelDetail:
    return ModelDetail(
        **model_out(m).model_dump(),
        readme=m.readme,
        sized_by=deploy.sized_by(m),
        templates=[template_out(t) for t in m.deploy_templates],
        examples=examples.api_examples(settings.gateway_base_url, m.id, m.capabilities),
    )
