"""Token quotas per API key and per workspace: reserved before the call (concurrent requests cannot
overshoot), charged to both in the database by the usage writer, refreshed per day/week/month."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import openai
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from store.models import ApiKey, Workspace
from store.periods import period_bounds
from tests.gateway.gateway_support import Harness, harness, limiter_backend
from tests.gateway.test_limits_helpers import REDIS_URL

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
BOTH = pytest.mark.parametrize("gw", ["local", "redis"], indirect=True)  # in process and on Redis
RESERVED = 12 + 8  # the prompt estimate + max_tokens
BILLED = 11 + 8  # what the engine reports


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator({"m": ModelProfile(ttft_ms=150, completion_tokens=8)})
    with serve_in_thread(simulator.app) as url:
        yield url


@pytest.fixture(params=["local", "redis"])
def gw(
    request: pytest.FixtureRequest, client: TestClient, services: Services, engine: str
) -> Iterator[Harness]:
    backend = getattr(request, "param", "local")  # tests that need both say so (indirect parametrize)
    with limiter_backend(services, backend), harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m"}])
        yield h


def chat(h: Harness, key: str = "main") -> int:
    reply = h.sdk(key).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
    assert reply.usage is not None
    return reply.usage.total_tokens


def used(h: Harness) -> tuple[int, int]:
    """(the key's, the workspace's) used tokens in the database, once the writer caught up."""
    assert h.gateway.writer.flush()
    with h.services.sessions() as session:
        key = session.scalar(select(ApiKey.used_tokens).where(ApiKey.public_id == h.key_ids["main"]))
        workspace = session.scalar(select(Workspace.used_tokens).where(Workspace.slug == "team-a"))
    return key or 0, workspace or 0


@BOTH
def test_an_exhausted_key_quota_is_insufficient_quota(gw: Harness) -> None:
    gw.key("main", "team-a", token_quota=50)
    assert chat(gw) == BILLED  # 0 + 20 reserved <= 50
    assert chat(gw) == BILLED  # 19 + 20 <= 50
    with pytest.raises(openai.RateLimitError) as refused:  # 38 + 20 > 50
        chat(gw)
    error = refused.value
    assert error.code == "insufficient_quota" and error.type == "insufficient_quota"
    assert f"API key {gw.key_ids['main']}" in error.message and "38 of 50" in error.message
    assert error.response.headers["x-should-retry"] == "false"  # a lifetime quota never refreshes
    assert used(gw) == (2 * BILLED, 2 * BILLED)  # charged to the key and to its workspace
    key = gw.client.get(f"/api/workspaces/team-a/api-keys/{gw.key_ids['main']}").json()
    assert key["used_tokens"] == 2 * BILLED and key["remaining_tokens"] == 50 - 2 * BILLED
    rows = gw.records(3)
    assert rows[-1].status == 429 and rows[-1].error_type == "insufficient_quota"


@BOTH
def test_concurrent_requests_cannot_overshoot_a_quota(gw: Harness) -> None:
    gw.key("main", "team-a", token_quota=100)

    async def burst() -> list[BaseException | int]:
        async with gw.async_sdk() as client:

            async def one() -> int:
                r = await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
                assert r.usage is not None
                return r.usage.total_tokens

            return await asyncio.gather(*(one() for _ in range(10)), return_exceptions=True)

    results = asyncio.run(burst())
    served = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(served) == 5 and len(refused) == 5  # 5 × 20 reserved = 100: the sixth does not fit
    assert all(r.code == "insufficient_quota" for r in refused)
    assert used(gw)[0] == 5 * BILLED <= 100


@BOTH
def test_a_workspace_quota_refreshes_each_period(gw: Harness) -> None:
    gw.workspace("team-a", token_quota=30, quota_refresh="day")
    gw.key("main", "team-a")
    assert chat(gw) == BILLED
    with pytest.raises(openai.RateLimitError) as refused:  # 19 + 20 > 30
        chat(gw)
    assert "workspace team-a" in refused.value.message
    retry = int(refused.value.response.headers["retry-after"])
    now = datetime.now(UTC)
    assert 0 < retry <= (period_bounds("day", now)[1] - now).total_seconds() + 2  # next midnight UTC
    assert used(gw) == (BILLED, BILLED)
    with gw.services.sessions() as session, session.begin():  # yesterday's usage, as if the day ended
        yesterday = period_bounds("day", now)[0] - timedelta(days=1)  # type: ignore[operator]
        session.execute(
            update(Workspace)
            .where(Workspace.slug == "team-a")
            .values(used_tokens=10**6, quota_period_start=yesterday)
        )
    if gw.gateway.quotas.shared is not None:  # Redis: today's counter goes too (a new day has none)
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"{gw.services.settings.gateway_redis_prefix}:quota:workspace:team-a:*"):
            r.delete(key)
    assert chat(gw) == BILLED  # a new period: nothing used yet
    assert used(gw)[1] == BILLED  # the writer restarted the count for today
    with gw.services.sessions() as session:
        start = session.scalar(select(Workspace.quota_period_start).where(Workspace.slug == "team-a"))
    assert start is not None and start.replace(tzinfo=UTC) == period_bounds("day", datetime.now(UTC))[0]


def test_a_key_quota_with_a_weekly_refresh(gw: Harness) -> None:
    gw.key("main", "team-a", token_quota=25, quota_refresh="week")
    assert chat(gw) == BILLED
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw)
    assert "retry-after" in refused.value.response.headers  # it refreshes next Monday
    assert gw.gateway.writer.flush()
    with gw.services.sessions() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.public_id == gw.key_ids["main"]))
        assert key is not None and key.used_tokens == BILLED
        assert key.quota_period_start is not None
        assert key.quota_period_start.replace(tzinfo=UTC).weekday() == 0


@BOTH
def test_a_keys_new_refresh_cycle_reaches_the_gateway_with_the_usage_of_its_period(gw: Harness) -> None:
    gw.key("main", "team-a", token_quota=30)
    quota = f"/api/workspaces/team-a/api-keys/{gw.key_ids['main']}/quota"
    assert chat(gw) == BILLED
    with pytest.raises(openai.RateLimitError) as refused:  # 19 + 20 > 30
        chat(gw)
    assert "retry-after" not in refused.value.response.headers  # a lifetime quota never refreshes
    assert gw.gateway.writer.flush()

    changed = gw.client.put(quota, json={"token_quota": 30, "quota_refresh": "day"})
    assert changed.status_code == 200 and changed.json()["used_tokens"] == BILLED  # today's, recounted
    with pytest.raises(openai.RateLimitError) as refused:  # the daily quota knows what today used
        chat(gw)
    assert f"{BILLED} of 30" in refused.value.message
    now = datetime.now(UTC)
    retry = int(refused.value.response.headers["retry-after"])  # the gateway refreshes it at midnight
    assert 0 < retry <= (period_bounds("day", now)[1] - now).total_seconds() + 2  # type: ignore[operator]

    assert gw.client.put(quota, json={"token_quota": 100}).json()["quota_refresh"] == "day"
    assert chat(gw) == BILLED  # and goes on counting in the day's period
    assert used(gw)[0] == 2 * BILLED
    key = gw.client.get(f"/api/workspaces/team-a/api-keys/{gw.key_ids['main']}").json()
    assert (key["used_tokens"], key["remaining_tokens"]) == (2 * BILLED, 100 - 2 * BILLED)


@BOTH
def test_a_workspaces_new_refresh_cycle_reaches_the_gateway_with_the_usage_of_its_period(gw: Harness) -> None:
    """Monthly to daily: today's usage, recounted, still counts against the daily quota (the monthly
    count, left as it was, stood in a period the daily cycle never reads)."""
    gw.workspace("team-a", token_quota=30, quota_refresh="month")
    gw.key("main", "team-a")
    assert chat(gw) == BILLED
    assert used(gw)[1] == BILLED
    changed = gw.client.put("/api/workspaces/team-a/quota", json={"token_quota": 30, "quota_refresh": "day"})
    assert changed.status_code == 200 and changed.json()["quota_refresh"] == "day"
    with pytest.raises(openai.RateLimitError) as refused:  # 19 + 20 > 30 today too
        chat(gw)
    assert f"workspace team-a: {BILLED} of 30" in refused.value.message
    with gw.services.sessions() as session:
        start = session.scalar(select(Workspace.quota_period_start).where(Workspace.slug == "team-a"))
    assert start is not None and start.replace(tzinfo=UTC) == period_bounds("day", datetime.now(UTC))[0]
