"""Defects a first-time user of the demo met, each pinned by the journey that showed it: the official
OpenAI SDK and httpx against a served gateway in front of the engine simulator, and the portal's API
for rules, keys, quotas and usage statistics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from portal.services import Services
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import Harness, harness

MESSAGES = [{"role": "user", "content": "Tell me about gateways"}]


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator(
        {"fast": ModelProfile(completion_tokens=6), "other": ModelProfile(completion_tokens=4)}
    )
    with serve_in_thread(simulator.app) as url:
        yield url


@pytest.fixture
def gw(client: TestClient, services: Services, engine: str) -> Iterator[Harness]:
    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("a", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "fast"}])
        h.model("b", [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": "other"}])
        h.key("main", "team-a")
        yield h


def _compare(h: Harness, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    headers = {"authorization": f"Bearer {h.keys['main']}"}
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{h.url}/v1/compare", json=body, headers=headers, timeout=10) as response:
        if response.status_code != 200:
            response.read()
            return response, events
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    return response, events


# -- /v1/compare ---------------------------------------------------------------------------------
def test_compare_refuses_messages_and_prompt_together(gw: Harness) -> None:
    """Both given: one of them was silently dropped (the prompt), and the caller could not tell."""
    response, _ = _compare(gw, {"models": ["a"], "messages": MESSAGES, "prompt": "something else"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt" and "not both" in error["message"]
    assert gw.records() == []  # refused before admission: nothing metered
    # either one alone still works
    for body in ({"messages": MESSAGES}, {"prompt": "Tell me about gateways"}):
        response, events = _compare(gw, {"models": ["a"], "max_tokens": 2, **body})
        assert response.status_code == 200 and events[-1]["status"] == "completed", body


def test_compare_keeps_the_upstream_refusals_param(gw: Harness) -> None:
    """An engine's 400 names the field it refused; the leg's `done.error` used to say `param: null`."""
    response, events = _compare(gw, {"models": ["a", "b"], "messages": MESSAGES, "n": 2})
    assert response.status_code == 200
    done = {e["model"]: e for e in events if e["type"] == "done"}
    for model in ("a", "b"):
        assert done[model]["status"] == "error"
        assert done[model]["error"]["param"] == "n", done[model]
        assert done[model]["error"]["type"] == "invalid_request_error"
        assert done[model]["usage"] is None and done[model]["cost"] == "0"
    rows = gw.records(2)
    assert sorted((r.model, r.status, r.error_type) for r in rows) == [
        ("a", 400, "upstream_rejected"),
        ("b", 400, "upstream_rejected"),
    ]


# -- the engine simulator behind the gateway -------------------------------------------------------
def test_every_completion_has_its_own_id(gw: Harness) -> None:
    """Same prompt, same text (by design), but two requests are two completions: OpenAI's ids are
    unique, and clients key logs, traces and caches by them. The simulator used to repeat them."""
    sdk = gw.sdk()
    first = sdk.chat.completions.create(model="a", messages=MESSAGES)  # type: ignore[arg-type]
    second = sdk.chat.completions.create(model="a", messages=MESSAGES)  # type: ignore[arg-type]
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id != second.id and first.id.startswith("chatcmpl-")
    streamed = {
        chunk.id
        for chunk in sdk.chat.completions.create(model="a", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    }
    assert len(streamed) == 1 and streamed.isdisjoint({first.id, second.id})  # one id per stream
    texts = [sdk.completions.create(model="a", prompt="Once upon") for _ in range(2)]
    assert texts[0].id != texts[1].id and texts[0].id.startswith("cmpl-")


def test_a_batch_of_prompts_is_refused_not_truncated(gw: Harness) -> None:
    """The simulator generates one choice: a batch of two prompts used to get one answer, for the
    first prompt only, with a 200. It now says so, naming `prompt`; one prompt still works."""
    sdk = gw.sdk()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model="a", prompt=["first prompt", "second prompt"])
    assert refused.value.status_code == 400
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "prompt" and "got 2" in error["message"]
    for prompt in ("one prompt", ["one prompt"], [1, 2, 3]):
        answer = sdk.completions.create(model="a", prompt=prompt, max_tokens=3)  # type: ignore[arg-type]
        assert len(answer.choices) == 1 and answer.usage is not None, prompt


# -- the portal's API: rules, keys and quotas -----------------------------------------------------
def test_booleans_are_not_numbers_in_rules_quotas_and_targets(gw: Harness) -> None:
    """`"limit": true` made a 1-per-second rule and `"token_quota": false` a quota of 0 tokens: JSON
    booleans were read as 1 and 0. They are 422s naming the field now."""
    key = gw.key_ids["main"]
    portal = gw.client
    for body, field in [
        ({"scope": "api_key", "subject": key, "unit": "rps", "limit": True}, "limit"),
        ({"scope": "api_key", "subject": key, "unit": "rpm", "limit": 10, "burst": True}, "burst"),
    ]:
        response = portal.post("/api/rate-limits", json=body)
        assert response.status_code == 422, response.text
        assert [f["field"] for f in response.json()["error"]["fields"]] == [field]
    assert portal.get("/api/rate-limits").json()["total"] == 0
    for path, body in [
        (f"/api/workspaces/team-a/api-keys/{key}/quota", {"token_quota": False}),
        ("/api/workspaces/team-a/quota", {"token_quota": False}),
        ("/api/workspaces/team-a/api-keys", {"name": "k", "token_quota": True}),
        ("/api/workspaces", {"slug": "team-b", "name": "B", "token_quota": False}),
    ]:
        response = portal.request(
            "POST" if path.endswith(("api-keys", "workspaces")) else "PUT", path, json=body
        )
        assert response.status_code == 422, (path, response.text)
        assert [f["field"] for f in response.json()["error"]["fields"]] == ["token_quota"], path
    target = {"kind": "external", "base_url": "http://127.0.0.1:9/v1", "upstream_model": "m"}
    for name in ("weight", "priority"):
        body = {"public_id": f"bad-{name}", "targets": [{**target, name: True}]}
        response = portal.post("/api/maas-models", json=body)
        assert response.status_code == 422, response.text
        assert [f["field"] for f in response.json()["error"]["fields"]] == [f"targets[0].{name}"]
    # the key still has no quota and answers as before
    assert portal.get(f"/api/workspaces/team-a/api-keys/{key}").json()["token_quota"] is None
    assert gw.sdk().chat.completions.create(model="a", messages=MESSAGES).usage is not None  # type: ignore[arg-type]
    # integers still pass
    ok = portal.post("/api/rate-limits", json={"scope": "api_key", "subject": key, "unit": "rps", "limit": 5})
    assert ok.status_code == 201 and ok.json()["limit"] == 5


# -- usage statistics -----------------------------------------------------------------------------
def _since(response: httpx.Response | Any) -> datetime:
    assert response.status_code == 200, response.text
    return datetime.fromisoformat(response.json()["since"].replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("period", "until", "since"),
    [
        ("hour", "2026-03-10T05:00Z", "2026-03-09T05:00:00+00:00"),
        ("day", "2026-03-10T05:00Z", "2026-02-08T00:00:00+00:00"),  # 30 days back, from midnight
        ("week", "2026-03-11T00:00Z", "2025-12-15T00:00:00+00:00"),  # a Monday, 12 weeks back
        ("month", "2026-03-10T00:00Z", "2025-04-01T00:00:00+00:00"),  # the 1st, 12 months with March
    ],
)
def test_default_since_starts_on_a_whole_bucket_for_any_until(
    gw: Harness, period: str, until: str, since: str
) -> None:
    """With only `until`, the span used to be today's default span shifted back, so `since` landed at
    whatever hour and weekday the clock showed (a first bucket holding part of a day, week or month)."""
    params = {"period": period, "until": until, "group_by": "period"}
    response = gw.client.get("/api/workspaces/team-a/usage", params=params)
    assert _since(response) == datetime.fromisoformat(since)
    csv = gw.client.get("/api/workspaces/team-a/usage/export.csv", params=params)
    stamp = f"usage-team-a-{datetime.fromisoformat(since):%Y%m%dT%H}Z-"
    assert csv.status_code == 200 and stamp in csv.headers["content-disposition"]


def test_a_since_in_the_future_names_since(gw: Harness) -> None:
    """Only `since` given, after the default `until`: the 422 used to name `until`, a field the
    caller never sent."""
    response = gw.client.get("/api/workspaces/team-a/usage", params={"since": "2999-01-01"})
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert [f["field"] for f in fields] == ["since"] and "before until" in fields[0]["message"]
    response = gw.client.get("/api/usage", params={"since": "2026-03-02", "until": "2026-03-01"})
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["until"]
