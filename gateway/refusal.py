"""Why the gateway did not serve a request: one typed outcome for every refusal and upstream failure.

The engine's parts (`access`, `admission`, `relay`) return a `Refusal`; only the HTTP layer turns one
into an answer (`gateway.errors.answer`), by the one table below. The usage row records `recorded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.snapshot import TargetSpec


class Why(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED = "unsupported"  # the model cannot serve this (gateway/capabilities.py)
    MODEL_MISSING = "model_missing"
    INVALID_API_KEY = "invalid_api_key"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_FORBIDDEN = "model_forbidden"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    LIMITER_UNAVAILABLE = "limiter_unavailable"
    NO_UPSTREAM = "no_upstream"
    NOT_READY = "not_ready"
    UPSTREAM_OVERLOADED = "upstream_overloaded"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_AUTH_FAILED = "upstream_auth_failed"


@dataclass(frozen=True, slots=True)
class Refusal:
    why: Why
    message: str
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # rate-limit headers, for instance
    retry_after: float | None = None
    error_type: str | None = None  # OpenAI's `type` where it varies (rate limits: requests, tokens, …)
    target: TargetSpec | None = None  # the upstream target that failed, for the usage row

    @property
    def recorded(self) -> str:
        """The usage row's `error_type`."""
        status_type_code = ANSWERS[self.why]
        return status_type_code[2] or status_type_code[1]


# Every refusal's answer: status, OpenAI `type`, `code` (gateway/errors.py's table, as data;
# `gateway.errors.answer` renders them).
ANSWERS: dict[Why, tuple[int, str, str | None]] = {
    Why.INVALID_REQUEST: (400, "invalid_request_error", "invalid_request_error"),
    Why.MODEL_MISSING: (400, "invalid_request_error", None),
    Why.UNSUPPORTED: (400, "invalid_request_error", "unsupported_capability"),
    Why.INVALID_API_KEY: (401, "invalid_request_error", "invalid_api_key"),
    Why.MODEL_FORBIDDEN: (403, "invalid_request_error", "model_not_found"),
    Why.MODEL_NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    Why.RATE_LIMITED: (429, "requests", "rate_limit_exceeded"),
    Why.QUOTA_EXCEEDED: (429, "insufficient_quota", "insufficient_quota"),
    Why.UPSTREAM_ERROR: (502, "upstream_error", "upstream_error"),
    Why.UPSTREAM_UNREACHABLE: (502, "upstream_error", "upstream_unreachable"),
    Why.UPSTREAM_AUTH_FAILED: (502, "upstream_error", "upstream_auth_failed"),
    Why.NO_UPSTREAM: (503, "service_unavailable", "no_upstream_available"),
    Why.NOT_READY: (503, "service_unavailable", "model_not_ready"),
    Why.UPSTREAM_OVERLOADED: (503, "service_unavailable", "upstream_overloaded"),
    Why.LIMITER_UNAVAILABLE: (503, "service_unavailable", "limiter_unavailable"),
    Why.UPSTREAM_TIMEOUT: (504, "upstream_error", "upstream_timeout"),
}
