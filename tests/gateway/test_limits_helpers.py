"""Shared by the limiter tests: the Redis fixture, the virtual-clock Redis limiter, workload strategies and
the comparison of a limiter's decisions with the reference model's."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import strategies as st

from gateway.limits import Decision, Demand, Rule, Scope, Unit, lua
from gateway.limits.redis_limiter import RedisLimiter
from gateway.limits.reference import RefDecision, ReferenceLimiter, RefQuota, buckets_for

REDIS_URL = os.environ.get("MODELFLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BASE_US = 1_780_000_000_000_000  # a 2026 Redis TIME in µs: big numbers exercise the exact-integer Lua

# Virtual time for the Redis scripts: the prelude (clock) is the only line that differs from production,
# and production never registers these sources. Keys live an hour of real time past their virtual TTL
# so that slow test steps cannot expire state the virtual clock still considers live.
VIRTUAL_PRELUDE = "local now = tonumber(ARGV[#ARGV])\nlocal SLACK_MS = 3600000\n"


class VirtualClockRedisLimiter(RedisLimiter):
    SCRIPTS = lua.build(VIRTUAL_PRELUDE)

    def __init__(
        self, client: aioredis.Redis, rules: list[Rule], clock: Callable[[], int], **kw: Any
    ) -> None:
        self.clock = clock
        super().__init__(client, rules, **kw)

    def _clock_args(self) -> tuple[int, ...]:
        return (self.clock(),)


def redis_reason() -> str | None:
    """Why Redis cannot be used, or None when it answers."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as err:
        return f"Redis not reachable at {REDIS_URL}: {err}"
    return None


@pytest.fixture
def redis_url() -> str:
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test, deleted afterwards."""
    name = f"test:limits:{uuid.uuid4().hex[:12]}"
    yield name
    delete_prefix(name)


def delete_prefix(name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def redis_keys(client: aioredis.Redis, name: str) -> dict[bytes, Any]:
    """Every key under the prefix with its value (strings) or members and scores (lease sets)."""
    state: dict[bytes, Any] = {}
    async for key in client.scan_iter(f"{name}:*"):
        kind = await client.type(key)
        state[key] = (
            await client.get(key) if kind == b"string" else await client.zrange(key, 0, -1, withscores=True)
        )
    return state


async def keep(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


# -- workloads ---------------------------------------------------------------------------------------

MODELS = ["m1", "m2"]
KEYS = {"k1": "w1", "k2": "w1", "k3": "w2"}  # key -> its workspace


@st.composite
def rules(draw: st.DrawFn) -> list[Rule]:
    """1-6 random rules over a small universe, so buckets collide and overrides happen."""
    out: list[Rule] = []
    for _ in range(draw(st.integers(1, 6))):
        scope = draw(st.sampled_from(list(Scope)))
        unit = draw(st.sampled_from(list(Unit)))
        if unit in (Unit.TPM, Unit.TPD):
            limit = draw(st.sampled_from([1, 7, 100, 999, 5000, 1_000_000, 2**31 - 1]))
        elif unit is Unit.CONCURRENCY:
            limit = draw(st.integers(1, 4))
        else:
            limit = draw(st.sampled_from([1, 2, 3, 7, 10, 600, 999_999]))
        burst = None
        if unit is not Unit.CONCURRENCY and draw(st.booleans()):
            burst = max(
                1, min(2**31 - 1, limit * draw(st.sampled_from([1, 2, 3])) // draw(st.sampled_from([1, 2])))
            )
        subject = None
        if scope is Scope.WORKSPACE:
            subject = draw(st.sampled_from([None, "w1", "w2"]))
        elif scope in (Scope.API_KEY, Scope.API_KEY_MODEL):
            subject = draw(st.sampled_from([None, "k1", "k2", "k3"]))
        model = None if scope is Scope.GLOBAL else draw(st.sampled_from([None, None, "m1"]))
        out.append(Rule(scope, unit, limit, subject=subject, model=model, burst=burst))
    return out


ADVANCE = st.one_of(
    st.just(0),
    st.integers(1, 2_000),
    st.integers(1, 3_000_000),
    st.integers(1, 120_000_000),
    st.sampled_from([1_000_000, 60_000_000, 86_400_000_000]),
)


@dataclass(frozen=True)
class Step:
    action: str  # acquire | reconcile | release | renew
    advance_us: int
    key: str = "k1"
    model: str = "m1"
    tokens: int = 0
    which: int = 0  # index into the held reservations (reconcile, release, renew)
    actual: int = 0


STEP = st.one_of(
    st.builds(
        Step,
        action=st.just("acquire"),
        advance_us=ADVANCE,
        key=st.sampled_from(list(KEYS)),
        model=st.sampled_from(MODELS),
        tokens=st.one_of(st.integers(0, 1200), st.sampled_from([4_000_000, 4_000_001, 2**31])),
    ),
    st.builds(
        Step,
        action=st.sampled_from(["reconcile", "reconcile", "release", "renew"]),
        advance_us=ADVANCE,
        which=st.integers(0, 50),
        actual=st.one_of(st.integers(0, 3000), st.just(10**9)),
    ),
)


def demand_of(step: Step) -> Demand:
    return Demand(step.model, KEYS[step.key], step.key, step.tokens, step.tokens % 7)  # units too


def normalised(decision: Decision) -> RefDecision:
    """A limiter's decision in the reference model's terms."""

    def quota(q: Any) -> RefQuota | None:
        return None if q is None else RefQuota(q.limit, q.remaining, q.reset_us, q.scope.value)

    refusal = decision.refusal
    return RefDecision(
        decision.admitted,
        None
        if refusal is None
        else (refusal.scope.value, refusal.unit.value, refusal.bucket, refusal.limit, refusal.retry_after_us),
        quota(decision.requests),
        quota(decision.tokens),
    )


Acquire = Callable[[Demand], Awaitable[Decision]]


async def replay(
    limiter: Any, reference: ReferenceLimiter, rule_set: list[Rule], steps: list[Step], now: list[int]
) -> int:
    """Run `steps` on a limiter and on the reference at the same virtual times; assert identical answers.

    Returns how many requests were admitted.
    """
    held: list[tuple[Any, Demand]] = []
    admitted = 0
    for number, step in enumerate(steps):
        now[0] += step.advance_us
        if step.action == "acquire":
            demand = demand_of(step)
            decision = await limiter.acquire(demand)
            rid = decision.reservation.id if decision.reservation else ""
            expected = reference.acquire(demand, now[0], rid)
            assert normalised(decision) == expected, f"step {number}: {step}"
            if decision.admitted:
                admitted += 1
                held.append((decision.reservation, demand))
            continue
        if not held:
            continue
        reservation, demand = held[step.which % len(held)]
        if step.action == "renew":
            got = await limiter.renew(reservation)
            buckets = buckets_for(rule_set, demand)
            assert got == reference.renew(reservation.id, buckets, reservation.plan.has_tokens, now[0]), step
            continue
        actual = step.actual if step.action == "reconcile" else 0
        got = await (limiter.reconcile(reservation, actual) if actual else limiter.release(reservation))
        assert got == reference.settle(reservation.id, actual, now[0]), f"step {number}: {step}"
    return admitted
