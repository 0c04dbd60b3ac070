"""`POST /v1/compare`: one prompt to several models in one event stream, every event tagged with its
model; all legs admitted together or none (limits and quotas), each leg metered as its own row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from gateway.limits import Demand, LocalLimiter, RedisLimiter, Rule, Scope, Unit
from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import Harness, harness, limiter_backend
from tests.gateway.test_gateway_limits import REDIS_SKIP
from tests.gateway.test_limits_helpers import REDIS_URL, delete_prefix

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
BOTH = pytest.mark.parametrize("gw", ["local", "redis"], indirect=True)  # in process and on Redis


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator(
        {
            "fast": ModelProfile(ttft_ms=20, tokens_per_second=200, completion_tokens=8),
            "slow": ModelProfile(ttft_ms=150, tokens_per_second=50, completion_tokens=6),
        }
    )
    with serve_in_thread(simulator.app) as url:
        yield url


@pytest.fixture(params=["local", "redis"])
def gw(
    request: pytest.FixtureRequest, client: TestClient, services: Services, engine: str
) -> Iterator[Harness]:
    backend = getattr(request, "param", "local")  # tests that need both say so (indirect parametrize)
    with limiter_backend(services, backend), harness(client, services) as h:
        h.workspace("team-a")
        h.model("a", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "fast"}])
        h.model(
            "b",
            [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "slow"}],
            prices=("3", "4", "3"),
        )
        yield h


def compare(
    h: Harness, body: dict[str, Any], key: str = "main"
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {h.keys[key]}"}
    with httpx.stream("POST", f"{h.url}/v1/compare", json=body, headers=headers, timeout=10) as response:
        if response.status_code != 200:
            response.read()
            return response, events
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
                events.append(
                    {"event": None, "data": data} if data == "[DONE]" else {"event": name, **json.loads(data)}
                )
                name = None
    return response, events


def test_one_stream_with_every_event_tagged_and_per_model_figures(gw: Harness) -> None:
    gw.key("main", "team-a")
    response, events = compare(gw, {"models": ["a", "b"], "messages": MESSAGES, "temperature": 0.2})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert events[0]["type"] == "start" and events[0]["models"] == [
        {"index": 0, "model": "a"},
        {"index": 1, "model": "b"},
    ]
    assert events[-1]["data"] == "[DONE]"
    chunks = [e for e in events if e.get("type") == "chunk"]
    assert {(e["index"], e["model"]) for e in chunks} == {(0, "a"), (1, "b")}
    assert all(e["event"] == "chunk" and e["chunk"]["object"] == "chat.completion.chunk" for e in chunks)
    assert all(e["chunk"]["choices"] for e in chunks)  # the usage-only chunks stay hidden
    done = {e["model"]: e for e in events if e.get("type") == "done"}
    assert done["a"]["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 8,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "estimated": False,
    }
    assert done["b"]["usage"]["completion_tokens"] == 6
    assert Decimal(done["a"]["cost"]) == Decimal("0.000027000")  # 11 × 1 + 8 × 2
    assert Decimal(done["b"]["cost"]) == Decimal("0.000057000")  # 11 × 3 + 6 × 4
    assert done["a"]["status"] == done["b"]["status"] == "completed"
    assert done["b"]["ttft_ms"] >= 150 and done["a"]["ttft_ms"] > 0  # each leg timed on its own
    assert done["b"]["latency_ms"] >= done["b"]["ttft_ms"]
    rows = sorted(gw.records(2), key=lambda r: r.request_id)
    assert [(r.endpoint, r.model, r.completion_tokens) for r in rows] == [
        ("compare", "a", 8),
        ("compare", "b", 6),
    ]
    assert rows[0].request_id.endswith(".0") and rows[1].request_id == rows[0].request_id[:-2] + ".1"
    assert [r.cost for r in rows] == [Decimal("0.000027000"), Decimal("0.000057000")]


@BOTH
def test_all_legs_are_admitted_or_none(gw: Harness) -> None:
    gw.key("main", "team-a")
    gw.rule(scope="model", model="a", unit="rpm", limit=1)
    gw.rule(scope="model", model="b", unit="rpm", limit=1)
    gw.sdk().chat.completions.create(model="b", messages=MESSAGES)  # type: ignore[arg-type]  # b's one request
    response, _ = compare(gw, {"models": ["a", "b"], "prompt": "Tell me about gateways"})
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["param"] == "models[1]" and error["code"] == "rate_limit_exceeded"
    assert (
        error["message"].startswith("models[1] (b): ") and "model requests per min (RPM)" in error["message"]
    )
    assert int(response.headers["retry-after"]) >= 1
    # leg a was admitted first and cancelled: its one request per minute is still there
    assert gw.sdk().chat.completions.create(model="a", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
    rows = gw.records(3)
    assert [(r.model, r.status) for r in rows] == [("b", 200), ("b", 429), ("a", 200)]


@BOTH
def test_a_quota_too_small_for_every_leg_admits_none(gw: Harness) -> None:
    gw.key("main", "team-a", token_quota=40)  # one leg reserves 12 + 20 = 32
    response, _ = compare(gw, {"models": ["a", "b"], "messages": MESSAGES, "max_tokens": 20})
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
    assert response.json()["error"]["param"] == "models[1]"
    r = gw.sdk().chat.completions.create(model="a", messages=MESSAGES, max_tokens=20)  # type: ignore[arg-type]
    assert r.usage is not None  # leg a's 32 reserved tokens were given back


def test_bad_requests(gw: Harness) -> None:
    gw.key("main", "team-a")
    for body, param in [
        ({"models": [], "messages": MESSAGES}, "models"),
        ({"models": ["a", "b", "a"], "messages": MESSAGES}, "models"),
        ({"models": ["a", "b", "c", "d"], "messages": MESSAGES}, "models"),
        ({"models": ["a"]}, "messages"),
    ]:
        response, _ = compare(gw, body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, body
    response, _ = compare(gw, {"models": ["a", "nope"], "messages": MESSAGES})
    assert response.status_code == 404 and response.json()["error"]["param"] == "models[1]"


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_cancel_gives_back_everything_an_admission_took(backend: str) -> None:
    rules = [
        Rule(Scope.MODEL, Unit.RPM, 1, model="m"),
        Rule(Scope.API_KEY, Unit.TPM, 100),
        Rule(Scope.WORKSPACE, Unit.CONCURRENCY, 1),
    ]
    demand = Demand("m", "w", "k", tokens=100)
    if backend == "redis":
        if REDIS_SKIP:
            pytest.skip(REDIS_SKIP)

        async def run() -> None:
            prefix = f"mft{uuid.uuid4().hex[:8]}"
            limiter = RedisLimiter.from_url(REDIS_URL, rules, prefix=prefix)
            try:
                first = await limiter.acquire(demand)
                assert first.admitted and not (await limiter.acquire(demand)).admitted
                assert first.reservation is not None
                await limiter.cancel(first.reservation)
                assert (await limiter.acquire(demand)).admitted  # rpm cell, tokens and lease all back
            finally:
                delete_prefix(prefix)
                await limiter.aclose()

        asyncio.run(run())
        return
    local = LocalLimiter(rules, clock=lambda: 10**12)
    first = local.try_acquire(demand)
    assert first.admitted and not local.try_acquire(demand).admitted
    assert first.reservation is not None
    local.try_cancel(first.reservation)
    assert local._tat == {} and local._pending == {}
    assert local.try_acquire(demand).admitted


def test_a_key_must_be_valid(gw: Harness) -> None:
    gw.keys["bad"] = "sk-" + "x" * 52
    response, _ = compare(gw, {"models": ["a"], "messages": MESSAGES}, key="bad")
    assert response.status_code == 401
    with (
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-nope", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError),
    ):
        sdk.models.list()
