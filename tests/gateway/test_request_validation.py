"""Malformed fields the gateway reads (model, prompt, stream, token caps, n) are refused before
admission: a 400 in OpenAI's shape that names the field, no rate-limit slot or tokens taken, and a
usage row that records the refusal unbilled. A key refused a model (403) is recorded the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from gateway.validation import check_request
from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import Harness, harness

MESSAGES = [{"role": "user", "content": "hello"}]

# (endpoint, fields added to a valid body, the `param` the 400 names; None: accepted)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("chat.completions", {}, None),
    ("chat.completions", {"stream": True, "stream_options": {"include_usage": False}}, None),
    ("chat.completions", {"max_tokens": 1, "max_completion_tokens": 64, "n": 128}, None),
    ("chat.completions", {"max_tokens": None, "n": None, "stream": None}, None),  # explicit nulls
    ("chat.completions", {"messages": None}, "messages"),
    ("chat.completions", {"messages": []}, "messages"),
    ("chat.completions", {"messages": "hello"}, "messages"),
    ("chat.completions", {"messages": [MESSAGES[0], "hi"]}, "messages[1]"),
    ("chat.completions", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("chat.completions", {"stream": "true"}, "stream"),
    ("chat.completions", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("chat.completions", {"stream": True, "stream_options": ["include_usage"]}, "stream_options"),
    (
        "chat.completions",
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
    ),
    ("chat.completions", {"max_tokens": 0}, "max_tokens"),
    ("chat.completions", {"max_tokens": "100"}, "max_tokens"),
    ("chat.completions", {"max_tokens": 10.5}, "max_tokens"),
    ("chat.completions", {"max_tokens": True}, "max_tokens"),
    ("chat.completions", {"max_completion_tokens": -3}, "max_completion_tokens"),
    ("chat.completions", {"n": 0}, "n"),
    ("chat.completions", {"n": 129}, "n"),
    ("completions", {}, None),
    ("completions", {"prompt": ""}, None),
    ("completions", {"prompt": [1, 2, 3]}, None),
    ("completions", {"prompt": [[1, 2], [3]]}, None),
    ("completions", {"prompt": ["a", "b"]}, None),
    ("completions", {"prompt": None}, "prompt"),
    ("completions", {"prompt": []}, "prompt"),
    ("completions", {"prompt": ["a", 1]}, "prompt"),
    ("completions", {"prompt": [[1], []]}, "prompt"),
    ("completions", {"prompt": {"text": "a"}}, "prompt"),
    ("completions", {"max_tokens": -1}, "max_tokens"),
    ("embeddings", {}, None),
    ("embeddings", {"input": ["a", "b"]}, None),
    ("embeddings", {"input": None}, "input"),
    ("embeddings", {"input": 7}, "input"),
    ("embeddings", {"max_tokens": "ignored", "stream": "ignored"}, None),  # not read for embeddings
]
VALID = {
    "chat.completions": {"model": "chat", "messages": MESSAGES},
    "completions": {"model": "chat", "prompt": "one two"},
    "embeddings": {"model": "chat", "input": "one two"},
}


@pytest.mark.parametrize(("endpoint", "fields", "param"), CASES)
def test_the_refusal_names_the_field(endpoint: str, fields: dict[str, Any], param: str | None) -> None:
    body = {**VALID[endpoint], **fields}
    refused = check_request(body, endpoint)
    if param is None:
        assert refused is None
        return
    assert refused is not None and refused.status_code == 400
    body_error = json.loads(bytes(refused.body))["error"]
    assert body_error["param"] == param and body_error["type"] == "invalid_request_error"
    assert f"`{param}`" in body_error["message"]


def test_a_long_bad_value_is_shortened_in_the_message() -> None:
    refused = check_request({"messages": MESSAGES, "max_tokens": "x" * 10_000}, "chat.completions")
    assert refused is not None and len(bytes(refused.body)) < 300


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator({"m": ModelProfile(ttft_ms=0, tokens_per_second=0, completion_tokens=4)})
    with serve_in_thread(simulator.app) as url:
        yield url


@pytest.fixture
def gw(client: TestClient, services: Services, engine: str) -> Iterator[Harness]:
    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "m"}])
        h.key("main", "team-a")
        yield h


def test_malformed_requests_take_no_slot_and_are_recorded_unbilled(gw: Harness) -> None:
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="rpm", limit=1)
    sdk = gw.sdk()
    for bad in ({"max_tokens": 0}, {"n": "2"}, {"stream": 1}, {"messages": []}):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model="chat", **{"messages": MESSAGES, **bad})  # type: ignore[call-overload]
        assert refused.value.param == next(iter(bad))
    with pytest.raises(openai.BadRequestError) as refused:
        gw.sdk().completions.create(model="chat", prompt=["a", 1])  # type: ignore[list-item]
    assert refused.value.param == "prompt"
    # the one request a minute the rule allows is still there
    answer = sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    rows = gw.records(7)
    assert [(row.status, row.error_type) for row in rows] == [(400, "invalid_request_error")] * 5 + [
        (200, None),
        (429, "rate_limit_exceeded"),
    ]
    assert [row.endpoint for row in rows[3:5]] == ["chat.completions", "completions"]
    assert all(row.prompt_tokens == row.completion_tokens == 0 and row.cost == 0 for row in rows[:5])


def test_a_model_that_is_not_a_string_is_named(gw: Harness) -> None:
    r = gw.post("/chat/completions", {"model": 5, "messages": MESSAGES})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model" and "string" in r.json()["error"]["message"]


def test_a_model_the_key_may_not_use_is_refused_and_recorded(gw: Harness) -> None:
    gw.model("other", [{"kind": "external", "base_url": "http://127.0.0.1:9/v1", "upstream_model": "m"}])
    gw.key("narrow", "team-a", allowed_models=["other"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gw.sdk("narrow").chat.completions.create(model="chat", messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.code == "model_not_found"
    assert refused.value.response.headers["x-request-id"]
    (row,) = gw.records(1)
    assert (row.status, row.error_type, row.model, row.cost) == (403, "model_not_found", "chat", 0)
    with pytest.raises(openai.NotFoundError):  # an unknown model has no row to be recorded against
        gw.sdk("narrow").chat.completions.create(model="nowhere", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(gw.records()) == 1


def test_a_comparison_with_a_malformed_field_is_refused_before_any_leg_starts(gw: Harness) -> None:
    r = gw.post("/compare", {"models": ["chat"], "prompt": "hi", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert gw.records() == []
