"""Identity: tokens, workspaces, members, and that nobody sees another workspace's objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from portal.services import Services
from store.models import Workspace
from store.periods import period_bounds
from tests.portal.helpers import as_user, make_member
from tests.portal.usage_support import Row, insert


def test_health_and_one_error_shape(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    anonymous = client.get("/api/me", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    body = anonymous.json()["error"]
    assert body["code"] == "unauthorized" and body["request_id"] == anonymous.headers["x-request-id"]


def test_admin_token_signs_in_and_a_wrong_one_does_not(client: TestClient, admin_token: str) -> None:
    assert client.get("/api/me").json() == {"username": "admin", "is_platform_admin": True, "workspaces": {}}
    forged = admin_token[:-1] + ("a" if admin_token[-1] != "a" else "b")
    assert client.get("/api/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_workspace_create_validates_the_slug_and_refuses_duplicates(client: TestClient) -> None:
    bad = client.post("/api/workspaces", json={"slug": "Bad_Slug", "name": "x"})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "slug"
    assert client.post("/api/workspaces", json={"slug": "team-a", "name": "Team A"}).status_code == 201
    again = client.post("/api/workspaces", json={"slug": "team-a", "name": "Team A"})
    assert again.status_code == 409


def test_members_see_only_their_workspaces(client: TestClient) -> None:
    for slug in ("team-a", "team-b"):
        client.post("/api/workspaces", json={"slug": slug, "name": slug})
    alice = make_member(client, "alice", "team-a", "member")
    with as_user(client, alice):
        listed = client.get("/api/workspaces").json()
        assert [w["slug"] for w in listed["items"]] == ["team-a"]
        assert client.get("/api/workspaces/team-b").status_code == 404
        assert client.post("/api/workspaces", json={"slug": "team-c", "name": "c"}).status_code == 403
        # A member cannot manage members; only a workspace admin can.
        assert (
            client.put(
                "/api/workspaces/team-a/members", json={"username": "alice", "role": "admin"}
            ).status_code
            == 403
        )


def test_a_workspaces_new_cycle_recounts_its_usage_of_the_current_period(
    client: TestClient, services: Services
) -> None:
    """`used_tokens` belongs to a period of the old cycle: kept as it was, a daily count would pass for
    the month's (and the month's charges would be dropped as older than its stored day)."""
    body = {"slug": "team-a", "name": "A", "token_quota": 10**6, "quota_refresh": "day"}
    assert client.post("/api/workspaces", json=body).status_code == 201
    now = datetime.now(UTC)
    day, week, month = (period_bounds(cycle, now)[0] for cycle in ("day", "week", "month"))
    assert day is not None and week is not None and month is not None
    rows = [
        Row(at=month - timedelta(minutes=1), prompt=1000, completion=1),  # last month
        Row(at=month, prompt=100, completion=2),
        Row(at=week - timedelta(minutes=1), prompt=20, completion=0),  # the week before this one
        Row(at=week, prompt=10, completion=3),
        Row(at=day, prompt=1, completion=4),
        Row(at=now, prompt=2, completion=0),
        Row(at=now, workspace="team-b", prompt=5000, completion=5),  # another workspace
    ]
    insert(services, rows)

    def expected(start: datetime) -> int:
        return sum(r.prompt + r.completion for r in rows if r.workspace == "team-a" and r.at >= start)

    def stored() -> tuple[str, datetime | None, int]:
        with services.sessions() as session:
            w = session.scalars(select(Workspace).where(Workspace.slug == "team-a")).one()
            start = w.quota_period_start.replace(tzinfo=UTC) if w.quota_period_start else None
            return w.quota_refresh, start, w.used_tokens

    def put(cycle: str) -> None:
        changed = client.put(
            "/api/workspaces/team-a/quota", json={"token_quota": 10**6, "quota_refresh": cycle}
        )
        assert changed.status_code == 200 and changed.json()["quota_refresh"] == cycle

    with services.sessions() as session, session.begin():  # today's count, as the gateway left it
        session.execute(update(Workspace).values(used_tokens=expected(day), quota_period_start=day))
    put("month")
    assert stored() == ("month", month, expected(month))
    with services.sessions() as session, session.begin():  # the gateway charged 7 more this month
        session.execute(update(Workspace).values(used_tokens=Workspace.used_tokens + 7))
    put("month")  # the same cycle: the count stays the gateway's
    assert stored() == ("month", month, expected(month) + 7)
    put("week")
    assert stored() == ("week", week, expected(week))
    put("day")
    assert stored() == ("day", day, expected(day))
