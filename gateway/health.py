"""Active health checks: every ready serving endpoint's health path, asked on a schedule, feeds its
circuit breaker, so an engine that stops answering leaves the routing before a client's request finds
out (and a recovered one comes back through the breaker's half-open probe).

Only serving targets (engines the platform runs) are checked, at the path their readiness probe uses
(`/health` on the engine's root, beside `/v1`); external upstreams are providers' APIs, judged by the
answers to real requests alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from gateway.breaker import BreakerBoard
from gateway.snapshot import TargetSpec
from gateway.upstream import UpstreamClient

HEALTH_PATH = "/health"


def health_url(spec: TargetSpec) -> str:
    base = spec.url[: -len("/v1")] if spec.url.endswith("/v1") else spec.url
    return base.rstrip("/") + HEALTH_PATH


async def check_once(
    specs: Iterable[TargetSpec],
    client: UpstreamClient,
    breakers: BreakerBoard,
    timeout_s: float,
    interval_s: float,
) -> dict[str, bool]:
    """Probe every serving target once, concurrently; the verdicts go to the breakers. Targets whose
    breaker gives no permit now (open, or a probe already out) are skipped. A failed check opens the
    breaker at once, until the next check (what a failing readiness probe does to a Service)."""
    permits = {}
    for spec in specs:
        if spec.kind != "serving" or spec.name in permits:
            continue
        permit = breakers[spec.name].try_acquire()
        if permit is not None:
            permits[spec.name] = (spec, permit)
    results = await asyncio.gather(
        *(client.healthy(health_url(spec), timeout_s) for spec, _ in permits.values())
    )
    verdicts: dict[str, bool] = {}
    for (name, (_, permit)), ok in zip(permits.items(), results, strict=True):
        breaker = breakers[name]
        if ok:
            breaker.record_success(permit)
        else:
            breaker.record_failure(permit, retry_after=interval_s)
        verdicts[name] = ok
    return verdicts
