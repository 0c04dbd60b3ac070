"""Rate limiter throughput and latency: in process, and against Redis with three scopes per request.

`python -m benchmarks.gateway_limits` (Redis at $MODELFLEET_BENCH_REDIS_URL, default 127.0.0.1:6379/0;
the Redis lines are skipped with a note when it is not reachable). Every request is admitted (the limits
are far above the load) and charges three buckets: global RPS, workspace TPM, API key RPM.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

import redis
import redis.asyncio as aioredis

from benchmarks.report import bench
from gateway.limits import Demand, LocalLimiter, RedisLimiter, Rule, Scope, Unit
from gateway.quotas import LocalQuotas, QuotaHold, QuotaSubject, RedisQuotas
from gateway.shared_admission import SharedAdmission
from store.periods import period_bounds

REDIS_URL = os.environ.get("MODELFLEET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RULES = [
    Rule(Scope.GLOBAL, Unit.RPS, 10**9),
    Rule(Scope.WORKSPACE, Unit.TPM, 2**31 - 1, subject="w"),
    Rule(Scope.API_KEY, Unit.RPM, 2**31 - 1),
]
KEYS = [f"k{i}" for i in range(100)]


def local(n: int = 100_000) -> None:
    """Each request acquires (three buckets, headers computed) and is reconciled, as in the gateway."""
    limiter = LocalLimiter(RULES)
    demands = [Demand("m", "w", key, tokens=500) for key in KEYS]
    acquire_ns = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for i in range(n):
        begin = clock()
        decision = limiter.try_acquire(demands[i % len(demands)])
        acquire_ns.append(clock() - begin)
        assert decision.reservation is not None
        limiter.settle(decision.reservation, 300)
    bench("limits_local_requests_per_s", n / (time.perf_counter() - start), "acquire+reconcile/s")
    bench("limits_local_decisions_per_s", n / (sum(acquire_ns) / 1e9), "decisions/s")
    acquire_ns.sort()
    bench("limits_local_acquire_p50_us", acquire_ns[n // 2] / 1000, "us")
    bench("limits_local_acquire_p99_us", acquire_ns[int(n * 0.99)] / 1000, "us")
    start = time.perf_counter()
    for i in range(n // 4):
        limiter.try_acquire(demands[i % len(demands)]).headers()
    bench(
        "limits_local_headers_us",
        (time.perf_counter() - start) / (n // 4) * 1e6 - acquire_ns[n // 2] / 1000,
        "us",
    )


async def _redis(url: str, prefix: str) -> None:
    limiter = RedisLimiter.from_url(url, RULES, prefix=prefix, timeout_s=5, max_connections=64)
    demands = [Demand("m", "w", key, tokens=500) for key in KEYS]
    try:
        for demand in demands:  # load the script, open a connection, create the keys
            await limiter.acquire(demand)
        latencies = []
        for i in range(3000):
            start = time.perf_counter_ns()
            await limiter.acquire(demands[i % len(demands)])
            latencies.append((time.perf_counter_ns() - start) / 1e6)
        latencies.sort()
        bench("limits_redis_acquire_p50_ms", statistics.median(latencies), "ms")
        bench("limits_redis_acquire_p99_ms", latencies[int(len(latencies) * 0.99)], "ms")

        stats = redis.Redis.from_url(url)
        before = stats.info("commandstats").get("cmdstat_evalsha", {})
        n, concurrency = 20_000, 64

        async def worker(offset: int) -> None:
            for i in range(offset, n, concurrency):
                await limiter.acquire(demands[i % len(demands)])

        start_s = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        bench("limits_redis_decisions_per_s", n / (time.perf_counter() - start_s), "decisions/s")
        after = stats.info("commandstats").get("cmdstat_evalsha", {})
        stats.close()
        calls = after.get("calls", 0) - before.get("calls", 0)
        if calls:
            server_us = (after.get("usec", 0) - before.get("usec", 0)) / calls
            bench("limits_redis_script_server_us", server_us, "us")
    finally:
        await limiter.aclose()
        client = aioredis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _admission_with_quotas(url: str, prefix: str) -> None:
    """A request's whole admission and settlement with limits and key + workspace quotas in Redis: the
    gateway's one call each way (`SharedAdmission`) against the two-step path (limiter, then quotas),
    in the same run. Client CPU per request, one request at a time and 16 at once."""
    limiter = RedisLimiter.from_url(url, RULES, prefix=f"{prefix}:rl", timeout_s=5, max_connections=64)
    quotas = RedisQuotas(limiter.client, LocalQuotas(), prefix=prefix)
    shared = SharedAdmission(limiter, quotas)
    now = datetime.now(UTC)
    start, end = period_bounds("month", now)
    subjects = [
        QuotaSubject("api_key", "k0", 10**15, start, end),
        QuotaSubject("workspace", "w", 10**15, start, end),
    ]
    demand = Demand("m", "w", "k0", tokens=500)

    async def one_call() -> None:
        decision, hold = await shared.admit(demand, subjects, 500, now)
        assert isinstance(hold, QuotaHold)
        await shared.settle(decision.reservation, hold, 300)

    async def two_step() -> None:
        decision = await limiter.acquire(demand)
        hold = await quotas.reserve(subjects, 500, now)
        assert decision.reservation is not None and isinstance(hold, QuotaHold)
        await limiter.reconcile(decision.reservation, 300)
        await quotas.settle(hold, 300)

    try:
        for concurrency in (1, 16):
            cpu: dict[str, float] = {}
            for name, admit in (("one_call", one_call), ("two_step", two_step)):
                for _ in range(200):  # warm: scripts loaded, connections open
                    await admit()
                n = 4000
                began = time.process_time()
                for _ in range(n // concurrency):
                    await asyncio.gather(*(admit() for _ in range(concurrency)))
                cpu[name] = (time.process_time() - began) / n * 1e6
                bench(f"admission_with_quotas_{name}_cpu_c{concurrency}_us", cpu[name], "us")
            bench(
                f"admission_with_quotas_two_step_over_one_call_c{concurrency}",
                cpu["two_step"] / cpu["one_call"],
                "x",
            )
    finally:
        await limiter.aclose()
        await quotas.link.aclose()


def main() -> None:
    local()
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError) as err:
        print(f"# Redis benchmarks skipped: {REDIS_URL} not reachable ({err})", flush=True)
        return
    prefix = f"bench:limits:{uuid.uuid4().hex[:8]}"
    asyncio.run(_redis(REDIS_URL, prefix))
    asyncio.run(_admission_with_quotas(REDIS_URL, prefix + "q"))
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}q:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    main()
