"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with OpenAI's statuses.

| status | type / code | when |
|---|---|---|
| 400 | invalid_request_error | the body is not JSON, or a field is wrong (`param` names it) |
| 401 | invalid_request_error / invalid_api_key | no key, an unknown, disabled or expired key |
| 403 | invalid_request_error / model_not_found | the key may not use this model (`allowed_models`) |
| 404 | invalid_request_error / model_not_found | no such model, disabled, or not visible to the workspace |
| 429 | requests, tokens or concurrency / rate_limit_exceeded | a rate limit (the message names it) |
| 429 | insufficient_quota / insufficient_quota | the key's or the workspace's token quota is used up |
| 502 | upstream_error / upstream_error, upstream_unreachable, upstream_auth_failed | upstreams failed |
| 503 | service_unavailable / no_upstream_available, upstream_overloaded, limiter_unavailable, | nothing |
|     | model_not_ready | can serve it now (`retry-after`) |
| 504 | upstream_error / upstream_timeout | the upstream did not answer in time |
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol

from starlette.responses import Response

from gateway.refusal import ANSWERS, Refusal, Why


class Shape(Protocol):
    """An API's own error shape (Anthropic's, gateway/messages_api.py); OpenAI's is the default."""

    def error(
        self, status: int, message: str, type_: str, param: str | None, headers: Mapping[str, str]
    ) -> Response: ...


def answer(
    refusal: Refusal, headers: Mapping[str, str] | None = None, shape: Shape | None = None
) -> Response:
    """The HTTP answer to a refusal, with the request's own headers (ids, rate limits) merged in."""
    status, type_, code = ANSWERS[refusal.why]
    merged = {**refusal.headers, **(headers or {})}
    if refusal.retry_after is not None:
        merged["retry-after"] = str(max(1, int(refusal.retry_after + 0.999)))
    if shape is not None:
        return shape.error(status, refusal.message, refusal.error_type or type_, refusal.param, merged)
    return openai_error(status, refusal.message, refusal.error_type or type_, code, refusal.param, merged)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def openai_error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(message, type_, code, param), status, headers=headers, media_type="application/json"
    )


def invalid_request(message: str, param: str | None = None) -> Response:
    return answer(Refusal(Why.INVALID_REQUEST, message, param))


# Headers of every server-sent event stream the gateway answers (chat streams and comparisons):
# no caching, and no buffering by a proxy in front (nginx honours `x-accel-buffering`).
SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
