"""Stack jobs: one running job per stack, crash recovery without double commits, the worker thread,
and progress as server-sent events."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from portal.app import create_app
from portal.services import Services
from portal.settings import Settings
from portal.stacks import jobs
from portal.stacks.backends import JobContext
from portal.stacks.backends.git import GitBackend
from portal.stacks.worker import run_once
from store.db import transaction, utcnow
from store.models import StackJob, StackRequest
from tests.portal.helpers import as_user, make_member
from tests.portal.stackops_support import commits, committed_file, deploy, git, parse_sse, workspaces


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings


def _job(services: Services, job_id: int) -> StackJob:
    with services.sessions() as session:
        job = session.get(StackJob, job_id)
        assert job is not None
        return job


def _statuses(services: Services) -> list[tuple[str, int | None]]:
    with services.sessions() as session:
        return [(r.status, r.job_id) for r in session.scalars(select(StackRequest).order_by(StackRequest.id))]


def test_one_running_job_per_stack_and_later_requests_wait_for_the_next(
    client: TestClient, services: Services
) -> None:
    workspaces(client, "team-a")
    client.post("/api/workspaces/team-a/servings", json=deploy("chat-1"))
    first = jobs.claim(services, "worker-a")
    assert first is not None
    client.post("/api/workspaces/team-a/servings", json=deploy("chat-2"))
    # The stack is busy: another worker gets nothing, even though a request waits.
    assert jobs.claim(services, "worker-b") is None
    with pytest.raises(IntegrityError), transaction(services.sessions) as session:
        session.add(StackJob(stack="demo", backend="git", status="running", result={}))
    jobs.execute(services, first, "worker-a")
    second = jobs.claim(services, "worker-b")
    assert second is not None and second != first
    jobs.execute(services, second, "worker-b")
    assert _statuses(services) == [("applied", first), ("applied", second)]


def test_a_job_that_committed_before_a_crash_is_not_committed_twice(
    client: TestClient, services: Services
) -> None:
    workspaces(client, "team-a")
    request = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
    before = commits(services)
    job_id = jobs.claim(services, "dead-worker")
    assert job_id is not None
    # The worker commits, then dies before it can record anything in the database.
    with services.sessions() as session:
        views = jobs.request_views(session, job_id)
    GitBackend().apply(JobContext(services, job_id, "demo", 1, views))
    assert commits(services) == before + 1
    assert _job(services, job_id).status == "running"

    assert jobs.recover(services, stale_after=None) == [job_id]
    assert _job(services, job_id).status == "queued"
    assert run_once(services) == 1
    job = _job(services, job_id)
    assert (job.status, job.attempts, job.result["recovered"]) == ("succeeded", 2, True)
    assert commits(services) == before + 1
    assert (
        git(services, "log", "--format=%(trailers:key=Modelfleet-Job,valueonly)").split().count(str(job_id))
        == 1
    )
    assert client.get(request["links"]["request"]).json()["status"] == "applied"


def test_a_job_that_died_before_committing_runs_again_and_commits_once(
    client: TestClient, services: Services
) -> None:
    workspaces(client, "team-a")
    client.post("/api/workspaces/team-a/servings", json=deploy("chat"))
    before = commits(services)
    job_id = jobs.claim(services, "dead-worker")
    assert job_id is not None
    # Half a change on disk: the file was written, the commit never happened.
    path = services.repository.serving_file("demo", "chat")
    path.write_text("name: chat\nbroken: [\n")
    # A live worker's job is left alone; one whose heartbeat stopped is taken back.
    assert jobs.recover(services) == []
    with transaction(services.sessions) as session:
        session.execute(
            update(StackJob)
            .where(StackJob.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(minutes=10))
        )
    assert jobs.recover(services) == [job_id]
    assert run_once(services) == 1
    assert _job(services, job_id).status == "succeeded"
    assert commits(services) == before + 1
    assert (committed_file(services, "demo", "chat") or "").count("name: chat") == 1
    assert git(services, "status", "--porcelain") == ""


def test_a_job_that_keeps_killing_its_worker_is_given_up(client: TestClient, services: Services) -> None:
    workspaces(client, "team-a")
    client.post("/api/workspaces/team-a/servings", json=deploy("chat"))
    job_id = jobs.claim(services, "w")
    with transaction(services.sessions) as session:
        session.execute(update(StackJob).where(StackJob.id == job_id).values(attempts=jobs.MAX_ATTEMPTS))
    assert jobs.recover(services, stale_after=None) == []
    job = _job(services, job_id or 0)
    assert job.status == "failed" and "gave up" in (job.error or "")
    assert _statuses(services)[0][0] == "failed"


def test_job_events_stream_as_server_sent_events(client: TestClient, services: Services) -> None:
    workspaces(client, "team-a", "team-b")
    mine = client.post("/api/workspaces/team-a/servings", json=deploy("chat-a")).json()
    client.post("/api/workspaces/team-b/servings", json=deploy("chat-b"))
    run_once(services)
    job_id = client.get(mine["links"]["request"]).json()["job_id"]
    response = client.get(f"/api/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and events[0]["data"]["data"]["status"] == "running"
    assert kinds[-2:] == ["status", "end"] and events[-2]["data"]["data"]["status"] == "succeeded"
    assert events[-1]["data"] == {"job_id": job_id, "status": "succeeded"}
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    requests = [e["data"]["data"] for e in events if e["event"] == "request"]
    assert {(r["serving"], r["status"], r["workspace"]) for r in requests} == {
        ("chat-a", "applied", "team-a"),
        ("chat-b", "applied", "team-b"),
    }
    assert any(e["event"] == "log" and "committed" in e["data"]["message"] for e in events)

    resumed = parse_sse(client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(ids[1])}).text)
    assert [int(e["id"]) for e in resumed if "id" in e] == ids[2:]

    alice = make_member(client, "alice", "team-a", "member")
    with as_user(client, alice):
        seen = parse_sse(client.get(f"/api/jobs/{job_id}/events").text)
        servings = {e["data"]["data"]["serving"] for e in seen if e["event"] == "request"}
        assert servings == {"chat-a"}  # team-b's request in the same job stays hidden


def test_the_worker_thread_started_with_the_app_applies_requests(settings: Settings) -> None:
    from portal.app import build_services

    live = build_services(settings.model_copy(update={"worker_enabled": True, "worker_poll_seconds": 0.05}))
    try:
        with TestClient(create_app(services=live)) as client:
            client.headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"  # type: ignore[union-attr]
            workspaces(client, "team-a")
            request = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
            deadline = time.monotonic() + 20
            status = request["status"]
            while status not in ("applied", "failed") and time.monotonic() < deadline:
                time.sleep(0.05)
                status = client.get(request["links"]["request"]).json()["status"]
            assert status == "applied"
            assert committed_file(live, "demo", "chat") is not None
    finally:
        live.engine.dispose()


def test_a_burst_settles_before_its_job_starts() -> None:
    settle = jobs.Settle(quiet=0.3, longest=2.0)
    now = utcnow()
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    assert not settle.ready(now, oldest=ago(1.0), newest=ago(0.1))  # requests still arriving
    assert settle.ready(now, oldest=ago(1.0), newest=ago(0.5))  # quiet for long enough
    assert settle.ready(now, oldest=ago(2.5), newest=ago(0.0))  # a steady stream still gets a job
    assert jobs.NOW.ready(now, oldest=now, newest=now)
