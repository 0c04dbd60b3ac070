"""Three real gateway processes (`python -m gateway`) behind one Redis, hit by one burst.

This is the deployment's shape -- replicas sharing nothing but Redis and the database -- driven
over HTTP like clients drive it. Together the three must admit exactly what the reference model of
the limits admits for one set of limits, never more: for concurrency (leases held while a slow
upstream answers) and for a request rate (a burst far above it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from benchmarks.gateway_fleet import set_up
from benchmarks.processes import free_port, server
from gateway.limits import Demand, Rule, Scope, Unit
from gateway.limits.reference import ReferenceLimiter
from portal.settings import Settings
from store.security import USER_TOKEN_PREFIX, issue
from tests.gateway.test_limits_helpers import REDIS_URL, delete_prefix, redis_url

__all__ = ["redis_url"]  # fixture

GATEWAYS = 3
TTFT_MS = 1500  # the upstream's time to first token: admitted requests hold their lease this long
CONCURRENT = 7  # key "slow": concurrent requests
PER_MINUTE = 20  # key "burst": requests per minute (burst = limit)
SENT = 60  # requests in each burst, spread over the three gateways


RULES = {"slow": ("concurrency", CONCURRENT), "burst": ("rpm", PER_MINUTE)}


@contextlib.contextmanager
def fleet(tmp: Path, redis: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """A simulator and three gateways; (gateway base URLs, key secrets)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    prefix = f"mfproc{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp / "portal",
        database_url=f"sqlite:///{tmp / 'fleet.db'}",
        pepper=secrets.token_hex(16),  # type: ignore[arg-type]
        admin_token=issue(USER_TOKEN_PREFIX).value,  # type: ignore[arg-type]
        worker_enabled=False,
        allow_private_urls=True,  # the simulator listens on 127.0.0.1
    )
    sim_port = free_port()
    simulator = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--any-model"]
    simulator += ["--ttft-ms", str(TTFT_MS), "--completion-tokens", "2"]
    gateway_env = {
        **env,
        "MODELFLEET_DATABASE_URL": settings.database_url,
        "MODELFLEET_DATA_DIR": str(tmp / "gateway"),
        "MODELFLEET_PEPPER": settings.pepper.get_secret_value(),
        "MODELFLEET_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
        "MODELFLEET_WORKER_ENABLED": "false",
        "MODELFLEET_REDIS_URL": redis,
        "MODELFLEET_GATEWAY_REDIS_PREFIX": prefix,
        "MODELFLEET_GATEWAY_REPLICAS": str(GATEWAYS),
    }
    with contextlib.ExitStack() as stack:
        stack.callback(delete_prefix, prefix)
        sim_url = f"http://127.0.0.1:{sim_port}"
        stack.enter_context(server(simulator, env, f"{sim_url}/health", "simulator", tmp / "sim.log"))
        secrets_by_key = set_up(settings, sim_url, RULES)
        urls = []
        for n in range(GATEWAYS):
            port = free_port()
            command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(server(command, gateway_env, f"{url}/healthz", "gateway", tmp / f"gw{n}.log"))
            urls.append(url)
        yield urls, secrets_by_key


async def burst(urls: list[str], secret: str) -> tuple[list[int], float]:
    """SENT requests at once, round robin over the gateways; their statuses and the burst's duration."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    limits = httpx.Limits(max_connections=SENT)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {secret}"},
                )
                for i in range(SENT)
            )
        )
        elapsed = time.monotonic() - started
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert "retry-after" in response.headers
    return [r.status_code for r in responses], elapsed


def reference_admits(rule: Rule, requests: int, seconds: float) -> range:
    """How many requests the reference admits from a burst sent over `seconds`: at least what it admits
    if all arrive at once, at most what it admits if the last arrives `seconds` later."""
    demand = Demand("chat", "team", "k", 0)
    counts = []
    for spread_us in (0, int(seconds * 1_000_000)):
        reference = ReferenceLimiter(
            [rule], lease_ttl_us=300_000_000, pending_ttl_us=3_600_000_000, concurrency_retry_us=1_000_000
        )
        admitted = 0
        for i in range(requests):
            at = 10**15 + (spread_us * i) // max(requests - 1, 1)
            admitted += reference.acquire(demand, at, f"r{i}").admitted
        counts.append(admitted)
    return range(counts[0], counts[1] + 1)


def test_three_gateway_processes_admit_together_exactly_what_the_reference_admits(
    redis_url: str, tmp_path: Path
) -> None:
    assert redis_url == REDIS_URL
    with fleet(tmp_path, redis_url) as (urls, keys):
        statuses, elapsed = asyncio.run(burst(urls, keys["slow"]))
        # Leases are held for the upstream's 1.5 s, far longer than the burst takes to arrive.
        assert elapsed >= TTFT_MS / 1000
        assert statuses.count(200) == CONCURRENT, statuses
        assert statuses.count(429) == SENT - CONCURRENT

        statuses, elapsed = asyncio.run(burst(urls, keys["burst"]))
        rule = Rule(Scope.API_KEY, Unit.RPM, PER_MINUTE, subject="k")
        expected = reference_admits(rule, SENT, elapsed)
        assert statuses.count(200) in expected, (statuses.count(200), expected, elapsed)
        assert statuses.count(200) + statuses.count(429) == SENT
