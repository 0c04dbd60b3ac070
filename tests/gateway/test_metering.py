"""Metering: forced usage, the incremental SSE meter, estimates on broken streams, Decimal cost.

Upstream bytes come from the engine simulator (in process, through httpx's ASGI transport), so the
meter is tested on the wire format an engine really sends; the expected numbers are written out.
"""

from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metering import (
    Metered,
    Outcome,
    Prices,
    StreamMeter,
    Usage,
    cost,
    meter_response,
    prepare_upstream_body,
    without_null_usage,
)
from gateway.tokens import estimate_prompt_tokens, estimate_tokens
from simulator.app import ModelProfile, Simulator, serve_in_thread

SIM = Simulator({"m": ModelProfile(completion_tokens=10)})
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello there, how are you?"},
]
ENGINE_PROMPT = 3 + (4 + 3) + (4 + 5)  # the simulator's count: 3 + per message 4 + words = 19
ESTIMATED_PROMPT = (
    3 + (4 + 4) + (4 + 7)
)  # = 22, the gateway's estimate: "You are terse." is 4, the question 7
PRICES = Prices.of("0.15", "0.60", "0.075")  # per million tokens


def upstream_bytes(body: dict[str, Any], endpoint: str = "/v1/chat/completions") -> bytes:
    async def fetch() -> bytes:
        transport = httpx.ASGITransport(app=SIM.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            response = await http.post(endpoint, json=body)
            assert response.status_code == 200
            return response.content

    return asyncio.run(fetch())


def client_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, "stream": True, **extra}


def meter_stream(
    body: dict[str, Any], raw: bytes, pieces: int = 7, seed: int = 0, **finish: Any
) -> tuple[Metered, bytes]:
    """Feed `raw` to a meter in random pieces; return the record and what the client received."""
    prepared = prepare_upstream_body(body)
    meter = StreamMeter.for_request(prepared)
    out = bytearray()
    cuts = sorted(random.Random(seed).sample(range(1, len(raw)), min(pieces, len(raw) - 1)))
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        out += meter.feed(raw[start:end])
    out += meter.close()
    return meter.finish(**finish), bytes(out)


def events_of(raw: bytes) -> list[str]:
    return [e for e in raw.decode().split("\n\n") if e]


# -- the upstream body -------------------------------------------------------------------------------
def test_usage_is_forced_on_streams_and_the_clients_wish_remembered() -> None:
    body = client_body(stream_options={"continuous_usage_stats": False})
    prepared = prepare_upstream_body(body, upstream_model="Qwen/Qwen3-8B")
    assert prepared.body["stream_options"] == {"continuous_usage_stats": False, "include_usage": True}
    assert prepared.body["model"] == "Qwen/Qwen3-8B"
    assert body["stream_options"] == {"continuous_usage_stats": False} and body["model"] == "m"  # untouched
    assert prepared.hide_usage_chunk
    asked = prepare_upstream_body(client_body(stream_options={"include_usage": True}))
    assert asked.client_wants_usage and not asked.hide_usage_chunk
    plain = prepare_upstream_body({"model": "m", "messages": MESSAGES})
    assert not plain.stream and "stream_options" not in plain.body and not plain.hide_usage_chunk


