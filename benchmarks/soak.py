"""`make soak` (not in CI): mixed load on three gateway processes for ten minutes while their Redis is
killed and started again empty and their PostgreSQL database goes away and comes back; then what held.

    python -m benchmarks.soak [seconds]        (default 600; MODELFLEET_TEST_PG names the server)

The load, each part on a key of its own: an evenly paced request rate against a per-minute limit,
streams against a concurrency limit, token-hungry requests against a tokens-per-minute limit, and
unlimited requests. The faults: every 90 s Redis is SIGKILLed and started again empty 2 s later;
every 120 s (from 45 s) the gateways' database refuses connections and drops every open one for 3 s,
as a restart does to its clients (the PostgreSQL server itself is shared, so it is not restarted).

It prints, as `SOAK <name> <value> <unit>` lines: admitted against the exact count per limit (the
reference model fed the same arrival times), the most streams at once against the concurrency limit,
usage rows against answered requests, 5xx answers by status and code, and each process's peak memory.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, select, text

from benchmarks.gateway_fleet import Fleet, OwnRedis, chat, fleet, own_database
from gateway.limits import Demand, Rule, Scope, Unit
from gateway.limits.reference import ReferenceLimiter
from store.models import UsageRecord

PG_ADMIN_URL = os.environ.get("MODELFLEET_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

PER_MINUTE = 120  # key "rate", sent RATE_PER_S a second
RATE_PER_S = 5
CONCURRENT = 4  # key "streams", by STREAMERS clients back to back
STREAMERS = 6
STREAM_TOKENS = 20  # a second each at the simulator's 20 tokens a second
TOKENS_PER_MINUTE = 6_000  # key "tokens": TOKEN_REQUESTS_PER_S requests of up to 50 tokens
TOKEN_REQUESTS_PER_S = 4
FREE_PER_S = 10  # key "free": no limit
REDIS_EVERY_S, REDIS_DOWN_S = 90.0, 2.0
PG_EVERY_S, PG_FIRST_S, PG_DOWN_S = 120.0, 45.0, 3.0

RULES = {
    "rate": ("rpm", PER_MINUTE),
    "streams": ("concurrency", CONCURRENT),
    "tokens": ("tpm", TOKENS_PER_MINUTE),
    "free": None,
}


@dataclass
class Answer:
    key: str
    sent_at: float  # monotonic
    status: int  # 0: no answer (a transport error)
    code: str
    request_id: str


@dataclass
class Soak:
    fleet: Fleet
    redis: OwnRedis
    database: str
    seconds: float
    answers: list[Answer] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    peaks: dict[str, int] = field(default_factory=dict)  # process -> peak resident kB

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            start = time.monotonic()
            end = start + self.seconds
            await asyncio.gather(
                self.paced(client, "rate", RATE_PER_S, start, end, chat(1)),
                self.paced(client, "tokens", TOKEN_REQUESTS_PER_S, start, end, chat(50)),
                self.paced(client, "free", FREE_PER_S, start, end, chat(5)),
                *(self.streamer(client, n, end) for n in range(STREAMERS)),
                self.redis_faults(start, end),
                self.database_faults(start, end),
                self.watch_memory(end),
            )

    async def paced(
        self,
        client: httpx.AsyncClient,
        key: str,
        per_s: int,
        start: float,
        end: float,
        body: dict[str, object],
    ) -> None:
        """Requests at a steady pace, each on its own task, so a slow answer delays no other."""
        tasks = []
        n = 0
        while (at := start + n / per_s) < end:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(self.one(client, key, n, body)))
            n += 1
        await asyncio.gather(*tasks)

    async def one(self, client: httpx.AsyncClient, key: str, n: int, body: dict[str, object]) -> None:
        sent = time.monotonic()
        url = f"{self.fleet.urls[n % len(self.fleet.urls)]}/v1/chat/completions"
        try:
            response = await client.post(url, json=body, headers=self.auth(key))
        except httpx.TransportError:
            self.answers.append(Answer(key, sent, 0, "transport", ""))
            return
        code = response.json().get("error", {}).get("code", "") if response.status_code != 200 else ""
        self.answers.append(
            Answer(key, sent, response.status_code, code or "", response.headers.get("x-request-id", ""))
        )

    async def streamer(self, client: httpx.AsyncClient, n: int, end: float) -> None:
        while time.monotonic() < end:
            n += 1
            url = f"{self.fleet.urls[n % len(self.fleet.urls)]}/v1/chat/completions"
            sent = time.monotonic()
            try:
                async with client.stream(
                    "POST", url, json=chat(STREAM_TOKENS, stream=True), headers=self.auth("streams")
                ) as r:
                    async for _ in r.aiter_raw():
                        pass
                    self.answers.append(
                        Answer("streams", sent, r.status_code, "", r.headers.get("x-request-id", ""))
                    )
                    if r.status_code != 200:
                        await asyncio.sleep(0.05)
            except httpx.TransportError:
                self.answers.append(Answer("streams", sent, 0, "transport", ""))
                await asyncio.sleep(0.05)

    def auth(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.fleet.keys[key]}"}

    async def redis_faults(self, start: float, end: float) -> None:
        at = start + REDIS_EVERY_S
        while at + REDIS_DOWN_S < end:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            self.note_peak("redis", self.redis.process.pid if self.redis.process else 0)
            self.redis.kill()
            await asyncio.sleep(REDIS_DOWN_S)
            await asyncio.to_thread(self.redis.start)
            self.faults["redis restarts"] += 1
            at += REDIS_EVERY_S

    async def database_faults(self, start: float, end: float) -> None:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = self.database.rsplit("/", 1)[1]
        at = start + PG_FIRST_S
        try:
            while at + PG_DOWN_S < end:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                await asyncio.to_thread(self.database_away, admin, name)
                self.faults["database outages"] += 1
                at += PG_EVERY_S
        finally:
            admin.dispose()

    @staticmethod
    def database_away(admin: Engine, name: str) -> None:
        """What a restart does to the gateways: every connection drops, new ones are refused, for a while."""
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
        time.sleep(PG_DOWN_S)
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    async def watch_memory(self, end: float) -> None:
        while time.monotonic() < end:
            await asyncio.sleep(5)
            for n, pid in enumerate(self.fleet.pids):
                self.note_peak(f"gateway{n}", pid)
            self.note_peak("simulator", self.fleet.simulator_pid)
            self.note_peak("redis", self.redis.process.pid if self.redis.process else 0)

    def note_peak(self, name: str, pid: int) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peaks[name] = max(self.peaks.get(name, 0), int(line.split()[1]))


def exact_admits(rule: Rule, arrivals: list[float]) -> int:
    """What the reference model admits from requests arriving at these (monotonic) times."""
    reference = ReferenceLimiter(
        [rule], lease_ttl_us=300_000_000, pending_ttl_us=3_600_000_000, concurrency_retry_us=1_000_000
    )
    demand = Demand("chat", "team", "k", 0)
    origin = 10**15 - int(min(arrivals, default=0) * 1_000_000)
    return sum(
        reference.acquire(demand, origin + int(at * 1_000_000), f"r{i}").admitted
        for i, at in enumerate(sorted(arrivals))
    )


def report(soak: Soak) -> None:
    def line(name: str, value: float | int, unit: str) -> None:
        print(f"SOAK {name} {value} {unit}", flush=True)

    by_key: dict[str, list[Answer]] = {}
    for answer in soak.answers:
        by_key.setdefault(answer.key, []).append(answer)
    line("seconds", soak.seconds, "s")
    for fault, count in sorted(soak.faults.items()):
        line(fault.replace(" ", "_"), count, "times")

    rate = by_key.get("rate", [])
    admitted = sum(a.status == 200 for a in rate)
    exact = exact_admits(Rule(Scope.API_KEY, Unit.RPM, PER_MINUTE, subject="k"), [a.sent_at for a in rate])
    line("rate_admitted", admitted, "requests")
    line("rate_exact", exact, "requests")
    line("rate_over_exact", admitted - exact, "requests")
    line("streams_most_at_once", soak.fleet.most_streams_at_once(), "streams")
    line("streams_limit", CONCURRENT, "streams")

    engine = create_engine(soak.database)
    try:
        with engine.connect() as conn:
            rows = {r.request_id: r for r in conn.execute(select(UsageRecord))}
    finally:
        engine.dispose()
    tokens = [
        rows[a.request_id] for a in by_key.get("tokens", []) if a.status == 200 and a.request_id in rows
    ]
    used = sum(r.prompt_tokens + r.completion_tokens for r in tokens)
    line("tokens_admitted", used, "tokens")
    line("tokens_exact_at_most", round(TOKENS_PER_MINUTE * (soak.seconds / 60 + 1)), "tokens")

    answered = [a for a in soak.answers if a.request_id]
    recorded = sum(a.request_id in rows for a in answered)
    line("requests_answered", len(answered), "requests")
    line("usage_rows_for_them", recorded, "rows")
    line("usage_rows_missing", len(answered) - recorded, "rows")
    line("transport_errors", sum(a.status == 0 for a in soak.answers), "requests")
    fives = Counter(f"{a.status}_{a.code or 'none'}" for a in soak.answers if a.status >= 500)
    line("5xx", sum(fives.values()), "answers")
    for kind, count in sorted(fives.items()):
        line(f"5xx_{kind}", count, "answers")
    for name, kb in sorted(soak.peaks.items()):
        line(f"peak_rss_{name}", round(kb / 1024, 1), "MB")


def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mf-soak-") as tmp:
        redis = OwnRedis(Path(tmp) / "redis.log")
        redis.start()
        try:
            with (
                own_database(PG_ADMIN_URL) as database,
                fleet(Path(tmp), redis.url, database, RULES) as running,
            ):
                soak = Soak(running, redis, database, seconds)
                asyncio.run(soak.run())
                for n, pid in enumerate(running.pids):
                    soak.note_peak(f"gateway{n}", pid)
                time.sleep(3)  # the usage writers flush
                report(soak)
        finally:
            redis.kill()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 600.0)
