"""Every router of the portal's API, in the order the OpenAPI document lists them."""

from fastapi import APIRouter

from portal.api import (
    apikeys,
    audit,
    deploy_templates,
    health,
    identity,
    jobs,
    limits,
    maas,
    metrics,
    model_files,
    model_files_jobs,
    observed,
    plaza,
    previews,
    regions,
    servings,
    usage,
)

ROUTERS: list[APIRouter] = [
    health.router,
    identity.router,
    plaza.router,
    model_files.router,
    model_files_jobs.router,
    deploy_templates.router,
    apikeys.router,
    maas.router,
    limits.router,
    audit.router,
    previews.router,
    regions.router,
    servings.router,
    observed.router,
    jobs.router,
    usage.router,
    metrics.router,
]
