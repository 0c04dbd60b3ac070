"""The pull-request backend against a GitHub-compatible API served by pytest-httpserver: the exact
calls in order, merge and close status sync (poll and webhook), the webhook signature, and errors."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from portal.repository import serving_yaml
from portal.services import Services
from portal.settings import Settings
from portal.stacks import jobs
from portal.stacks.worker import run_once
from store.models import AuditEvent, ServingRecord
from tests.portal.stackops_support import commits, deploy, git, workspaces

REPO = "/repos/acme/fleet"
HEADERS = {
    "Authorization": "Bearer ghs_test_token",
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}
SECRET = "hook-secret"


@pytest.fixture
def settings(demo_repo_settings: Settings, httpserver: HTTPServer) -> Settings:
    return demo_repo_settings.model_copy(
        update={
            "stack_backend": "pull-request",
            "github_api_url": httpserver.url_for("/").rstrip("/"),
            "github_repository": "acme/fleet",
            "github_token": SecretStr("ghs_test_token"),
            "github_webhook_secret": SecretStr(SECRET),
        }
    )


def _expect_flow(httpserver: HTTPServer, number: int = 42) -> None:
    """The six calls of a pull request, answered without checking bodies (for the sync tests)."""
    httpserver.expect_ordered_request(f"{REPO}/git/ref/heads/main", "GET").respond_with_json(
        {"object": {"sha": "base-sha"}}
    )
    httpserver.expect_ordered_request(f"{REPO}/git/commits/base-sha", "GET").respond_with_json(
        {"tree": {"sha": "base-tree"}}
    )
    httpserver.expect_ordered_request(f"{REPO}/git/trees", "POST").respond_with_json({"sha": "t"}, status=201)
    httpserver.expect_ordered_request(f"{REPO}/git/commits", "POST").respond_with_json(
        {"sha": "c"}, status=201
    )
    httpserver.expect_ordered_request(f"{REPO}/git/refs", "POST").respond_with_json({"ref": "r"}, status=201)
    httpserver.expect_ordered_request(f"{REPO}/pulls", "POST").respond_with_json(
        {"number": number, "html_url": f"https://github.example/acme/fleet/pull/{number}"}, status=201
    )


def _proposed(client: TestClient, services: Services, httpserver: HTTPServer) -> dict[str, Any]:
    workspaces(client, "team-a")
    request = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
    _expect_flow(httpserver)
    assert run_once(services) == 1
    done: dict[str, Any] = client.get(request["links"]["request"]).json()
    assert done["status"] == "proposed", done
    return done


def _signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_job_becomes_one_pull_request_with_these_exact_calls(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    workspaces(client, "team-a", "demo")
    created = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
    deleted = client.delete("/api/workspaces/demo/servings/qwen3-8b-biren?confirm=qwen3-8b-biren").json()
    serving = {
        "name": "chat",
        "workspace": "team-a",
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 1}],
    }
    message = (
        "portal: 2 serving change(s) on stack demo\n\n"
        f"- #{created['id']} create chat (admin, workspace team-a)\n"
        f"- #{deleted['id']} delete qwen3-8b-biren (admin, workspace demo)\n\n"
        f"Modelfleet-Job: 1\nModelfleet-Requests: {created['id']}, {deleted['id']}"
    )
    pulls: list[dict[str, Any]] = []

    def open_pull(request: Request) -> Response:
        pulls.append(request.get_json())
        body = {"number": 42, "html_url": "https://github.example/acme/fleet/pull/42", "state": "open"}
        return Response(json.dumps(body), status=201, content_type="application/json")

    expect = httpserver.expect_ordered_request
    expect(f"{REPO}/git/ref/heads/main", "GET", headers=HEADERS).respond_with_json(
        {"ref": "refs/heads/main", "object": {"type": "commit", "sha": "base-sha"}}
    )
    expect(f"{REPO}/git/commits/base-sha", "GET", headers=HEADERS).respond_with_json(
        {"sha": "base-sha", "tree": {"sha": "base-tree"}}
    )
    expect(
        f"{REPO}/git/trees",
        "POST",
        headers=HEADERS,
        json={
            "base_tree": "base-tree",
            "tree": [
                {
                    "path": "stacks/demo/servings/chat.yaml",
                    "mode": "100644",
                    "type": "blob",
                    "content": serving_yaml(serving),
                },
                {
                    "path": "stacks/demo/servings/qwen3-8b-biren.yaml",
                    "mode": "100644",
                    "type": "blob",
                    "sha": None,
                },
            ],
        },
    ).respond_with_json({"sha": "new-tree"}, status=201)
    expect(
        f"{REPO}/git/commits",
        "POST",
        headers=HEADERS,
        json={"message": message, "tree": "new-tree", "parents": ["base-sha"]},
    ).respond_with_json({"sha": "new-commit"}, status=201)
    expect(
        f"{REPO}/git/refs",
        "POST",
        headers=HEADERS,
        json={"ref": "refs/heads/modelfleet/job-1", "sha": "new-commit"},
    ).respond_with_json({"ref": "refs/heads/modelfleet/job-1"}, status=201)
    expect(f"{REPO}/pulls", "POST", headers=HEADERS).respond_with_handler(open_pull)

    before = commits(services)
    assert run_once(services) == 1
    httpserver.check_assertions()
    assert not httpserver.ordered_handlers
    assert commits(services) == before  # nothing is committed locally: the merge does that

    [pull] = pulls
    assert {k: v for k, v in pull.items() if k != "body"} == {
        "title": "Modelfleet: 2 serving changes on demo",
        "head": "modelfleet/job-1",
        "base": "main",
        "draft": False,
        "maintainer_can_modify": True,
    }
    assert f"- #{created['id']} create chat (admin, workspace team-a)" in pull["body"]
    assert "```diff" in pull["body"]
    assert "+++ b/cn-east/Deployment/modelfleet/chat-east-h100" in pull["body"]
    assert "--- a/cn-north/Deployment/modelfleet/qwen3-8b-biren-north-br166" in pull["body"]

    job = client.get("/api/jobs/1").json()
    assert job["status"] == "succeeded"
    assert job["result"]["pull_request"] == {
        "number": 42,
        "url": "https://github.example/acme/fleet/pull/42",
        "branch": "modelfleet/job-1",
        "state": "open",
    }
    assert {r["status"] for r in job["requests"]} == {"proposed"}
    status = client.get("/api/workspaces/team-a/servings/chat").json()
    assert status["state"] == "deploying"
    assert status["latest_job"]["pull_request"]["url"].endswith("/pull/42")


def test_sync_records_a_merge_as_applied(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    request = _proposed(client, services, httpserver)
    httpserver.expect_ordered_request(f"{REPO}/pulls/42", "GET", headers=HEADERS).respond_with_json(
        {"number": 42, "state": "open", "merged": False, "merged_at": None}
    )
    assert client.post("/api/jobs/1:sync").json()["result"]["pull_request"]["state"] == "open"
    httpserver.expect_ordered_request(f"{REPO}/pulls/42", "GET", headers=HEADERS).respond_with_json(
        {"number": 42, "state": "closed", "merged": True, "merged_at": "2026-11-21T10:00:00Z"}
    )
    synced = client.post("/api/jobs/1:sync")
    assert synced.status_code == 200
    assert synced.json()["result"]["pull_request"]["state"] == "merged"
    assert client.get(request["links"]["request"]).json()["status"] == "applied"
    with services.sessions() as session:
        record = session.scalar(select(ServingRecord).where(ServingRecord.name == "chat"))
        assert record is not None and record.created_by == "admin"
        results = [
            (a.result, a.detail)
            for a in session.scalars(select(AuditEvent).where(AuditEvent.action == "ApplyStackUpdate"))
        ]
    assert results[-1] == ("success", "pull request #42 merged")


def test_a_job_run_again_after_a_crash_reuses_the_pull_request_it_opened(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    workspaces(client, "team-a")
    request = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
    assert jobs.claim(services, "dead-worker") == 1  # ...which opened #42 and died before recording it
    assert jobs.recover(services, stale_after=None) == [1]
    httpserver.expect_ordered_request(
        f"{REPO}/pulls",
        "GET",
        headers=HEADERS,
        query_string={"head": "acme:modelfleet/job-1", "state": "all"},
    ).respond_with_json([{"number": 42, "html_url": "https://github.example/acme/fleet/pull/42"}])
    assert run_once(services) == 1
    httpserver.check_assertions()
    assert not httpserver.ordered_handlers  # no second branch, commit or pull request
    job = client.get("/api/jobs/1").json()
    assert (job["status"], job["attempts"], job["result"]["pull_request"]["number"]) == ("succeeded", 2, 42)
    assert client.get(request["links"]["request"]).json()["status"] == "proposed"


def test_webhook_checks_the_signature_and_records_a_close_as_rejected(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    request = _proposed(client, services, httpserver)
    payload = json.dumps(
        {
            "action": "closed",
            "pull_request": {"number": 42, "merged": False},
            "repository": {"full_name": "acme/fleet"},
        }
    ).encode()
    url = "/api/webhooks/github"
    headers = {"X-GitHub-Event": "pull_request", "Content-Type": "application/json", "Authorization": ""}
    assert client.post(url, content=payload, headers=headers).status_code == 403
    forged = {**headers, "X-Hub-Signature-256": _signed(payload, "not-the-secret")}
    assert client.post(url, content=payload, headers=forged).status_code == 403
    assert client.get(request["links"]["request"]).json()["status"] == "proposed"
    ping = b'{"zen": "Keep it logically awesome."}'
    pong = client.post(
        url, content=ping, headers={**headers, "X-GitHub-Event": "ping", "X-Hub-Signature-256": _signed(ping)}
    )
    assert pong.json() == {"status": "pong"}
    signed = {**headers, "X-Hub-Signature-256": _signed(payload)}
    answer = client.post(url, content=payload, headers=signed)
    assert answer.status_code == 200 and answer.json() == {"status": "closed", "jobs": [1]}
    rejected = client.get(request["links"]["request"]).json()
    assert rejected["status"] == "rejected" and "#42" in rejected["error"]
    assert client.post(url, content=payload, headers=signed).json() == {"status": "closed", "jobs": []}


def test_webhook_is_refused_without_a_configured_secret(client: TestClient, services: Services) -> None:
    services.settings.github_webhook_secret = None
    body = b'{"action": "closed"}'
    answer = client.post(
        "/api/webhooks/github",
        content=body,
        headers={"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": _signed(body), "Authorization": ""},
    )
    assert (
        answer.status_code == 403 and "MODELFLEET_GITHUB_WEBHOOK_SECRET" in answer.json()["error"]["message"]
    )


ERRORS = [
    (
        0,
        401,
        {"message": "Bad credentials"},
        "answered 401: the token was refused; check MODELFLEET_GITHUB_TOKEN",
    ),
    (0, 404, {"message": "Not Found"}, "answered 404: not found, or the token cannot see it"),
    (4, 409, {"message": "Reference update failed"}, "answered 409: conflict"),
    (
        5,
        422,
        {
            "message": "Validation Failed",
            "errors": [{"message": "A pull request already exists for acme:x."}],
        },
        "answered 422: GitHub refused the request (Validation Failed; A pull request already exists",
    ),
]


def test_api_errors_fail_the_job_with_a_clear_message(
    client: TestClient, services: Services, httpserver: HTTPServer
) -> None:
    workspaces(client, "team-a")
    calls = [
        (f"{REPO}/git/ref/heads/main", "GET", {"object": {"sha": "base-sha"}}),
        (f"{REPO}/git/commits/base-sha", "GET", {"tree": {"sha": "base-tree"}}),
        (f"{REPO}/git/trees", "POST", {"sha": "t"}),
        (f"{REPO}/git/commits", "POST", {"sha": "c"}),
        (f"{REPO}/git/refs", "POST", {"ref": "r"}),
        (f"{REPO}/pulls", "POST", {"number": 1}),
    ]
    for case, (failing, status, said, expected) in enumerate(ERRORS):
        request = client.post("/api/workspaces/team-a/servings", json=deploy(f"chat-{case}")).json()
        for index, (uri, method, body) in enumerate(calls[: failing + 1]):
            handler = httpserver.expect_ordered_request(uri, method)
            if index == failing:
                handler.respond_with_json(said, status=status)
            else:
                handler.respond_with_json(body)
        assert run_once(services) == 1
        assert not httpserver.ordered_handlers
        failed = client.get(request["links"]["request"]).json()
        job = client.get(f"/api/jobs/{failed['job_id']}").json()
        assert job["status"] == "failed" and expected in job["error"], (status, job["error"])
        assert failed["status"] == "failed" and expected in failed["error"]


def test_a_merge_fast_forwards_the_local_repository_from_origin(
    client: TestClient, services: Services, httpserver: HTTPServer, tmp_path: Path
) -> None:
    _proposed(client, services, httpserver)
    origin, elsewhere = tmp_path / "origin.git", tmp_path / "elsewhere"
    root = str(services.repository.root)
    subprocess.run(["git", "clone", "-q", "--bare", root, str(origin)], check=True)
    git(services, "remote", "add", "origin", str(origin))
    subprocess.run(["git", "clone", "-q", str(origin), str(elsewhere)], check=True)
    merged = {
        "name": "chat",
        "workspace": "team-a",
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 1}],
    }
    (elsewhere / "stacks/demo/servings/chat.yaml").write_text(serving_yaml(merged))
    ident = ["-c", "user.name=GitHub", "-c", "user.email=noreply@github.example"]
    subprocess.run(["git", "-C", str(elsewhere), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(elsewhere), *ident, "commit", "-qm", "Merge pull request #42"], check=True
    )
    subprocess.run(["git", "-C", str(elsewhere), "push", "-q", "origin", "HEAD:main"], check=True)
    payload = json.dumps(
        {
            "action": "closed",
            "pull_request": {"number": 42, "merged": True},
            "repository": {"full_name": "acme/fleet"},
        }
    ).encode()
    answer = client.post(
        "/api/webhooks/github",
        content=payload,
        headers={
            "X-GitHub-Event": "pull_request",
            "X-Hub-Signature-256": _signed(payload),
            "Authorization": "",
        },
    )
    assert answer.json() == {"status": "merged", "jobs": [1]}
    assert git(services, "log", "-1", "--format=%s") == "Merge pull request #42"
    status = client.get("/api/workspaces/team-a/servings/chat").json()
    assert (status["state"], status["in_stack"], status["latest_request"]["status"]) == (
        "committed",  # merged; no region has reported it running yet
        True,
        "applied",
    )
