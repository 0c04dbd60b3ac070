"""The parts wired together the way the gateway will: OpenAI SDK → a minimal relay (router, breakers,
meter) → two simulated engines, over real sockets.

The relay here is test scaffolding, not the gateway; it pins down the recipe and its traps: hide the
usage-only chunk from clients that did not ask, fail over on 429 with the breaker honouring
retry-after, and record a client's disconnect even though the stream's task is being cancelled.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.breaker import BreakerBoard, BreakerConfig, is_failure_status, parse_retry_after
from gateway.metering import (
    Metered,
    Outcome,
    Prices,
    StreamMeter,
    Usage,
    cost,
    meter_response,
    prepare_upstream_body,
)
from gateway.routing import Router, Strategy, Target
from simulator.app import Faults, ModelProfile, Simulator, serve_in_thread

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]
ENGINE_PROMPT = 3 + 4 + 4  # the simulator's count for MESSAGES
ESTIMATED_PROMPT = 3 + 4 + 5  # the estimate: "Tell me about gateways" is 5 (" gateways" is long: 2)


@dataclass
class Relay:
    router: Router
    records: list[Metered] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        prepared = prepare_upstream_body(body)
        http = httpx.AsyncClient(timeout=10)  # per request, so nothing outlives the test's servers
        for attempt in self.router.attempts():
            url = f"{attempt.target.url}/v1/chat/completions"
            try:
                upstream = await http.send(http.build_request("POST", url, json=prepared.body), stream=True)
            except httpx.TransportError:
                attempt.failed()
                attempt.close()
                continue
            if is_failure_status(upstream.status_code):
                attempt.failed(parse_retry_after(upstream.headers))
                await upstream.aclose()
                attempt.close()
                continue
            attempt.succeeded()
            self.served_by.append(attempt.target.name)
            if not prepared.stream:
                data = await upstream.aread()
                attempt.close()
                await http.aclose()
                self.records.append(meter_response(body, json.loads(data)))
                return Response(data, media_type="application/json")
            relay = self.relay(http, upstream, prepared, attempt.close)
            return StreamingResponse(relay, media_type="text/event-stream")
        await http.aclose()
        return JSONResponse({"error": {"message": "no upstream available", "type": "server_error"}}, 503)

    async def relay(
        self, http: httpx.AsyncClient, upstream: httpx.Response, prepared: Any, close: Any
    ) -> AsyncIterator[bytes]:
        meter = StreamMeter.for_request(prepared)
        outcome: Outcome | None = None
        try:
            async for piece in upstream.aiter_raw():
                forward = meter.feed(piece)
                if forward:
                    yield forward
            tail = meter.close()
            if tail:
                yield tail
        except httpx.TransportError:
            outcome = Outcome.UPSTREAM_ERROR
        except BaseException:  # cancelled: the client went away
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            # Record first, synchronously: once cancelled, any await here raises again.
            self.records.append(meter.finish(outcome))
            close()
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
                await http.aclose()

    def wait_for_records(self, n: int) -> list[Metered]:
        """The relay records after the last byte went out, so the client can be faster."""
        deadline = time.monotonic() + 5
        while len(self.records) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.records


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Simulator, Simulator, str, str]]:
    first = Simulator({"m": ModelProfile(completion_tokens=8)})
    second = Simulator({"m": ModelProfile(ttft_ms=50, tokens_per_second=200, completion_tokens=8)})
    with serve_in_thread(first.app) as url1, serve_in_thread(second.app) as url2:
        yield first, second, url1, url2


@pytest.fixture
def relay(engines: tuple[Simulator, Simulator, str, str]) -> Iterator[tuple[Relay, str]]:
    _, _, url1, url2 = engines
    board = BreakerBoard(BreakerConfig(consecutive_failures=3))
    router = Router(
        [Target("one", url1, weight=1), Target("two", url2, weight=1)], Strategy.ROUND_ROBIN, breakers=board
    )
    relay = Relay(router)
    with serve_in_thread(relay.app()) as url:
        yield relay, url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)


def test_a_client_that_did_not_ask_never_sees_usage_yet_the_request_is_billed(
    relay: tuple[Relay, str],
) -> None:
    gateway, url = relay
    chunks = list(sdk(url).chat.completions.create(model="m", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert chunks and all(c.usage is None and c.choices for c in chunks)
    (record,) = gateway.wait_for_records(1)
    assert record == Metered(Usage(ENGINE_PROMPT, 8), Outcome.COMPLETED, record.ttft_seconds, "stop")
    assert record.ttft_seconds is not None
    assert cost(record.usage, Prices.of("1", "2")) == Decimal("0.000027000")  # 11 × 1 + 8 × 2 per 1e6


def test_a_client_that_asked_gets_the_usage_chunk(relay: tuple[Relay, str]) -> None:
    gateway, url = relay
    chunks = list(
        sdk(url).chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert gateway.wait_for_records(1)[-1].usage == Usage(ENGINE_PROMPT, 8)
    response = sdk(url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert response.usage is not None and gateway.wait_for_records(2)[-1].usage == Usage(ENGINE_PROMPT, 8)


def test_a_429_with_retry_after_fails_over_and_opens_the_circuit(
    relay: tuple[Relay, str], engines: tuple[Simulator, Simulator, str, str]
) -> None:
    gateway, url = relay
    first, _, _, _ = engines
    first.faults = Faults(status=429, retry_after=30)
    try:
        for _ in range(3):
            response = sdk(url).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
            assert response.usage is not None
    finally:
        first.faults = Faults()
    assert gateway.served_by == ["two", "two", "two"]
    assert first.stats.injected_errors >= 1
    breaker = gateway.router.breakers["one"]  # type: ignore[index]
    assert breaker.retry_in() > 25  # retry-after 30 s, not the 5 s cool-down
    assert all(t.in_flight == 0 for t in gateway.router.targets)


def test_a_client_disconnect_mid_stream_is_billed_for_what_was_generated(relay: tuple[Relay, str]) -> None:
    gateway, url = relay
    gateway.router.set_targets([t for t in gateway.router.targets if t.name == "two"])  # the paced engine
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    received = bytearray()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        for piece in response.iter_raw():
            received += piece
            if received.count(b'"content":" ') >= 3:
                break
    (record,) = gateway.wait_for_records(1)
    assert record.outcome is Outcome.CLIENT_DISCONNECTED and record.estimated
    assert record.usage.prompt_tokens == ESTIMATED_PROMPT
    assert 3 <= record.usage.completion_tokens < 8  # what the relay had seen when the client left
    assert record.ttft_seconds is not None
    assert all(t.in_flight == 0 for t in gateway.router.targets)