# -- the accounting matrix ---------------------------------------------------------------------------
def test_usage_on_the_empty_choices_chunk_is_billed_and_hidden_from_a_client_that_did_not_ask() -> None:
    body = client_body()
    raw = upstream_bytes(prepare_upstream_body(body).body)
    metered, seen = meter_stream(body, raw)
    assert metered.usage == Usage(ENGINE_PROMPT, 10)
    assert metered.outcome is Outcome.COMPLETED and not metered.estimated
    assert metered.finish_reason == "stop"
    assert cost(metered.usage, PRICES) == Decimal("0.000008850")  # 19 × 0.15 + 10 × 0.60 = 8.85 per 1e6
    hidden = [e for e in events_of(raw) if '"choices":[]' in e]
    assert len(hidden) == 1
    # everything else byte for byte, but for the `"usage":null` the engine added because we asked
    assert seen == without_null_usage(raw.replace(hidden[0].encode() + b"\n\n", b""))
    assert b'"usage"' in raw and b'"usage"' not in seen


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (b'{"id":"c","choices":[],"usage":null}', b'{"id":"c","choices":[]}'),
        (b'{"id": "c", "usage": null, "choices": []}', b'{"id": "c", "choices": []}'),
        (b'{"usage":null,"id":"c"}', b'{"id":"c"}'),
        (b'{"id":"c","usage":{"total_tokens":3}}', b'{"id":"c","usage":{"total_tokens":3}}'),
        # generated text that spells the member is escaped JSON, and stays as it is
        (
            b'{"choices":[{"delta":{"content":"x\\",\\"usage\\":null"}}],"usage":null}',
            b'{"choices":[{"delta":{"content":"x\\",\\"usage\\":null"}}]}',
        ),
        (b'{"choices":[{"delta":{"content":",\\"usage\\":null,"}}]}', None),
    ],
)
def test_the_null_usage_member_is_removed_and_nothing_else(event: bytes, expected: bytes | None) -> None:
    assert without_null_usage(b"data: " + event + b"\n\n") == b"data: " + (expected or event) + b"\n\n"
    assert json.loads(expected or event)  # the result is still JSON


def test_a_client_that_asked_for_usage_gets_the_stream_unchanged() -> None:
    body = client_body(stream_options={"include_usage": True})
    raw = upstream_bytes(prepare_upstream_body(body).body)
    metered, seen = meter_stream(body, raw)
    assert seen == raw
    assert metered.usage == Usage(ENGINE_PROMPT, 10)


def test_usage_on_a_chunk_with_choices_is_taken() -> None:
    """LiteLLM #36168: usage on the final chunk with non-empty choices was dropped."""
    body = client_body(simulator={"usage": "last_chunk", "cached_tokens": 8})
    raw = upstream_bytes(prepare_upstream_body(body).body)
    metered, seen = meter_stream(body, raw)
    assert metered.usage == Usage(ENGINE_PROMPT, 10, cached_tokens=8)
    assert seen == without_null_usage(raw)  # no usage-only chunk to hide: it rides on a content chunk
    assert seen.count(b'"usage"') == 1
    # (19 − 8) × 0.15 + 8 × 0.075 + 10 × 0.60 = 1.65 + 0.6 + 6 = 8.25 per 1e6
    assert cost(metered.usage, PRICES) == Decimal("0.000008250")


def test_cached_and_reasoning_tokens() -> None:
    body = client_body(simulator={"cached_tokens": 16, "reasoning_tokens": 4})
    metered, _ = meter_stream(body, upstream_bytes(prepare_upstream_body(body).body))
    assert metered.usage == Usage(ENGINE_PROMPT, 10, cached_tokens=16, reasoning_tokens=4)
    # (19 − 16) × 0.15 + 16 × 0.075 + 10 × 0.60 (reasoning inside completion) = 0.45 + 1.2 + 6 = 7.65
    assert cost(metered.usage, PRICES) == Decimal("0.000007650")


def test_no_usage_at_all_is_estimated_from_the_request_and_the_generated_text() -> None:
    body = client_body(simulator={"usage": "none"})
    metered, _ = meter_stream(body, upstream_bytes(prepare_upstream_body(body).body))
    assert metered.usage == Usage(ESTIMATED_PROMPT, 10, estimated=True)
    assert metered.outcome is Outcome.COMPLETED
    assert cost(metered.usage, PRICES) == Decimal("0.000009300")  # 22 × 0.15 + 10 × 0.60 = 9.30


def test_estimated_reasoning_is_counted_in_the_completion() -> None:
    body = client_body(simulator={"usage": "none", "reasoning_tokens": 6})
    metered, _ = meter_stream(body, upstream_bytes(prepare_upstream_body(body).body))
    assert metered.usage == Usage(ESTIMATED_PROMPT, 10, reasoning_tokens=6, estimated=True)


