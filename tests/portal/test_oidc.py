"""OIDC sign-in against a real JWKS endpoint (pytest-httpserver) with tokens signed by PyJWT:
discovery, users created from claims, roles that follow the groups claim, and a 401 that says
which check a bad token failed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pytest_httpserver import HTTPServer

from portal.settings import Settings

AUDIENCE = "modelfleet-portal"
KID = "key-1"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY = _rsa()  # one per test session: RSA generation is the slow part
OTHER_KEY = _rsa()


@pytest.fixture
def issuer(httpserver: HTTPServer) -> str:
    url = httpserver.url_for("/realms/modelfleet")
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True)
    httpserver.expect_request("/realms/modelfleet/.well-known/openid-configuration").respond_with_json(
        {"issuer": url, "jwks_uri": httpserver.url_for("/realms/modelfleet/certs")}
    )
    httpserver.expect_request("/realms/modelfleet/certs").respond_with_json(
        {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}
    )
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path, admin_token: str, issuer: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        admin_token=admin_token,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        worker_enabled=False,
        oidc_issuer=issuer,
        oidc_audience=AUDIENCE,
    )


def _token(issuer: str, key: Any = SIGNING_KEY, kid: str = KID, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "u-123",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "olivia",
        "email": "olivia@example.com",
        "name": "Olivia O.",
        "groups": [],
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers={"kid": kid}
    )


def _me(client: TestClient, token: str) -> Any:
    return client.get("/api/me", headers={"Authorization": f"Bearer {token}"})


def _workspaces(client: TestClient, *slugs: str) -> None:
    for slug in slugs:
        assert client.post("/api/workspaces", json={"slug": slug, "name": slug}).status_code == 201


def test_discovery_then_a_valid_token_creates_the_user_with_roles_from_groups(
    client: TestClient, issuer: str, httpserver: HTTPServer
) -> None:
    _workspaces(client, "team-a", "team-b")
    groups = [
        "modelfleet-admins",
        "modelfleet:team-a:member",
        "modelfleet:team-b:admin",
        "modelfleet:ghost:admin",
        "other",
    ]
    me = _me(client, _token(issuer, groups=groups))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "username": "olivia",
        "is_platform_admin": True,
        "workspaces": {"team-a": "member", "team-b": "admin"},
    }
    paths = [request.path for request, _ in httpserver.log]
    assert paths[:2] == ["/realms/modelfleet/.well-known/openid-configuration", "/realms/modelfleet/certs"]
    users = {u["username"]: u for u in client.get("/api/users").json()["items"]}
    assert users["olivia"]["email"] == "olivia@example.com" and users["olivia"]["display_name"] == "Olivia O."
    members = client.get("/api/workspaces/team-b/members").json()
    assert {"username": "olivia", "role": "admin", "source": "oidc"} in members


def test_roles_follow_the_groups_between_sign_ins(client: TestClient, issuer: str) -> None:
    _workspaces(client, "team-a", "team-b", "team-c")
    first = _token(
        issuer, groups=["modelfleet-admins", "modelfleet:team-a:member", "modelfleet:team-b:member"]
    )
    assert _me(client, first).json()["is_platform_admin"] is True
    # A workspace admin adds her to team-c by hand: that membership is not the IdP's to remove.
    assert (
        client.put(
            "/api/workspaces/team-c/members", json={"username": "olivia", "role": "member"}
        ).status_code
        == 200
    )
    # Same groups again (every request re-reads them): nothing changes, nothing breaks.
    assert _me(client, first).status_code == 200

    second = _token(issuer, groups=["modelfleet:team-a:admin", "modelfleet:team-a:member"])
    me = _me(client, second)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "username": "olivia",
        "is_platform_admin": False,
        "workspaces": {"team-a": "admin", "team-c": "member"},
    }
    with_token = {"Authorization": f"Bearer {second}"}
    assert client.get("/api/workspaces/team-b", headers=with_token).status_code == 404
    assert client.get("/api/users", headers=with_token).status_code == 403

    syncs = client.get("/api/audit", params={"action": "SyncOIDCRoles"}).json()["items"]
    assert len(syncs) == 2  # first sight, then the change; the identical sign-in made no row
    assert syncs[0]["before"] == {
        "is_platform_admin": True,
        "workspaces": {"team-a": "member", "team-b": "member", "team-c": "member"},
    }
    assert syncs[0]["after"] == {
        "is_platform_admin": False,
        "workspaces": {"team-a": "admin", "team-c": "member"},
    }
    assert _me(client, _token(issuer, groups=[])).json()["workspaces"] == {"team-c": "member"}


def test_a_taken_username_gets_the_subject_appended(client: TestClient, issuer: str) -> None:
    client.post("/api/users", json={"username": "olivia"})
    me = _me(client, _token(issuer, sub="other-sub"))
    assert me.status_code == 200 and me.json()["username"] == "olivia@other-sub"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"key": OTHER_KEY}, "signature does not verify"),
        ({"iss": "https://evil.example.com/realms/modelfleet"}, "issuer is not the configured OIDC issuer"),
        ({"aud": "someone-else"}, "audience is not this portal"),
        ({"exp": int(time.time()) - 120}, "token expired"),
        ({"kid": "rotated-away"}, "kid 'rotated-away'"),
        ({"sub": None}, "lacks the 'sub' claim"),
        ({"key": "a-shared-secret-of-at-least-32-bytes!", "alg": "HS256"}, "alg"),
    ],
)
def test_bad_tokens_are_refused_saying_why(
    client: TestClient, issuer: str, change: dict[str, Any], words: str
) -> None:
    response = _me(client, _token(issuer, **change))
    assert response.status_code == 401, response.text
    assert words in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert "olivia" not in [u["username"] for u in client.get("/api/users").json()["items"]]


def test_an_unreachable_key_set_is_unavailable_not_unauthorized(
    client: TestClient, issuer: str, httpserver: HTTPServer
) -> None:
    httpserver.clear_all_handlers()
    httpserver.expect_request("/realms/modelfleet/.well-known/openid-configuration").respond_with_json(
        {"issuer": issuer, "jwks_uri": httpserver.url_for("/realms/modelfleet/certs")}
    )
    httpserver.expect_request("/realms/modelfleet/certs").respond_with_data("down", status=502)
    response = _me(client, _token(issuer))
    assert response.status_code == 503, response.text
    assert "signing keys" in response.json()["error"]["message"]
