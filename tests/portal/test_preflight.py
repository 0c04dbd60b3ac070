"""`POST /api/workspaces/{ws}/servings:preflight`: every check, blocking or not, on the demo stack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from portal.bootstrap import DEMO_STACKS
from portal.services import Services
from tests.portal.helpers import as_user, make_member

URL = "/api/workspaces/demo/servings:preflight"


@pytest.fixture(autouse=True)
def _no_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The demo's stores are real clouds: make sure boto3's default chain finds no keys (and asks no
    instance-metadata service), so the store check says 'not checked' quickly and offline."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    yield


@pytest.fixture
def demo(client: TestClient, services: Services) -> str:
    """The demo stack committed to the portal's repository, and its workspace."""
    repo = services.repository
    shutil.copytree(DEMO_STACKS, repo.stacks_dir, dirs_exist_ok=True)
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "demo stack")
    assert client.post("/api/workspaces", json={"slug": "demo", "name": "Demo"}).status_code == 201
    return "demo"


def body(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "my-chat",
        "model": "qwen3-8b",
        "template": "vllm-latest",
        "max_model_len": 8192,
        "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 1}],
    }
    out.update(changes)
    return out


def blocking(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["level"] == "mandatory"]


def test_a_sound_request_is_ok_with_advice_and_facts(client: TestClient, demo: str) -> None:
    answer = client.post(URL, json=body())
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["ok"] is True and blocking(report) == []
    assert set(report) == {"ok", "serving", "stack", "commit", "checks", "facts"}
    assert report["serving"] == "my-chat" and report["stack"] == "demo" and len(report["commit"]) == 40
    assert {c["rule"] for c in report["checks"]} == {"image-digest", "model-store"}
    assert set(report["checks"][0]) == {"rule", "level", "subject", "message"}
    store = next(c for c in report["checks"] if c["rule"] == "model-store")
    # No credentials for the demo's cloud store: said clearly, and not blocking.
    assert store["level"] == "advisory" and store["subject"] == "regions[cn-east].model_store"
    assert "weights were NOT verified" in store["message"]
    facts = report["facts"]
    assert facts["action"] == "create" and facts["model"]["id"] == "qwen3-8b"
    [placement] = facts["placements"]
    assert placement["pool"] == "east-h100" and placement["devices_per_replica"] == 1
    assert placement["memory_gib"]["required"] <= placement["memory_gib"]["budget"]
    pool = facts["pools"]["east-h100"]
    assert pool["capacity"] == 32 and pool["free"] == pool["capacity"] - pool["used"]
    assert facts["model_store"]["cn-east"]["uri"] == "s3://modelfleet-models-east/models/qwen3-8b"
    assert facts["model_store"]["cn-east"]["status"] == "unreachable"


