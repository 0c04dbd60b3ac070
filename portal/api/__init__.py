"""Every router of the portal's API, in the order the OpenAPI document lists them."""

from fastapi import APIRouter

from portal.api import apikeys, audit, health, identity, limits, maas

ROUTERS: list[APIRouter] = [
    health.router,
    identity.router,
    apikeys.router,
    maas.router,
    limits.router,
    audit.router,
]
