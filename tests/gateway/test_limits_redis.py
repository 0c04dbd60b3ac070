"""The Redis limiter against the reference model (virtual clock), in real time, and when Redis fails.

Virtual time: the scripts' first line reads the clock; `VirtualClockRedisLimiter` registers copies whose
first line reads it from the last argument instead. That makes the comparison with the reference exact to
the microsecond (retry-after, remaining, reset), which real time cannot. Production cannot reach it: the
production scripts contain no such line (asserted below), and only this test module registers the copies.
The real-time tests cover the production scripts themselves.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.limits import (
    Decision,
    Demand,
    FailurePolicy,
    LimiterUnavailable,
    LocalLimiter,
    OnFailure,
    RedisLimiter,
    Reservation,
    Rule,
    Scope,
    Unit,
    lua,
)
from gateway.limits.pipe import _pack
from gateway.limits.reference import ReferenceLimiter
from tests.gateway.test_limits_helpers import (
    BASE_US,
    STEP,
    VIRTUAL_PRELUDE,
    Step,
    VirtualClockRedisLimiter,
    delete_prefix,
    demand_of,
    normalised,
    prefix,
    redis_keys,
    redis_url,
    replay,
    rules,
)

__all__ = ["prefix", "redis_url"]  # fixtures

LEASE_US = 30_000_000
PENDING_US = 10 * 86_400_000_000
RETRY_US = 1_000_000


def test_production_scripts_take_time_from_redis_and_only_the_clock_line_differs_in_tests() -> None:
    for production, virtual in zip(RedisLimiter.SCRIPTS, VirtualClockRedisLimiter.SCRIPTS, strict=True):
        assert production.startswith(lua.PRELUDE) and "redis.call('TIME')" in production
        assert "ARGV[#ARGV]" not in production
        assert production.replace(lua.PRELUDE, VIRTUAL_PRELUDE, 1) == virtual


def test_redis_limiter_answers_exactly_like_the_reference(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(redis_url)
    try:

        @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(rule_set=rules(), steps=st.lists(STEP, max_size=40))
        def check(rule_set: list[Rule], steps: list[Step]) -> None:
            name = f"test:limits:{uuid.uuid4().hex[:12]}"
            now = [BASE_US]
            limiter = VirtualClockRedisLimiter(
                client,
                rule_set,
                lambda: now[0],
                prefix=name,
                lease_ttl_s=LEASE_US / 1e6,
                pending_ttl_s=PENDING_US / 1e6,
                concurrency_retry_s=RETRY_US / 1e6,
            )
            reference = ReferenceLimiter(
                rule_set, lease_ttl_us=LEASE_US, pending_ttl_us=PENDING_US, concurrency_retry_us=RETRY_US
            )
            try:
                loop.run_until_complete(replay(limiter, reference, rule_set, steps, now))
            finally:
                loop.run_until_complete(limiter.aclose())  # its script connection
                delete_prefix(name)

        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


async def burst(redis_url: str, rules: list[Rule], demand: Demand, n: int) -> tuple[list[Decision], int]:
    """`n` concurrent acquires on a fresh prefix; also returns how long they took by Redis' clock (µs)."""
    name = f"test:limits:{uuid.uuid4().hex[:12]}"
    limiter = RedisLimiter.from_url(redis_url, rules, prefix=name, timeout_s=5, pool_timeout_s=60)
    try:
        seconds, micros = await limiter._client.time()
        decisions = await asyncio.gather(*(limiter.acquire(demand) for _ in range(n)))
        seconds2, micros2 = await limiter._client.time()
    finally:
        await limiter.aclose()
        delete_prefix(name)
    return decisions, (seconds2 - seconds) * 1_000_000 + micros2 - micros


