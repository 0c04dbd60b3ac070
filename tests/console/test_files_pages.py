"""The console's model-files pages: the ops page lists requests with each region's state and offers
the request form; the plaza model page shows the model's files per region; both in English and
Chinese."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from portal.files.demo import MODEL_ID
from portal.settings import Settings


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    """The console's demo setup, with the portal's URL as clusters reach it: a cluster region's copy
    is a Job that reports there (without it, the request is refused with the setting's name)."""
    return demo_repo_settings.model_copy(
        update={"demo": True, "files_report_url": "https://portal.example.com"}
    )


def test_the_ops_page_requests_and_lists_model_files(browser_client: TestClient, admin_token: str) -> None:
    empty = browser_client.get("/console/ops/files")
    assert empty.status_code == 200 and 'data-testid="files-form"' in empty.text
    assert f'value="{MODEL_ID}"' in empty.text and "No model files requested" in empty.text
    auth = {"Authorization": f"Bearer {admin_token}"}
    made = browser_client.post(
        "/api/model-files", json={"model": MODEL_ID, "regions": ["cn-east"]}, headers=auth
    )
    assert made.status_code == 202, made.text
    page = browser_client.get("/console/ops/files")
    assert f'data-files="{made.json()["id"]}" data-region="cn-east"' in page.text
    assert "by a Job in the cluster" in page.text and 'class="state state-queued"' in page.text
    assert '<meta http-equiv="refresh"' in page.text  # follows the copy while it is queued or running
    zh = browser_client.get("/console/ops/files", headers={"Accept-Language": "zh-CN"})
    assert "模型文件" in zh.text and "由集群中的 Job 下载" in zh.text


def test_the_plaza_page_shows_files_per_region(browser_client: TestClient, admin_token: str) -> None:
    before = browser_client.get(f"/console/plaza/{MODEL_ID}")
    assert (
        'data-testid="files-availability"' in before.text and "Not downloaded into any region" in before.text
    )
    auth = {"Authorization": f"Bearer {admin_token}"}
    browser_client.post("/api/model-files", json={"model": MODEL_ID, "regions": ["cn-south"]}, headers=auth)
    after = browser_client.get(f"/console/plaza/{MODEL_ID}")
    assert "<strong>cn-south</strong>" in after.text and "state-queued" in after.text
