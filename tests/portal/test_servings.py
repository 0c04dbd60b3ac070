"""Servings: deploy, scale, stop/start, delete through the API; requests become commits in the
stack repository (git backend), validated, coalesced, idempotent, audited and tenant-scoped."""

from __future__ import annotations

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from portal.repository import serving_yaml
from portal.services import Services
from portal.settings import Settings
from portal.stacks.worker import run_once
from store.models import AuditEvent, ServingRecord
from tests.portal.helpers import as_user, make_member
from tests.portal.stackops_support import commits, committed_file, deploy, git, workspaces


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings


def _audit(services: Services, action: str) -> list[AuditEvent]:
    with services.sessions() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
        )


def test_bad_requests_name_their_fields(client: TestClient) -> None:
    workspaces(client, "team-a")
    bad_name = client.post("/api/workspaces/team-a/servings", json=deploy("9lives"))
    assert bad_name.status_code == 422
    assert [f["field"] for f in bad_name.json()["error"]["fields"]] == ["name"]
    refused = client.post(
        "/api/workspaces/team-a/servings",
        json=deploy("chat", placements=[{"region": "cn-east", "pool": "east-nope"}]),
    )
    assert refused.status_code == 422, refused.text
    fields = refused.json()["error"]["fields"]
    assert {"field": "placements[0].pool", "message": "unknown pool 'east-nope'"} in fields
    # The policy pack's workspace rule: workspaces other than demo may only use cn-east.
    policy = client.post(
        "/api/workspaces/team-a/servings",
        json=deploy("chat", placements=[{"region": "cn-north", "pool": "north-c500"}]),
    )
    assert policy.status_code == 422
    assert any("cn-north" in f["message"] for f in policy.json()["error"]["fields"])
    unknown_stack = client.post("/api/workspaces/team-a/servings", json=deploy("chat", stack="prod"))
    assert unknown_stack.status_code == 422
    assert unknown_stack.json()["error"]["fields"][0]["field"] == "stack"
    assert client.get("/api/workspaces/team-a/servings").json()["total"] == 0


def test_create_is_queued_then_committed_with_its_job_trailer(client: TestClient, services: Services) -> None:
    workspaces(client, "team-a")
    before = commits(services)
    created = client.post("/api/workspaces/team-a/servings", json=deploy("chat", replicas=2))
    assert created.status_code == 202, created.text
    request = created.json()
    assert (request["status"], request["job_id"], request["action"]) == ("queued", None, "create")
    assert {c["rule"] for c in request["checks"]} >= {"image-digest"}  # advice kept, not blocking
    listed = client.get("/api/workspaces/team-a/servings").json()["items"]
    assert [(s["name"], s["state"], s["in_stack"]) for s in listed] == [("chat", "deploying", False)]
    assert commits(services) == before  # nothing written in the request

    assert run_once(services) == 1
    done = client.get(request["links"]["request"]).json()
    assert done["status"] == "applied" and done["job_id"] is not None
    job = client.get(f"/api/jobs/{done['job_id']}").json()
    assert job["status"] == "succeeded"
    assert commits(services) == before + 1
    assert job["result"]["commit"] == git(services, "rev-parse", "HEAD")
    expected = {
        "name": "chat",
        "workspace": "team-a",
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 2}],
    }
    assert committed_file(services, "demo", "chat") == serving_yaml(expected)
    trailer = git(services, "log", "-1", "--format=%(trailers:key=Modelfleet-Job,valueonly)")
    assert trailer == str(done["job_id"])
    assert "#1 create chat (admin, workspace team-a)" in git(services, "log", "-1", "--format=%B")

    serving = client.get("/api/workspaces/team-a/servings/chat").json()
    assert serving["state"] == "committed" and serving["in_stack"] is True  # nothing observed yet
    assert serving["latest_job"]["commit"] == job["result"]["commit"]
    assert [(p["replicas"], p["committed_replicas"]) for p in serving["placements"]] == [(2, 2)]
    assert [a.resource_id for a in _audit(services, "CreateWSModelServing")] == ["demo/chat"]
    applied = _audit(services, "ApplyStackUpdate")
    assert [(a.result, a.resource_id) for a in applied] == [("success", str(done["job_id"]))]


def test_name_taken_in_the_stack_or_by_a_pending_request_is_a_conflict(client: TestClient) -> None:
    workspaces(client, "team-a", "team-b")
    assert client.post("/api/workspaces/team-a/servings", json=deploy("qwen25-7b")).status_code == 409
    assert client.post("/api/workspaces/team-a/servings", json=deploy("chat")).status_code == 202
    again = client.post("/api/workspaces/team-b/servings", json=deploy("chat"))
    assert again.status_code == 409 and "chat" in again.json()["error"]["message"]