def test_a_thousand_concurrent_requests_admit_exactly_what_gcra_allows(redis_url: str) -> None:
    """1,000 requests in flight at once against 100 per minute, production scripts and Redis TIME.

    GCRA refills continuously (one request per 0.6 s), so the exact count depends on how long the burst
    took by Redis' clock: 100 plus the cells refilled meanwhile, never more. With a daily token limit the
    refill is negligible and the count is exact.
    """

    async def run() -> None:
        rules = [
            Rule(Scope.API_KEY, Unit.RPM, 100, subject="k"),
            Rule(Scope.WORKSPACE, Unit.TPM, 10**6, subject="w"),
            Rule(Scope.GLOBAL, Unit.RPS, 100_000),
        ]
        for _ in range(5):
            decisions, took_us = await burst(redis_url, rules, Demand("m", "w", "k", tokens=10), 1000)
            admitted = sum(d.admitted for d in decisions)
            assert 100 <= admitted <= 100 + took_us // 600_000
            refused = [d for d in decisions if not d.admitted]
            assert all(d.refusal and d.refusal.bucket == "rpm:api_key:k" for d in refused)
            # retry-after is the real GCRA wait: up to one cell (0.6 s), never the window.
            assert all(d.retry_after and 0 < d.retry_after <= 0.6 for d in refused)
        tokens = [Rule(Scope.WORKSPACE, Unit.TPD, 1000, subject="w"), Rule(Scope.API_KEY, Unit.RPS, 10**6)]
        for _ in range(5):
            decisions, took_us = await burst(redis_url, tokens, Demand("m", "w", "k", tokens=10), 1000)
            assert took_us < 864_000_000 and sum(d.admitted for d in decisions) == 100

    asyncio.run(run())


