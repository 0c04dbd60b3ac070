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
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from benchmarks.processes import free_port, server, wait_until_up
from gateway.limits import Rule, Scope, Unit
from portal.app import build_services, create_app
from portal.settings import Settings
from store.models import UsageInflight, UsageRecord
from store.security import USER_TOKEN_PREFIX, issue
from tests.gateway.test_gateway_processes import reference_admits
from tests.portal.conftest import PG_ADMIN_URL, PG_SKIP

GATEWAYS = 3
LEASE_S = 3.0  # concurrency lease lifetime: renewed every second; a dead replica's leases free within it
PER_MINUTE = 60  # key "burst"
BURST = 300  # requests to it, spread evenly over BURST_S
BURST_S = 3.0
CONCURRENT = 5  # key "slow"
TOKENS_PER_S = 20  # the simulator's decode speed: a stream of n tokens lasts n / 20 s


class OwnRedis:
    """A redis-server of this test's own, without persistence: a restart empties it."""

    def __init__(self, log: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: the fault suite needs a Redis it may kill")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=0.2, socket_connect_timeout=0.2)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    own = OwnRedis(tmp_path / "redis.log")
    own.start()
    try:
        yield own
    finally:
        own.kill()


@pytest.fixture
def pg_url() -> Iterator[str]:
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    name = f"mf_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


RULES = {
    "burst": ("rpm", PER_MINUTE),
    "slow": ("concurrency", CONCURRENT),
    "tok": ("tpm", 50_000_000),  # tokens fail closed: the key that would see limiter_unavailable
    "one": ("concurrency", 1),
}


def set_up(settings: Settings, engine_url: str) -> dict[str, str]:
    """Workspace, model, keys and rules through the portal's own API; key name -> secret."""
    services = build_services(settings)
    try:
        with TestClient(create_app(services=services)) as portal:
            portal.headers["authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"

            def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
                response = portal.post(path, json=body)
                assert response.status_code in (200, 201), response.text
                out: dict[str, Any] = response.json()
                return out

            call("/api/workspaces", {"slug": "team", "name": "Team"})
            target = {"kind": "external", "base_url": f"{engine_url}/v1", "upstream_model": "sim"}
            call(
                "/api/maas-models",
                {"public_id": "chat", "targets": [target], "enabled": True, "visibility": "all"},
            )
            secrets_by_key = {}
            for name, (unit, limit) in RULES.items():
                key = call("/api/workspaces/team/api-keys", {"name": name})
                secrets_by_key[name] = key["secret_key"]
                rule = {"scope": "api_key", "subject": key["id"], "unit": unit, "limit": limit}
                call("/api/rate-limits", rule)
            return secrets_by_key
    finally:
        services.engine.dispose()


@dataclass
class Fleet:
    urls: list[str]
    pids: list[int]
    keys: dict[str, str]
    database_url: str
    simulator: str

    def most_streams_at_once(self) -> int:
        """Read where the streams run: the simulator counts them on one clock, and an upstream stream
        lies within its lease (admitted before it opens, released after it ends), so this is a lower
        bound of the leases held at once that, unlike the client's view, no scheduling delay inflates."""
        metrics = httpx.get(f"{self.simulator}/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("simulator_max_active_streams "))
        return int(line.split()[1])


@contextlib.contextmanager
def fleet(tmp: Path, redis_url: str, database_url: str, gateways: int = GATEWAYS) -> Iterator[Fleet]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    settings = Settings(
        data_dir=tmp / "portal",
        database_url=database_url,
        pepper=secrets.token_hex(16),  # type: ignore[arg-type]
        admin_token=issue(USER_TOKEN_PREFIX).value,  # type: ignore[arg-type]
        worker_enabled=False,
        allow_private_urls=True,  # the upstream is a simulator on this machine
    )
    sim_port = free_port()
    simulator = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--any-model"]
    simulator += ["--ttft-ms", "0", "--tokens-per-second", str(TOKENS_PER_S), "--completion-tokens", "1000"]
    gateway_env = {
        **env,
        "MODELFLEET_DATABASE_URL": database_url,
        "MODELFLEET_DATA_DIR": str(tmp / "gateway"),
        "MODELFLEET_PEPPER": settings.pepper.get_secret_value(),
        "MODELFLEET_WORKER_ENABLED": "false",
        "MODELFLEET_REDIS_URL": redis_url,
        "MODELFLEET_GATEWAY_REDIS_PREFIX": "mffault",
        "MODELFLEET_GATEWAY_REPLICAS": str(GATEWAYS),
        "MODELFLEET_GATEWAY_LEASE_SECONDS": str(LEASE_S),
        "MODELFLEET_GATEWAY_REDIS_PROBE_SECONDS": "0.1",
        "MODELFLEET_USAGE_HEARTBEAT_SECONDS": "0.5",
        "MODELFLEET_USAGE_REAP_AFTER_SECONDS": "2",
        "MODELFLEET_GATEWAY_HEALTH_CHECK_SECONDS": "0",
    }
    with contextlib.ExitStack() as stack:
        sim_url = f"http://127.0.0.1:{sim_port}"
        stack.enter_context(server(simulator, env, f"{sim_url}/health", "simulator", tmp / "sim.log"))
        keys = set_up(settings, sim_url)
        urls, processes = [], []
        for n in range(gateways):  # started together: each takes seconds to import and start
            port = free_port()
            command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
            log = stack.enter_context((tmp / f"gw{n}.log").open("wb"))
            process = subprocess.Popen(command, env=gateway_env, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(stop, process)
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_until_up(f"{url}/healthz", process, "gateway")
        yield Fleet(urls, [p.pid for p in processes], keys, database_url, sim_url)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def chat(max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


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
