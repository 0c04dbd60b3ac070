"""Workspace API keys: shown once, stored as a peppered HMAC, scoped to their creator and workspace,
bounded by the workspace's token quota, audited without the secret, and verified for the gateway."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from portal.keys import verify_api_key
from portal.models import ApiKey
from portal.services import Services
from tests.portal.helpers import as_user, make_member

KEY_SHAPE = re.compile(r"^sk-[a-z0-9]{12}[A-Za-z0-9]{40}$")
EXTERNAL = {"kind": "external", "base_url": "https://api.example.com/v1", "upstream_model": "m"}


def _workspace(client: TestClient, slug: str, quota: int | None = None) -> None:
    body = {"slug": slug, "name": slug, "token_quota": quota}
    assert client.post("/api/workspaces", json=body).status_code == 201


def _key(client: TestClient, ws: str, **body: object) -> dict[str, object]:
    created = client.post(f"/api/workspaces/{ws}/api-keys", json={"name": "k", **body})
    assert created.status_code == 201, created.text
    out: dict[str, object] = created.json()
    return out


def test_the_full_key_is_shown_once_and_only_its_hmac_is_stored(
    client: TestClient, services: Services
) -> None:
    _workspace(client, "team-a")
    created = _key(client, "team-a", name="ci")
    secret_key = str(created["secret_key"])
    assert KEY_SHAPE.match(secret_key)
    public_id = str(created["id"])
    assert secret_key[3:15] == public_id
    assert created["key"] == f"sk-{public_id}…{secret_key[-4:]}"
    assert created["status"] == "active" and created["used_tokens"] == 0

    listed = client.get("/api/workspaces/team-a/api-keys")
    got = client.get(f"/api/workspaces/team-a/api-keys/{public_id}")
    for response in (listed, got):
        assert response.status_code == 200
        assert secret_key not in response.text and secret_key[15:] not in response.text
    assert got.json()["key"] == created["key"]
    assert "secret_key" not in got.json()

    with services.sessions() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.public_id == public_id))
        assert row is not None
        expected = hmac.new(b"test-pepper", secret_key[15:].encode(), hashlib.sha256).hexdigest()
        assert row.secret_hash == expected
        # Neither the secret nor its hash is anywhere in the audit log.
        dumped = " ".join(str(r) for r in session.execute(text("SELECT * FROM audit_events")).all())
    assert "CreateWSAPIKey" in dumped
    assert secret_key[15:] not in dumped and expected not in dumped
    export = client.get("/api/audit/export.csv")
    assert secret_key[15:] not in export.text and expected not in export.text


def test_verify_api_key_accepts_only_enabled_unexpired_exact_keys(
    client: TestClient, services: Services
) -> None:
    _workspace(client, "team-a")
    created = _key(client, "team-a")
    secret_key, public_id = str(created["secret_key"]), str(created["id"])
    other = str(_key(client, "team-a")["secret_key"])
    wrong_secret = secret_key[:-1] + ("a" if secret_key[-1] != "a" else "b")
    unknown_id = "sk-" + "z" * 12 + secret_key[15:]
    with services.sessions() as session:
        found = verify_api_key(session, services.hasher, secret_key)
        assert found is not None and found.public_id == public_id
        assert verify_api_key(session, services.hasher, f"  {secret_key}\n") is not None
        for bad in (
            wrong_secret,
            unknown_id,
            secret_key[:-1],
            "",
            "Bearer " + secret_key,
            other[:15] + secret_key[15:],
        ):
            assert verify_api_key(session, services.hasher, bad) is None, bad

    assert (
        client.put(f"/api/workspaces/team-a/api-keys/{public_id}/status", json={"enabled": False}).json()[
            "status"
        ]
        == "disabled"
    )
    with services.sessions() as session:
        assert verify_api_key(session, services.hasher, secret_key) is None
    client.put(f"/api/workspaces/team-a/api-keys/{public_id}/status", json={"enabled": True})
    with services.sessions() as session, session.begin():
        session.execute(
            update(ApiKey)
            .where(ApiKey.public_id == public_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with services.sessions() as session:
        assert verify_api_key(session, services.hasher, secret_key) is None
    assert client.get(f"/api/workspaces/team-a/api-keys/{public_id}").json()["status"] == "expired"

    client.delete(f"/api/workspaces/team-a/api-keys/{public_id}")
    with services.sessions() as session:
        assert verify_api_key(session, services.hasher, secret_key) is None


def test_create_validates_expiry_and_allowed_models(client: TestClient) -> None:
    _workspace(client, "team-a")
    _workspace(client, "team-b")
    past = client.post(
        "/api/workspaces/team-a/api-keys",
        json={"name": "k", "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
    )
    assert past.status_code == 422
    assert past.json()["error"]["fields"][0]["field"] == "expires_at"
    naive_future = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert _key(client, "team-a", expires_at=naive_future)["status"] == "active"
    # An offset is honoured: one hour from now, written as New York time, is still in the future.
    soon = datetime.now(UTC) + timedelta(hours=1)
    offset = _key(client, "team-a", expires_at=soon.astimezone(timezone(timedelta(hours=-5))).isoformat())
    stored = client.get(f"/api/workspaces/team-a/api-keys/{offset['id']}").json()
    assert stored["status"] == "active"
    assert abs(datetime.fromisoformat(stored["expires_at"]) - soon) < timedelta(seconds=1)

    client.post("/api/maas-models", json={"public_id": "qwen/chat", "targets": [EXTERNAL]})
    only_b = {
        "public_id": "b-only",
        "targets": [EXTERNAL],
        "visibility": "specified",
        "workspaces": ["team-b"],
    }
    assert client.post("/api/maas-models", json=only_b).status_code == 201
    ok = _key(client, "team-a", allowed_models=["qwen/chat", "qwen/chat"])
    assert ok["allowed_models"] == ["qwen/chat"]
    for models, field in ((["qwen/chat", "nope"], "allowed_models[1]"), (["b-only"], "allowed_models[0]")):
        bad = client.post("/api/workspaces/team-a/api-keys", json={"name": "k", "allowed_models": models})
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["fields"][0]["field"] == field
        assert "unknown model" in bad.json()["error"]["message"]
    assert client.post("/api/workspaces/team-a/api-keys", json={"name": ""}).status_code == 422
    overflow = client.post(
        "/api/workspaces/team-a/api-keys", json={"name": "k", "expires_at": "9999-12-31T23:59:59-01:00"}
    )
    assert overflow.status_code == 422 and overflow.json()["error"]["fields"][0]["field"] == "expires_at"
    assert (
        client.post("/api/workspaces/team-a/api-keys", json={"name": "k", "token_quota": -1}).status_code
        == 422
    )


def test_key_quotas_never_exceed_the_workspace_quota(client: TestClient, services: Services) -> None:
    _workspace(client, "team-a", quota=1000)
    first = _key(client, "team-a", token_quota=600)
    too_much = client.post("/api/workspaces/team-a/api-keys", json={"name": "k", "token_quota": 500})
    assert too_much.status_code == 422
    error = too_much.json()["error"]
    assert error["fields"][0]["field"] == "token_quota"
    assert "400 of 1000" in error["message"]
    second = _key(client, "team-a", token_quota=400)
    assert _key(client, "team-a")["token_quota"] is None  # unlimited keys draw on the workspace quota

    grow = client.put(f"/api/workspaces/team-a/api-keys/{first['id']}/quota", json={"token_quota": 601})
    assert grow.status_code == 422 and "600 of 1000" in grow.json()["error"]["message"]
    shrink = client.put(f"/api/workspaces/team-a/api-keys/{first['id']}/quota", json={"token_quota": 100})
    assert shrink.status_code == 200 and shrink.json()["remaining_tokens"] == 100
    # A disabled key keeps its share (it may come back); an expired one gives it back.
    client.put(f"/api/workspaces/team-a/api-keys/{second['id']}/status", json={"enabled": False})
    assert (
        client.post("/api/workspaces/team-a/api-keys", json={"name": "k", "token_quota": 501}).status_code
        == 422
    )
    with services.sessions() as session, session.begin():
        session.execute(
            update(ApiKey)
            .where(ApiKey.public_id == second["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert _key(client, "team-a", token_quota=900)["token_quota"] == 900
    # Without a workspace quota, keys may have any quota.
    _workspace(client, "team-b")
    assert _key(client, "team-b", token_quota=10**12)["remaining_tokens"] == 10**12


def test_members_manage_their_own_keys_and_admins_manage_all(client: TestClient) -> None:
    _workspace(client, "team-a")
    alice = make_member(client, "alice", "team-a", "member")
    bob = make_member(client, "bob", "team-a", "member")
    carol = make_member(client, "carol", "team-a", "admin")
    with as_user(client, alice):
        mine = _key(client, "team-a", name="alice-key")
        assert mine["created_by"] == "alice"
    with as_user(client, bob):
        _key(client, "team-a", name="bob-key")
        assert [k["name"] for k in client.get("/api/workspaces/team-a/api-keys").json()["items"]] == [
            "bob-key"
        ]
        base = f"/api/workspaces/team-a/api-keys/{mine['id']}"
        assert client.get(base).status_code == 404
        assert client.put(f"{base}/status", json={"enabled": False}).status_code == 404
        assert client.put(f"{base}/quota", json={"token_quota": 5}).status_code == 404
        assert client.delete(base).status_code == 404
    with as_user(client, carol):
        listed = client.get("/api/workspaces/team-a/api-keys").json()
        assert sorted(k["name"] for k in listed["items"]) == ["alice-key", "bob-key"] and listed["total"] == 2
        base = f"/api/workspaces/team-a/api-keys/{mine['id']}"
        assert client.put(f"{base}/status", json={"enabled": False}).json()["enabled"] is False
        assert client.put(f"{base}/quota", json={"token_quota": 5}).json()["token_quota"] == 5
    with as_user(client, alice):
        assert client.get(f"/api/workspaces/team-a/api-keys/{mine['id']}").json()["status"] == "disabled"
        assert client.delete(f"/api/workspaces/team-a/api-keys/{mine['id']}").status_code == 204
        assert client.get(f"/api/workspaces/team-a/api-keys/{mine['id']}").status_code == 404

    events = client.get("/api/audit", params={"resource_type": "APIKey", "page_size": 50}).json()["items"]
    actions = [(e["action"], e["actor"]) for e in reversed(events)]
    assert actions == [
        ("CreateWSAPIKey", "alice"),
        ("CreateWSAPIKey", "bob"),
        ("UpdateWSAPIKeyStatus", "carol"),
        ("UpdateWSAPIKeyQuota", "carol"),
        ("DeleteWSAPIKey", "alice"),
    ]
    assert all(e["workspace"] == "team-a" for e in events)
    quota_event = next(e for e in events if e["action"] == "UpdateWSAPIKeyQuota")
    assert quota_event["before"]["token_quota"] is None and quota_event["after"]["token_quota"] == 5
