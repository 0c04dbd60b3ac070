"""What an emptied Redis forgets, and what the replicas put back (docs/gateway/limits.md, "Faults").

Emptying is simulated by deleting every key of the test's prefix on the shared Redis -- what a restart
without persistence, a failover to an empty replica or a FLUSHALL leaves -- so these tests run in
seconds, without processes; the fault suite (test_gateway_faults.py) kills a real Redis under load.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.gateway_fleet import OwnRedis
from gateway.limits import Demand, FailurePolicy, OnFailure, RedisLimiter, Rule, Scope, Unit
from tests.gateway.test_limits_helpers import delete_prefix, prefix, redis_url

__all__ = ["prefix", "redis_url"]  # fixtures

own_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed: these stop a Redis of theirs",
)


def test_an_emptied_redis_gets_back_the_bucket_states_the_replicas_saw(redis_url: str, prefix: str) -> None:
    """Two replicas used up a bucket of 10 per minute between them; Redis forgets it. Each replica puts
    back the state it last saw before it is admitted again, so the bucket stays used up."""

    async def run() -> None:
        rules = [Rule(Scope.API_KEY, Unit.RPM, 10, subject="k")]
        a = RedisLimiter.from_url(redis_url, rules, prefix=prefix)
        b = RedisLimiter.from_url(redis_url, rules, prefix=prefix)
        try:
            demand = Demand("m", "w", "k")
            for limiter in (a, b, a, b, a, b, a, a, b, b):
                assert (await limiter.acquire(demand)).admitted
            assert not (await a.acquire(demand)).admitted
            delete_prefix(prefix)  # Redis emptied
            fresh = RedisLimiter.from_url(redis_url, rules, prefix=prefix)  # a replica that knew nothing
            try:
                assert not (await b.acquire(demand)).admitted  # b put back what it saw first
                assert not (await a.acquire(demand)).admitted
                assert not (await fresh.acquire(demand)).admitted
            finally:
                await fresh.aclose()
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_after_redis_forgot_the_leases_none_is_given_on_top_of_a_live_one(
    redis_url: str, prefix: str
) -> None:
    """A concurrency limit of 1 held by replica A; Redis forgets the lease. Until one lease lifetime has
    passed (the calm-down) B gets no lease; A's renewal (its heartbeat) puts its lease back, so after the
    calm-down B is still refused, until A settles."""

    async def run() -> None:
        rules = [Rule(Scope.API_KEY, Unit.CONCURRENCY, 1, subject="k")]
        options = {"prefix": prefix, "lease_ttl_s": 30.0, "recovery_grace_s": 0.6}
        a = RedisLimiter.from_url(redis_url, rules, **options)
        b = RedisLimiter.from_url(redis_url, rules, **options)
        try:
            demand = Demand("m", "w", "k")
            held = await a.acquire(demand)
            assert held.admitted and held.reservation is not None
            assert not (await b.acquire(demand)).admitted
            delete_prefix(prefix)  # Redis emptied: the lease is gone
            calm = await b.acquire(demand)
            assert not calm.admitted and calm.refusal is not None
            assert calm.refusal.retry_after is not None and calm.refusal.retry_after <= 0.6
            assert await a.renew(held.reservation)  # the heartbeat puts the live lease back
            await asyncio.sleep(0.7)  # the calm-down is over
            assert not (await b.acquire(demand)).admitted  # A's lease is there again
            assert await a.reconcile(held.reservation, 0)
            assert (await b.acquire(demand)).admitted
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(run())


def test_a_fresh_prefix_is_used_at_once_without_a_calm_down(redis_url: str, prefix: str) -> None:
    """The first use of a Redis is not an emptying: no replica knew an epoch, leases are given at once."""

    async def run() -> None:
        limiter = RedisLimiter.from_url(
            redis_url, [Rule(Scope.API_KEY, Unit.CONCURRENCY, 1, subject="k")], prefix=prefix
        )
        try:
            started = time.monotonic()
            assert (await limiter.acquire(Demand("m", "w", "k"))).admitted
            assert time.monotonic() - started < 1
        finally:
            await limiter.aclose()

    asyncio.run(run())


@own_redis_server
def test_what_the_fallback_admitted_is_charged_to_redis_when_it_answers_again(tmp_path: Path) -> None:
    """Redis stops answering (SIGSTOP: it keeps its state); the `local` fallback admits what refills at
    its share of the rate; when Redis answers again, those admissions are charged to the shared bucket,
    so it does not hand out the outage's refill a second time."""
    own = OwnRedis(tmp_path / "redis.log")
    own.start()

    async def run() -> None:
        rules = [Rule(Scope.API_KEY, Unit.RPS, 30, subject="k")]
        policy = FailurePolicy(requests=OnFailure.LOCAL)
        limiter = RedisLimiter.from_url(own.url, rules, failure=policy, retry_interval_s=0.05, timeout_s=0.2)
        try:
            demand = Demand("m", "w", "k")
            assert (await limiter.acquire(demand)).admitted
            assert own.process is not None
            own.process.send_signal(signal.SIGSTOP)
            try:
                fallback = 0
                started = time.monotonic()
                while time.monotonic() - started < 1.0:
                    decision = await limiter.acquire(demand)
                    assert decision.degraded
                    fallback += decision.admitted
                    await asyncio.sleep(0.01)
            finally:
                own.process.send_signal(signal.SIGCONT)
            assert 10 <= fallback <= 31  # 30 per second from a used-up bucket, for at most a second
            deadline = time.monotonic() + 5
            while not limiter.link.up and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert limiter.link.up
            client = redis.Redis.from_url(own.url)
            try:
                stored = client.get("mf:rl:rps:api_key:k")
                seconds, micros = client.time()
            finally:
                client.close()
            assert stored is not None
            ahead_us = int(stored.split()[0]) - (seconds * 1_000_000 + micros)
            # The fallback's cells are owed at 1/30 s each; some of that has refilled since.
            assert ahead_us > (fallback - 8) * 33_333, (ahead_us, fallback)
        finally:
            await limiter.aclose()

    try:
        asyncio.run(run())
    finally:
        own.kill()


