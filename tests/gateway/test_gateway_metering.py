"""The metering matrix through the real gateway: each case's usage row (billed tokens, Decimal cost,
estimated flag, outcome) is exact, and the limiter and quota reservations are settled exactly once
with what was billed (the limiter runs on a frozen clock, so its buckets hold exactly what was charged)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from pytest_httpserver import HTTPServer

from gateway.core import Gateway
from gateway.limits import Demand, LocalLimiter
from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from store.models import UsageRecord
from tests.gateway.gateway_support import Harness, harness

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
ENGINE_PROMPT = 11  # the simulator's count
ESTIMATED_PROMPT = 12  # the gateway's estimate (3 + 4 + 5)
FROZEN_US = 10**12


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator(
        {
            "m": ModelProfile(completion_tokens=8),
            "paced": ModelProfile(ttft_ms=300, tokens_per_second=20, completion_tokens=8),
        }
    )
    with serve_in_thread(simulator.app) as url:
        yield url


@pytest.fixture
def gw(client: TestClient, services: Services, engine: str) -> Iterator[Harness]:
    limiter = LocalLimiter([], clock=lambda: FROZEN_US)  # no refill: buckets show every charge
    with harness(client, services, Gateway(services, limiter=limiter)) as h:
        h.workspace("team-a", token_quota=10**9)  # a quota, so quota holds are exercised too
        h.model("chat", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m"}])
        h.model("paced", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "paced"}])
        h.key("main", "team-a")
        h.rule(scope="workspace", subject="team-a", unit="tpm", limit=10_000_000)
        yield h


def settled(h: Harness, billed: int) -> None:
    """Every reservation settled once, with exactly the billed tokens charged to the token bucket."""
    limiter = h.gateway.limiter
    assert isinstance(limiter, LocalLimiter)
    assert limiter._pending == {} and all(not v for v in limiter._leases.values())
    (bucket,) = [b for b in limiter.plan(Demand("chat", "team-a", h.key_ids["main"])).rates if b.is_tokens]
    ticks, d = limiter._tat.get(bucket.id, (FROZEN_US * bucket.d, bucket.d))
    assert (ticks - FROZEN_US * d) == billed * bucket.p
    assert h.gateway.local_quotas._reserved == {}


def only(h: Harness) -> UsageRecord:
    (row,) = h.records(1)
    return row


def tokens(row: UsageRecord) -> tuple[int, int, int, int, bool]:
    return (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens, row.estimated)


CASES: list[tuple[str, dict[str, Any], tuple[int, int, int, int, bool], str, str | None]] = [
    # name, simulator knobs, (prompt, completion, cached, reasoning, estimated), cost, error_type
    ("usage on an empty-choices chunk", {}, (ENGINE_PROMPT, 8, 0, 0, False), "0.000027000", None),
    (
        "usage on a chunk with choices",
        {"usage": "last_chunk"},
        (ENGINE_PROMPT, 8, 0, 0, False),
        "0.000027000",
        None,
    ),
    ("no usage at all", {"usage": "none"}, (ESTIMATED_PROMPT, 8, 0, 0, True), "0.000028000", None),
    # (11 - 5) × 1 + 5 × 0.5 + 8 × 2 = 24.5 per million
    (
        "cached and reasoning",
        {"cached_tokens": 5, "reasoning_tokens": 3},
        (ENGINE_PROMPT, 8, 5, 3, False),
        "0.000024500",
        None,
    ),
    # the engine failed after two tokens: prompt + what it generated, estimated
    (
        "upstream error after 200",
        {"fail_after_chunks": 2},
        (ESTIMATED_PROMPT, 2, 0, 0, True),
        "0.000016000",
        "upstream_error",
    ),
    (
        "upstream drops the connection",
        {"fail_after_chunks": 3, "fail_mode": "disconnect"},
        (ESTIMATED_PROMPT, 3, 0, 0, True),
        "0.000018000",
        "upstream_error",
    ),
]


@pytest.mark.parametrize(
    ("name", "knobs", "expected", "price", "error_type"), CASES, ids=[c[0] for c in CASES]
)
def test_streamed_usage_is_billed_exactly(
    gw: Harness,
    name: str,
    knobs: dict[str, Any],
    expected: tuple[int, int, int, int, bool],
    price: str,
    error_type: str | None,
) -> None:
    stream = gw.sdk().chat.completions.create(
        model="chat",
        messages=MESSAGES,
        stream=True,
        extra_body={"simulator": knobs},  # type: ignore[arg-type]
    )
    chunks = []
    try:
        chunks.extend(stream)
    except openai.APIError as exc:  # the SDK raises on an error event
        assert error_type == "upstream_error" and "simulated engine failure" in exc.message
    # the usage-only chunk is never shown to a client that did not ask (an engine that puts usage on
    # a content chunk shows it there: that chunk is passed on byte for byte)
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks[:-1])
    row = only(gw)
    assert tokens(row) == expected
    assert row.cost == Decimal(price) and row.error_type == error_type and row.status == 200
    assert (row.price_input_per_m, row.price_output_per_m, row.price_cached_per_m) == (1, 2, Decimal("0.5"))
    settled(gw, expected[0] + expected[1])


def test_a_client_that_asked_for_usage_sees_it_cached_and_reasoning_included(gw: Harness) -> None:
    chunks = list(
        gw.sdk().chat.completions.create(
            model="chat",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"simulator": {"cached_tokens": 5, "reasoning_tokens": 3}},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 5
    assert tokens(only(gw)) == (ENGINE_PROMPT, 8, 5, 3, False)
    settled(gw, ENGINE_PROMPT + 8)


def test_a_client_that_did_not_ask_sees_no_usage_field_at_all_yet_is_billed(gw: Harness) -> None:
    """As from OpenAI: without `include_usage` no chunk has a `usage` member, not even a null one."""
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {gw.keys['main']}"}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=10) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) > 8
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)
    assert tokens(only(gw)) == (ENGINE_PROMPT, 8, 0, 0, False)


def test_a_client_gone_before_the_first_token_is_billed_the_prompt(gw: Harness) -> None:
    body = {"model": "paced", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {gw.keys['main']}"}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200 and "x-ratelimit-remaining-tokens" in r.headers
    row = only(gw)  # left at once: the engine's first token was still 300 ms away
    assert row.error_type == "client_disconnected" and row.ttft_ms is None
    assert tokens(row) == (ESTIMATED_PROMPT, 0, 0, 0, True) and row.cost == Decimal("0.000012000")
    settled(gw, ESTIMATED_PROMPT)


def test_a_client_gone_mid_stream_is_billed_what_was_generated(gw: Harness) -> None:
    body = {"model": "paced", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {gw.keys['main']}"}
    received = bytearray()
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=10) as r:
        for piece in r.iter_raw():
            received += piece
            if received.count(b'"content":" ') >= 3:
                break
    row = only(gw)
    assert row.error_type == "client_disconnected" and row.estimated and row.ttft_ms is not None
    assert row.prompt_tokens == ESTIMATED_PROMPT and 3 <= row.completion_tokens < 8
    assert row.cost == Decimal(ESTIMATED_PROMPT + 2 * row.completion_tokens) / 1_000_000
    settled(gw, ESTIMATED_PROMPT + row.completion_tokens)


def test_an_upstream_429_before_the_first_byte_fails_over(
    gw: Harness, httpserver: HTTPServer, engine: str
) -> None:
    httpserver.expect_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "slow down", "type": "rate_limit", "code": None}},
        status=429,
        headers={"retry-after": "30"},
    )
    first = {"kind": "external", "base_url": httpserver.url_for("/v1"), "upstream_model": "m", "priority": 0}
    second = {"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m", "priority": 1}
    gw.model("failover", [first, second])
    chunks = list(gw.sdk().chat.completions.create(model="failover", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    row = only(gw)
    assert row.target == f"ext:{engine}/v1#m" and row.status == 200 and row.error_type is None
    assert tokens(row) == (ENGINE_PROMPT, 8, 0, 0, False) and row.cost == Decimal("0.000027000")
    assert len(httpserver.log) == 1
    breaker = gw.gateway.breakers[f"ext:{httpserver.url_for('/v1')}#m"]
    assert breaker.retry_in() > 25  # the upstream's retry-after, not the default cool-down
    gw.sdk().chat.completions.create(model="failover", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(httpserver.log) == 1  # the open circuit is skipped
    gw.records(2)
    limiter = gw.gateway.limiter
    assert isinstance(limiter, LocalLimiter) and limiter._pending == {}


def test_a_non_streamed_answer_without_usage_is_estimated(gw: Harness) -> None:
    reply = gw.sdk().chat.completions.create(
        model="chat",
        messages=MESSAGES,
        extra_body={"simulator": {"usage": "none"}},  # type: ignore[arg-type]
    )
    assert reply.usage is None
    assert tokens(only(gw)) == (ESTIMATED_PROMPT, 8, 0, 0, True)
    settled(gw, ESTIMATED_PROMPT + 8)


def test_a_refused_request_is_recorded_unbilled_and_settled(gw: Harness) -> None:
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="rpm", limit=1)
    gw.sdk().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        gw.sdk().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    rows = gw.records(2)
    assert [(r.status, r.cost) for r in rows] == [(200, Decimal("0.000027000")), (429, 0)]
    settled(gw, ENGINE_PROMPT + 8)