def test_a_public_name_an_offering_visible_to_the_workspace_has_is_refused_on_its_field(
    client: TestClient,
) -> None:
    workspaces(client, "team-a", "team-b")
    offering = {"kind": "external", "base_url": "https://api.example.com/v1", "upstream_model": "m"}
    made = client.post(
        "/api/maas-models",
        json={
            "public_id": "house-chat",
            "targets": [offering],
            "visibility": "specified",
            "workspaces": ["team-a"],
        },
    )
    assert made.status_code == 201, made.text
    body = deploy("chat", public_model_name="house-chat")
    checked = client.post("/api/workspaces/team-a/servings:preflight", json=body).json()
    assert checked["ok"] is False  # the preflight says what Deploy then does
    assert [c["subject"] for c in checked["checks"]] == ["servings[chat].public_model_name"]
    refused = client.post("/api/workspaces/team-a/servings", json=body)
    assert refused.status_code == 422, refused.text
    (field,) = refused.json()["error"]["fields"]
    assert field["field"] == "public_model_name"
    assert "'house-chat' is already the name of a model offered to your workspace" in field["message"]
    # Without a public model name the serving's name is the public one: refused on `name`.
    named = client.post("/api/workspaces/team-a/servings", json=deploy("house-chat"))
    assert named.status_code == 422 and named.json()["error"]["fields"][0]["field"] == "name"
    # Not offered to team-b: no clash there.
    assert (
        client.post(
            "/api/workspaces/team-b/servings", json=deploy("chat", public_model_name="house-chat")
        ).status_code
        == 202
    )