def cut_after_content_chunks(raw: bytes, n: int) -> bytes:
    """The bytes up to and including the n-th content chunk (what arrived before a disconnect)."""
    out = bytearray()
    seen = 0
    for event in events_of(raw):
        if seen == n:
            break
        out += event.encode() + b"\n\n"
        if '"content":" ' in event:
            seen += 1
    return bytes(out)


def test_client_disconnect_at_the_start_bills_the_prompt_only() -> None:
    body = client_body()
    metered = StreamMeter.for_request(prepare_upstream_body(body)).finish(Outcome.CLIENT_DISCONNECTED)
    assert metered.usage == Usage(ESTIMATED_PROMPT, 0, estimated=True)
    assert metered.outcome is Outcome.CLIENT_DISCONNECTED and metered.ttft_seconds is None
    assert cost(metered.usage, PRICES) == Decimal("0.000003300")  # 22 × 0.15
    unbilled = StreamMeter.for_request(prepare_upstream_body(body)).finish(
        Outcome.CLIENT_DISCONNECTED, bill_prompt_without_output=False
    )
    assert unbilled.usage == Usage(0, 0, estimated=True)


def test_client_disconnect_mid_stream_bills_what_was_generated() -> None:
    body = client_body()
    raw = upstream_bytes(prepare_upstream_body(body).body)
    metered, _ = meter_stream(body, cut_after_content_chunks(raw, 4), outcome=Outcome.CLIENT_DISCONNECTED)
    assert metered.usage == Usage(ESTIMATED_PROMPT, 4, estimated=True)
    assert metered.outcome is Outcome.CLIENT_DISCONNECTED
    assert cost(metered.usage, PRICES) == Decimal("0.000005700")  # 22 × 0.15 + 4 × 0.60 = 5.70


def test_upstream_error_event_after_the_200() -> None:
    body = client_body(simulator={"fail_after_chunks": 3})
    metered, seen = meter_stream(body, upstream_bytes(prepare_upstream_body(body).body))
    assert metered.outcome is Outcome.UPSTREAM_ERROR
    assert metered.error == "simulated engine failure"
    assert metered.usage == Usage(ESTIMATED_PROMPT, 3, estimated=True)
    assert b'"error"' in seen  # the client is told


def test_upstream_error_after_the_200_before_any_content() -> None:
    body = client_body(simulator={"fail_after_chunks": 0})
    metered, _ = meter_stream(body, upstream_bytes(prepare_upstream_body(body).body))
    assert metered.outcome is Outcome.UPSTREAM_ERROR
    assert metered.usage == Usage(ESTIMATED_PROMPT, 0, estimated=True)
    assert metered.ttft_seconds is None


def test_upstream_connection_dropped_mid_event() -> None:
    body = client_body()
    raw = upstream_bytes(prepare_upstream_body(body).body)
    cut = cut_after_content_chunks(raw, 5)
    truncated = cut + raw[len(cut) : len(cut) + 30]  # half of the next event
    metered, seen = meter_stream(body, truncated)
    assert metered.outcome is Outcome.UPSTREAM_ERROR  # no [DONE], no finish reason
    assert metered.usage == Usage(ESTIMATED_PROMPT, 5, estimated=True)
    assert seen == without_null_usage(cut)  # the broken half-event is not forwarded


def test_real_socket_stream_with_arbitrary_chunking() -> None:
    body = client_body(max_tokens=7, simulator={"cached_tokens": 2})
    prepared = prepare_upstream_body(body)
    with serve_in_thread(SIM.app) as url:
        meter = StreamMeter.for_request(prepared)
        seen = bytearray()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=prepared.body) as response:
            for piece in response.iter_raw():
                seen += meter.feed(piece)
        seen += meter.close()
    metered = meter.finish()
    assert metered.usage == Usage(ENGINE_PROMPT, 7, cached_tokens=2)
    assert metered.finish_reason == "length" and metered.ttft_seconds is not None
    assert b'"choices":[]' not in seen and seen.endswith(b"data: [DONE]\n\n")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_split_of_the_bytes_gives_the_same_output_and_usage(data: st.DataObject) -> None:
    body = client_body(simulator={"reasoning_tokens": 2})
    raw = _RAW_FOR_SPLITS
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=40)))
    meter = StreamMeter.for_request(prepare_upstream_body(body))
    out = bytearray()
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        out += meter.feed(raw[start:end])
    out += meter.close()
    assert meter.finish().usage == Usage(ENGINE_PROMPT, 10, reasoning_tokens=2)
    assert bytes(out) == _EXPECTED_FOR_SPLITS


