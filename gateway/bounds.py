"""The gateway's input bounds (store/bounds.py) with refusals in OpenAI's error shape.

`install(app, settings)` adds them to a gateway app before it first serves: `python -m gateway` does
it, and so does the portal for the gateway it mounts at `/v1`.
"""

from __future__ import annotations

from starlette.applications import Starlette

from gateway.errors import error_body
from gateway.settings import GatewaySettings
from store.bounds import Bounds, BoundsMiddleware

CODES = {413: "request_too_large", 431: "headers_too_large", 400: "invalid_request_error"}


def refusal(status: int, message: str, field: str | None) -> bytes:
    sentence = message[:1].upper() + message[1:] + "."
    return error_body(sentence, "invalid_request_error", CODES.get(status), field)


def bounds(settings: GatewaySettings) -> Bounds:
    return Bounds(
        max_body_bytes=settings.gateway_max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_json_depth=settings.max_json_depth,
    )


def install(app: Starlette, settings: GatewaySettings) -> None:
    app.add_middleware(BoundsMiddleware, bounds=bounds(settings), answer=refusal)
