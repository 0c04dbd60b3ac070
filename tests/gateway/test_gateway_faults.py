"""Faults under load, with real processes: three gateways (`python -m gateway`) on PostgreSQL and a
Redis of the test's own, which is SIGKILLed under load and started again empty; and a gateway
SIGKILLed in the middle of a stream.

What must hold (docs/gateway/limits.md "Faults", docs/gateway/usage-and-operations.md "Usage that
survives a crash"):

- a request rate admits no more than the reference model of the limit admits for the burst, plus one
  request per replica (what the documented bound allows an emptied Redis and the fallback);
- concurrency never goes above its limit, across the restart (Redis forgot every lease);
- once Redis answers, no request is refused as `limiter_unavailable` (stale pooled connections are
  retried on fresh ones);
- a gateway killed mid-stream: its lease frees within a lease lifetime (not five minutes), and its
  request's usage row appears, interrupted, with estimated tokens, once.

The shared Redis at 127.0.0.1:6379 is never touched: the test starts its own `redis-server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from benchmarks import gateway_fleet
from benchmarks.gateway_fleet import Fleet, Missing, OwnRedis, chat, own_database
from gateway.limits import Rule, Scope, Unit
from store.models import UsageInflight, UsageRecord
from tests.gateway.test_gateway_processes import reference_admits
from tests.portal.conftest import PG_ADMIN_URL, PG_SKIP

GATEWAYS = 3
LEASE_S = 3.0  # concurrency lease lifetime: renewed every second; a dead replica's leases free within it
PER_MINUTE = 60  # key "burst"
BURST = 300  # requests to it, spread evenly over BURST_S
BURST_S = 3.0
CONCURRENT = 5  # key "slow"
TOKENS_PER_S = 20  # the simulator's decode speed: a stream of n tokens lasts n / 20 s


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    try:
        own = OwnRedis(tmp_path / "redis.log")
    except Missing as missing:
        pytest.skip(str(missing))
    own.start()
    try:
        yield own
    finally:
        own.kill()


@pytest.fixture
def pg_url() -> Iterator[str]:
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    with own_database(PG_ADMIN_URL) as url:
        yield url


RULES = {
    "burst": ("rpm", PER_MINUTE),
    "slow": ("concurrency", CONCURRENT),
    "tok": ("tpm", 50_000_000),  # tokens fail closed: the key that would see limiter_unavailable
    "one": ("concurrency", 1),
}


@contextlib.contextmanager
def fleet(tmp: Path, redis_url: str, database_url: str, gateways: int = GATEWAYS) -> Iterator[Fleet]:
    with gateway_fleet.fleet(
        tmp, redis_url, database_url, RULES, gateways=gateways, lease_s=LEASE_S, tokens_per_s=TOKENS_PER_S
    ) as running:
        yield running


@dataclass
class Observed:
    burst: list[int] = field(default_factory=list)
    burst_seconds: float = 0.0
    streams: list[tuple[float, float]] = field(default_factory=list)  # admitted: (headers, last byte)
    stream_statuses: list[int] = field(default_factory=list)
    tokens: list[tuple[int, str]] = field(default_factory=list)  # after Redis answered: status, code
    redis_back_at: float = 0.0


async def under_load(f: Fleet, own: OwnRedis) -> Observed:
    """The burst, concurrent streams and, once Redis answers again, token-limited requests; Redis is
    killed 1 s in and started again (empty) 0.6 s later."""
    seen = Observed()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        start = time.monotonic()

        def auth(name: str) -> dict[str, str]:
            return {"authorization": f"Bearer {f.keys[name]}"}

        async def one_of_burst(i: int) -> int:
            await asyncio.sleep(start + BURST_S * i / BURST - time.monotonic())
            url = f"{f.urls[i % GATEWAYS]}/v1/chat/completions"
            try:
                response = await client.post(url, json=chat(1), headers=auth("burst"))
            except httpx.TransportError:
                return 0
            return response.status_code

        async def burst() -> None:
            seen.burst = list(await asyncio.gather(*(one_of_burst(i) for i in range(BURST))))
            seen.burst_seconds = time.monotonic() - start

        async def streamer(worker: int) -> None:
            n = worker
            # Until the calm-down after the restart (one lease lifetime) is well over.
            while not seen.redis_back_at or time.monotonic() < seen.redis_back_at + LEASE_S + 2.0:
                n += 1
                url = f"{f.urls[n % GATEWAYS]}/v1/chat/completions"
                async with client.stream("POST", url, json=chat(16, stream=True), headers=auth("slow")) as r:
                    seen.stream_statuses.append(r.status_code)
                    if r.status_code != 200:
                        await r.aread()
                        await asyncio.sleep(0.05)
                        continue
                    opened = time.monotonic()
                    async for _ in r.aiter_raw():
                        pass
                    seen.streams.append((opened, time.monotonic()))

        async def chaos() -> None:
            await asyncio.sleep(start + 1.0 - time.monotonic())
            own.kill()
            await asyncio.sleep(0.6)
            await asyncio.to_thread(own.start)
            seen.redis_back_at = time.monotonic()
            await asyncio.sleep(0.3)  # the gateways' probe asks every 0.1 s
            gate = asyncio.Semaphore(10)

            async def tokens(i: int) -> tuple[int, str]:
                async with gate:
                    url = f"{f.urls[i % GATEWAYS]}/v1/chat/completions"
                    response = await client.post(url, json=chat(1), headers=auth("tok"))
                    code = (
                        response.json().get("error", {}).get("code", "")
                        if response.status_code != 200
                        else ""
                    )
                    return response.status_code, code

            seen.tokens = list(await asyncio.gather(*(tokens(i) for i in range(100))))

        await asyncio.gather(burst(), chaos(), *(streamer(w) for w in range(8)))
    return seen


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_redis_killed_and_restarted_empty_under_load_keeps_every_limit(
    own_redis: OwnRedis, pg_url: str, tmp_path: Path
) -> None:
    with fleet(tmp_path, own_redis.url, pg_url) as f:
        seen = asyncio.run(under_load(f, own_redis))
        most_streams = f.most_streams_at_once()

    admitted = seen.burst.count(200)
    expected = reference_admits(
        Rule(Scope.API_KEY, Unit.RPM, PER_MINUTE, subject="k"), BURST, seen.burst_seconds
    )
    # The documented bound: the exact one, plus one request per replica (docs/gateway/limits.md).
    assert expected.start <= admitted <= expected.stop - 1 + GATEWAYS, (
        admitted,
        expected,
        seen.burst_seconds,
    )
    assert set(seen.burst) <= {200, 429}, sorted(set(seen.burst))

    # Redis forgot every lease; the live ones were put back before anyone was admitted on top of them.
    assert most_streams <= CONCURRENT, (most_streams, most_at_once(seen.streams))
    assert any(opened > seen.redis_back_at for opened, _ in seen.streams)  # and it admits again after

    statuses = [status for status, _ in seen.tokens]
    assert statuses.count(200) == len(seen.tokens), [t for t in seen.tokens if t[0] != 200][:5]


def test_a_gateway_killed_mid_stream_frees_its_lease_within_seconds_and_its_usage_is_settled_once(
    own_redis: OwnRedis, pg_url: str, tmp_path: Path
) -> None:
    with fleet(tmp_path, own_redis.url, pg_url, gateways=2) as f:
        headers = {"authorization": f"Bearer {f.keys['one']}"}

        async def run() -> tuple[str, float, list[int]]:
            async with httpx.AsyncClient(timeout=30) as client:
                url = f"{f.urls[0]}/v1/chat/completions"
                async with client.stream("POST", url, json=chat(400, stream=True), headers=headers) as r:
                    assert r.status_code == 200
                    request_id = r.headers["x-request-id"]
                    # Read by hand: leaving an `async for` would close the generator, and with it the
                    # stream -- a disconnect the gateway settles, not a crash.
                    pieces = r.aiter_raw()
                    received = 0
                    while received < 10:  # half a second of tokens relayed
                        received += (await pieces.__anext__()).count(b"data: ")
                    await asyncio.sleep(0.6)  # a heartbeat carries the progress
                    os.kill(f.pids[0], signal.SIGKILL)
                    del pieces
                killed = time.monotonic()
                statuses = []
                while time.monotonic() - killed < LEASE_S + 5:
                    other = f"{f.urls[1]}/v1/chat/completions"
                    response = await client.post(other, json=chat(1), headers=headers)
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                return request_id, time.monotonic() - killed, statuses

        request_id, freed_after, statuses = asyncio.run(run())
        assert statuses[0] == 429  # the dead replica's lease still held the key at first
        assert statuses[-1] == 200 and freed_after <= LEASE_S + 1.0, (freed_after, statuses)

        engine = create_engine(f.database_url)
        try:
            deadline = time.monotonic() + 10
            rows: list[Any] = []
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    rows = list(conn.execute(select(UsageRecord).where(UsageRecord.request_id == request_id)))
                if rows:
                    break
                time.sleep(0.2)
            assert len(rows) == 1, "the killed stream's usage row never appeared"
            row = rows[0]
            assert row.error_type == "interrupted" and row.estimated and row.stream
            assert row.completion_tokens >= 5 and row.prompt_tokens > 0 and row.status == 200
            time.sleep(1.5)  # another round of every reaper: still one row, no marker left
            with engine.connect() as conn:
                assert (
                    conn.execute(select(UsageRecord).where(UsageRecord.request_id == request_id)).all()
                    == rows
                )
                assert conn.execute(select(UsageInflight)).all() == []
        finally:
            engine.dispose()
