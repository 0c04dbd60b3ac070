"""The gateway end to end: the official OpenAI SDK (sync, async, streaming) → the gateway → simulated
engines, with keys, models and limits made through the portal's API (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, update

from gateway.app import create_gateway
from gateway.core import Gateway
from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from store.models import ApiKey
from tests.gateway.gateway_support import Harness, harness

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
ENGINE_PROMPT = 3 + 4 + 4  # the simulator's prompt count for MESSAGES


def provider_answer(model: str) -> dict[str, Any]:
    """A provider's complete chat answer: "hi", 3 + 1 tokens."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator({"m": ModelProfile(completion_tokens=8)}, accept_any_model=True)
    with serve_in_thread(simulator.app) as url:
        yield simulator, url


@pytest.fixture
def gw(client: TestClient, services: Services, engine: tuple[Simulator, str]) -> Iterator[Harness]:
    _, url = engine
    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": f"{url}/v1", "upstream_model": "m"}])
        h.key("main", "team-a")
        yield h


def test_sync_async_and_streamed_chat_are_served_and_billed_exactly(gw: Harness) -> None:
    sdk = gw.sdk()
    reply = sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.model == "m"  # the engine's answer, passed through

    async def call() -> int:
        async with gw.async_sdk() as client:
            r = await client.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
            assert r.usage is not None
            return r.usage.prompt_tokens

    assert asyncio.run(call()) == ENGINE_PROMPT
    chunks = list(sdk.chat.completions.create(model="chat", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert chunks and all(c.usage is None for c in chunks)  # the usage chunk is hidden: not asked for
    rows = gw.records(3)
    assert [(r.endpoint, r.stream, r.status) for r in rows] == [
        ("chat.completions", False, 200),
        ("chat.completions", False, 200),
        ("chat.completions", True, 200),
    ]
    for row in rows:
        assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (ENGINE_PROMPT, 8, False)
        assert row.api_key == gw.key_ids["main"] and row.workspace == "team-a" and row.model == "chat"
        assert Decimal(row.cost) == Decimal("0.000027000")  # 11 × 1 + 8 × 2 per million
        assert row.latency_ms > 0 and row.target is not None
    assert rows[2].ttft_ms is not None and rows[0].ttft_ms is None


def test_models_lists_only_what_the_key_may_use(gw: Harness, engine: tuple[Simulator, str]) -> None:
    _, url = engine
    target = [{"kind": "external", "base_url": f"{url}/v1", "upstream_model": "m"}]
    gw.workspace("team-b")
    gw.model("private-b", target, visibility="specified", workspaces=["team-b"])
    gw.model("switched-off", target, enabled=False)
    gw.key("b", "team-b")
    gw.key("b-narrow", "team-b", allowed_models=["private-b"])
    assert [m.id for m in gw.sdk().models.list()] == ["chat"]
    assert [m.id for m in gw.sdk("b").models.list()] == ["chat", "private-b"]
    assert [m.id for m in gw.sdk("b-narrow").models.list()] == ["private-b"]
    assert gw.sdk("b").models.retrieve("private-b").owned_by == "modelfleet"
    # another workspace's model answers like a missing one; a model the key may not use is a 403
    with pytest.raises(openai.NotFoundError) as missing:
        gw.sdk().chat.completions.create(model="private-b", messages=MESSAGES)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        gw.sdk().chat.completions.create(model="switched-off", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        gw.sdk("b-narrow").chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert denied.value.code == "model_not_found"
    assert gw.sdk("b").chat.completions.create(model="private-b", messages=MESSAGES).usage is not None  # type: ignore[arg-type]


def test_a_key_disabled_or_deleted_in_the_portal_fails_on_the_next_call(gw: Harness) -> None:
    sdk = gw.sdk()
    assert sdk.chat.completions.create(model="chat", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
    key_id = gw.key_ids["main"]
    r = gw.client.put(f"/api/workspaces/team-a/api-keys/{key_id}/status", json={"enabled": False})
    assert r.status_code == 200
    with pytest.raises(openai.AuthenticationError) as denied:
        sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert denied.value.code == "invalid_api_key"
    gw.client.put(f"/api/workspaces/team-a/api-keys/{key_id}/status", json={"enabled": True})
    assert sdk.chat.completions.create(model="chat", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
    assert gw.client.delete(f"/api/workspaces/team-a/api-keys/{key_id}").status_code == 204
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()


def test_errors_have_openai_shape(gw: Harness) -> None:
    def error(response: httpx.Response) -> dict[str, object]:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        return dict(body["error"])

    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "chat"})
    assert r.status_code == 401 and error(r)["code"] == "invalid_api_key"
    r = httpx.get(f"{gw.url}/v1/models", headers={"authorization": "Bearer sk-nottherightshape"})
    assert r.status_code == 401 and "sk-not" in str(error(r)["message"])
    headers = {"authorization": f"Bearer {gw.keys['main']}", "content-type": "application/json"}
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and error(r)["type"] == "invalid_request_error"
    r = gw.post("/chat/completions", {"messages": MESSAGES})
    assert r.status_code == 400 and error(r)["param"] == "model"
    r = gw.post("/nowhere", {})
    assert r.status_code == 404 and error(r)["code"] == "unknown_url"
    # the engine's own 400 (the request's fault) reaches the client unchanged and unbilled
    r = gw.post("/embeddings", {"model": "chat", "input": "x", "dimensions": 0})
    assert r.status_code == 400 and error(r)["param"] == "dimensions"
    rows = gw.records(1)
    assert (rows[-1].status, rows[-1].error_type, rows[-1].cost) == (400, "upstream_rejected", 0)


def test_completions_and_embeddings(gw: Harness) -> None:
    sdk = gw.sdk()
    text = sdk.completions.create(model="chat", prompt="one two three", max_tokens=5)
    assert text.usage is not None and text.usage.completion_tokens == 5
    streamed = list(sdk.completions.create(model="chat", prompt="one two three", max_tokens=5, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices).split() == text.choices[0].text.split()
    vectors = sdk.embeddings.create(model="chat", input=["a b", "c"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens > 0
    rows = gw.records(3)
    assert [(r.endpoint, r.completion_tokens) for r in rows] == [
        ("completions", 5),
        ("completions", 5),
        ("embeddings", 0),
    ]
    assert rows[2].prompt_tokens == vectors.usage.prompt_tokens


def test_the_portal_serves_the_gateway_under_v1(gw: Harness) -> None:
    r = gw.client.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": MESSAGES},
        headers={"authorization": f"Bearer {gw.keys['main']}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 8
    assert r.headers["x-modelfleet-request-id"].startswith("req_")  # x-request-id is the portal's
    r = gw.client.get("/v1/models", headers={"authorization": f"Bearer {gw.keys['main']}"})
    assert [m["id"] for m in r.json()["data"]] == ["chat"]


def test_an_external_target_gets_its_secret_from_the_reference(
    gw: Harness, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MAAS_SECRET_TEST_UPSTREAM", "upstream-secret-1")
    secrets_dir = gw.services.settings.maas_secrets_dir
    assert secrets_dir is not None
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secret_file = secrets_dir / "key"
    secret_file.write_text("upstream-secret-2\n")
    answer = provider_answer("provider-model")
    for n in (1, 2):
        httpserver.expect_request(
            f"/p{n}/v1/chat/completions", headers={"authorization": f"Bearer upstream-secret-{n}"}
        ).respond_with_json(answer)
    base = httpserver.url_for("/")
    gw.model(
        "ext-env",
        [
            {
                "kind": "external",
                "base_url": f"{base}p1/v1",
                "upstream_model": "provider-model",
                "secret_ref": "env:MAAS_SECRET_TEST_UPSTREAM",
            }
        ],
    )
    gw.model(
        "ext-file",
        [
            {
                "kind": "external",
                "base_url": f"{base}p2/v1",
                "upstream_model": "provider-model",
                "secret_ref": f"file:{secret_file}",
            }
        ],
    )
    for model in ("ext-env", "ext-file"):
        reply = gw.sdk().chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "hi"
    sent = [json.loads(request.data) for request, _ in httpserver.log]
    assert [body["model"] for body in sent] == ["provider-model", "provider-model"]
    assert all(
        request.headers["authorization"] != f"Bearer {gw.keys['main']}" for request, _ in httpserver.log
    )


def test_failed_upstream_answers_give_their_connections_back(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    # A pool of two connections: answers the gateway reads as failures must free theirs, or the
    # third request waits out the connect timeout for a slot nobody gives back.
    services.settings = services.settings.model_copy(
        update={"gateway_max_connections": 2, "gateway_connect_timeout_seconds": 0.5}
    )
    answer = provider_answer("m")
    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": httpserver.url_for("/v1"), "upstream_model": "m"}])
        h.key("main", "team-a")
        sdk = h.sdk().with_options(max_retries=0)
        httpserver.expect_request("/v1/chat/completions").respond_with_json(
            {"error": {"message": "engine fault"}}, status=500
        )
        for _ in range(4):  # under the breaker's five
            with pytest.raises(openai.InternalServerError) as failed:
                sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
            assert failed.value.status_code == 502 and "engine fault" in failed.value.message
        httpserver.clear()
        httpserver.expect_request("/v1/chat/completions").respond_with_json(answer)
        reply = sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "hi"


def test_every_upstream_down_is_a_502_and_an_open_circuit_a_503(gw: Harness) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    gw.model("dead", [{"kind": "external", "base_url": f"http://127.0.0.1:{dead}/v1", "upstream_model": "m"}])
    sdk = gw.sdk()
    for _ in range(5):  # the breaker opens after 5 consecutive failures
        with pytest.raises(openai.InternalServerError) as failed:
            sdk.chat.completions.create(model="dead", messages=MESSAGES)  # type: ignore[arg-type]
        assert failed.value.status_code == 502 and failed.value.code == "upstream_unreachable"
    with pytest.raises(openai.InternalServerError) as unavailable:
        sdk.chat.completions.create(model="dead", messages=MESSAGES)  # type: ignore[arg-type]
    assert unavailable.value.status_code == 503 and unavailable.value.code == "no_upstream_available"
    assert int(unavailable.value.response.headers["retry-after"]) >= 1
    rows = gw.records(6)
    assert [r.status for r in rows] == [502] * 5 + [503] and all(r.cost == 0 for r in rows)


def test_edits_by_another_process_are_seen_within_the_poll_interval(
    client: TestClient, services: Services, engine: tuple[Simulator, str]
) -> None:
    _, url = engine
    services.settings = services.settings.model_copy(update={"gateway_snapshot_poll_seconds": 0.1})
    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": f"{url}/v1", "upstream_model": "m"}])
        h.key("main", "team-a")
        assert h.sdk().chat.completions.create(model="chat", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
        other = create_engine(services.settings.resolved_database_url)  # another process: no change hook
        with other.begin() as connection:
            connection.execute(
                update(ApiKey).where(ApiKey.public_id == h.key_ids["main"]).values(enabled=False)
            )
        other.dispose()
        started = time.monotonic()
        while time.monotonic() - started < 5:
            try:
                h.sdk().models.list()
            except openai.AuthenticationError:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the gateway never saw the key disabled")
        assert time.monotonic() - started < 2


def test_the_stand_alone_gateway_answers_probes_and_scrapes(gw: Harness) -> None:
    assert gw.sdk().chat.completions.create(model="chat", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    scraped = httpx.get(f"{gw.url}/metrics").text
    sample = 'modelfleet_gateway_requests_total{endpoint="chat.completions",model="chat",status="200"}'
    assert sample in scraped


def test_an_unexpected_error_is_a_500_whose_request_id_the_log_names_too(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Gateway):  # a fault inside the engine: the app's last handler answers
        async def identify(self, authorization: str | None) -> Any:
            raise RuntimeError("boom")

    app = create_gateway(services, gateway=Broken(services))
    with TestClient(app, raise_server_exceptions=False) as gateway_client:
        answer = gateway_client.get("/v1/models", headers={"authorization": "Bearer sk-x"})
    assert answer.status_code == 500
    request_id = answer.headers["x-request-id"]
    assert answer.json()["error"]["code"] == "internal_error"
    assert request_id in answer.json()["error"]["message"]
    assert f"request {request_id}" in caplog.text
