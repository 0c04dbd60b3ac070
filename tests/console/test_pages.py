"""Every console page renders from the API for the roles that may see it, fast enough, in both languages."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.console.conftest import sign_in
from tests.portal.helpers import make_member

USER_PAGES = [
    "/console/plaza",
    "/console/plaza?capability=reasoning&tag=chat&q=qwen&sort=name",
    "/console/plaza/qwen3-8b",
    "/console/deploy",
    "/console/deploy?model=qwen3-8b",
    "/console/services",
    "/console/services/qwen25-7b",
    "/console/chat",
    "/console/compare",
    "/console/try",
    "/console/try?tab=transcription",
    "/console/try?tab=speech",
    "/console/try?tab=rerank",
    "/console/try?tab=embeddings",
    "/console/keys",
    "/console/usage",
    "/console/usage?range=7d&by=api_key",
]
OPS_PAGES = [
    "/console/ops/plaza",
    "/console/ops/plaza?published=false",
    "/console/ops/plaza/new",
    "/console/ops/plaza/qwen3-8b",
    "/console/ops/import",
    "/console/ops/providers",
    "/console/ops/maas",
    "/console/ops/maas/new",
    "/console/ops/limits",
    "/console/ops/regions",
    "/console/ops/jobs",
    "/console/ops/workspaces",
    "/console/ops/audit",
    "/console/ops/audit?actor=system&result=success&since=2020-01-01T00:00",
]


def test_root_goes_to_the_console_and_anonymous_pages_to_sign_in(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"
    response = client.get("/console/keys?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fkeys%3Fx%3D1"
    login = client.get("/console/login")
    assert login.status_code == 200 and 'name="token"' in login.text


def test_every_page_renders_for_ops(browser_client: TestClient) -> None:
    for path in USER_PAGES + OPS_PAGES:
        response = browser_client.get(path)
        assert response.status_code == 200, (path, response.text[-2000:])
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<script>" not in response.text, path  # scripts are files (CSP script-src 'self')


def test_a_member_sees_the_user_view_but_not_the_ops_view(client: TestClient) -> None:
    token = make_member(client, "mia", "demo", "member")
    client.headers.pop("Authorization")
    sign_in(client, token)
    for path in USER_PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-1000:])
        assert "/console/ops/" not in response.text  # the ops navigation is not offered
    denied = client.get("/console/ops/audit")
    assert denied.status_code == 403
    assert "platform admin" in denied.text


def test_api_errors_reach_the_page_with_their_message(browser_client: TestClient) -> None:
    missing = browser_client.get("/console/plaza/no-such-model")
    assert missing.status_code == 404
    assert "model &#39;no-such-model&#39; not found" in missing.text
    invalid = browser_client.get("/console/plaza?capability=telepathy")
    assert invalid.status_code == 422
    assert "capability" in invalid.text


def test_language_follows_the_query_then_the_cookie(browser_client: TestClient) -> None:
    zh = browser_client.get("/console/plaza?lang=zh")
    assert '<html lang="zh-CN">' in zh.text and "模型广场" in zh.text
    assert zh.cookies.get("mf_lang") == "zh"
    again = browser_client.get("/console/keys")
    assert '<html lang="zh-CN">' in again.text and "API 密钥" in again.text
    en = browser_client.get("/console/keys?lang=en")
    assert '<html lang="en">' in en.text


def test_the_workspace_is_chosen_by_query_and_remembered(browser_client: TestClient) -> None:
    browser_client.post(
        "/api/workspaces", json={"slug": "team-b", "name": "Team B"}, headers={"X-Modelfleet-Console": "1"}
    )
    page = browser_client.get("/console/keys?ws=team-b")
    assert 'data-ws="team-b"' in page.text
    assert 'data-ws="team-b"' in browser_client.get("/console/services").text
    bogus = browser_client.get("/console/keys?ws=not-mine")
    assert re.search(r'data-ws="(demo|team-b)"', bogus.text)


def test_readmes_are_rendered_without_their_html(browser_client: TestClient) -> None:
    patch = browser_client.patch(
        "/api/plaza/models/qwen3-8b",
        json={"readme": "# Title\n<script>alert(1)</script>\n[x](javascript:alert(1)) **bold**"},
        headers={"X-Modelfleet-Console": "1"},
    )
    assert patch.status_code == 200, patch.text
    page = browser_client.get("/console/plaza/qwen3-8b").text
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert 'href="javascript:' not in page


def test_the_maas_form_shows_what_a_model_serves(client: TestClient, admin_token: str) -> None:
    body = {
        "public_id": "console-image",
        "targets": [{"kind": "external", "base_url": "https://api.example.com/v1", "upstream_model": "flux"}],
        "capabilities": ["image-generation"],
        "image_sizes": ["1024x1024", "512x512"],
        "price_per_unit": 0.04,
    }
    made = client.post("/api/maas-models", json=body)
    assert made.status_code == 201, made.text
    client.headers.pop("Authorization")
    sign_in(client, admin_token)
    form = client.get(f"/console/ops/maas/{made.json()['id']}").text
    assert re.search(r'<option value="image-generation" selected>', form)
    assert 'value="1024x1024, 512x512"' in form and 'name="price_per_unit" type="number" value="0.04"' in form
