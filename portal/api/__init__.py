"""Every router of the portal's API, in the order the OpenAPI document lists them."""

from fastapi import APIRouter

from portal.api import health, identity

ROUTERS: list[APIRouter] = [health.router, identity.router]
