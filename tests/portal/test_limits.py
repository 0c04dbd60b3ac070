"""Rate-limit rules: validated against what exists, one per bucket and unit (409 otherwise, even
under concurrent creates), audited with the workspace they concern, and selected for a request the
way the gateway will."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from store.models import RateLimitRule
from store.models.gateway import applicable

EXTERNAL = {"kind": "external", "base_url": "https://api.example.com/v1", "upstream_model": "m"}


@pytest.fixture
def world(client: TestClient) -> dict[str, str]:
    client.post("/api/workspaces", json={"slug": "team-a", "name": "A"})
    client.post(
        "/api/maas-models", json={"public_id": "qwen/chat", "targets": [EXTERNAL], "visibility": "all"}
    )
    key = client.post("/api/workspaces/team-a/api-keys", json={"name": "k"}).json()
    return {"workspace": "team-a", "model": "qwen/chat", "key": key["id"]}


def _error(response: Any) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, (error["fields"] or [{"field": ""}])[0]["field"], error["message"]


def test_rules_of_every_scope(client: TestClient, world: dict[str, str]) -> None:
    bodies = [
        {"scope": "global", "unit": "rps", "limit": 1000, "burst": 2000},
        {"scope": "model", "unit": "tpm", "limit": 1_000_000},
        {"scope": "model", "unit": "tpd", "limit": 50_000_000, "burst": 60_000_000},
        {"scope": "model", "model": world["model"], "unit": "concurrency", "limit": 64},
        {"scope": "workspace", "subject": world["workspace"], "unit": "rpm", "limit": 600},
        {
            "scope": "api_key",
            "subject": world["key"],
            "model": world["model"],
            "unit": "tpm",
            "limit": 50_000,
        },
    ]
    made = []
    for body in bodies:
        created = client.post("/api/rate-limits", json=body)
        assert created.status_code == 201, created.text
        made.append(created.json())
    assert made[0]["period_seconds"] == 1 and made[0]["burst"] == 2000 and made[0]["workspace"] is None
    assert made[1]["period_seconds"] == 60 and made[2]["period_seconds"] == 86_400
    assert made[3]["period_seconds"] is None
    assert made[4]["workspace"] == "team-a" and made[5]["workspace"] == "team-a"
    listed = client.get("/api/rate-limits", params={"scope": "model"}).json()
    assert [r["id"] for r in listed["items"]] == [made[1]["id"], made[2]["id"], made[3]["id"]]
    by_subject = client.get("/api/rate-limits", params={"subject": world["key"]}).json()["items"]
    assert [r["id"] for r in by_subject] == [made[5]["id"]]
    assert client.get(f"/api/rate-limits/{made[0]['id']}").json() == made[0]
    assert client.get("/api/rate-limits/999999").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"scope": "global", "subject": "team-a"}, "subject", "not allowed for scope 'global'"),
        ({"scope": "model", "subject": "team-a"}, "subject", "not allowed"),
        ({"scope": "global", "model": "qwen/chat"}, "model", "use scope 'model'"),
        ({"scope": "workspace"}, "subject", "needs a workspace slug"),
        ({"scope": "workspace", "subject": "ghost"}, "subject", "no workspace 'ghost'"),
        ({"scope": "api_key"}, "subject", "needs an API key id"),
        ({"scope": "api_key", "subject": "zzzzzzzzzzzz"}, "subject", "no API key"),
        ({"scope": "model", "model": "nope"}, "model", "no MaaS model 'nope'"),
        ({"scope": "global", "limit": 0}, "limit", "must be at least 1"),
        ({"scope": "global", "unit": "rpd"}, "unit", "rps"),
        ({"scope": "tenant"}, "scope", "global"),
        ({"scope": "global", "unit": "concurrency", "burst": 5}, "burst", "only for rates"),
        ({"scope": "global", "burst": 0}, "burst", "must be at least 1"),
        ({"scope": "global", "limit": 2**31}, "limit", "must be at most 2147483647"),
        ({"scope": "global", "limit": 1, "burst": 43_201}, "burst", "over 30 days to refill"),
    ],
)
def test_invalid_rules_name_the_field(
    client: TestClient, world: dict[str, str], body: dict[str, Any], field: str, words: str
) -> None:
    status, got_field, message = _error(
        client.post("/api/rate-limits", json={"unit": "rpm", "limit": 10, **body})
    )
    assert (status, got_field) == (422, field)
    assert words in message


def test_exact_duplicates_conflict_on_create_and_update(client: TestClient, world: dict[str, str]) -> None:
    body = {"scope": "workspace", "subject": "team-a", "unit": "rpm", "limit": 100}
    first = client.post("/api/rate-limits", json=body).json()
    again = client.post("/api/rate-limits", json={**body, "limit": 5})
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    # Another unit, another model, or another subject is another bucket.
    other_unit = client.post("/api/rate-limits", json={**body, "unit": "tpm"}).json()
    assert client.post("/api/rate-limits", json={**body, "model": "qwen/chat"}).status_code == 201
    assert client.put(f"/api/rate-limits/{other_unit['id']}", json=body).status_code == 409
    same = client.put(f"/api/rate-limits/{first['id']}", json={**body, "limit": 120, "enabled": False})
    assert same.status_code == 200 and same.json()["limit"] == 120 and same.json()["enabled"] is False
    assert client.put("/api/rate-limits/999999", json=body).status_code == 404


def test_concurrent_identical_creates_make_one_rule(client: TestClient, world: dict[str, str]) -> None:
    body = {"scope": "model", "model": "qwen/chat", "unit": "rps", "limit": 10}
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(
            pool.map(lambda _: client.post("/api/rate-limits", json=body).status_code, range(6))
        )
    assert statuses == [201, 409, 409, 409, 409, 409]
    assert client.get("/api/rate-limits").json()["total"] == 1
    assert client.get("/api/audit/verify").json()["ok"] is True


def test_changes_are_audited_with_their_workspace(client: TestClient, world: dict[str, str]) -> None:
    body = {"scope": "api_key", "subject": world["key"], "unit": "rpm", "limit": 10}
    rule = client.post("/api/rate-limits", json=body).json()
    client.put(f"/api/rate-limits/{rule['id']}", json={**body, "limit": 20})
    assert client.delete(f"/api/rate-limits/{rule['id']}").status_code == 204
    assert client.delete(f"/api/rate-limits/{rule['id']}").status_code == 404
    events = client.get("/api/audit", params={"resource_type": "RateLimitRule"}).json()["items"]
    assert [e["action"] for e in reversed(events)] == [
        "CreateRateLimitRule",
        "UpdateRateLimitRule",
        "DeleteRateLimitRule",
    ]
    assert all(e["workspace"] == "team-a" and e["resource_id"] == str(rule["id"]) for e in events)
    assert events[1]["before"]["limit"] == 10 and events[1]["after"]["limit"] == 20


def test_deleting_a_key_deletes_the_rules_naming_it(client: TestClient, world: dict[str, str]) -> None:
    other = client.post("/api/workspaces/team-a/api-keys", json={"name": "other"}).json()["id"]
    model = world["model"]
    naming = [
        {"scope": "api_key", "subject": world["key"], "unit": "rps", "limit": 1},
        {"scope": "api_key", "subject": world["key"], "model": model, "unit": "tpm", "limit": 100},
        {"scope": "api_key_model", "subject": world["key"], "unit": "rpm", "limit": 10},
        {
            "scope": "api_key_model",
            "subject": world["key"],
            "model": model,
            "unit": "concurrency",
            "limit": 2,
        },
    ]
    kept = [
        {"scope": "api_key", "subject": other, "unit": "rps", "limit": 1},
        {"scope": "api_key_model", "subject": other, "unit": "rpm", "limit": 10},
        {"scope": "workspace", "subject": "team-a", "unit": "rps", "limit": 5},
    ]
    made = [client.post("/api/rate-limits", json=body) for body in naming + kept]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    gone, left = [r.json()["id"] for r in made[: len(naming)]], [r.json()["id"] for r in made[len(naming) :]]

    assert client.delete(f"/api/workspaces/team-a/api-keys/{world['key']}").status_code == 204
    for rule_id in gone:
        assert client.get(f"/api/rate-limits/{rule_id}").status_code == 404
    assert [r["id"] for r in client.get("/api/rate-limits").json()["items"]] == left
    event = client.get("/api/audit", params={"action": "DeleteWSAPIKey"}).json()["items"][0]
    assert event["before"]["rate_limit_rules"] == gone
    # Each rule's deletion is its own audit row, under the key's workspace, with the rule as it was.
    deleted = client.get("/api/audit", params={"action": "DeleteRateLimitRule"}).json()["items"]
    assert sorted(int(e["resource_id"]) for e in deleted) == gone
    assert all(e["workspace"] == "team-a" and world["key"] in e["detail"] for e in deleted)
    by_id = {int(e["resource_id"]): e["before"] for e in deleted}
    assert [(by_id[i]["scope"], by_id[i]["model"], by_id[i]["unit"]) for i in gone] == [
        (b["scope"], b.get("model"), b["unit"]) for b in naming
    ]
    assert client.get("/api/audit/verify").json()["ok"] is True


def _rule(
    scope: str, unit: str, model: str | None = None, subject: str | None = None, **kw: Any
) -> RateLimitRule:
    return RateLimitRule(
        scope=scope,
        unit=unit,
        model=model,
        subject=subject,
        limit=kw.get("limit", 1),
        burst=kw.get("burst"),
        enabled=kw.get("enabled", True),
    )


def test_applicable_rules_and_their_buckets() -> None:
    rules = [
        g := _rule("global", "rps"),
        per_model := _rule("model", "tpm"),
        one_model := _rule("model", "tpm", model="big"),
        _rule("model", "rpm", model="other"),
        ws := _rule("workspace", "rpm", subject="team-a"),
        ws_model := _rule("workspace", "tpm", model="big", subject="team-a"),
        _rule("workspace", "rpm", subject="team-b"),
        key := _rule("api_key", "concurrency", subject="key1"),
        _rule("api_key", "rps", subject="key1", enabled=False),
        _rule("api_key", "rps", subject="key2"),
    ]
    small = applicable(rules, workspace="team-a", api_key="key1", model="small")
    assert small == [g, per_model, ws, key]
    big = applicable(iter(rules), workspace="team-a", api_key="key1", model="big")
    assert big == [g, one_model, ws, ws_model, key]  # the model's own rule replaces the default
    assert per_model.bucket("small") == "tpm:model:model=small"
    assert one_model.bucket("big") == "tpm:model:model=big"
    assert g.bucket("small") == "rps:global"
    assert ws.bucket("small") == ws.bucket("big") == "rpm:workspace:team-a"
    assert ws_model.bucket("big") == "tpm:workspace:team-a:model=big"
    assert key.bucket("x") == "concurrency:api_key:key1"
    assert (g.period_seconds, per_model.period_seconds, key.period_seconds) == (1, 60, None)
    assert _rule("global", "rps", limit=5).effective_burst == 5
    assert _rule("global", "rps", limit=5, burst=9).effective_burst == 9