_RAW_FOR_SPLITS = upstream_bytes(prepare_upstream_body(client_body(simulator={"reasoning_tokens": 2})).body)
_EXPECTED_FOR_SPLITS = meter_stream(
    client_body(simulator={"reasoning_tokens": 2}), _RAW_FOR_SPLITS, pieces=1
)[1]


def test_byte_at_a_time_with_crlf_comments_and_multibyte_text() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "héllo 世界"}, "finish_reason": None}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    raw = (
        b": keep-alive\r\n\r\n"
        + b"data: "
        + json.dumps(chunk, ensure_ascii=False).encode()
        + b"\r\n\r\n"
        + b"data: "
        + json.dumps(usage).encode()
        + b"\r\n\r\ndata: [DONE]\r\n\r\n"
    )
    meter = StreamMeter({"model": "m", "messages": MESSAGES}, hide_usage_chunk=True)
    out = b"".join(meter.feed(raw[i : i + 1]) for i in range(len(raw))) + meter.close()
    assert out == raw.replace(b"data: " + json.dumps(usage).encode() + b"\r\n\r\n", b"")
    assert meter.finish().usage == Usage(5, 3)
    assert meter.done


def test_last_non_null_usage_wins_and_a_missing_final_newline_is_tolerated() -> None:
    first = {"choices": [{"delta": {"content": "a"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    second = {"choices": [{"delta": {"content": "b"}, "finish_reason": "stop"}], "usage": None}
    last = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    raw = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (first, second, last))
        + b"data: [DONE]"
    )
    meter = StreamMeter({}, hide_usage_chunk=False)
    out = meter.feed(raw) + meter.close()
    assert out == raw + b"\n\n"  # the unterminated [DONE] is terminated for the client
    assert meter.finish() == Metered(Usage(5, 2), Outcome.COMPLETED, meter.ttft_seconds, "stop")


def test_time_to_first_token_on_an_injected_clock() -> None:
    now = [100.0]
    meter = StreamMeter({}, hide_usage_chunk=False, started_at=99.5, clock=lambda: now[0])
    meter.feed(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n')
    assert meter.ttft_seconds is None  # the role chunk is not a token
    now[0] = 100.25
    meter.feed(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n')
    now[0] = 101.0
    meter.feed(b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n')
    assert meter.ttft_seconds == 0.75


def test_tool_call_arguments_count_as_generated_text() -> None:
    call = {"index": 0, "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    raw = b"data: " + json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}).encode() + b"\n\n"
    meter = StreamMeter({"messages": []}, hide_usage_chunk=True)
    meter.feed(raw)
    metered = meter.finish(Outcome.CLIENT_DISCONNECTED)
    # get|_|weather{"|city|":| "|Paris|"}: 9 estimated tokens of the name and arguments, joined
    assert metered.usage.completion_tokens == 9
    assert metered.ttft_seconds is not None


# -- non-streamed ------------------------------------------------------------------------------------
def test_non_streamed_responses() -> None:
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 6}
    response = json.loads(upstream_bytes(body))
    metered = meter_response(body, response)
    assert metered.usage == Usage(ENGINE_PROMPT, 6) and metered.finish_reason == "length"
    del response["usage"]
    assert meter_response(body, response).usage == Usage(ESTIMATED_PROMPT, 6, estimated=True)
    completion = json.loads(
        upstream_bytes({"model": "m", "prompt": "a b c", "simulator": {"usage": "none"}}, "/v1/completions")
    )
    assert meter_response({"prompt": "a b c"}, completion).usage == Usage(3, 10, estimated=True)
    embedding = json.loads(upstream_bytes({"model": "m", "input": ["x y", "z"]}, "/v1/embeddings"))
    assert meter_response({"input": ["x y", "z"]}, embedding).usage == Usage(3, 0)


# -- cost --------------------------------------------------------------------------------------------
def test_cost_rounds_once_half_even_to_the_nano_unit() -> None:
    prices = Prices.of("0.0000015", "0.0000025")  # 1.5e-12 and 2.5e-12 per token
    assert cost(Usage(1, 0), prices) == Decimal("0E-9")
    assert cost(Usage(1000, 0), prices) == Decimal("2E-9")  # 1.5e-9 → 2e-9 (half to even)
    assert cost(Usage(0, 1000), prices) == Decimal("2E-9")  # 2.5e-9 → 2e-9 (half to even)
    assert cost(Usage(3000, 0), prices) == Decimal("4E-9")  # 4.5e-9 → 4e-9
    big = Usage(10**9, 10**9, cached_tokens=5 * 10**8)
    assert cost(big, Prices.of("3", "15", "0.3")) == Decimal("16650.000000000")  # 1500 + 150 + 15000


def test_prices_from_database_floats_and_defaults() -> None:
    assert Prices.of(0.15, 0.6).input_per_million == Decimal("0.15")
    no_cache_price = Prices.of("1", "2")
    assert cost(Usage(10, 0, cached_tokens=4), no_cache_price) == cost(Usage(10, 0), no_cache_price)
    assert cost(Usage(5, 0, cached_tokens=50), PRICES) == cost(Usage(5, 0, cached_tokens=5), PRICES)
    with pytest.raises(ValueError):
        Prices.of("-1", "1")
    with pytest.raises(ValueError):
        Prices.of("NaN", "1")


def test_usage_from_openai_is_defensive() -> None:
    assert Usage.from_openai(None) is None
    assert Usage.from_openai("x") is None
    odd = {"prompt_tokens": "7", "completion_tokens": -3, "prompt_tokens_details": None}
    assert Usage.from_openai(odd) == Usage(0, 0)
    capped = {"prompt_tokens": 4, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}
    assert Usage.from_openai(capped) == Usage(4, 1, cached_tokens=4)
    assert Usage(4, 1).total_tokens == 5


def test_prompt_estimate_counts_token_ids_exactly() -> None:
    assert estimate_prompt_tokens({"prompt": [1, 2, 3]}) == 3
    assert estimate_prompt_tokens({"input": [[1, 2], [3]]}) == 3
    assert estimate_prompt_tokens({}) == 0


def test_an_unwrapped_error_object_counts_as_an_upstream_error() -> None:
    meter = StreamMeter({}, hide_usage_chunk=False)
    meter.feed(b'data: {"object":"error","message":"CUDA out of memory","type":"InternalServerError"}\n\n')
    meter.feed(b"data: [DONE]\n\n")
    metered = meter.finish()
    assert metered.outcome is Outcome.UPSTREAM_ERROR and metered.error == "CUDA out of memory"


@settings(max_examples=100, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(["content", "reasoning_content"]), st.text(min_size=1)), max_size=12
    ),
    ascii_only=st.booleans(),
)
def test_the_fast_path_reads_the_same_text_as_a_json_decoder(
    pieces: list[tuple[str, str]], ascii_only: bool
) -> None:
    """Content chunks are read with a regular expression; escapes, quotes and any Unicode must
    come out exactly as json.loads would decode them."""
    meter = StreamMeter({}, hide_usage_chunk=True)
    raw = bytearray()
    for key, text in [("content", "first"), *pieces]:
        chunk = {
            "id": "x",
            "choices": [{"index": 0, "delta": {key: text}, "finish_reason": None}],
            "usage": None,
        }
        raw += (
            b"data: " + json.dumps(chunk, ensure_ascii=ascii_only, separators=(",", ":")).encode() + b"\n\n"
        )
    meter.feed(bytes(raw))
    usage = meter.finish(Outcome.CLIENT_DISCONNECTED).usage
    content = "first" + "".join(t for k, t in pieces if k == "content")
    reasoning = "".join(t for k, t in pieces if k == "reasoning_content")
    assert usage.reasoning_tokens == estimate_tokens(reasoning)
    assert usage.completion_tokens == estimate_tokens(reasoning) + estimate_tokens(content)
