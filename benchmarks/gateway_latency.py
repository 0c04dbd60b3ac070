"""The gateway's ADDED latency over calling the engine directly, under open-loop load, in one run.

`python -m benchmarks.gateway_latency` prints `BENCH <name> <value> <unit>` lines.

Three processes share the machine (2 cores here):

- the engine SIMULATOR (`python -m simulator.app`, ttft 0, 4-token answers, no pacing);
- the gateway exactly as its Kubernetes Deployment runs it (`python -m gateway`), with limits ON
  (first with one worker process per core, lines `gateway_...`; then as a single process, lines
  `gateway_1proc_...`, each with its own `..._direct_...` baseline taken just before):
  global, model, workspace, key and key × model rules in requests/s, requests/min, tokens/min, tokens/day
  and concurrency, plus a key token quota — in Redis when one answers at $MODELFLEET_BENCH_REDIS_URL,
  in process otherwise — and usage rows written to PostgreSQL (when one answers) or SQLite;
- this process, the load generator: OPEN LOOP at a constant rate. Request i is due at start + i / rate
  and is sent then whether or not earlier ones came back, on the keep-alive connection idle longest
  (16 are opened up front, as 16 applications would hold; another is opened when none is idle: a
  worker process serves the connections it accepted, so a load that kept to one connection would
  measure one worker), and its latency runs from when it was DUE to its last byte, so a stalled server or a
  late generator shows up in the figures instead of quietly lowering the offered load (the closed-loop
  "coordinated omission" of Locust-style tests). Offered and achieved rates are both reported.

At 100, 300 and 600 requests/s the same schedule is run against the simulator directly, then through
the gateway; `gateway_added_pXX` is the gateway's percentile minus the direct one. The client is a
minimal HTTP/1.1 writer on asyncio streams: httpx would cost more CPU per request than the servers and
would measure itself. Also reported: a sequential (one request at a time) baseline both ways, the
ratio of gateway to direct latency, and the gateway's CPU time per request (from /proc, its worker
processes included).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.processes import free_port, server, wait_listening
from benchmarks.report import bench

ROOT = Path(__file__).resolve().parent.parent
RATES = tuple(int(r) for r in os.environ.get("MODELFLEET_BENCH_RATES", "100,300,600").split(",") if r)
STREAM_RATES = tuple(
    int(r) for r in os.environ.get("MODELFLEET_BENCH_STREAM_RATES", "300,600").split(",") if r
)
SECONDS = float(os.environ.get("MODELFLEET_BENCH_SECONDS", "6"))
WARMUP_SECONDS = 1.0
SEQUENTIAL = 300
CLIENTS = 16  # keep-alive connections opened up front, as that many applications would hold
REDIS_URL = os.environ.get("MODELFLEET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("MODELFLEET_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MODEL = "bench-chat"
HIGH = 2**31 - 1  # a limit that never refuses: the limiter runs, the benchmark measures its cost
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def info(message: str) -> None:
    print(f"# gateway_latency: {message}", flush=True)


# -- the load generator ---------------------------------------------------------------------------
def request_bytes(port: int, path: str, body: dict[str, Any], key: str | None) -> bytes:
    data = json.dumps(body).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n{auth}"
        f"content-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def read_response(reader: asyncio.StreamReader) -> int:
    """One response, Content-Length or chunked (a stream); its status. A stream that ends without its
    `data: [DONE]` event is an error (ValueError), not a fast answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" not in lower:
        start = lower.index(b"content-length:") + len(b"content-length:")
        await reader.readexactly(int(lower[start : lower.index(b"\r\n", start)]))
        return status
    last = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        last = (last + await reader.readexactly(size + 2))[-64:]
    await reader.readexactly(2)  # the empty trailer section
    if status == 200 and b"data: [DONE]" not in last:
        raise ValueError("the stream ended without data: [DONE]")
    return status


