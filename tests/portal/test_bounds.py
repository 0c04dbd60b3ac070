"""Bounded input, as an attacker would try it: huge bodies and headers, deeply nested JSON, NUL bytes
and integers the database cannot store — each refused with its own status and the field named, never
a 500; and every 5xx carries the request id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway import bounds as gateway_bounds
from gateway.app import create_gateway
from portal.services import Services
from store.bounds import json_depth_exceeds
from tests.gateway.gateway_support import serve


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "limit", "deeper"),
    [
        (b'{"a": [1, 2, {"b": 3}]}', 3, False),
        (b'{"a": [1, 2, {"b": [3]}]}', 3, True),
        (nested(1000).encode(), 64, True),
        (b'{"s": "' + b"[" * 500 + b'"}', 64, False),  # brackets inside a string do not nest
        (b'{"s": "\\"' + b"[" * 500 + b'"}', 64, False),  # nor after an escaped quote
        (b'{"s": "\\\\"}' + b"[" * 100, 64, True),  # an escaped backslash ends the string: these count
        (b"[" * 100, 64, True),  # opened and never closed
        (b"[]" * 10_000, 64, False),  # many, but side by side
    ],
)
def test_json_depth_is_measured_without_parsing(body: bytes, limit: int, deeper: bool) -> None:
    assert json_depth_exceeds(body, limit) is deeper


JSON = {"content-type": "application/json"}


def _error(response: httpx.Response | Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_the_portal_refuses_oversized_bodies_and_headers(client: TestClient, services: Services) -> None:
    limit = services.settings.portal_max_body_bytes
    big = client.post(
        "/api/workspaces", content=b"x" * (limit + 1), headers={"content-type": "application/json"}
    )
    assert big.status_code == 413 and _error(big)["code"] == "too_large"
    assert _error(big)["request_id"] == big.headers["x-request-id"]
    unauthenticated = client.post(
        "/api/workspaces", content=b"x" * (limit + 1), headers={"authorization": ""}
    )  # refused before anyone reads it, signed in or not
    assert unauthenticated.status_code == 413
    header = client.get("/api/audit", headers={"x-padding": "a" * (services.settings.max_header_bytes + 1)})
    assert header.status_code == 431 and _error(header)["code"] == "headers_too_large"
    deep = client.post("/api/workspaces", content=nested(1000), headers=JSON)
    assert deep.status_code == 400 and "deeper than 64" in _error(deep)["message"]
    assert client.post("/api/workspaces", json={"slug": "fine", "name": "fine"}).status_code == 201


def test_a_body_without_a_length_is_cut_at_the_limit(services: Services, admin_token: str) -> None:
    """Chunked uploads are counted as they arrive: reading stops at the limit."""
    from portal.app import create_app

    limit = services.settings.portal_max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    with serve(create_app(services=services)) as url:
        response = httpx.post(
            f"{url}/api/workspaces", content=chunks(), headers={"authorization": f"Bearer {admin_token}"}
        )
    assert response.status_code == 413, response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/api/maas-models/2147483648", {"targets": []}, "model_id"),
        ("PUT", "/api/rate-limits/99999999999", {}, "rule_id"),
        ("GET", "/api/audit?actor=a%00b", None, "actor"),
        ("POST", "/api/workspaces", {"slug": "ok", "name": "nul\u0000here"}, "name"),
        ("POST", "/api/workspaces/team-a/api-keys", {"name": "k", "token_quota": 2**63}, "token_quota"),
    ],
)
def test_values_the_database_cannot_store_are_422_naming_the_field(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    client.post("/api/workspaces", json={"slug": "team-a", "name": "A"})
    response = client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert _error(response)["fields"][0]["field"] == field


def test_an_unexpected_error_is_a_500_with_the_request_id(services: Services, admin_token: str) -> None:
    from portal.app import create_app

    app = create_app(services=services)

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/api/boom", headers={"x-request-id": "trace-me-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-me-1"
    assert _error(response) == {
        "code": "internal",
        "message": "internal error (RuntimeError); see the server log",
        "fields": [],
        "request_id": "trace-me-1",
    }


def test_the_gateway_refuses_in_openai_shape(client: TestClient, services: Services) -> None:
    app = create_gateway(services)
    gateway_bounds.install(app, services.settings)
    limit = services.settings.gateway_max_body_bytes
    with serve(app) as url:
        big = httpx.post(f"{url}/v1/chat/completions", content=b"x" * (limit + 1))
        deep = httpx.post(
            f"{url}/v1/chat/completions", content=json.dumps({"messages": json.loads(nested(900))})
        )
        header = httpx.get(
            f"{url}/v1/models", headers={"x-padding": "a" * (services.settings.max_header_bytes + 1)}
        )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert deep.status_code == 400 and deep.json()["error"]["type"] == "invalid_request_error"
    assert header.status_code == 431 and header.json()["error"]["code"] == "headers_too_large"


def test_the_portal_mounted_gateway_answers_in_openai_shape(client: TestClient) -> None:
    deep = client.post(
        "/v1/chat/completions", content=nested(900), headers={"content-type": "application/json"}
    )
    assert deep.status_code == 400 and deep.json()["error"]["type"] == "invalid_request_error"
