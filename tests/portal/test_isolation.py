"""Tenant isolation: a member of workspace A cannot tell B's objects exist (404, the same answer as
for something that does not exist), and nobody below platform admin reaches ops endpoints (403)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.portal.helpers import as_user, make_member

EXTERNAL = {"kind": "external", "base_url": "https://api.example.com/v1", "upstream_model": "m"}


@pytest.fixture
def tenants(client: TestClient) -> dict[str, str]:
    for slug in ("team-a", "team-b"):
        assert client.post("/api/workspaces", json={"slug": slug, "name": slug}).status_code == 201
    only_b = {"targets": [EXTERNAL], "enabled": True, "visibility": "specified", "workspaces": ["team-b"]}
    assert client.post("/api/maas-models", json={"public_id": "b/private", **only_b}).status_code == 201
    bob = make_member(client, "bob", "team-b", "admin")
    with as_user(client, bob):
        b_key = client.post("/api/workspaces/team-b/api-keys", json={"name": "b-key"}).json()["id"]
    return {
        "alice": make_member(client, "alice", "team-a", "member"),
        "anna": make_member(client, "anna", "team-a", "admin"),
        "b_key": b_key,
    }


def _message(response: object) -> str:
    return response.json()["error"]["message"]  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("who", ["alice", "anna"])
def test_another_workspace_is_not_found(client: TestClient, tenants: dict[str, str], who: str) -> None:
    key = tenants["b_key"]
    with as_user(client, tenants[who]):
        for method, path, body in [
            ("GET", "/api/workspaces/{ws}", None),
            ("GET", "/api/workspaces/{ws}/members", None),
            ("PUT", "/api/workspaces/{ws}/members", {"username": "alice", "role": "admin"}),
            ("GET", "/api/workspaces/{ws}/api-keys", None),
            ("POST", "/api/workspaces/{ws}/api-keys", {"name": "sneaky"}),
            ("GET", f"/api/workspaces/{{ws}}/api-keys/{key}", None),
            ("PUT", f"/api/workspaces/{{ws}}/api-keys/{key}/status", {"enabled": False}),
            ("PUT", f"/api/workspaces/{{ws}}/api-keys/{key}/quota", {"token_quota": 1}),
            ("DELETE", f"/api/workspaces/{{ws}}/api-keys/{key}", None),
            ("GET", "/api/workspaces/{ws}/models", None),
            ("GET", "/api/workspaces/{ws}/models/b/private", None),
        ]:
            theirs = client.request(method, path.format(ws="team-b"), json=body)
            nowhere = client.request(method, path.format(ws="no-such-team"), json=body)
            assert theirs.status_code == 404, (method, path, theirs.text)
            # Indistinguishable from a workspace that does not exist.
            assert nowhere.status_code == 404
            assert _message(theirs).replace("team-b", "X") == _message(nowhere).replace("no-such-team", "X")

        # B's key through A's workspace, and B's model through A's model list.
        assert client.get(f"/api/workspaces/team-a/api-keys/{key}").status_code == 404
        assert (
            client.put(f"/api/workspaces/team-a/api-keys/{key}/status", json={"enabled": False}).status_code
            == 404
        )
        assert client.delete(f"/api/workspaces/team-a/api-keys/{key}").status_code == 404
        assert client.get("/api/workspaces/team-a/models/b/private").status_code == 404
        assert "b/private" not in client.get("/api/workspaces/team-a/models").text
        assert [k["name"] for k in client.get("/api/workspaces/team-a/api-keys").json()["items"]] == []

        # Audit: B's rows cannot be asked for, and never show up.
        assert client.get("/api/audit", params={"workspace": "team-b"}).status_code == 404
        rows = client.get("/api/audit", params={"page_size": 500}).json()["items"]
        assert rows and all(r["workspace"] != "team-b" for r in rows)
        assert "team-b" not in client.get("/api/audit/export.csv").text
    # Nothing of B's changed.
    assert client.get(f"/api/workspaces/team-b/api-keys/{key}").json()["enabled"] is True


@pytest.mark.parametrize("who", ["alice", "anna"])
def test_only_platform_admins_reach_ops_endpoints(
    client: TestClient, tenants: dict[str, str], who: str
) -> None:
    model_id = client.get("/api/maas-models").json()["items"][0]["id"]
    rule = {"scope": "global", "unit": "rps", "limit": 1}
    with as_user(client, tenants[who]):
        for method, path, body in [
            ("GET", "/api/maas-models", None),
            ("POST", "/api/maas-models", {"public_id": "x", "targets": [EXTERNAL]}),
            ("GET", f"/api/maas-models/{model_id}", None),
            ("PUT", f"/api/maas-models/{model_id}", {"targets": [EXTERNAL]}),
            ("PUT", f"/api/maas-models/{model_id}/status", {"enabled": False}),
            ("DELETE", f"/api/maas-models/{model_id}", None),
            ("GET", "/api/rate-limits", None),
            ("POST", "/api/rate-limits", rule),
            ("GET", "/api/audit/verify", None),
            ("GET", "/api/users", None),
            ("POST", "/api/workspaces", {"slug": "team-z", "name": "z"}),
            ("PUT", "/api/workspaces/team-a/quota", {"token_quota": 1}),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
    assert client.get("/api/rate-limits").json()["total"] == 0
    assert client.get(f"/api/maas-models/{model_id}").json()["enabled"] is True
