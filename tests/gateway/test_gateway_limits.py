"""Rate limits through the real gateway, in process and against real Redis: 429s the OpenAI SDK
understands, headers on every answer (streams too), reservations reconciled and released exactly once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis
from fastapi.testclient import TestClient

from gateway.limits import LocalLimiter, RedisLimiter
from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import Harness, harness, limiter_backend
from tests.gateway.test_limits_helpers import REDIS_URL, redis_reason

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
BILLED = 11 + 8  # the simulator's prompt count + its 8 tokens


REDIS_SKIP = redis_reason()


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator(
        {
            "m": ModelProfile(ttft_ms=30, tokens_per_second=100, completion_tokens=8),
            "slow": ModelProfile(ttft_ms=30, tokens_per_second=4, completion_tokens=8),  # a 2 s stream
        }
    )
    with serve_in_thread(simulator.app) as url:
        yield url


@pytest.fixture(params=["local", "redis"])
def gw(
    request: pytest.FixtureRequest, client: TestClient, services: Services, engine: str
) -> Iterator[Harness]:
    backend = request.param
    with limiter_backend(services, backend), harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m"}])
        h.key("main", "team-a")
        yield h


def outstanding(h: Harness) -> tuple[int, int]:
    """(token reservations not yet settled, concurrency leases held) in the limiter's store."""
    limiter = h.gateway.limiter
    if isinstance(limiter, LocalLimiter):
        return len(limiter._pending), sum(len(v) for v in limiter._leases.values())
    assert isinstance(limiter, RedisLimiter)
    r = redis.Redis.from_url(REDIS_URL)
    prefix = h.services.settings.gateway_redis_prefix
    pending = sum(1 for _ in r.scan_iter(f"{prefix}:rl:res:*"))
    leases = sum(r.zcard(k) for k in r.scan_iter(f"{prefix}:rl:concurrency:*"))
    return pending, leases


def test_a_refusal_is_a_rate_limit_error_with_headers_naming_scope_and_unit(gw: Harness) -> None:
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="rpm", limit=2)
    sdk = gw.sdk()
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-scope-requests"] == "api_key"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    error = refused.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert "api_key requests per min (RPM): Limit 2" in error.message
    headers = error.response.headers
    assert 1 <= int(headers["retry-after"]) <= 30 and int(headers["retry-after-ms"]) > 0
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-request-id"].startswith("req_")
    rows = gw.records(3)
    assert [(r.status, r.error_type) for r in rows] == [
        (200, None),
        (200, None),
        (429, "rate_limit_exceeded"),
    ]
    assert outstanding(gw) == (0, 0)


def test_streams_carry_the_headers_and_tokens_are_reconciled_to_the_metered_usage(gw: Harness) -> None:
    limit = 86_400  # tokens per day: one token refills per second, so the figures below are exact ±2
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="tpd", limit=limit)
    gw.rule(scope="workspace", subject="team-a", unit="concurrency", limit=4)
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 500, "stream": True}
    reserve = 12 + 500  # prompt estimate + max_tokens
    remaining = []
    for _ in range(3):
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {gw.keys['main']}"},
            timeout=10,
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit-tokens"] == str(limit)  # before the first byte
            remaining.append(int(response.headers["x-ratelimit-remaining-tokens"]))
            assert b"[DONE]" in response.read()
        gw.records(len(remaining))
    for k, left in enumerate(remaining):
        expected = limit - k * BILLED - reserve  # earlier requests charged what they used, not 512
        assert expected <= left <= expected + 2, (k, left, expected)
    assert outstanding(gw) == (0, 0)


def test_concurrency_leases_are_held_while_a_stream_runs(gw: Harness) -> None:
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="concurrency", limit=1)
    engine = gw.client.get("/api/maas-models").json()["items"][0]["targets"][0]["base_url"]
    gw.model("slow", [{"kind": "external", "base_url": engine, "upstream_model": "slow"}])
    opened = threading.Event()
    finish = threading.Event()

    def hold_a_stream() -> None:
        stream = gw.sdk().chat.completions.create(model="slow", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        next(iter(stream))
        opened.set()
        finish.wait(10)
        list(stream)

    holder = threading.Thread(target=hold_a_stream)
    holder.start()
    assert opened.wait(10)
    with pytest.raises(openai.RateLimitError) as refused:
        gw.sdk().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.type == "concurrency" and "concurrent requests" in refused.value.message
    finish.set()
    holder.join(10)
    gw.records(2)
    assert outstanding(gw) == (0, 0)
    assert gw.sdk().chat.completions.create(model="chat", messages=MESSAGES).usage is not None  # type: ignore[arg-type]


def test_a_request_larger_than_the_bucket_is_never_retried(gw: Harness) -> None:
    gw.rule(scope="model", model="chat", unit="tpm", limit=100)
    with pytest.raises(openai.RateLimitError) as refused:
        gw.sdk().chat.completions.create(model="chat", messages=MESSAGES, max_tokens=200)  # type: ignore[arg-type]
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "Request too large" in refused.value.message and refused.value.type == "tokens"


def test_redis_down_fails_closed_for_tokens_and_locally_for_requests(
    client: TestClient, services: Services, engine: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    services.settings = services.settings.model_copy(update={"redis_url": closed})
    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m"}])
        h.model("chat2", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m"}])
        h.key("main", "team-a")
        h.rule(scope="model", model="chat", unit="tpm", limit=100_000)
        h.rule(scope="model", model="chat2", unit="rps", limit=2)
        with pytest.raises(openai.InternalServerError) as unavailable:
            h.sdk().chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert unavailable.value.status_code == 503 and unavailable.value.code == "limiter_unavailable"
        assert int(unavailable.value.response.headers["retry-after"]) >= 1
        # requests fall back to this replica's own limiter, which starts used up (it cannot know what
        # other replicas took) and admits what refills: one request per 0.5 s here
        with pytest.raises(openai.RateLimitError):
            h.sdk().chat.completions.create(model="chat2", messages=MESSAGES)  # type: ignore[arg-type]
        time.sleep(0.55)
        assert h.sdk().chat.completions.create(model="chat2", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError):
            h.sdk().chat.completions.create(model="chat2", messages=MESSAGES)  # type: ignore[arg-type]