def test_queued_requests_coalesce_into_one_job_and_one_commit(client: TestClient, services: Services) -> None:
    workspaces(client, "team-a", "team-b", "demo")
    before = commits(services)
    ids = [
        client.post("/api/workspaces/team-a/servings", json=deploy("chat-a")).json()["id"],
        client.post("/api/workspaces/team-b/servings", json=deploy("chat-b")).json()["id"],
        client.patch("/api/workspaces/demo/servings/qwen25-7b/replicas", json={"replicas": 3}).json()["id"],
    ]
    assert run_once(services) == 1
    jobs = {
        client.get(f"/api/workspaces/{ws}/stack-requests/{i}").json()["job_id"]
        for ws, i in zip(("team-a", "team-b", "demo"), ids, strict=True)
    }
    assert len(jobs) == 1 and None not in jobs
    assert commits(services) == before + 1
    changed = git(services, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert sorted(changed) == [f"stacks/demo/servings/{n}.yaml" for n in ("chat-a", "chat-b", "qwen25-7b")]
    scaled = yaml.safe_load(committed_file(services, "demo", "qwen25-7b") or "")
    assert [p["replicas"] for p in scaled["placements"]] == [3, 3]
    assert scaled["placements"][0]["weight"] == 75  # the rest of the file is kept
    job = client.get(f"/api/jobs/{jobs.pop()}").json()
    assert sorted(r["id"] for r in job["requests"]) == sorted(ids)


def test_a_request_that_breaks_the_stack_fails_alone(client: TestClient, services: Services) -> None:
    """Each fits the H100 pool on its own (preflight passes); together they do not."""
    workspaces(client, "team-a", "team-b")
    big = {"model": "qwen3-32b", "parallelism": {"tensor": 8}}
    first = client.post("/api/workspaces/team-a/servings", json=deploy("big-a", **big)).json()
    second = client.post("/api/workspaces/team-b/servings", json=deploy("big-b", **big)).json()
    before = commits(services)
    assert run_once(services) == 1
    a = client.get(first["links"]["request"]).json()
    b = client.get(second["links"]["request"]).json()
    assert a["status"] == "applied"
    assert b["status"] == "failed" and b["job_id"] == a["job_id"]
    assert b["fields"][0]["field"] == "pools[east-h100]" and "over by" in b["fields"][0]["message"]
    assert commits(services) == before + 1
    assert committed_file(services, "demo", "big-a") is not None
    assert committed_file(services, "demo", "big-b") is None
    job = client.get(f"/api/jobs/{a['job_id']}").json()
    assert job["status"] == "succeeded"


def test_idempotency_key_replays_the_same_request_and_refuses_another_body(
    client: TestClient, services: Services
) -> None:
    workspaces(client, "team-a")
    headers = {"Idempotency-Key": "deploy-chat-1"}
    first = client.post("/api/workspaces/team-a/servings", json=deploy("chat"), headers=headers)
    assert first.status_code == 202
    replay = client.post("/api/workspaces/team-a/servings", json=deploy("chat"), headers=headers)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    other = client.post("/api/workspaces/team-a/servings", json=deploy("chat", replicas=3), headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
    run_once(services)
    later = client.post("/api/workspaces/team-a/servings", json=deploy("chat"), headers=headers)
    assert later.status_code == 200 and later.json()["status"] == "applied"  # not a 409 "exists"
    scale_headers = {"Idempotency-Key": "scale-1"}
    url = "/api/workspaces/team-a/servings/chat/replicas"
    assert client.patch(url, json={"replicas": 2}, headers=scale_headers).status_code == 202
    assert client.patch(url, json={"replicas": 2}, headers=scale_headers).status_code == 200
    assert client.patch(url, json={"replicas": 4}, headers=scale_headers).status_code == 409
    assert len(_audit(services, "CreateWSModelServing")) == 1
    assert len(_audit(services, "UpdateWSModelServingReplicas")) == 1


def test_scale_stop_start_and_delete(client: TestClient, services: Services) -> None:
    workspaces(client, "demo")
    url = "/api/workspaces/demo/servings/qwen25-7b"

    def replicas() -> list[int]:
        data = yaml.safe_load(committed_file(services, "demo", "qwen25-7b") or "")
        return [p["replicas"] for p in data["placements"]]

    assert replicas() == [2, 1]
    wrong = client.patch(f"{url}/replicas", json={"replicas": [1, 2, 3]})
    assert wrong.status_code == 422 and wrong.json()["error"]["fields"][0]["field"] == "replicas"
    assert client.patch(f"{url}/replicas", json={"replicas": [3, 2]}).status_code == 202
    run_once(services)
    assert replicas() == [3, 2]

    assert client.post(f"{url}/actions", json={"action": "start"}).status_code == 409  # not stopped
    stopped = client.post(f"{url}/actions", json={"action": "stop"})
    assert stopped.status_code == 202
    assert client.get(url).json()["stopped"] is True  # pending, already what the user sees
    run_once(services)
    assert replicas() == [0, 0]
    status = client.get(url).json()
    assert status["state"] == "stopped" and status["stopped_replicas"] == [3, 2]
    with services.sessions() as session:
        record = session.scalar(select(ServingRecord).where(ServingRecord.name == "qwen25-7b"))
        assert record is not None and record.stopped_replicas == [3, 2]
    assert client.post(f"{url}/actions", json={"action": "stop"}).status_code == 409
    assert client.post(f"{url}/actions", json={"action": "start"}).status_code == 202
    run_once(services)
    assert replicas() == [3, 2]
    assert client.get(url).json()["stopped"] is False

    refused = client.delete(url)
    assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "confirm"
    typo = client.request("DELETE", url, json={"confirm": "qwen25-7"})
    assert typo.status_code == 422 and typo.json()["error"]["fields"][0]["field"] == "confirm"
    deleted = client.request("DELETE", url, json={"confirm": "qwen25-7b"})
    assert deleted.status_code == 202, deleted.text
    assert client.get(url).json()["state"] == "deleting"
    assert client.patch(f"{url}/replicas", json={"replicas": 1}).status_code == 409
    run_once(services)
    assert committed_file(services, "demo", "qwen25-7b") is None
    assert client.get(url).json()["state"] == "deleted"
    assert client.delete(f"{url}?confirm=qwen25-7b").status_code == 404
    actions = [
        a.action
        for a in _audit(services, "UpdateWSModelServingReplicas")
        + _audit(services, "DoModelWSServingAction")
        + _audit(services, "DeleteWSModelServing")
    ]
    assert sorted(actions) == sorted(
        [
            "UpdateWSModelServingReplicas",
            "DoModelWSServingAction",
            "DoModelWSServingAction",
            "DeleteWSModelServing",
        ]
    )


def test_members_see_only_their_workspace_servings_requests_and_jobs(
    client: TestClient, services: Services
) -> None:
    workspaces(client, "team-a", "team-b")
    theirs = client.post("/api/workspaces/team-b/servings", json=deploy("chat-b")).json()
    mine = client.post("/api/workspaces/team-a/servings", json=deploy("chat-a")).json()
    run_once(services)
    job_id = client.get(theirs["links"]["request"]).json()["job_id"]
    alice = make_member(client, "alice", "team-a", "member")
    with as_user(client, alice):
        assert [s["name"] for s in client.get("/api/workspaces/team-a/servings").json()["items"]] == [
            "chat-a"
        ]
        assert client.get("/api/workspaces/team-b/servings").status_code == 404
        assert client.get("/api/workspaces/team-a/servings/chat-b").status_code == 404
        assert client.get("/api/workspaces/team-b/servings/chat-b").status_code == 404
        assert (
            client.patch("/api/workspaces/team-a/servings/chat-b/replicas", json={"replicas": 2}).status_code
            == 404
        )
        assert client.delete("/api/workspaces/team-a/servings/chat-b?confirm=chat-b").status_code == 404
        assert client.get(f"/api/workspaces/team-a/stack-requests/{theirs['id']}").status_code == 404
        assert client.get(f"/api/workspaces/team-b/stack-requests/{theirs['id']}").status_code == 404
        # The job carried both workspaces' requests: alice sees it, with her request only.
        job = client.get(f"/api/jobs/{job_id}").json()
        assert [r["id"] for r in job["requests"]] == [mine["id"]]
        assert (
            client.post("/api/workspaces/team-a/servings/chat-a/actions", json={"action": "stop"}).status_code
            == 202
        )
        run_once(services)
        own_job = client.get("/api/workspaces/team-a/stack-requests?serving=chat-a&status=applied").json()[
            "items"
        ][0]["job_id"]
    bob = make_member(client, "bob", "team-b", "member")
    with as_user(client, bob):
        assert client.get(f"/api/jobs/{own_job}").status_code == 404
        assert client.get(f"/api/jobs/{own_job}/events").status_code == 404
        assert [j["id"] for j in client.get("/api/jobs").json()["items"]] == [job_id]
