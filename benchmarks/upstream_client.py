"""The gateway's upstream client, CPU per call, beside aiohttp's client and a bare stream in one run.

`python -m benchmarks.upstream_client` calls the engine simulator (a uvicorn server, as vLLM and
SGLang are) one request at a time and reports this process's CPU per call:

- `upstream_client_*`: `gateway.upstream.UpstreamClient` (gateway/connection.py's pool);
- `upstream_aiohttp_*`: aiohttp's `ClientSession`, set up as the gateway had it until this round (no
  cookies, no auto headers, the same timeouts), the baseline;
- `upstream_stream_floor_json_cpu_per_call`: the request written and the answer read with a bare
  asyncio stream (what any client must pay in system calls and wake-ups).

JSON calls read the whole body; stream calls relay an SSE stream of 32 tokens piece by piece.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

from benchmarks.processes import free_port, server
from benchmarks.report import bench
from gateway.upstream import UpstreamClient

CALLS = 2000
WARMUP = 200
HEADERS = [("content-type", "application/json"), ("x-request-id", "bench")]


def body(stream: bool) -> bytes:
    message = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 32}
    return json.dumps({**message, "stream": stream}).encode()


async def cpu_per_call(call: Callable[[], Awaitable[None]]) -> float:
    """Microseconds of this process's CPU per call, over CALLS sequential calls after a warm-up."""
    for _ in range(WARMUP):
        await call()
    started = time.process_time()
    for _ in range(CALLS):
        await call()
    return (time.process_time() - started) / CALLS * 1e6


async def measure(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results: dict[str, float] = {}
    ours = UpstreamClient(max_connections=100, connect_timeout_s=5, read_timeout_s=30)
    theirs = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=30),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    try:
        for kind in ("json", "stream"):
            data, stream = body(kind == "stream"), kind == "stream"
            ours_call = functools.partial(call_ours, ours, url, data, stream)
            theirs_call = functools.partial(call_theirs, theirs, url, data, stream)
            results[f"upstream_client_{kind}_cpu_per_call"] = await cpu_per_call(ours_call)
            results[f"upstream_aiohttp_{kind}_cpu_per_call"] = await cpu_per_call(theirs_call)
    finally:
        await ours.aclose()
        await theirs.close()
    results["upstream_stream_floor_json_cpu_per_call"] = await stream_floor(port)
    return results


async def call_ours(client: UpstreamClient, url: str, data: bytes, stream: bool) -> None:
    response = await client.post(url, data, HEADERS)
    try:
        if stream:
            async for _ in response.aiter_raw():
                pass
        else:
            await response.aread()
    finally:
        response.close()


async def call_theirs(session: aiohttp.ClientSession, url: str, data: bytes, stream: bool) -> None:
    async with session.post(url, data=data, headers=HEADERS, allow_redirects=False) as response:
        if stream:
            while await response.content.readany():
                pass
        else:
            await response.read()


async def stream_floor(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = body(False)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    head += f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    request = head.encode() + data

    async def call() -> None:
        writer.write(request)
        answer_head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in answer_head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)

    try:
        return await cpu_per_call(call)
    finally:
        writer.close()


def main() -> None:
    port = free_port()
    command = [sys.executable, "-m", "simulator.app", "--port", str(port), "--ttft-ms", "0", "--any-model"]
    command += ["--completion-tokens", "32", "--tokens-per-second", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        server(command, env, f"http://127.0.0.1:{port}/health", "simulator", Path(tmp) / "sim.log"),
    ):
        results = uvloop.run(measure(port))
    for name, value in results.items():
        bench(name, value, "us")
    for kind in ("json", "stream"):
        ratio = (
            results[f"upstream_aiohttp_{kind}_cpu_per_call"] / results[f"upstream_client_{kind}_cpu_per_call"]
        )
        bench(f"upstream_aiohttp_over_client_{kind}", ratio, "x")


if __name__ == "__main__":
    main()
