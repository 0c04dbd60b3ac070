"""Limits and quotas in one Redis call (`SharedAdmission`) answer exactly like the two-step path.

The two-step path is the limiter's own acquire, then the quota's reserve, and when the quota refuses,
the limiter's cancel -- each part pinned down by its own tests (the limiter against the reference
model). Here both run side by side on the real Redis, under separate prefixes and the same virtual
clock, through random workloads: every answer, every refusal's kind, and every Redis key (the limiter's
buckets, leases and markers, the quota counters) must match after every step.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.limits import (
    Decision,
    Demand,
    LimiterUnavailable,
    RedisLimiter,
    Rule,
    Scope,
    Unit,
    lua,
)
from gateway.quotas import NO_HOLD, LocalQuotas, QuotaHold, QuotaRefusal, QuotaSubject, RedisQuotas
from gateway.shared_admission import SharedAdmission
from tests.gateway.test_limits_helpers import (
    BASE_US,
    KEYS,
    STEP,
    VIRTUAL_PRELUDE,
    Step,
    VirtualClockRedisLimiter,
    delete_prefix,
    demand_of,
    normalised,
    redis_keys,
    redis_url,
    rules,
)

__all__ = ["redis_url"]  # fixture

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


@dataclass
class Side:
    """One way of doing it: a limiter and quotas under their own prefix."""

    prefix: str
    limiter: VirtualClockRedisLimiter
    quotas: RedisQuotas


def subjects_for(key: str, limits: dict[str, int]) -> list[QuotaSubject]:
    """The key's lifetime quota and its workspace's monthly quota (limits drawn per test)."""
    workspace = KEYS[key]
    return [
        QuotaSubject("api_key", key, limits[key], None, None),
        QuotaSubject("workspace", workspace, limits[workspace], NOW.replace(day=1), NOW + timedelta(days=9)),
    ]


def canonical(state: dict[bytes, Any], prefix: str, ids: dict[str, int], now: int) -> dict[bytes, Any]:
    """Redis state without what legitimately differs: the prefix; reservation ids (random per
    limiter), which become their order of issue; and what reads as absent -- a rate bucket whose TAT
    is not after now (the two-step path's undo deletes it, the one-call path leaves it to expire) and
    expired leases."""

    def rid(value: bytes) -> bytes:
        number = ids.get(value.decode())
        return value if number is None else f"#{number}".encode()

    out: dict[bytes, Any] = {}
    for key, value in state.items():
        name = key[len(prefix) :]
        if name.startswith(b":res:"):
            name = b":res:" + rid(name[len(b":res:") :])
        if isinstance(value, list):
            value = sorted((rid(member), score) for member, score in value if score > now)
            if not value:
                continue
        elif re.fullmatch(rb"\d+ \d+ \d+", value):
            whole, remainder, _ = map(int, value.split())
            if whole < now or (whole == now and remainder == 0):
                continue
        out[name] = value
    return out


def outcome(decision: Decision, hold: QuotaHold | QuotaRefusal | None) -> tuple[Any, ...]:
    refusal = (hold.kind, hold.id, hold.used, hold.requested) if isinstance(hold, QuotaRefusal) else None
    return (normalised(decision), refusal)


def test_one_call_admission_equals_the_two_step_path(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(redis_url)
    try:

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            rule_set=rules(),
            steps=st.lists(STEP, min_size=1, max_size=30),
            quota_limits=st.fixed_dictionaries(
                {name: st.sampled_from([0, 50, 1_500, 10**12]) for name in ["k1", "k2", "k3", "w1", "w2"]}
            ),
        )
        def check(rule_set: list[Rule], steps: list[Step], quota_limits: dict[str, int]) -> None:
            now = [BASE_US]
            options = {"lease_ttl_s": 30.0, "pending_ttl_s": 864_000.0}
            sides = []
            for _ in range(2):
                name = f"test:shared:{uuid.uuid4().hex[:12]}"
                limiter = VirtualClockRedisLimiter(client, rule_set, lambda: now[0], prefix=name, **options)
                sides.append(Side(name, limiter, RedisQuotas(client, LocalQuotas(), prefix=name)))
            one, two = sides
            shared = SharedAdmission(one.limiter, one.quotas, lua.build_with_quotas(VIRTUAL_PRELUDE))
            held: list[tuple[tuple[Decision, QuotaHold], tuple[Decision, QuotaHold]]] = []
            ids: list[dict[str, int]] = [{}, {}]

            async def two_step(step: Step) -> tuple[Decision, QuotaHold | QuotaRefusal]:
                decision = await two.limiter.acquire(demand_of(step))
                if not decision.admitted:
                    return decision, NO_HOLD
                hold = await two.quotas.reserve(subjects_for(step.key, quota_limits), step.tokens, NOW)
                if isinstance(hold, QuotaRefusal) and decision.reservation is not None:
                    await two.limiter.cancel(decision.reservation)
                return decision, hold

            async def one_call(step: Step) -> tuple[Decision, QuotaHold | QuotaRefusal]:
                """As the gateway does it: the quota separately only when the limiter decided alone."""
                subjects = subjects_for(step.key, quota_limits)
                decision, hold = await shared.admit(demand_of(step), subjects, step.tokens, NOW)
                if not decision.admitted:
                    return decision, NO_HOLD
                if hold is None:
                    hold = await one.quotas.reserve(subjects, step.tokens, NOW)
                    if isinstance(hold, QuotaRefusal) and decision.reservation is not None:
                        await one.limiter.cancel(decision.reservation)
                return decision, hold

            async def run() -> None:
                for number, step in enumerate(steps):
                    now[0] += step.advance_us
                    if step.action == "acquire":
                        mine = await one_call(step)
                        theirs = await two_step(step)
                        assert outcome(*mine) == outcome(*theirs), f"step {number}: {step}"
                        for side, (decision, _) in enumerate((mine, theirs)):
                            if decision.reservation is not None and decision.reservation.id:
                                ids[side][decision.reservation.id] = number
                        if isinstance(mine[1], QuotaHold) and isinstance(theirs[1], QuotaHold):
                            held.append(((mine[0], mine[1]), (theirs[0], theirs[1])))
                    elif held and step.action != "renew":
                        (d1, h1), (d2, h2) = held.pop(step.which % len(held))
                        actual = step.actual if step.action == "reconcile" else 0
                        await shared.settle(d1.reservation, h1, actual)
                        if d2.reservation is not None and d2.reservation.id:
                            await two.limiter.reconcile(d2.reservation, actual)
                        await two.quotas.settle(h2, actual)
                    state = [
                        canonical(await redis_keys(client, side.prefix), side.prefix, ids[n], now[0])
                        for n, side in enumerate(sides)
                    ]
                    assert state[0] == state[1], f"Redis state differs after step {number}: {step}"

            try:
                loop.run_until_complete(run())
            finally:
                for side in sides:  # their script connections, then their keys
                    loop.run_until_complete(side.limiter.aclose())
                    loop.run_until_complete(side.quotas.link.aclose())
                    delete_prefix(side.prefix)

        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def test_production_scripts_read_redis_time_and_tests_only_swap_the_clock_line() -> None:
    assert lua.build_with_quotas(lua.PRELUDE) == (lua.ADMIT_WITH_QUOTAS, lua.SETTLE_WITH_QUOTAS)
    for production, virtual in zip(
        (lua.ADMIT_WITH_QUOTAS, lua.SETTLE_WITH_QUOTAS), lua.build_with_quotas(VIRTUAL_PRELUDE), strict=True
    ):
        assert production.startswith(lua.PRELUDE) and "ARGV[#ARGV]" not in production
        assert production.replace(lua.PRELUDE, VIRTUAL_PRELUDE, 1) == virtual


def test_redis_down_refuses_tokens_with_a_clear_error_and_leaves_both_parts_alone() -> None:
    """Fail closed (the default for tokens): a 503-worthy error, and neither the limiter nor the
    quotas try Redis again until their retry interval has passed."""

    async def run() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens here once the socket is closed
        url = f"redis://127.0.0.1:{port}"
        rules = [Rule(Scope.API_KEY, Unit.TPM, 1000, subject="k1")]
        limiter = RedisLimiter.from_url(url, rules, retry_interval_s=30)
        quotas = RedisQuotas(limiter.client, LocalQuotas(), retry_interval_s=30)
        shared = SharedAdmission(limiter, quotas)
        try:
            with pytest.raises(LimiterUnavailable) as raised:
                await shared.admit(Demand("m1", "w1", "k1", 10), subjects_for("k1", LIMITS), 10, NOW)
            assert "unavailable" in str(raised.value) and raised.value.retry_after == 30
            assert not quotas.available()
            started = time.perf_counter()
            with pytest.raises(LimiterUnavailable):
                await shared.admit(Demand("m1", "w1", "k1", 10), subjects_for("k1", LIMITS), 10, NOW)
            assert time.perf_counter() - started < 0.005  # no connection attempt while Redis is "down"
        finally:
            await limiter.aclose()
            await quotas.link.aclose()

    asyncio.run(run())


LIMITS = {"k1": 100, "w1": 100}
