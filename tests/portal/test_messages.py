"""API messages in the caller's language: templates with a Chinese translation each, validation in
words (never a regular expression), and the language taken from Accept-Language."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from portal.messages import PATTERNS, VALIDATION, catalog, language, msg, translate
from portal.settings import Settings
from tests.portal.stackops_support import workspaces

PORTAL = Path(__file__).resolve().parents[2] / "portal"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
PLACEHOLDER = re.compile(r"\{(\w+)(?:![rs])?\}")


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings


def templates_in_source() -> set[str]:
    found: set[str] = set()
    for path in PORTAL.rglob("*.py"):
        for literal in re.findall(r'msg\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', path.read_text(encoding="utf-8")):
            found.add("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', literal)))  # adjacent literals join
    return found


def test_every_message_template_has_chinese_with_the_same_values() -> None:
    used = templates_in_source()
    assert len(used) > 20  # the scan finds them
    zh = catalog()
    assert sorted(used - set(zh)) == []
    for template in used:
        assert set(PLACEHOLDER.findall(template)) == set(PLACEHOLDER.findall(zh[template])), template
        assert re.search(r"[\u4e00-\u9fff]", zh[template]) or template == "{field}: {message}", template


def test_a_message_reads_as_english_and_translates_by_template() -> None:
    m = msg("serving {name!r} is already stopped", name="chat")
    assert m == "serving 'chat' is already stopped"
    assert translate(m, "zh") == "服务 'chat' 已经停止"
    assert translate(m, "en") == m
    assert translate("unknown or expired token", "zh") == "令牌无效或已过期"  # fixed text: as it is
    assert translate("nothing like it", "zh") == "nothing like it"  # not in the catalog: English
    assert (language("zh-CN,en;q=0.5"), language("en-US"), language("fr"), language(None)) == (
        "zh",
        "en",
        "en",
        "en",
    )


def test_every_pattern_of_the_api_has_words(client: TestClient) -> None:
    patterns: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(client.get("/openapi.json").json())
    assert patterns and sorted(patterns - set(PATTERNS)) == []
    assert all(re.search(r"[\u4e00-\u9fff]", zh) for _, zh in [*PATTERNS.values(), *VALIDATION.values()])


def test_validation_errors_are_words_in_either_language(client: TestClient) -> None:
    bad = {"slug": "Not A Slug!", "name": "x"}
    en = client.post("/api/workspaces", json=bad).json()["error"]
    assert en["fields"][0]["field"] == "slug"
    assert "lowercase letters" in en["fields"][0]["message"] and "[a-z" not in en["message"]
    zh = client.post("/api/workspaces", json=bad, headers=ZH).json()["error"]
    assert zh["fields"][0]["message"].startswith("请使用") and "^" not in zh["message"]
    missing = client.post("/api/workspaces", json={}, headers=ZH).json()["error"]
    assert {f["message"] for f in missing["fields"]} == {"必填"}
    too_big = client.get("/api/workspaces", params={"page_size": 10_000}).json()["error"]
    assert too_big["fields"] == [{"field": "page_size", "message": "must be at most 500"}]


def test_portal_errors_answer_in_chinese_when_asked(client: TestClient) -> None:
    workspaces(client, "demo")
    nope = client.get("/api/workspaces/nope/servings", headers=ZH)
    assert nope.status_code == 404 and nope.json()["error"]["message"] == "找不到工作空间 'nope'"
    assert (
        client.get("/api/workspaces/nope/servings").json()["error"]["message"] == "workspace 'nope' not found"
    )
    refused = client.delete(
        "/api/workspaces/demo/servings/qwen25-7b", params={"confirm": "x"}, headers=ZH
    ).json()
    error = refused["error"]
    assert error["fields"] == [
        {"field": "confirm", "message": "请输入服务名称（'qwen25-7b'）以确认；删除后无法恢复"}
    ]
    assert error["message"] == "confirm：请输入服务名称（'qwen25-7b'）以确认；删除后无法恢复"
    plaza = client.get("/api/plaza/models/nope", headers=ZH)
    assert plaza.status_code == 404 and plaza.json()["error"]["message"] == "找不到模型 'nope'"
    client.headers.pop("Authorization")
    anonymous = client.get("/api/me", headers=ZH).json()["error"]["message"]
    assert anonymous == "缺少访问令牌（Authorization: Bearer <token>）"


def test_deploy_preflight_refuses_a_taken_name_on_the_name_field(client: TestClient) -> None:
    workspaces(client, "demo")
    body = {
        "name": "qwen25-7b",
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100"}],
    }
    update = client.post("/api/workspaces/demo/servings:preflight", json=body).json()
    assert not any(c["subject"] == "name" for c in update["checks"])  # checked as its replacement
    pre = client.post("/api/workspaces/demo/servings:preflight?action=create", json=body).json()
    assert pre["ok"] is False
    assert pre["checks"][0]["subject"] == "name" and pre["checks"][0]["level"] == "mandatory"
    deploy = client.post("/api/workspaces/demo/servings", json=body)
    assert deploy.status_code == 409
    assert [f["field"] for f in deploy.json()["error"]["fields"]] == ["name"]
    fresh = client.post(
        "/api/workspaces/demo/servings:preflight?action=create", json={**body, "name": "fresh-one"}
    ).json()
    assert fresh["ok"] is True
    queued = client.post("/api/workspaces/demo/servings", json={**body, "name": "fresh-one"})
    assert queued.status_code == 202
    again = client.post(
        "/api/workspaces/demo/servings:preflight?action=create",
        json={**body, "name": "fresh-one"},
        headers=ZH,
    )
    assert (
        again.json()["ok"] is False and "已有名为 'fresh-one' 的服务" in again.json()["checks"][0]["message"]
    )
