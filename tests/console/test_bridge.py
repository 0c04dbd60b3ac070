"""The console's session cookie and the bridge that turns it into the API's bearer token."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from console.bridge import cookie_value
from console.session import COOKIE, ConsoleSession, SessionCodec
from tests.console.conftest import sign_in
from tests.portal.helpers import make_member

CSRF = {"X-Modelfleet-Console": "1"}


def test_sign_in_sets_an_httponly_encrypted_cookie(client: TestClient, admin_token: str) -> None:
    client.headers.pop("Authorization")
    response = client.post(
        "/console/login", data={"token": admin_token, "next": "/console/keys"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/keys"
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "path=/" in header
    assert admin_token not in response.headers["set-cookie"]  # encrypted, not merely signed


def test_the_cookie_authenticates_api_reads(browser_client: TestClient) -> None:
    me = browser_client.get("/api/me")
    assert me.status_code == 200
    assert me.json()["username"] == "admin"


def test_a_wrong_token_is_refused_with_the_apis_message(client: TestClient) -> None:
    client.headers.pop("Authorization")
    response = client.post("/console/login", data={"token": "mf_nope"}, follow_redirects=False)
    assert response.status_code == 401
    assert "unknown or expired token" in response.text
    assert COOKIE not in response.cookies


def test_changes_with_the_cookie_need_the_console_header(browser_client: TestClient) -> None:
    body = {"slug": "csrf-test", "name": "CSRF"}
    refused = browser_client.post("/api/workspaces", json=body)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "forbidden" and "X-Modelfleet-Console: 1" in error["message"]
    assert browser_client.get("/api/workspaces/csrf-test").status_code == 404  # nothing happened
    for method in ("put", "patch", "delete"):
        assert browser_client.request(method.upper(), "/api/workspaces/demo/quota").status_code == 403
    created = browser_client.post("/api/workspaces", json=body, headers=CSRF)
    assert created.status_code == 201, created.text
    audit = browser_client.get("/api/audit", params={"action": "CreateWorkspace", "resource_id": "csrf-test"})
    assert [row["actor"] for row in audit.json()["items"]] == ["admin"]


def test_a_wrong_console_header_value_is_refused(browser_client: TestClient) -> None:
    response = browser_client.post(
        "/api/workspaces", json={"slug": "x-ws", "name": "x"}, headers={"X-Modelfleet-Console": "yes"}
    )
    assert response.status_code == 403


def test_an_explicit_authorization_header_wins_over_the_cookie(
    browser_client: TestClient, admin_token: str
) -> None:
    browser_client.headers["Authorization"] = f"Bearer {admin_token}"
    member = make_member(browser_client, "mia", "demo", "member")
    del browser_client.headers["Authorization"]
    me = browser_client.get("/api/me", headers={"Authorization": f"Bearer {member}"})
    assert me.json()["username"] == "mia"
    # A request that brings its own credentials needs no console header (a foreign page cannot know them).
    created = browser_client.post(
        "/api/workspaces/demo/api-keys", json={"name": "own"}, headers={"Authorization": f"Bearer {member}"}
    )
    assert created.status_code == 201


def test_a_tampered_or_foreign_cookie_is_ignored(browser_client: TestClient) -> None:
    sealed = browser_client.cookies[COOKIE]
    assert browser_client.get("/api/me").status_code == 200
    browser_client.cookies.clear()
    browser_client.cookies.set(COOKIE, sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB"))
    assert browser_client.get("/api/me").status_code == 401
    other = SessionCodec(b"another pepper", 3600).seal(ConsoleSession("mf_x", "admin"))
    browser_client.cookies.clear()
    browser_client.cookies.set(COOKIE, other)
    assert browser_client.get("/api/me").status_code == 401
    page = browser_client.get("/console/plaza", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login?next=")


def test_sessions_expire() -> None:
    now = [time.time()]
    codec = SessionCodec(b"pepper", max_age=60, clock=lambda: now[0])
    sealed = codec.seal(ConsoleSession("mf_token", "alice"))
    now[0] += 59
    assert codec.open(sealed) == ConsoleSession("mf_token", "alice")
    now[0] += 2
    assert codec.open(sealed) is None
    assert codec.open("") is None and codec.open("not a cookie") is None


def test_v1_changes_with_the_cookie_need_the_header_and_answer_in_openai_shape(
    browser_client: TestClient,
) -> None:
    refused = browser_client.post("/v1/chat/completions", json={"model": "x", "messages": []})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_header_missing"
    # With the header the gateway sees the user's token, which is not an API key: its own 401.
    bridged = browser_client.post("/v1/chat/completions", json={"model": "x", "messages": []}, headers=CSRF)
    assert bridged.status_code == 401
    assert bridged.json()["error"]["code"] == "invalid_api_key"


def test_sign_out_deletes_the_cookie_and_cross_site_forms_are_refused(
    client: TestClient, admin_token: str
) -> None:
    client.headers.pop("Authorization")
    evil = {"Origin": "https://evil.example"}
    refused = client.post("/console/login", data={"token": admin_token}, headers=evil, follow_redirects=False)
    assert refused.status_code == 403 and COOKIE not in refused.cookies
    sign_in(client, admin_token)
    assert client.post("/console/logout", headers=evil, follow_redirects=False).status_code == 403
    assert client.get("/api/me").status_code == 200
    out = client.post("/console/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert client.get("/api/me").status_code == 401


def test_sign_in_redirects_only_within_the_console(client: TestClient, admin_token: str) -> None:
    client.headers.pop("Authorization")
    for target in ("//evil.example/x", "https://evil.example", "/api/me", "/console\\@evil"):
        response = client.post(
            "/console/login", data={"token": admin_token, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == "/console/", target


def test_cookie_parsing_is_lenient() -> None:
    assert cookie_value(b"a=1; mf_console=abc; b=2") == "abc"
    assert cookie_value(b"a=1") is None
    assert cookie_value(None) is None
    assert cookie_value(b'bad"cookie') is None
