"""Request and answer bodies: the client's JSON, the body each upstream gets, the ids we answer with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import invalid_request
from gateway.refusal import Refusal, Why
from gateway.snapshot import ModelEntry, TargetSpec


def id_headers(request_id: str, *, mounted: bool) -> dict[str, str]:
    """Inside the portal its middleware already sends x-request-id (the portal's id); the usage row
    keeps the gateway's own id, returned as x-modelfleet-request-id in that case."""
    if not mounted:
        return {"x-request-id": request_id}
    return {"x-modelfleet-request-id": request_id}


def upstream_body(body: Mapping[str, Any], model: ModelEntry) -> Any:
    """The body for one target: the client's (with usage forced on for streams), the upstream's model
    name. Encoded once per distinct upstream name."""
    cache: dict[str | None, bytes] = {}

    def encode(spec: TargetSpec) -> bytes:
        name = spec.upstream_model
        encoded = cache.get(name)
        if encoded is None:
            encoded = cache[name] = json.dumps(
                {**body, "model": name or model.public_id}, separators=(",", ":"), ensure_ascii=False
            ).encode()
        return encoded

    return encode


async def read_json(request: Request) -> dict[str, Any] | Response:
    body = await parse_json(request)
    if isinstance(body, Refusal):
        return invalid_request(body.message)
    return body


async def parse_json(request: Request) -> dict[str, Any] | Refusal:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        return Refusal(Why.INVALID_REQUEST, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return Refusal(Why.INVALID_REQUEST, "The request body must be a JSON object.")
    return body


def model_object(model: ModelEntry) -> dict[str, Any]:
    return {"id": model.public_id, "object": "model", "created": model.created, "owned_by": "modelfleet"}
