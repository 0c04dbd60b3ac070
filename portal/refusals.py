"""Refused, denied and invalid attempts, audited with their reason.

A change the portal refused is as telling as one it made: a member probing for the admin role, a
name clash, a scale-up refused for capacity. The error handlers (`portal.errors`) call `audit_refusal`
for 403 answers to any request, and for 400, 409 and 422 answers to requests that would change
something. Only signed-in callers are recorded (the principal the request authenticated as), so
anonymous traffic cannot fill the log; the row names the route, the status and the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Match

from portal import audit

log = logging.getLogger("modelfleet.portal.audit")

ACTIONS = {400: "Invalid", 403: "Denied", 409: "Refused", 422: "Invalid"}
CHANGES = ("POST", "PUT", "PATCH", "DELETE")
PRINCIPAL = "principal"  # request.state attribute the authentication dependency sets


def _route(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:  # no route matched (validation fails after matching, so this is rare)
        for candidate in request.app.router.routes:
            if candidate.matches(request.scope)[0] == Match.FULL:
                path = getattr(candidate, "path", None)
                break
    return f"{request.method} {path or request.url.path}"[:255]


def audited(request: Request, status: int) -> bool:
    if status not in ACTIONS or getattr(request.state, PRINCIPAL, None) is None:
        return False
    return status == 403 or request.method in CHANGES


async def audit_refusal(request: Request, status: int, code: str, message: str, fields: list[Any]) -> None:
    if not audited(request, status):
        return
    principal = getattr(request.state, PRINCIPAL)
    slug = request.path_params.get("ws", request.path_params.get("workspace"))
    workspace = slug if isinstance(slug, str) and principal.role_in(slug) else None  # outsiders: 404s
    after = {"status": status, "code": code, "fields": [f.model_dump() for f in fields][:20]}
    resource = _route(request)

    def write() -> None:
        with request.app.state.services.sessions() as session, session.begin():
            audit.record(
                session,
                actor=principal.username,
                action=ACTIONS[status],
                resource_type="Request",
                resource_id=resource,
                workspace=workspace,
                after=after,
                result="failure",
                detail=message[:2000],
            )

    try:
        await run_in_threadpool(write)
    except Exception:  # the refusal is answered regardless; the log says the audit row is missing
        log.exception("could not audit a refused request (%s %s)", resource, status)