@pytest.mark.parametrize(
    ("changes", "rule", "subject", "words"),
    [
        (
            {"placements": [{"region": "cn-east", "pool": "sh-h200"}]},
            "spec",
            "servings[my-chat].placements[0].pool",
            "unknown pool 'sh-h200'",
        ),
        (
            {"placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 40}]},
            "plan",
            "pools[east-h100]",
            "32 devices but servings ask for",
        ),
        (
            {
                "model": {"uri": "s3://models/big-400b", "params_b": 400, "dtype": "bfloat16"},
                "placements": [{"region": "cn-north", "pool": "north-br166"}],
            },
            "plan",
            "servings[my-chat].placements[0]",
            "does not fit even on all 1 nodes of pool 'north-br166'",
        ),
        ({"extra_args": ["--enable-prefix-cahing"]}, "render", "servings[my-chat]", "--enable-prefix-cahing"),
        (
            {"env": {"OPENAI_API_KEY": "sk-live"}},
            "spec",
            "servings[my-chat].env.OPENAI_API_KEY",
            "OPENAI_API_KEY",
        ),
        ({"public_model_name": "qwen3-32b"}, "public-model-name", "", "qwen3-32b-sglang (sglang"),
    ],
    ids=["unknown-pool", "over-capacity", "memory", "bad-flag", "plain-secret", "public-name-clash"],
)
def test_blocking_findings_answer_200_with_the_field(
    client: TestClient, demo: str, changes: dict[str, Any], rule: str, subject: str, words: str
) -> None:
    answer = client.post(URL, json=body(**changes))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["ok"] is False
    first = report["checks"][0]
    assert first["level"] == "mandatory" and first["rule"] == rule
    assert first["subject"].startswith(subject) and words in first["message"]


def test_replacing_a_serving_counts_it_once(client: TestClient, services: Services, demo: str) -> None:
    committed = services.repository.snapshot(demo).rendering.plan.pools["east-h100"].used
    scaled = body(
        name="qwen25-7b",
        model="qwen2.5-7b-instruct",
        public_model_name="qwen2.5-7b-instruct",
        max_model_len=32768,
        placements=[{"region": "cn-east", "pool": "east-h100", "replicas": 3, "weight": 75}],
    )
    report = client.post(URL, json=scaled).json()
    assert report["facts"]["action"] == "update"
    assert [c for c in blocking(report) if c["rule"] != "workspace-devices"] == []
    assert report["facts"]["pools"]["east-h100"]["used"] == committed + 1  # 2 -> 3 replicas of one device


def test_a_malformed_body_is_422_naming_the_field(client: TestClient, demo: str) -> None:
    answer = client.post(URL, json=body(name="Not_A_Name"))
    assert answer.status_code == 422
    assert answer.json()["error"]["fields"][0]["field"] == "name"
    answer = client.post(
        URL, json=body(placements=[{"region": "cn-east", "pool": "east-h100", "replicas": -1}])
    )
    assert answer.json()["error"]["fields"][0]["field"] == "placements[0].replicas"
    answer = client.post(URL, json=body(stack="nope"))
    assert answer.status_code == 422 and answer.json()["error"]["fields"][0]["field"] == "stack"


def test_outsiders_get_404_and_members_their_report(client: TestClient, demo: str) -> None:
    client.post("/api/workspaces", json={"slug": "team-b", "name": "B"})
    outsider = make_member(client, "bob", "team-b", "member")
    member = make_member(client, "alice", "demo", "member")
    with as_user(client, outsider):
        assert client.post(URL, json=body()).status_code == 404
        assert client.post("/api/workspaces/demo/servings:preview", json=body()).status_code == 404
        # bob's own workspace may not take (or peek at) a name the demo workspace holds
        report = client.post("/api/workspaces/team-b/servings:preflight", json=body(name="qwen25-7b")).json()
        assert [c["rule"] for c in report["checks"]] == ["serving-name"] and report["ok"] is False
        assert "demo" not in report["checks"][0]["message"] and "facts" in report
        taken = client.post("/api/workspaces/team-b/servings:preview", json=body(name="qwen25-7b"))
        assert taken.status_code == 409
    with as_user(client, member):
        assert client.post(URL, json=body()).json()["ok"] is True


def test_no_answer_names_another_workspaces_servings(
    client: TestClient, demo: str, services: Services
) -> None:
    """An outsider's preflight, preview and deploy say how full a pool is, never whose servings fill
    it, and a clash of public model names does not name the serving that holds it."""
    demo_servings = set(services.repository.snapshot(demo).index.servings)
    client.post("/api/workspaces", json={"slug": "team-b", "name": "B"})
    with as_user(client, make_member(client, "bob", "team-b", "admin")):
        over = body(placements=[{"region": "cn-east", "pool": "east-h100", "replicas": 40}])
        answers = [
            client.post("/api/workspaces/team-b/servings:preflight", json=over),
            client.post("/api/workspaces/team-b/servings:preview", json=over),
            client.post("/api/workspaces/team-b/servings", json=over),
            client.post(
                "/api/workspaces/team-b/servings:preflight", json=body(public_model_name="qwen3-32b")
            ),
        ]
    said = [a.text for a in answers]
    assert [a.status_code for a in answers] == [200, 200, 422, 200], said  # a preview diffs its own
    assert "servings ask for" in said[0] and "in all, 40 of them for this serving" in said[0]
    assert "servings ask for" in said[2] and "in all" in said[2]
    for text in said:
        assert not [name for name in demo_servings if f"{name} " in text or f"{name}'" in text], text
        assert " 1x" not in text and " 2x" not in text  # no other serving's size
