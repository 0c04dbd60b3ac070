"""Gateway building blocks: the engine simulator's throughput, the stream meter's, the router's picks.

`python -m benchmarks.gateway_simulator` prints `BENCH <name> <value> <unit>` lines.

The simulator runs as its own process (`python -m simulator.app`, uvicorn, one worker, no
delays) and is driven by a minimal keep-alive HTTP/1.1 client written on asyncio streams: a general
client such as httpx costs more CPU per request than the server does and would measure itself.
The machine has 2 cores, shared by the server process and the load generator.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.report import bench, best_of
from gateway.metering import StreamMeter, prepare_upstream_body
from gateway.routing import Router, Strategy, Target
from gateway.tokens import estimate_tokens
from simulator.app import ModelProfile, Simulator

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
DURATION = 3.0


# -- simulator throughput ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _request(port: int, stream: bool, tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": "sim-chat",
            "messages": [{"role": "user", "content": "benchmark the simulator"}],
            "max_tokens": tokens,
            "stream": stream,
            "stream_options": {"include_usage": True} if stream else None,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One response: Content-Length or chunked (the simulator's streams are chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return bytes(body)
            body += chunk[:-2]
    start = lower.index(b"content-length:") + len(b"content-length:")
    length = int(lower[start : lower.index(b"\r\n", start)])
    return await reader.readexactly(length)


async def _drive(port: int, stream: bool, tokens: int, duration: float) -> tuple[int, int]:
    request = _request(port, stream, tokens)
    done = 0
    received = 0
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done, received
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while time.perf_counter() < stop_at:
                writer.write(request)
                body = await _read_response(reader)
                done += 1
                received += len(body)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done, received


def simulator_throughput() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "simulator.app", "--port", str(port), "--ttft-ms", "0"]
    server = subprocess.Popen([*command, "--tokens-per-second", "0", "--completion-tokens", "256"], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.05)
        asyncio.run(_drive(port, False, 16, 0.5))  # warm up
        n, _ = asyncio.run(_drive(port, False, 16, DURATION))
        bench("simulator_chat_nonstream_16tok", n / DURATION, "req/s")
        n, _ = asyncio.run(_drive(port, True, 16, DURATION))
        bench("simulator_chat_stream_16tok", n / DURATION, "req/s")
        bench("simulator_stream_chunks", n * (16 + 4) / DURATION, "chunks/s")  # role, 16, finish, usage
        n, _ = asyncio.run(_drive(port, True, 256, DURATION))
        bench("simulator_chat_stream_256tok", n / DURATION, "req/s")
        bench("simulator_stream_tokens_256tok", n * 256 / DURATION, "tokens/s")
    finally:
        server.terminate()
        server.wait(10)


# -- metering ----------------------------------------------------------------------------------------
def _sample_stream(tokens: int) -> tuple[dict[str, object], bytes]:
    body = {"model": "m", "messages": [{"role": "user", "content": "metering benchmark"}], "stream": True}
    prepared = prepare_upstream_body(body)

    async def fetch() -> bytes:
        transport = httpx.ASGITransport(app=Simulator({"m": ModelProfile(completion_tokens=tokens)}).app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            return (await http.post("/v1/chat/completions", json=prepared.body)).content

    return body, asyncio.run(fetch())


def metering_throughput() -> None:
    body, raw = _sample_stream(1000)
    events = raw.count(b"\n\n")
    prepared = prepare_upstream_body(body)
    pieces = [raw[i : i + 1500] for i in range(0, len(raw), 1500)]  # about one TCP segment each
    repeats = 20

    def run() -> None:
        for _ in range(repeats):
            meter = StreamMeter.for_request(prepared)
            for piece in pieces:
                meter.feed(piece)
            meter.close()
            meter.finish()

    seconds = best_of(3, run)
    bench("meter_stream_throughput", len(raw) * repeats / seconds / 1e6, "MB/s")
    bench("meter_stream_events", events * repeats / seconds, "chunks/s")
    text = raw.decode()
    seconds = best_of(3, lambda: estimate_tokens(text))
    bench("token_estimate_throughput", len(raw) / seconds / 1e6, "MB/s")


# -- routing -----------------------------------------------------------------------------------------
def router_picks() -> None:
    picks = 200_000
    for strategy in Strategy:
        targets = [
            Target(f"t{i}", weight=w, region=("eu", "us")[i % 2])
            for i, w in enumerate((70, 25, 5, 10, 10, 10))
        ]
        router = Router(targets, strategy, rng=random.Random(1))

        def run(router: Router = router) -> None:
            pick = router.pick
            for _ in range(picks):
                pick("eu")

        bench(f"router_picks_{strategy.value}_6_targets", picks / best_of(3, run), "picks/s")


def main() -> None:
    router_picks()
    metering_throughput()
    simulator_throughput()


if __name__ == "__main__":
    main()
