"""Identity: tokens, workspaces, members, and that nobody sees another workspace's objects."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.portal.helpers import as_user, make_member


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
