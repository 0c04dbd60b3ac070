"""Limits where tokens are not the unit, exact under concurrency like the token limits: an image
model's `upm` rule admits exactly its images per minute, in process and through Redis; refused
requests take nothing and are recorded unbilled. And failover for a non-chat endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest
from fastapi.testclient import TestClient

from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import Harness, harness, limiter_backend


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    # A little time per image, so that the concurrent requests really overlap in the limiter.
    simulator = Simulator({"i": ModelProfile(ttft_ms=20)}, accept_any_model=True)
    with serve_in_thread(simulator.app) as url:
        yield f"{url}/v1"


@pytest.fixture(params=["local", "redis"])
def gw(
    request: pytest.FixtureRequest, client: TestClient, services: Services, engine: str
) -> Iterator[Harness]:
    with limiter_backend(services, request.param), harness(client, services) as h:
        h.workspace("team-a")
        target = [{"kind": "external", "base_url": engine, "upstream_model": "i"}]
        h.model("img", target, capabilities=["image-generation"], price_per_unit=0.04)
        h.key("main", "team-a")
        yield h


def test_images_per_minute_are_exact_under_concurrency(gw: Harness) -> None:
    gw.rule(scope="model", model="img", unit="upm", limit=10)

    async def burst() -> list[int | str]:
        async with gw.async_sdk() as sdk:

            async def one() -> int | str:
                try:
                    answer = await sdk.images.generate(model="img", prompt="a fox", size="32x32", n=2)
                except openai.RateLimitError as refused:
                    assert "units per min" in refused.message
                    return str(refused.type)
                return len(answer.data or [])

            return list(await asyncio.gather(*(one() for _ in range(12))))

    outcomes = asyncio.run(burst())
    assert sorted(outcomes, key=str) == [2] * 5 + ["units"] * 7  # 10 images: five requests of two
    rows = gw.records(12)
    served = [r for r in rows if r.status == 200]
    assert len(served) == 5 and {(r.modality, r.units, Decimal(r.cost)) for r in served} == {
        ("image", 2, Decimal("0.080002000"))  # 2 × 0.04 + 2 tokens × 1 per million
    }
    assert {(r.status, r.units, Decimal(r.cost)) for r in rows if r.status != 200} == {(429, 0, Decimal(0))}


def test_a_request_for_more_images_than_the_bucket_holds_is_never_retried(gw: Harness) -> None:
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="upd", limit=3)
    sdk = gw.sdk()
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.images.generate(model="img", prompt="a fox", size="32x32", n=4)
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "Request too large" in refused.value.message
    assert len(sdk.images.generate(model="img", prompt="a fox", size="32x32", n=3).data or []) == 3
    with pytest.raises(openai.RateLimitError):
        sdk.images.generate(model="img", prompt="a fox", size="32x32")


def test_an_unreachable_target_fails_over_for_images_too(gw: Harness, engine: str) -> None:
    gw.model(
        "img2",
        [
            {"kind": "external", "base_url": "http://127.0.0.1:9/v1", "upstream_model": "i", "priority": 0},
            {"kind": "external", "base_url": engine, "upstream_model": "i", "priority": 1},
        ],
        capabilities=["image-generation"],
    )
    answer = gw.sdk().images.generate(model="img2", prompt="a fox", size="32x32")
    assert len(answer.data or []) == 1
    (row,) = gw.records(1)
    assert row.status == 200 and row.target is not None and engine in row.target


def test_units_come_back_when_a_quota_refuses_what_the_limits_admitted(gw: Harness) -> None:
    gw.rule(scope="model", model="img", unit="upm", limit=2)
    gw.key("tiny", "team-a", token_quota=1)  # "a fox" is 2 tokens: the quota refuses after the limits
    with pytest.raises(openai.RateLimitError) as refused:
        gw.sdk("tiny").images.generate(model="img", prompt="a fox", size="32x32", n=2)
    assert refused.value.code == "insufficient_quota"
    # The two images the limits had taken came back: another key gets both at once.
    assert len(gw.sdk().images.generate(model="img", prompt="a fox", size="32x32", n=2).data or []) == 2
