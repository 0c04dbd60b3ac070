"""The pulumi backend: commit, then preview and `up` through the Automation API.

The Automation API drives the Pulumi CLI; nothing here stands in for it. Where `pulumi` is on PATH
the first test runs a real update of a Pulumi YAML project on a local file backend; where it is not
(this project's build machines), the second checks what operators are told.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from portal.services import Services
from portal.settings import Settings
from portal.stacks.worker import run_once
from tests.portal.stackops_support import committed_file, deploy, git, parse_sse, workspaces

PULUMI = shutil.which("pulumi")
PROGRAM = "name: modelfleet-portal-test\nruntime: yaml\noutputs:\n  ready: yes\n"


@pytest.fixture
def settings(demo_repo_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    work_dir, state = tmp_path / "program", tmp_path / "state"
    work_dir.mkdir()
    state.mkdir()
    (work_dir / "Pulumi.yaml").write_text(PROGRAM)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "portal-test")
    return demo_repo_settings.model_copy(
        update={
            "stack_backend": "pulumi",
            "pulumi_work_dir": work_dir,
            "pulumi_backend_url": f"file://{state}",
        }
    )


@pytest.mark.skipif(
    PULUMI is None,
    reason="the Pulumi CLI is not on PATH (it is not installable on this machine); this test runs a real "
    "`pulumi preview` and `pulumi up` wherever it is",
)
def test_a_job_commits_then_previews_and_updates_the_stack(
    client: TestClient, services: Services, settings: Settings
) -> None:
    import pulumi.automation as auto

    assert settings.pulumi_work_dir is not None and settings.pulumi_backend_url is not None
    auto.create_stack(
        "demo",
        work_dir=str(settings.pulumi_work_dir),
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(settings.pulumi_work_dir),
            env_vars={"PULUMI_BACKEND_URL": settings.pulumi_backend_url},
        ),
    )
    workspaces(client, "team-a")
    request = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
    assert run_once(services) == 1
    done = client.get(request["links"]["request"]).json()
    job = client.get(f"/api/jobs/{done['job_id']}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["commit"] == git(services, "rev-parse", "HEAD")
    assert job["result"]["up"]["result"] == "succeeded"
    assert done["status"] == "applied"
    kinds = {e["event"] for e in parse_sse(client.get(f"/api/jobs/{job['id']}/events").text)}
    assert {"preview", "up", "status", "end"} <= kinds


@pytest.mark.skipif(
    PULUMI is not None, reason="checks the message operators get where the Pulumi CLI is missing"
)
def test_without_the_cli_the_job_fails_clearly_and_keeps_the_commit(
    client: TestClient, services: Services
) -> None:
    workspaces(client, "team-a")
    request = client.post("/api/workspaces/team-a/servings", json=deploy("chat")).json()
    assert run_once(services) == 1
    failed = client.get(request["links"]["request"]).json()
    job = client.get(f"/api/jobs/{failed['job_id']}").json()
    head = git(services, "rev-parse", "HEAD")
    assert job["status"] == "failed"
    assert "needs the Pulumi CLI on PATH" in job["error"] and f"committed as {head[:12]}" in job["error"]
    assert job["result"]["commit"] == head
    assert failed["status"] == "failed" and "not applied" in failed["error"]
    assert committed_file(services, "demo", "chat") is not None
