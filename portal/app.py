"""The app factory: `create_app(settings)` builds one portal; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

import console
from gateway import bounds as gateway_bounds
from gateway.app import create_gateway
from portal import audit, audit_checkpoint, bootstrap, errors, placements
from portal.api import ROUTERS
from portal.audit_keys import load_or_create_audit_keys
from portal.context import RequestIdMiddleware
from portal.files.demo import files_demo_starter
from portal.files.worker import files_worker_starter
from portal.observe.kubernetes.starter import kubernetes_observer_starter
from portal.observe.local.starter import local_runtime_starter
from portal.repository import StackRepository
from portal.services import Services
from portal.settings import Settings
from portal.stacks.worker import worker_starter
from portal.storable import storable_input
from portal.usage.background import rollup_starter
from store.bounds import Bounds, BoundsMiddleware
from store.db import make_engine, session_factory
from store.heap import freeze_startup_heap
from store.migrate import migrate
from store.security import Hasher, load_or_create_pepper

log = logging.getLogger("modelfleet.portal")

# Parts that start with the app and stop with it (the stack worker, later the gateway): each gets
# the services and returns a stop function.
Starter = Callable[[Services], Callable[[], None] | None]
STARTERS: list[Starter] = [
    worker_starter,
    rollup_starter,
    kubernetes_observer_starter,
    local_runtime_starter,
    audit_checkpoint.checkpoint_starter,
    files_demo_starter,  # the demo's stand-in hub and store, before the worker that uses them
    files_worker_starter,
]  # each checks its own settings


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    pepper = load_or_create_pepper(
        settings.pepper.get_secret_value() if settings.pepper else None, settings.data_dir
    )
    repository = StackRepository(settings.resolved_stacks_repo, settings.stacks_subdir, settings.git_author)
    sessions = session_factory(engine)
    sessions.configure(info={audit.KEYS: load_or_create_audit_keys(settings)})  # every append seals
    services = Services(settings, engine, sessions, Hasher(pepper), repository)
    with bootstrap.one_start_at_a_time(engine):  # replicas starting at once make one admin
        bootstrap.run(services)
    with services.sessions() as session:
        if (problem := audit.keys_problem(session)) is not None:
            log.error("audit: %s; run `python -m portal verify-audit`", problem)
    audit_checkpoint.checkpoint_now(services)  # seals what is there, rows from before keys included
    placements.publish_all(services)  # the stacks may have changed while no portal ran
    return services


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or (services.settings if services else Settings())
    services = services or build_services(settings)
    # The OpenAI-compatible gateway, its own ASGI app, served on the portal's port under /v1. It starts
    # on its first request (no cost for a portal nobody calls through) and stops with the portal.
    gateway = create_gateway(services, prefix="")
    gateway_bounds.install(gateway, settings)  # its own limits, refused in OpenAI's shape

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stops = [stop for start in STARTERS if (stop := start(services)) is not None]
        freeze_startup_heap()
        try:
            yield
        finally:
            for stop in reversed(stops):
                stop()
            await gateway.state.gateway.stop()

    app = FastAPI(
        title="Modelfleet portal",
        version="0.1.0",
        summary="Self-service control plane: model plaza, servings as stack updates, API keys, audit.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
        dependencies=[Depends(storable_input)],  # NUL bytes and oversized integers: 422, not a 500
    )
    app.state.services = services
    # The web console at /console (before RequestIdMiddleware: inside it).
    console.install(app, pepper=services.hasher.pepper, session_hours=settings.console_session_hours)
    # Outermost last: the request id, then bounded input (its refusals carry the id), then the last
    # word on unexpected errors (a 500 or a 503 with the id) around everything the app does.
    app.add_middleware(errors.ServerErrors)
    app.add_middleware(
        BoundsMiddleware,
        bounds=Bounds(settings.portal_max_body_bytes, settings.max_header_bytes, settings.max_json_depth),
        answer=errors.refusal_body,
        skip=("/v1/",),  # the gateway's own bounds apply there
    )
    app.add_middleware(RequestIdMiddleware)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/v1", gateway)
    return app


def app_from_env() -> Any:
    """For `uvicorn --factory portal.app:app_from_env`."""
    return create_app(Settings())
