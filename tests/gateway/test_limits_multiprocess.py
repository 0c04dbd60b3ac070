"""Three gateway processes, each with its own RedisLimiter, fire at once: together they admit exactly what
the reference model admits for one shared set of limits, never more."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from multiprocessing.synchronize import Barrier
from typing import Any

from gateway.limits import Demand, RedisLimiter, Rule, Scope, Unit
from gateway.limits.reference import ReferenceLimiter
from tests.gateway.test_limits_helpers import BASE_US, delete_prefix, redis_url

__all__ = ["redis_url"]  # fixture

RULES = [
    Rule(Scope.GLOBAL, Unit.RPS, 100_000),
    Rule(Scope.WORKSPACE, Unit.TPD, 4_500, subject="w"),  # 45 requests of 100 tokens
    Rule(Scope.API_KEY, Unit.RPM, 20),  # each key 20 a minute
    Rule(Scope.WORKSPACE, Unit.CONCURRENCY, 60, subject="w"),
]
HELD = [Rule(Scope.WORKSPACE, Unit.CONCURRENCY, 7, subject="w")]
PER_PROCESS = 100


def _worker(url: str, prefix: str, key: str, start: Barrier, results: Any) -> None:
    """One replica: its own limiter and connection pool; waits for the others, then fires its burst."""

    async def run() -> tuple[str, int, int, int]:
        burst = RedisLimiter.from_url(url, RULES, prefix=prefix, timeout_s=10, pool_timeout_s=60)
        held = RedisLimiter.from_url(url, HELD, prefix=prefix + ":held", timeout_s=10, pool_timeout_s=60)
        try:
            await burst._client.ping()  # connect before the start line
            await asyncio.to_thread(start.wait)
            decisions = await asyncio.gather(
                *(burst.acquire(Demand("m", "w", key, tokens=100)) for _ in range(PER_PROCESS))
            )
            await asyncio.to_thread(start.wait)
            leases = await asyncio.gather(*(held.acquire(Demand("m", "w", key)) for _ in range(20)))
            await asyncio.to_thread(start.wait)  # everyone holds their leases: count, then release
            for lease in leases:
                if lease.reservation:
                    await held.release(lease.reservation)
            return key, os.getpid(), sum(d.admitted for d in decisions), sum(d.admitted for d in leases)
        finally:
            await burst.aclose()
            await held.aclose()

    results.put(asyncio.run(run()))


def reference_admits() -> int:
    """The same 300 requests, interleaved, at one instant (the burst lasts far less than a cell)."""
    reference = ReferenceLimiter(
        RULES, lease_ttl_us=300_000_000, pending_ttl_us=10**12, concurrency_retry_us=10**6
    )
    admitted = 0
    for i in range(PER_PROCESS * 3):
        decision = reference.acquire(Demand("m", "w", f"k{i % 3}", tokens=100), BASE_US, f"r{i}")
        admitted += decision.admitted
    return admitted


def test_three_processes_admit_together_exactly_what_the_reference_admits(redis_url: str) -> None:
    prefix = f"test:limits:{uuid.uuid4().hex[:12]}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    results = context.Queue()
    processes = [
        context.Process(target=_worker, args=(redis_url, prefix, f"k{i}", start, results)) for i in range(3)
    ]
    try:
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        results.close()
        delete_prefix(prefix)
    assert len({pid for _, pid, _, _ in outcomes}) == 3
    assert reference_admits() == 45
    assert sum(admitted for _, _, admitted, _ in outcomes) == 45
    assert all(admitted <= 20 for _, _, admitted, _ in outcomes)  # no key passed its own limit either
    assert sum(leases for _, _, _, leases in outcomes) == 7


def _holder(url: str, prefix: str, results: Any) -> None:
    """A replica that takes every lease and then hangs until it is killed."""

    async def run() -> None:
        limiter = RedisLimiter.from_url(url, LEASED, prefix=prefix, lease_ttl_s=2.0)
        decisions = [await limiter.acquire(Demand("m", "w", "k")) for _ in range(3)]
        results.put(sum(d.admitted for d in decisions))
        await asyncio.sleep(3600)

    asyncio.run(run())


LEASED = [Rule(Scope.API_KEY, Unit.CONCURRENCY, 3, subject="k")]


def test_leases_of_a_killed_replica_expire(redis_url: str) -> None:
    prefix = f"test:limits:{uuid.uuid4().hex[:12]}"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    holder = context.Process(target=_holder, args=(redis_url, prefix, results))
    holder.start()
    try:
        assert results.get(timeout=60) == 3
        holder.kill()  # SIGKILL: no release, no cleanup
        holder.join(timeout=30)

        async def probe() -> tuple[bool, bool]:
            limiter = RedisLimiter.from_url(redis_url, LEASED, prefix=prefix, lease_ttl_s=2.0)
            try:
                before = await limiter.acquire(Demand("m", "w", "k"))
                await asyncio.sleep(2.05)
                after = await limiter.acquire(Demand("m", "w", "k"))
                return before.admitted, after.admitted
            finally:
                await limiter.aclose()

        assert asyncio.run(probe()) == (False, True)
    finally:
        if holder.is_alive():
            holder.kill()
        results.close()
        delete_prefix(prefix)
