"""The engine simulator, driven by the official OpenAI SDK (sync, async, streaming) over a real socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.tokens import estimate_tokens
from simulator.app import Faults, ModelProfile, Simulator, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "Say hello to the gateway"}]
HELLO_PROMPT_TOKENS = 3 + 4 + 5  # the simulator counts words: reply priming + one message + 5 words


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(
        {
            "fast": ModelProfile(completion_tokens=12),
            "timed": ModelProfile(ttft_ms=150, tokens_per_second=50, completion_tokens=10),
            "crowd": ModelProfile(ttft_ms=500, tokens_per_second=100, completion_tokens=2),
        }
    )


@pytest.fixture(scope="module")
def base_url(sim: Simulator) -> Iterator[str]:
    with serve_in_thread(sim.app) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)


def raw_stream(base_url: str, body: dict[str, Any]) -> bytes:
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.read()


def events(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for block in raw.decode().split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_and_health(client: openai.OpenAI, base_url: str) -> None:
    assert [m.id for m in client.models.list()] == ["fast", "timed", "crowd"]
    assert httpx.get(f"{base_url}/health").text == "ok"


def test_chat_completion_has_usage_and_deterministic_text(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="fast", messages=HELLO)  # type: ignore[arg-type]
    again = client.chat.completions.create(model="fast", messages=HELLO)  # type: ignore[arg-type]
    other = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "Something else"}],
    )
    text = first.choices[0].message.content
    assert text and text == again.choices[0].message.content != other.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (HELLO_PROMPT_TOKENS, 12)
    assert first.usage.total_tokens == HELLO_PROMPT_TOKENS + 12
    assert estimate_tokens(text) == 12  # the generated text is estimator-exact by design


def test_max_tokens_is_honoured(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fast", messages=HELLO, max_tokens=5)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5
    r2 = client.chat.completions.create(model="fast", messages=HELLO, max_completion_tokens=3)  # type: ignore[arg-type]
    assert r2.usage is not None and r2.usage.completion_tokens == 3


def test_stream_with_include_usage_ends_with_a_usage_only_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fast",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=4,
        )
    )
    *content, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (HELLO_PROMPT_TOKENS, 4)
    assert all(c.usage is None and len(c.choices) == 1 for c in content)
    assert content[0].choices[0].delta.role == "assistant"
    assert content[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].delta.content or "" for c in content).count(" ") == 4


def test_stream_wire_format_with_and_without_usage(base_url: str) -> None:
    body = {"model": "fast", "messages": HELLO, "stream": True, "max_tokens": 2}
    plain = raw_stream(base_url, body)
    assert b"usage" not in plain  # without the option no chunk mentions usage
    assert plain.endswith(b"data: [DONE]\n\n")
    assert len(events(plain)) == 1 + 2 + 1 + 1  # role, 2 tokens, finish, [DONE]
    with_usage = events(raw_stream(base_url, {**body, "stream_options": {"include_usage": True}}))
    assert all(e["usage"] is None for e in with_usage[:-2])  # `"usage": null` on every other chunk
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["object"] == "chat.completion.chunk"


def test_stream_knobs_usage_on_last_chunk_omitted_cached_and_reasoning(base_url: str) -> None:
    body = {"model": "fast", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    on_last = events(raw_stream(base_url, {**body, "simulator": {"usage": "last_chunk"}}))
    assert on_last[-2]["choices"][0]["finish_reason"] == "stop"
    assert on_last[-2]["usage"]["completion_tokens"] == 12
    assert all(e["usage"] is None for e in on_last[:-2])
    omitted = raw_stream(base_url, {**body, "simulator": {"usage": "none"}})
    assert b"usage" not in omitted
    detailed = events(
        raw_stream(base_url, {**body, "simulator": {"cached_tokens": 4, "reasoning_tokens": 3}})
    )
    usage = detailed[-2]["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 4}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 3}
    assert usage["completion_tokens"] == 12  # reasoning is part of the completion
    reasoning = [e for e in detailed[:-1] if e["choices"] and "reasoning_content" in e["choices"][0]["delta"]]
    assert len(reasoning) == 3


def test_text_completions_stream_and_not(client: openai.OpenAI) -> None:
    r = client.completions.create(model="fast", prompt="one two three", max_tokens=6)
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 6)
    assert r.choices[0].finish_reason == "length"
    chunks = list(
        client.completions.create(
            model="fast", prompt=[1, 2, 3, 4], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 12)
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_embeddings_float_and_base64(client: openai.OpenAI, base_url: str) -> None:
    r = client.embeddings.create(model="fast", input=["a b c", "d"])  # the SDK asks for base64
    assert [len(d.embedding) for d in r.data] == [32, 32]
    assert r.usage.prompt_tokens == 4
    assert sum(v * v for v in r.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    floats = httpx.post(
        f"{base_url}/v1/embeddings", json={"model": "fast", "input": "a b c", "dimensions": 8}
    ).json()
    assert len(floats["data"][0]["embedding"]) == 8


def test_async_client_streams_concurrently(base_url: str) -> None:
    async def run() -> list[int]:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)

        async def one(i: int) -> int:
            stream = await client.chat.completions.create(
                model="fast",
                messages=[{"role": "user", "content": f"question {i}"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            usage = [c.usage async for c in stream if c.usage]
            return usage[0].completion_tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(20)))
        finally:
            await client.close()

    assert asyncio.run(run()) == [12] * 20


def test_time_to_first_token_and_decode_rate(client: openai.OpenAI) -> None:
    start = time.perf_counter()
    arrivals = []
    for chunk in client.chat.completions.create(model="timed", messages=HELLO, stream=True):  # type: ignore[arg-type]
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 10
    # lower bounds prove the pacing; upper bounds are loose because CI machines are shared
    assert 0.15 <= arrivals[0] < 1.0
    assert 0.15 + 9 / 50 <= arrivals[-1] < 1.5  # the 10th token is due 9 / 50 s after the first
    start = time.perf_counter()
    client.chat.completions.create(model="timed", messages=HELLO)  # type: ignore[arg-type]
    assert 0.15 + 10 / 50 <= time.perf_counter() - start < 1.5


def test_hundreds_of_concurrent_streams(sim: Simulator, base_url: str) -> None:
    """256 streams of 0.52 s each overlap: all are open at once, and the lot takes a fraction of the
    133 s they would take one after another (the bound is loose: CI machines are shared)."""

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=400)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:

            async def one(i: int) -> int:
                body = {"model": "crowd", "messages": [{"role": "user", "content": f"n {i}"}], "stream": True}
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    raw = await response.aread()
                return raw.count(b'"content":" ')

            return await asyncio.gather(*(one(i) for i in range(256)))

    start = time.perf_counter()
    counts = asyncio.run(run())
    elapsed = time.perf_counter() - start
    assert counts == [2] * 256
    assert sim.stats.max_active_streams >= 220
    assert elapsed < 40, elapsed


def test_injected_429_and_500(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(
            model="fast",
            messages=HELLO,  # type: ignore[arg-type]
            extra_body={"simulator": {"status": 429, "retry_after": 2.5}},
        )
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.response.headers["retry-after-ms"] == "2500"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="fast",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            extra_body={"simulator": {"status": 500}},
        )


def test_simulator_wide_faults_can_be_switched_at_run_time(sim: Simulator, client: openai.OpenAI) -> None:
    sim.faults = Faults(status=503)
    try:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="fast", messages=HELLO)  # type: ignore[arg-type]
    finally:
        sim.faults = Faults()
    assert client.chat.completions.create(model="fast", messages=HELLO).usage is not None  # type: ignore[arg-type]


def test_stream_failing_after_n_chunks_with_an_error_event(client: openai.OpenAI, base_url: str) -> None:
    body = {"model": "fast", "messages": HELLO, "stream": True, "simulator": {"fail_after_chunks": 3}}
    parsed = events(raw_stream(base_url, body))
    assert [e["choices"][0]["delta"].get("content") for e in parsed[1:4]] and "error" in parsed[4]
    assert parsed[-1] == "[DONE]"
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="fast",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            extra_body={"simulator": {"fail_after_chunks": 3}},
        ):
            pass


def test_stream_dropping_the_connection_after_n_chunks(base_url: str) -> None:
    body = {
        "model": "fast",
        "messages": HELLO,
        "stream": True,
        "simulator": {"fail_after_chunks": 2, "fail_mode": "disconnect"},
    }
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=10) as response,
    ):
        for piece in response.iter_raw():
            received += piece
    assert received.count(b'"content":" ') == 2
    assert b"[DONE]" not in received


def test_client_disconnect_is_noticed(sim: Simulator, base_url: str) -> None:
    before = sim.stats.client_disconnects
    with httpx.stream(
        "POST",
        f"{base_url}/v1/chat/completions",
        json={"model": "timed", "messages": HELLO, "stream": True},
        timeout=10,
    ) as response:
        next(response.iter_raw())
    deadline = time.monotonic() + 3
    while sim.stats.client_disconnects == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.stats.client_disconnects == before + 1
    metrics = httpx.get(f"{base_url}/metrics").text
    assert "simulator_client_disconnects_total" in metrics


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "messages": HELLO}, 404, "model"),
        ({"messages": HELLO}, 400, "model"),
        ({"model": "fast"}, 400, "messages"),
        ({"model": "fast", "messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "fast", "messages": HELLO, "n": 2}, 400, "n"),
        ({"model": "fast", "messages": HELLO, "simulator": {"bogus": 1}}, 400, "simulator"),
        ({"model": "fast", "messages": HELLO, "simulator": "fail"}, 400, "simulator"),
        ({"model": "fast", "messages": HELLO, "simulator": {"status": "x"}}, 400, "simulator.status"),
        ({"model": "fast", "messages": HELLO, "simulator": {"usage": "all"}}, 400, "simulator.usage"),
    ],
)
def test_bad_requests_get_openai_errors(base_url: str, body: dict[str, Any], status: int, param: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert httpx.post(f"{base_url}/v1/chat/completions", content=b"{").status_code == 400
    assert httpx.post(f"{base_url}/v1/chat/completions", content=b"[]").status_code == 400
    odd_options = {"model": "fast", "messages": HELLO, "stream": True, "stream_options": "yes"}
    assert httpx.post(f"{base_url}/v1/chat/completions", json=odd_options).status_code == 200
    too_wide = {"model": "fast", "input": "x", "dimensions": 10**9}
    assert httpx.post(f"{base_url}/v1/embeddings", json=too_wide).json()["error"]["param"] == "dimensions"


def test_command_line_serves_on_the_given_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "simulator.app", "--port", str(port), "--ttft-ms", "1"]
    process = subprocess.Popen([*command, "--tokens-per-second", "1000", "--model", "cli-model"], env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        assert [m["id"] for m in models["data"]] == ["cli-model"]
    finally:
        process.terminate()
        process.wait(10)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["model", "messages", "prompt", "input", "max_tokens", "stream", "stream_options", "n", "dimensions"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
    body=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6),
    real_model=st.booleans(),
)
def test_no_input_makes_the_simulator_fail_with_a_500(
    endpoint: str, body: dict[str, Any], real_model: bool
) -> None:
    if real_model:
        body["model"] = "fast"

    async def post() -> int:
        transport = httpx.ASGITransport(app=FUZZ_SIM.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            return (await http.post(endpoint, json=body)).status_code

    assert asyncio.run(post()) in (200, 400, 404)


FUZZ_SIM = Simulator({"fast": ModelProfile(completion_tokens=3)})