@own_redis_server
def test_in_an_outage_concurrency_keeps_to_the_slots_held_and_the_fallback_leases_count_after(
    tmp_path: Path,
) -> None:
    """A concurrency limit of 2 over two replicas, both held by A when Redis stops answering. B holds
    none, so its fallback admits none (half the limit each would have made three); A's fallback takes
    a slot again when one of its streams ends. Redis comes back emptied: A's heartbeat puts back both
    its Redis lease and its fallback lease, so once the calm-down is over B is still refused until A
    frees one."""
    own = OwnRedis(tmp_path / "redis.log")
    own.start()

    async def run() -> None:
        rules = [Rule(Scope.API_KEY, Unit.CONCURRENCY, 2, subject="k")]
        options: dict[str, Any] = {
            "failure": FailurePolicy(concurrency=OnFailure.LOCAL),
            "local_share": 2,
            "lease_ttl_s": 30.0,
            "recovery_grace_s": 0.6,
            "retry_interval_s": 0.05,
            "timeout_s": 0.2,
        }
        a = RedisLimiter.from_url(own.url, rules, **options)
        b = RedisLimiter.from_url(own.url, rules, **options)
        try:
            demand = Demand("m", "w", "k")
            warm = await b.acquire(demand)  # B has decided in this Redis: it knows its epoch
            assert warm.reservation is not None and await b.reconcile(warm.reservation, 0)
            first, second = await a.acquire(demand), await a.acquire(demand)
            assert first.reservation is not None and second.reservation is not None
            assert own.process is not None
            own.process.send_signal(signal.SIGSTOP)
            try:
                refused = await b.acquire(demand)
                assert refused.degraded and not refused.admitted
                assert not (await a.acquire(demand)).admitted  # A's two slots are taken
                assert not await a.reconcile(first.reservation, 0)  # a stream ends; Redis hears nothing
                local = await a.acquire(demand)
                assert local.degraded and local.admitted and local.reservation is not None
                assert not (await a.acquire(demand)).admitted
            finally:
                own.process.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 5
            while not (a.link.up and b.link.up) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert a.link.up and b.link.up
            client = redis.Redis.from_url(own.url)
            try:
                client.flushall()  # emptied as it came back
            finally:
                client.close()
            assert not (await b.acquire(demand)).admitted  # the calm-down
            assert await a.renew(second.reservation)  # A's heartbeat: its Redis lease ...
            assert await a.renew(local.reservation)  # ... and its fallback lease
            await asyncio.sleep(0.7)  # the calm-down is over
            assert not (await b.acquire(demand)).admitted  # both of A's leases count
            assert await a.reconcile(local.reservation, 0)
            admitted = await b.acquire(demand)
            assert admitted.admitted and not admitted.degraded
        finally:
            await a.aclose()
            await b.aclose()

    try:
        asyncio.run(run())
    finally:
        own.kill()