def test_a_refusal_by_one_scope_writes_nothing_anywhere(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        limiter = RedisLimiter.from_url(
            redis_url,
            [
                Rule(Scope.API_KEY, Unit.RPM, 50, subject="k1"),
                Rule(Scope.API_KEY, Unit.CONCURRENCY, 10, subject="k1"),
                Rule(Scope.WORKSPACE, Unit.TPM, 1000, subject="w"),
            ],
            prefix=prefix,
        )
        try:
            first = await limiter.acquire(Demand("m", "w", "k2", tokens=900))
            assert first.admitted
            before = await redis_keys(limiter._client, prefix)
            refused = await limiter.acquire(Demand("m", "w", "k1", tokens=200))
            assert refused.refusal is not None and refused.refusal.bucket == "tpm:workspace:w"
            after = await redis_keys(limiter._client, prefix)
            assert before == after  # key rpm, key leases and the reservation marker: untouched
            assert not any(b"k1" in key for key in after)
            # The headers still describe the binding buckets.
            assert refused.headers()["x-ratelimit-scope-tokens"] == "workspace"
            assert refused.headers()["x-ratelimit-remaining-requests"] == "50"
        finally:
            await limiter.aclose()

    asyncio.run(run())


def test_settlement_refunds_once_and_frees_leases(redis_url: str, prefix: str) -> None:
    now = [BASE_US]

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        limiter = VirtualClockRedisLimiter(
            client,
            [
                Rule(Scope.API_KEY, Unit.TPD, 10_000, subject="k"),
                Rule(Scope.API_KEY, Unit.CONCURRENCY, 1, subject="k"),
            ],
            lambda: now[0],
            prefix=prefix,
            lease_ttl_s=10,
        )
        try:
            decision = await limiter.acquire(Demand("m", "w", "k", tokens=4000))
            assert decision.reservation and decision.tokens and decision.tokens.remaining == 6000
            assert not (await limiter.acquire(Demand("m", "w", "k"))).admitted  # the lease is taken
            assert await limiter.reconcile(decision.reservation, 1500)
            assert not await limiter.reconcile(decision.reservation, 1500)
            assert not await limiter.release(decision.reservation)
            probe = await limiter.acquire(Demand("m", "w", "k"))
            assert probe.admitted and probe.tokens and probe.tokens.remaining == 8500
            # A replica that dies holding a lease: it expires with its TTL, renewals fail after that.
            assert probe.reservation and await limiter.renew(probe.reservation)
            now[0] += 10_000_000
            assert not await limiter.renew(probe.reservation)
            assert (await limiter.acquire(Demand("m", "w", "k"))).admitted
        finally:
            await limiter.aclose()
            await client.aclose()

    asyncio.run(run())


def test_a_refund_landing_on_a_whole_microsecond_stores_a_bucket_the_next_script_can_read(
    redis_url: str, prefix: str
) -> None:
    """Regression: Lua's `math.fmod(-7, 7)` is -0.0, which `%.0f` writes as "-0"; a bucket stored as
    "W -0 7" made every later script on that key fail ("compare number with nil"). Here a settlement
    gives back 2 tokens of 7/min (T = 8571428 + 4/7 µs) from a remainder of 1/7: 1 - 2*4 = -7."""
    client = redis.Redis.from_url(redis_url)
    try:
        key, marker = f"{prefix}:bucket", f"{prefix}:pending"
        seconds, micros = client.time()
        whole = (seconds + 600) * 1_000_000 + micros
        client.set(key, f"{whole} 1 7", px=600_000)
        client.set(marker, "1", px=600_000)
        settle = client.register_script(lua.SETTLE)
        assert settle(keys=[key, marker], args=[1, 0, "rid", -2, 8_571_428, 4, 7, 10**12]) == 1
        stored = client.get(key).decode()
        assert re.fullmatch(r"\d+ 0 7", stored), stored
        assert int(stored.split()[0]) == whole - 2 * 8_571_428 - 1
        acquire = client.register_script(lua.ACQUIRE)  # reads the bucket: it must parse
        args = [1, 0, "rid2", 0, 0, 0, 1, 8_571_428, 4, 7, 0, 0, "", 0]
        assert acquire(keys=[key, f"{prefix}:epoch"], args=args)[0] == 0
    finally:
        client.close()


def test_scripts_reload_after_a_script_flush(redis_url: str, prefix: str) -> None:
    async def run() -> None:
        limiter = RedisLimiter.from_url(
            redis_url, [Rule(Scope.API_KEY, Unit.RPM, 2, subject="k")], prefix=prefix
        )
        try:
            assert (await limiter.acquire(Demand("m", "w", "k"))).admitted
            await limiter._client.script_flush()
            assert (await limiter.acquire(Demand("m", "w", "k"))).admitted  # NOSCRIPT -> load -> EVALSHA
            assert not (await limiter.acquire(Demand("m", "w", "k"))).admitted
        finally:
            await limiter.aclose()

    asyncio.run(run())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


RULES = [Rule(Scope.API_KEY, Unit.RPM, 3, subject="k"), Rule(Scope.API_KEY, Unit.TPM, 1000, subject="k")]


def test_fail_closed_refuses_with_a_clear_error_and_stops_calling_redis() -> None:
    async def run() -> None:
        limiter = RedisLimiter.from_url(f"redis://127.0.0.1:{closed_port()}", RULES, retry_interval_s=30)
        try:
            with pytest.raises(LimiterUnavailable) as raised:
                await limiter.acquire(Demand("m", "w", "k", tokens=10))
            assert raised.value.retry_after == 30 and "unavailable" in str(raised.value)
            started = time.perf_counter()
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire(Demand("m", "w", "k", tokens=10))
            assert time.perf_counter() - started < 0.005  # no connection attempt while Redis is "down"
        finally:
            await limiter.aclose()

    asyncio.run(run())


def test_fail_open_admits_and_says_so() -> None:
    async def run() -> None:
        limiter = RedisLimiter.from_url(
            f"redis://127.0.0.1:{closed_port()}",
            RULES,
            failure=FailurePolicy(requests=OnFailure.FAIL_OPEN, tokens=OnFailure.FAIL_OPEN),
        )
        try:
            decisions = [await limiter.acquire(Demand("m", "w", "k", tokens=10)) for _ in range(10)]
            assert all(d.admitted and d.degraded for d in decisions)
            assert decisions[0].reservation and not await limiter.reconcile(decisions[0].reservation, 5)
        finally:
            await limiter.aclose()

    asyncio.run(run())


def test_local_fallback_takes_each_replicas_share_of_the_rate_from_a_used_up_bucket() -> None:
    """The fallback cannot know what the other replicas took: each replica starts every bucket used up
    and admits only what refills at its 1/N share of the rate, so N replicas never admit together
    more than the shared bucket would have from any state."""

    async def run() -> None:
        limiter = RedisLimiter.from_url(
            f"redis://127.0.0.1:{closed_port()}",
            [Rule(Scope.API_KEY, Unit.RPS, 30, subject="k")],
            failure=FailurePolicy(requests=OnFailure.LOCAL),
            local_share=3,  # 10 per second here: one cell every 100 ms
        )
        try:
            decisions = [await limiter.acquire(Demand("m", "w", "k")) for _ in range(5)]
            assert not any(d.admitted for d in decisions)  # no burst: the shared one may be spent
            assert all(d.degraded for d in decisions)
            first = decisions[0].retry_after
            assert first is not None and 0 < first <= 0.1
            started = time.monotonic()
            admitted = 0
            while time.monotonic() - started < 0.35:
                admitted += (await limiter.acquire(Demand("m", "w", "k"))).admitted
                await asyncio.sleep(0.01)
            assert 2 <= admitted <= 4  # 0.35 s of refill at 10/s (+1 for where the window falls)
            # Tokens default to fail_closed: a request with a token bucket is refused, not guessed.
            limiter.update_rules([Rule(Scope.API_KEY, Unit.TPM, 1000, subject="k")])
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire(Demand("m", "w", "k", tokens=10))
        finally:
            await limiter.aclose()

    asyncio.run(run())


def test_redis_and_local_agree_when_rules_change_midway(redis_url: str) -> None:
    """A rule edit keeps each bucket's state (a stored TAT is read under the new rate, rounded up to the
    µs); both limiters must do it identically, including for reservations made under the old rules."""
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(redis_url)
    try:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            before=rules(),
            factors=st.lists(st.sampled_from([(1, 3), (2, 3), (3, 2), (7, 1)]), min_size=6, max_size=6),
            steps=st.lists(STEP, min_size=2, max_size=30),
            switch=st.integers(1, 8),
        )
        def check(before: list[Rule], factors: list[tuple[int, int]], steps: list[Step], switch: int) -> None:
            # The same buckets at other rates (so stored TATs must be converted), plus a rule set swap.
            after = [
                replace(rule, limit=min(2**31 - 1, max(1, rule.limit * k // j)), burst=None)
                for rule, (k, j) in zip(before, factors, strict=False)
            ]
            name = f"test:limits:{uuid.uuid4().hex[:12]}"
            now = [BASE_US]
            options = {"lease_ttl_s": 30.0, "pending_ttl_s": 864_000.0}
            shared = VirtualClockRedisLimiter(client, before, lambda: now[0], prefix=name, **options)
            local = LocalLimiter(before, clock=lambda: now[0], **options)
            held: list[tuple[Reservation, Reservation]] = []

            async def run() -> None:
                for number, step in enumerate(steps):
                    if number == switch:
                        shared.update_rules(after)
                        local.update_rules(after)
                    now[0] += step.advance_us
                    if step.action == "acquire":
                        got, expected = (
                            await shared.acquire(demand_of(step)),
                            await local.acquire(demand_of(step)),
                        )
                        assert normalised(got) == normalised(expected), f"step {number}: {step}"
                        if got.reservation and expected.reservation:
                            held.append((got.reservation, expected.reservation))
                    elif held:
                        mine, theirs = held[step.which % len(held)]
                        actual = step.actual if step.action == "reconcile" else 0
                        if step.action == "renew":
                            assert await shared.renew(mine) == await local.renew(theirs), step
                        else:
                            assert await shared.reconcile(mine, actual) == await local.reconcile(
                                theirs, actual
                            )

            try:
                loop.run_until_complete(run())
            finally:
                loop.run_until_complete(shared.aclose())  # its script connection
                delete_prefix(name)

        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def test_the_pipe_packs_the_bytes_redis_py_packs() -> None:
    """The limiter's script connection packs with hiredis (gateway/limits/pipe.py): same wire bytes."""
    commands: list[tuple[Any, ...]] = [
        ("EVALSHA", "9f1c", 3, b"mf:rl:rpm:k", "clé", 0, -17, 2**52, b""),
        ("EVAL", "return 1", 0),
        ("SELECT", 5),
    ]
    for command in commands:
        assert _pack(*command) == b"".join(aioredis.Connection().pack_command(*command)), command
