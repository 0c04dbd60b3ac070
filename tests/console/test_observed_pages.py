"""Service pages tell what is observed: a badge per state in both languages, the reason and the last
log lines of a failure, the replicas, Try it once ready; and the fixes a new user asked for (a deleted
service offers nothing to do, Start says how many replicas it restores, a console 404 page, "1 model")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from portal.observe.states import ReplicaObservation, State
from portal.services import Services
from portal.stacks.worker import run_once
from tests.portal.test_observed import observe, ready

PAGE = "/console/services/qwen25-7b"
CONSOLE = {"X-Modelfleet-Console": "1"}


def badge(html: str) -> str:
    found = re.search(
        r'<span id="service-badge"><span class="state state-(\w+)" data-state="(\w+)"[^>]*>([^<]+)<', html
    )
    assert found, html[:3000]
    return " ".join(found.groups())


@pytest.mark.parametrize(
    ("observations", "en", "zh"),
    [
        ({}, "committed committed committed", "committed committed 已提交"),
        (
            {"east-h100": [ReplicaObservation("east-0", State.PULLING)]},
            "starting pulling starting · pulling the image",
            "starting pulling 启动中 · 拉取镜像",
        ),
        (
            {"east-h100": [ready("east-0"), ready("east-1")], "north-c500": [ready("north-0")]},
            "ready ready ready",
            "ready ready 就绪",
        ),
        (
            {
                "east-h100": [ready("east-0"), ready("east-1")],
                "north-c500": [ReplicaObservation("north-0", State.LOADING)],
            },
            "degraded degraded degraded",
            "degraded degraded 降级",
        ),
        (
            {"east-h100": [ReplicaObservation("east-0", State.FAILED, reason="ErrImagePull")]},
            "failed failed failed",
            "failed failed 失败",
        ),
    ],
    ids=["committed", "starting", "ready", "degraded", "failed"],
)
def test_the_badge_is_the_observed_state_in_both_languages(
    browser_client: TestClient,
    services: Services,
    observations: dict[str, list[ReplicaObservation]],
    en: str,
    zh: str,
) -> None:
    for pool, replicas in observations.items():
        observe(services, pool, *replicas)
    assert badge(browser_client.get(f"{PAGE}?lang=en").text) == en
    assert badge(browser_client.get(f"{PAGE}?lang=zh").text) == zh
    listed = browser_client.get("/console/services?lang=en").text
    row = re.search(r'<tr data-serving="qwen25-7b">.*?</tr>', listed, re.S)
    assert row and f"state-{en.split()[0]}" in row.group(0)


def test_try_it_only_on_a_serving_service_and_it_opens_the_chat(
    browser_client: TestClient, services: Services
) -> None:
    assert 'data-testid="try-it"' not in browser_client.get(PAGE).text
    observe(services, "east-h100", ready("east-0"), ready("east-1"))
    observe(services, "north-c500", ready("north-0"))
    page = browser_client.get(PAGE).text
    link = re.search(r'href="([^"]+)" data-testid="try-it"', page)
    assert link and link.group(1) == "/console/chat?model=qwen2.5-7b-instruct"
    chat = browser_client.get(link.group(1)).text
    assert '<option value="qwen2.5-7b-instruct" selected>' in chat


def test_a_failure_shows_its_reason_and_last_log_lines(
    browser_client: TestClient, services: Services, tmp_path: Path
) -> None:
    log = tmp_path / "east-0.log"
    log.write_text("".join(f"loading shard {i}\n" for i in range(40)) + "CUDA error: out of memory\n")
    crash = ReplicaObservation(
        "east-0",
        State.FAILED,
        reason="OOMKilled",
        message="the engine ran out of memory",
        exit_code=137,
        details={"log": str(log)},
    )
    observe(services, "east-h100", crash, runtime="local")
    page = browser_client.get(PAGE).text
    failure = re.search(r'data-testid="failure">(.*?)</div>\s*\n\s*<table', page, re.S)
    assert failure, page
    assert "OOMKilled" in failure.group(1) and "the engine ran out of memory" in failure.group(1)
    lines = re.search(r'data-testid="failure-log">(.*?)</pre>', page, re.S)
    assert lines and lines.group(1).splitlines()[-1] == "CUDA error: out of memory"
    assert len(lines.group(1).splitlines()) == 20  # the last lines, not the whole log
    row = re.search(r'<tr data-replica="east-0">.*?</tr>', page, re.S)
    assert row and "137" in row.group(0) and 'data-show-log="east-0"' in row.group(0)
    assert 'data-status-stream="/api/workspaces/demo/servings/qwen25-7b/status:stream"' in page


def test_a_kubernetes_failure_says_its_logs_need_the_watcher(
    browser_client: TestClient, services: Services
) -> None:
    observe(services, "east-h100", ReplicaObservation("east-0", State.FAILED, reason="CrashLoopBackOff"))
    zh = browser_client.get(f"{PAGE}?lang=zh").text
    assert "查看 Kubernetes 区域的日志需要集群观测器" in zh  # the API's message, in the page's language


def test_stop_says_how_many_replicas_start_restores(browser_client: TestClient, services: Services) -> None:
    stopped = browser_client.post(
        "/api/workspaces/demo/servings/qwen25-7b/actions", json={"action": "stop"}, headers=CONSOLE
    )
    assert stopped.status_code == 202, stopped.text
    run_once(services)
    note = re.search(r'data-testid="stopped-note">([^<]+)<', browser_client.get(f"{PAGE}?lang=en").text)
    assert note and note.group(1) == "Stopped; Start restores 3 replicas."


def test_a_deleted_service_names_its_state_and_offers_no_actions(
    browser_client: TestClient, services: Services
) -> None:
    body = {
        "name": "gone",
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100"}],
    }
    assert browser_client.post("/api/workspaces/demo/servings", json=body, headers=CONSOLE).status_code == 202
    run_once(services)
    deleted = browser_client.delete("/api/workspaces/demo/servings/gone?confirm=gone", headers=CONSOLE)
    assert deleted.status_code == 202, deleted.text
    run_once(services)
    page = browser_client.get("/console/services/gone?lang=en").text
    assert badge(page).startswith("deleted deleted")
    assert 'data-testid="gone"' in page and "was deleted" in page
    for action in (
        'data-testid="stop"',
        'data-testid="start"',
        'data-testid="delete"',
        'data-testid="scale"',
        'data-testid="try-it"',
    ):
        assert action not in page


def test_unknown_console_paths_get_the_console_404_page(browser_client: TestClient) -> None:
    for path in ("/console/no-such-page", "/console/services/a/b/c"):
        response = browser_client.get(f"{path}?lang=zh")
        assert response.status_code == 404
        assert f"控制台中没有 {path} 这个页面" in response.text
        assert "<h1>未找到</h1>" in response.text and "返回控制台" in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_counts_say_one_model_and_two_models(browser_client: TestClient) -> None:
    one = browser_client.get("/console/plaza?q=deepseek-r1&lang=en").text
    total = int(re.search(r"(\d+) models?<", one).group(1))  # type: ignore[union-attr]
    assert (f"{total} model<" in one) == (total == 1) and (f"{total} models<" in one) == (total != 1)
    everything = browser_client.get("/console/plaza?lang=en").text
    assert re.search(r"\d\d+ models<", everything)


def test_regions_show_the_devices_in_use_next_to_the_plan(
    browser_client: TestClient, services: Services
) -> None:
    observe(services, "east-h100", ready("east-0"), ready("east-1"))
    regions = browser_client.get("/api/regions").json()["items"]
    held = next(p["in_use"] for r in regions for p in r["pools"] if p["name"] == "east-h100")
    assert held > 0
    page = browser_client.get("/console/ops/regions").text
    assert f'<td class="num" data-in-use>{held}</td>' in page