class Pool:
    """Idle keep-alive connections; a request that finds none opens one (open loop: never wait).

    Connections idle for longer than `MAX_IDLE` are dropped, not reused: the servers close keep-alive
    connections after 5 s (uvicorn's default) and a request must not fail on a socket closed under it."""

    MAX_IDLE = 3.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = (
            collections.deque()
        )
        self.opened = 0

    async def open(self, clients: int) -> None:
        """Open `clients` connections up front, as that many applications would have: a server's
        worker processes share them as they accepted them, and `get` takes them in turn."""
        for _ in range(clients):
            self.put(await self._connect())

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Oldest idle first: requests go round the open connections (the last one put back, taken at
        # once, would pin a light load to one connection, hence to one worker process).
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.popleft()
            if now - since < self.MAX_IDLE:
                return reader, writer
            writer.close()
        return await self._connect()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer

    def put(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.idle.append((*connection, time.monotonic()))

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class Run:
    offered: float  # requests/s scheduled
    achieved: float  # responses/s, first due time to last response
    latencies_ms: list[float]  # sorted, from due time to last byte, successful requests
    errors: int
    late_p99_ms: float  # how late the generator itself sent (p99 of send - due)
    connections: int
    statuses: dict[str, int]  # non-200 answers and transport errors, by kind

    def p(self, q: float) -> float:
        values = self.latencies_ms
        return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


async def open_loop(pool: Pool, request: bytes, rate: float, seconds: float) -> Run:
    with collector_paused():
        return await _open_loop(pool, request, rate, seconds)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in the generator while it measures: a full pass over this process's heap
    (~200k objects, the portal's set-up included) stalls it for up to ~80 ms, which would show up as
    server latency in both columns."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _open_loop(pool: Pool, request: bytes, rate: float, seconds: float) -> Run:
    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    latencies: list[float] = []
    late: list[float] = []
    errors = 0
    last_done = 0.0
    statuses: dict[str, int] = {}

    async def one(due: float) -> None:
        nonlocal errors, last_done
        connection = await pool.get()
        late.append(loop.time() - due)
        reader, writer = connection
        try:
            writer.write(request)
            status = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors += 1
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            writer.close()
            return
        done = loop.time()
        last_done = max(last_done, done)
        pool.put(connection)
        if status == 200:
            latencies.append((done - due) * 1000)
        else:
            errors += 1
            statuses[str(status)] = statuses.get(str(status), 0) + 1

    start = loop.time() + 0.02
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    late.sort()
    return Run(
        offered=n / (n / rate),
        achieved=len(latencies) / max(last_done - start, 1e-9),
        latencies_ms=sorted(latencies),
        errors=errors,
        late_p99_ms=late[int(0.99 * (len(late) - 1))] * 1000 if late else 0.0,
        connections=pool.opened,
        statuses=statuses,
    )


async def sequential(pool: Pool, request: bytes, n: int) -> list[float]:
    with collector_paused():
        return await _sequential(pool, request, n)


async def _sequential(pool: Pool, request: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        reader, writer = connection = await pool.get()
        started = time.perf_counter()
        writer.write(request)
        await read_response(reader)
        out.append((time.perf_counter() - started) * 1000)
        pool.put(connection)
    return sorted(out)


# -- the servers ----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (uvicorn's worker processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += sum(cpu_seconds(int(child)) for child in (task / "children").read_text().split())
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of one process (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            out += [int(child) for child in (task / "children").read_text().split()]
    return out


def first_answer(command: list[str], env: dict[str, str], url: str, key: str | None, log: Path) -> float:
    """Seconds from spawning a server to its first HTTP answer at `url` (any status but a transport
    error); the server is stopped afterwards."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(url, headers=headers, timeout=1)
                    return time.perf_counter() - started
                if process.poll() is not None:
                    raise RuntimeError(f"{command} exited with {process.returncode}")
                time.sleep(0.005)
        finally:
            process.terminate()
            process.wait(15)


def start_up_and_memory(gw_cmd: list[str], gw_env: dict[str, str], key: str, tmp: Path) -> None:
    """Start-up to the first answer and idle memory: the gateway beside the bare simulator (a
    Starlette app on uvicorn, the least a Python HTTP server costs here) measured the same way."""
    sim_port, port = free_port(), free_port()
    sim_cmd = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--any-model"]
    sim = min(
        first_answer(sim_cmd, gw_env, f"http://127.0.0.1:{sim_port}/v1/models", None, tmp / "s.log")
        for _ in range(3)
    )
    cmd = [*gw_cmd, "--port", str(port)]
    gateway = min(
        first_answer(cmd, gw_env, f"http://127.0.0.1:{port}/v1/models", key, tmp / "g.log") for _ in range(3)
    )
    bench("gateway_start_to_first_answer", gateway, "s")
    bench("simulator_start_to_first_answer", sim, "s")
    bench("gateway_start_over_simulator", gateway / sim, "x")
    for workers in (1, 2):
        port = free_port()
        command = [*gw_cmd, "--port", str(port), "--workers", str(workers)]
        health = f"http://127.0.0.1:{port}/v1/models"
        with server(command, gw_env, f"http://127.0.0.1:{port}/healthz", "gateway", tmp / "m.log") as pid:
            wait_listening(port, workers)
            for _ in range(20):  # every worker has answered once (the kernel spreads the connections)
                httpx.get(health, headers={"authorization": f"Bearer {key}"}, timeout=5)
            time.sleep(1.0)
            worker_pids = children(pid) if workers > 1 else [pid]
            per_worker = max(rss_mb(w) for w in worker_pids)
            total = rss_mb(pid) + (sum(rss_mb(w) for w in worker_pids) if workers > 1 else 0)
        suffix = "1proc" if workers == 1 else f"{workers}workers"
        bench(f"gateway_idle_rss_per_worker_{suffix}", per_worker, "MB")
        bench(f"gateway_idle_rss_total_{suffix}", total, "MB")
    sim_port = free_port()
    with server(
        [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--any-model"],
        gw_env,
        f"http://127.0.0.1:{sim_port}/health",
        "simulator",
        tmp / "s2.log",
    ) as sim_pid:
        httpx.get(f"http://127.0.0.1:{sim_port}/v1/models", timeout=5)
        time.sleep(1.0)
        bench("simulator_idle_rss", rss_mb(sim_pid), "MB")


def redis_url() -> str | None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        client.ping()
        client.close()
        return REDIS_URL
    except Exception:
        return None


@contextlib.contextmanager
def database(tmp: Path) -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database when one answers, else a SQLite file: (url, kind)."""
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception:
        yield f"sqlite:///{tmp / 'bench.db'}", "sqlite"
        return
    name = f"mf_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}", "postgresql"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def set_up(database_url: str, tmp: Path, pepper: str, admin_token: str, engine_url: str) -> str:
    """Workspace, model, key, rules and quota through the portal's own API; the key's secret."""
    from fastapi.testclient import TestClient

    from portal.app import build_services, create_app
    from portal.settings import Settings

    settings = Settings(
        data_dir=tmp / "portal",
        database_url=database_url,
        pepper=pepper,  # type: ignore[arg-type]
        admin_token=admin_token,  # type: ignore[arg-type]
        worker_enabled=False,
        allow_private_urls=True,  # the upstream is the simulator on this machine
    )
    services = build_services(settings)
    try:
        with TestClient(create_app(services=services)) as portal:
            portal.headers["authorization"] = f"Bearer {admin_token}"

            def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
                response = portal.request(method, path, json=body)
                assert response.status_code in (200, 201), response.text
                out: dict[str, Any] = response.json()
                return out

            call("POST", "/api/workspaces", {"slug": "bench", "name": "Bench"})
            call("PUT", "/api/workspaces/bench/quota", {"token_quota": 10**15, "quota_refresh": "month"})
            target = {"kind": "external", "base_url": f"{engine_url}/v1", "upstream_model": "sim-chat"}
            call(
                "POST",
                "/api/maas-models",
                {
                    "public_id": MODEL,
                    "targets": [target],
                    "enabled": True,
                    "visibility": "all",
                    "price_input_per_m": 1.0,
                },
            )
            key = call("POST", "/api/workspaces/bench/api-keys", {"name": "bench", "token_quota": 10**15})
            rules = [
                {"scope": "global", "unit": "rps", "limit": HIGH},
                {"scope": "model", "model": MODEL, "unit": "rpm", "limit": HIGH},
                {"scope": "workspace", "subject": "bench", "unit": "tpm", "limit": HIGH},
                {"scope": "api_key", "subject": key["id"], "unit": "rpm", "limit": HIGH},
                {"scope": "api_key", "subject": key["id"], "unit": "tpd", "limit": HIGH},
                {"scope": "api_key", "subject": key["id"], "unit": "concurrency", "limit": 100_000},
            ]
            for rule in rules:
                call("POST", "/api/rate-limits", rule)
            secret: str = key["secret_key"]
            return secret
    finally:
        services.engine.dispose()


# -- the run ----------------------------------------------------------------------------------------
def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="modelfleet-bench-"))
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4}
    sim_port, gw_port = free_port(), free_port()
    sim_cmd = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--ttft-ms", "0"]
    sim_cmd += ["--completion-tokens", "4", "--any-model"]
    try:
        with (
            database(tmp) as (database_url, db_kind),
            server(sim_cmd, base_env, f"http://127.0.0.1:{sim_port}/health", "simulator", tmp / "sim.log"),
        ):
            pepper, admin_token = secrets.token_hex(16), _admin_token()
            key = set_up(database_url, tmp, pepper, admin_token, f"http://127.0.0.1:{sim_port}")
            redis = redis_url()
            gw_env = gateway_env(base_env, database_url, tmp, pepper, admin_token, redis)
            info(f"limits and quotas {'in Redis at ' + redis if redis else 'in process (no Redis answered)'}")
            info(f"usage rows to {db_kind}; {os.cpu_count()} CPUs shared by simulator, gateway and load")
            bench("gateway_limits_in_redis", 1 if redis else 0, "bool")
            stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            requests = {
                kind: {
                    "direct": request_bytes(sim_port, "/v1/chat/completions", payload, None),
                    "gateway": request_bytes(gw_port, "/v1/chat/completions", payload, key),
                }
                for kind, payload in (("json", body), ("stream", stream_body))
            }
            # One worker per core is how the gateway is meant to run on a node (its Deployment's pods
            # or `--workers`); a single process is reported too. Without Redis, workers would each
            # enforce the limits alone, so only one process is measured then.
            cores = os.cpu_count() or 1
            configurations: tuple[int, ...] = (cores, 1) if redis and cores > 1 else (1,)
            if os.environ.get("MODELFLEET_BENCH_WORKERS"):  # e.g. "2" to measure one configuration
                configurations = tuple(int(w) for w in os.environ["MODELFLEET_BENCH_WORKERS"].split(","))
            bench("gateway_workers", configurations[0], "processes")
            base_cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1"]
            start_up_and_memory(base_cmd, {**gw_env, "MODELFLEET_GATEWAY_REPLICAS": "2"}, key, tmp)
            for workers in configurations:
                gw_cmd = [
                    sys.executable,
                    "-m",
                    "gateway",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(gw_port),
                ]
                gw_cmd += ["--workers", str(workers)]
                health = f"http://127.0.0.1:{gw_port}/healthz"
                env = {**gw_env, "MODELFLEET_GATEWAY_REPLICAS": str(workers)}
                with server(gw_cmd, env, health, "gateway", tmp / f"gw{workers}.log") as pid:
                    wait_listening(gw_port, workers)  # every worker, before the clients connect
                    tag = "gateway" if workers == configurations[0] else f"gateway_{workers}proc"
                    info(f"{tag}: {workers} gateway process(es)")
                    asyncio.run(measure(sim_port, gw_port, requests, pid, tag))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gateway_env(
    base: dict[str, str], database_url: str, tmp: Path, pepper: str, admin_token: str, redis: str | None
) -> dict[str, str]:
    """A benchmarked gateway's settings: this run's database and secrets, limits in `redis` (under a
    prefix of the run's own) or in process."""
    env = {
        **base,
        "MODELFLEET_DATABASE_URL": database_url,
        "MODELFLEET_DATA_DIR": str(tmp / "gateway"),
        "MODELFLEET_PEPPER": pepper,
        "MODELFLEET_ADMIN_TOKEN": admin_token,
        "MODELFLEET_WORKER_ENABLED": "false",
        "MODELFLEET_GATEWAY_REDIS_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
    }
    if redis:
        env["MODELFLEET_REDIS_URL"] = redis
    else:
        env.pop("MODELFLEET_REDIS_URL", None)
    return env


def _admin_token() -> str:
    from store.security import USER_TOKEN_PREFIX, issue

    return issue(USER_TOKEN_PREFIX).value


async def measure(
    sim_port: int, gw_port: int, requests: dict[str, dict[str, bytes]], gateway_pid: int, tag: str
) -> None:
    """Lines `<tag>_...` for the gateway (`tag` names its configuration) and `<tag>_direct_...` for the
    simulator alone, measured right before it on the same schedule: JSON answers at `RATES`, then
    streams (`..._stream_...`) at `STREAM_RATES`. `requests[kind][path]` is the request to send."""
    pools = {"direct": Pool(sim_port), "gateway": Pool(gw_port)}
    names = {"direct": f"{tag}_direct" if tag != "gateway" else "direct", "gateway": tag}
    for name, pool in pools.items():  # warm up both paths (connections, caches, the gateway's snapshot)
        await pool.open(CLIENTS)
        for kind in requests:
            warm = await open_loop(pool, requests[kind][name], 100, WARMUP_SECONDS)
            if warm.errors:
                raise RuntimeError(f"{name}: {warm.errors} errors while warming up ({kind}: {warm.statuses})")
    json_requests = requests["json"]
    seq = {name: await sequential(pool, json_requests[name], SEQUENTIAL) for name, pool in pools.items()}
    for name in pools:
        bench(f"{names[name]}_sequential_p50", seq[name][len(seq[name]) // 2], "ms")
    added = seq["gateway"][len(seq["gateway"]) // 2] - seq["direct"][len(seq["direct"]) // 2]
    bench(f"{tag}_added_sequential_p50", added, "ms")
    for kind, rates in (("json", RATES), ("stream", STREAM_RATES)):
        for rate in rates:
            await compare(pools, requests[kind], names, rate, gateway_pid, tag, kind)
    for pool in pools.values():
        pool.close()


async def compare(
    pools: dict[str, Pool],
    requests: dict[str, bytes],
    names: dict[str, str],
    rate: int,
    gateway_pid: int,
    tag: str,
    kind: str,
) -> None:
    """One rate, both paths: `<name>_[stream_]<figure>_<rate>rps` lines (JSON answers unmarked), then
    the gateway's added latency."""
    marked = "" if kind == "json" else f"{kind}_"
    runs: dict[str, Run] = {}
    for name, pool in pools.items():
        # Fresh connections for each run: the servers close keep-alive connections idle for 5 s
        # (uvicorn's default), which the other path's run outlasts.
        pool.close()
        await pool.open(CLIENTS)
        cpu_before = cpu_seconds(gateway_pid)
        workers = children(gateway_pid)
        worker_cpu_before = [cpu_seconds(w) for w in workers]
        runs[name] = run = await open_loop(pool, requests[name], rate, SECONDS)
        line = f"{names[name]}_{marked}{{}}_{rate}rps"
        bench(line.format("offered"), run.offered, "req/s")
        bench(line.format("achieved"), run.achieved, "req/s")
        bench(line.format("errors"), run.errors, "requests")
        bench(line.format("generator_late_p99"), run.late_p99_ms, "ms")
        for q in (50, 95, 99):
            bench(line.format(f"p{q}"), run.p(q), "ms")
        if run.statuses:
            info(f"{names[name]} {kind} at {rate} req/s: errors {run.statuses}")
        if name == "gateway":
            cpu = cpu_seconds(gateway_pid) - cpu_before
            bench(line.format("cpu_per_request"), cpu / max(len(run.latencies_ms), 1) * 1000, "ms")
            spent = [cpu_seconds(w) - b for w, b in zip(workers, worker_cpu_before, strict=True)]
            if len(workers) > 1 and sum(spent) > 0:  # is every worker serving? (1/workers is even)
                bench(line.format("busiest_worker_cpu_share"), max(spent) / sum(spent), "fraction")
    for q in (50, 95, 99):
        bench(f"{tag}_{marked}added_p{q}_{rate}rps", runs["gateway"].p(q) - runs["direct"].p(q), "ms")
    bench(f"{tag}_{marked}over_direct_p50_{rate}rps", runs["gateway"].p(50) / runs["direct"].p(50), "x")


if __name__ == "__main__":
    main()
