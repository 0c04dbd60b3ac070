"""Workspace API keys: shown once, stored as a peppered HMAC, scoped to their creator and workspace,
bounded by the workspace's token quota, audited without the secret, and verified for the gateway."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from gateway.access import authenticate
from gateway.refusal import Refusal
from gateway.snapshot import KeyEntry, Loader
from portal.keys import mint_api_key, set_quota_refresh, status, used_in_period
from portal.services import Services
from store.models import ApiKey, Workspace
from store.periods import period_bounds
from tests.portal.helpers import as_user, make_member
from tests.portal.usage_support import Row, insert

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


def verify(services: Services, presented: str) -> KeyEntry | None:
    """The gateway's one key check, over a fresh snapshot of the database."""
    snapshot = Loader(services).load(0)
    found = authenticate(snapshot, services.hasher, f"Bearer {presented}", datetime.now(UTC))
    return None if isinstance(found, Refusal) else found


def test_the_gateway_accepts_only_enabled_unexpired_exact_keys(
    client: TestClient, services: Services
) -> None:
    _workspace(client, "team-a")
    created = _key(client, "team-a")
    secret_key, public_id = str(created["secret_key"]), str(created["id"])
    other = str(_key(client, "team-a")["secret_key"])
    wrong_secret = secret_key[:-1] + ("a" if secret_key[-1] != "a" else "b")
    unknown_id = "sk-" + "z" * 12 + secret_key[15:]
    found = verify(services, secret_key)
    assert found is not None and found.public_id == public_id
    assert verify(services, f"  {secret_key}\n") is not None
    for bad in (
        wrong_secret,
        unknown_id,
        secret_key[:-1],
        "",
        "Bearer " + secret_key,
        other[:15] + secret_key[15:],
    ):
        assert verify(services, bad) is None, bad

    assert (
        client.put(f"/api/workspaces/team-a/api-keys/{public_id}/status", json={"enabled": False}).json()[
            "status"
        ]
        == "disabled"
    )
    assert verify(services, secret_key) is None
    client.put(f"/api/workspaces/team-a/api-keys/{public_id}/status", json={"enabled": True})
    with services.sessions() as session, session.begin():
        session.execute(
            update(ApiKey)
            .where(ApiKey.public_id == public_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert verify(services, secret_key) is None
    assert client.get(f"/api/workspaces/team-a/api-keys/{public_id}").json()["status"] == "expired"

    client.delete(f"/api/workspaces/team-a/api-keys/{public_id}")
    assert verify(services, secret_key) is None


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

    client.post(
        "/api/maas-models", json={"public_id": "qwen/chat", "targets": [EXTERNAL], "visibility": "all"}
    )
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


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_quota_refresh_is_set_on_create_and_update_shown_and_audited(client: TestClient) -> None:
    _workspace(client, "team-a")
    monthly = _key(client, "team-a", token_quota=1000, quota_refresh="month")
    assert monthly["quota_refresh"] == "month"
    resets = datetime.fromisoformat(str(monthly["quota_resets_at"]))
    now = datetime.now(UTC)
    assert resets.day == 1 and resets.time() == datetime.min.time() and resets.utcoffset() == timedelta(0)
    assert now < resets <= now + timedelta(days=31)  # the first of next month, UTC midnight
    lifetime = _key(client, "team-a", token_quota=10)
    assert lifetime["quota_refresh"] is None and lifetime["quota_resets_at"] is None
    for bad in ("hourly", "Month", 7):
        refused = client.post("/api/workspaces/team-a/api-keys", json={"name": "k", "quota_refresh": bad})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["fields"][0]["field"] == "quota_refresh"
        assert "day, week, month, or null" in error["fields"][0]["message"]

    quota = f"/api/workspaces/team-a/api-keys/{monthly['id']}/quota"
    kept = client.put(quota, json={"token_quota": 500})  # left out: the cycle stays
    assert kept.status_code == 200 and kept.json()["quota_refresh"] == "month"
    weekly = client.put(quota, json={"token_quota": 500, "quota_refresh": "week"}).json()
    assert weekly["quota_refresh"] == "week"
    assert datetime.fromisoformat(weekly["quota_resets_at"]).weekday() == 0  # next Monday
    bad = client.put(quota, json={"token_quota": 500, "quota_refresh": "fortnight"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "quota_refresh"
    never = client.put(quota, json={"token_quota": 500, "quota_refresh": None}).json()
    assert never["quota_refresh"] is None and never["quota_resets_at"] is None
    listed = client.get("/api/workspaces/team-a/api-keys").json()["items"]
    assert {k["id"]: k["quota_refresh"] for k in listed} == {monthly["id"]: None, lifetime["id"]: None}

    events = client.get("/api/audit", params={"resource_id": monthly["id"], "page_size": 50}).json()
    changes = [
        (e["action"], (e["before"] or {}).get("quota_refresh"), e["after"]["quota_refresh"])
        for e in reversed(events["items"])
    ]
    assert changes == [
        ("CreateWSAPIKey", None, "month"),
        ("UpdateWSAPIKeyQuota", "month", "month"),
        ("UpdateWSAPIKeyQuota", "month", "week"),
        ("UpdateWSAPIKeyQuota", "week", None),
    ]


def test_tokens_of_a_past_period_do_not_exhaust_a_key(client: TestClient, services: Services) -> None:
    """The gateway restarts a key's count at its first request of a new period; until then the row
    still holds the last period's figure, which must not make the key look used up."""
    _workspace(client, "team-a")
    key = _key(client, "team-a", token_quota=100, quota_refresh="month")
    lifetime = _key(client, "team-a", token_quota=100)
    this_month = period_bounds("month", datetime.now(UTC))[0]
    assert this_month is not None
    last_month = (this_month - timedelta(days=1)).replace(day=1)

    def stored(public_id: str, used: int, period_start: datetime) -> dict[str, object]:
        with services.sessions() as session, session.begin():
            session.execute(
                update(ApiKey)
                .where(ApiKey.public_id == public_id)
                .values(used_tokens=used, quota_period_start=period_start)
            )
        got: dict[str, object] = client.get(f"/api/workspaces/team-a/api-keys/{public_id}").json()
        return got

    old = stored(str(key["id"]), 100, last_month)
    assert (old["status"], old["used_tokens"], old["remaining_tokens"]) == ("active", 0, 100)
    current = stored(str(key["id"]), 100, this_month)
    assert (current["status"], current["used_tokens"], current["remaining_tokens"]) == ("exhausted", 100, 0)
    # A lifetime quota counts everything, whatever period the count was last charged in.
    ever = stored(str(lifetime["id"]), 100, last_month)
    assert (ever["status"], ever["used_tokens"]) == ("exhausted", 100)


@pytest.mark.parametrize(
    ("cycle", "period_start", "used"),
    [
        ("day", "2025-03-19", 70),
        ("day", "2025-03-18", 0),  # yesterday's count: nothing used today yet
        ("week", "2025-03-17", 70),  # the Monday of that week
        ("week", "2025-03-10", 0),
        ("month", "2025-03-01", 70),
        ("month", "2025-02-01", 0),
        (None, "2025-02-01", 70),  # lifetime: every token ever
        (None, None, 70),
        ("month", None, 0),  # never charged in a period
    ],
)
def test_status_counts_only_the_current_period(
    cycle: str | None, period_start: str | None, used: int
) -> None:
    now = _utc("2025-03-19T15:00:00")  # a Wednesday
    key = ApiKey(
        enabled=True,
        token_quota=70,
        used_tokens=70,
        quota_refresh=cycle,
        quota_period_start=_utc(period_start) if period_start else None,
    )
    assert used_in_period(key, now) == used
    assert status(key, now) == ("exhausted" if used else "active")


def test_a_new_cycle_recounts_the_tokens_of_its_current_period(services: Services) -> None:
    now = _utc("2025-03-19T15:00:00")  # Wednesday; the week began on Monday 17th
    with services.sessions() as session, session.begin():
        workspace = Workspace(slug="team-a", name="A")
        session.add(workspace)
        session.flush()
        key, _ = mint_api_key(session, services.hasher, workspace, name="k", created_by="t", token_quota=10)
        key_id = key.public_id
    insert(
        services,
        [
            Row(at=_utc("2025-02-27T10:00"), api_key=key_id, prompt=1000, completion=1),  # last month
            Row(at=_utc("2025-03-03T10:00"), api_key=key_id, prompt=100, completion=2),  # this month
            Row(at=_utc("2025-03-18T23:59"), api_key=key_id, prompt=10, completion=3),  # this week
            Row(at=_utc("2025-03-19T00:00"), api_key=key_id, prompt=1, completion=4),  # today
            Row(at=_utc("2025-03-19T09:00"), api_key="other", prompt=5000, completion=5),  # another key
        ],
    )
    expected = {"day": 5, "week": 18, "month": 120, None: 1121}
    starts = {"day": "2025-03-19", "week": "2025-03-17", "month": "2025-03-01", None: None}
    for cycle in ("day", "month", None, "week", "day"):
        with services.sessions() as session, session.begin():
            key = session.scalars(select(ApiKey).where(ApiKey.public_id == key_id)).one()
            set_quota_refresh(session, key, cycle, now)  # type: ignore[arg-type]
        with services.sessions() as session:
            key = session.scalars(select(ApiKey).where(ApiKey.public_id == key_id)).one()
            start = key.quota_period_start.replace(tzinfo=UTC) if key.quota_period_start else None
            assert (key.quota_refresh, key.used_tokens) == (cycle, expected[cycle])
            assert start == (_utc(starts[cycle]) if starts[cycle] else None)  # type: ignore[arg-type]
            assert used_in_period(key, now) == expected[cycle]
