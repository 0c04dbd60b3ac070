"""The gateway end to end: the official OpenAI SDK (sync, async, streaming) → the gateway → simulated
engines, with keys, models and limits made through the portal's API (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from portal.gateway.simulator import ModelProfile, Simulator, serve_in_thread
from portal.services import Services
from tests.gateway.gateway_support import Harness, harness

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
ENGINE_PROMPT = 3 + 4 + 4  # the simulator's prompt count for MESSAGES


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
