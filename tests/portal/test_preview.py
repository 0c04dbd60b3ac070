"""Preview: the diff of a serving change against the stack at HEAD, rendered — for create, scale and
delete, through the API and through `preview_change` (what the pull-request body shows)."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from fleet.errors import IssuesError
from portal.bootstrap import DEMO_STACKS
from portal.errors import NotFound
from portal.preview import preview_change
from portal.repository import StackRepository, StackSnapshot
from portal.services import Services

URL = "/api/workspaces/demo/servings:preview"
NEW = {
    "name": "my-chat",
    "model": "qwen3-8b",
    "template": "vllm-latest",
    "max_model_len": 8192,
    "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 1}],
}
QWEN25_7B = {  # stacks/demo/servings/qwen25-7b.yaml, as the servings API takes it
    "name": "qwen25-7b",
    "model": "qwen2.5-7b-instruct",
    "template": "vllm-latest",
    "public_model_name": "qwen2.5-7b-instruct",
    "max_model_len": 32768,
    "placements": [
        {"region": "cn-east", "pool": "east-h100", "replicas": 2, "weight": 75},
        {"region": "cn-north", "pool": "north-c500", "replicas": 1, "weight": 25, "parallelism": "auto"},
    ],
}


@pytest.fixture
def demo(client: TestClient, services: Services) -> StackSnapshot:
    repo = services.repository
    shutil.copytree(DEMO_STACKS, repo.stacks_dir, dirs_exist_ok=True)
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "demo stack")
    assert client.post("/api/workspaces", json={"slug": "demo", "name": "Demo"}).status_code == 201
    return repo.snapshot("demo")


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> StackSnapshot:
    """The demo stack in a repository of its own: for the library tests, no database needed."""
    repo = StackRepository(tmp_path_factory.mktemp("stacks-repo"))
    repo.ensure(DEMO_STACKS)
    return repo.snapshot("demo")


def test_create_adds_the_objects(client: TestClient, demo: StackSnapshot) -> None:
    answer = client.post(URL, json=NEW)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert preview["action"] == "create" and preview["commit"] == demo.commit and preview["unchanged"] == 0
    assert [(o["action"], o["kind"]) for o in preview["objects"]] == [
        ("add", "Deployment"),
        ("add", "Service"),
        ("add", "PodDisruptionBudget"),
    ]
    deployment = preview["objects"][0]
    assert deployment["id"] == "cn-east/Deployment/modelfleet/my-chat-east-h100"
    assert deployment["namespace"] == "modelfleet" and deployment["name"] == "my-chat-east-h100"
    assert deployment["diff"].startswith(
        "--- /dev/null\n+++ b/cn-east/Deployment/modelfleet/my-chat-east-h100\n"
    )
    assert "+  replicas: 1\n" in deployment["diff"]
    assert all(line[0] in "+-@ " for line in deployment["diff"].splitlines())
    assert preview["text"] == "".join(o["diff"] for o in preview["objects"])
    assert preview["summary"].startswith("create my-chat in demo") and "3 to add" in preview["summary"]


def test_scaling_changes_only_the_replica_count(client: TestClient, demo: StackSnapshot) -> None:
    scaled = {
        **QWEN25_7B,
        "placements": [{**QWEN25_7B["placements"][0], "replicas": 3}, QWEN25_7B["placements"][1]],
    }  # type: ignore[index, dict-item]
    preview = client.post(URL, json=scaled).json()
    assert preview["action"] == "update"
    [change] = preview["objects"]
    assert (
        change["action"] == "change" and change["id"] == "cn-east/Deployment/modelfleet/qwen25-7b-east-h100"
    )
    removed = [
        line for line in change["diff"].splitlines() if line.startswith("-") and not line.startswith("---")
    ]
    added = [
        line for line in change["diff"].splitlines() if line.startswith("+") and not line.startswith("+++")
    ]
    assert removed == ["-  replicas: 2"] and added == ["+  replicas: 3"]
    assert preview["unchanged"] == 5  # the Service and budget there, and all three in cn-north


def test_the_committed_serving_previews_as_no_change(client: TestClient, demo: StackSnapshot) -> None:
    preview = client.post(URL, json=QWEN25_7B).json()
    assert preview["objects"] == [] and preview["text"] == "" and preview["unchanged"] == 6
    assert "no changes" in preview["summary"]


def test_moving_a_placement_removes_and_adds(committed: StackSnapshot) -> None:
    desired = {**QWEN25_7B, "workspace": "demo", "placements": [QWEN25_7B["placements"][0]]}  # type: ignore[index]
    preview = preview_change(committed, "qwen25-7b", desired)
    assert {(o.action, o.region) for o in preview.objects} == {("remove", "cn-north")}
    assert all(o.diff.splitlines()[1] == "+++ /dev/null" for o in preview.objects)


def test_delete_removes_every_object(committed: StackSnapshot) -> None:
    preview = preview_change(committed, "qwen25-7b", None)
    assert preview.action == "delete" and preview.unchanged == 0
    assert [o.action for o in preview.objects] == ["remove"] * 6
    assert (
        preview.markdown.startswith("**delete qwen25-7b in demo")
        and "```diff\n--- a/cn-east/" in preview.markdown
    )
    with pytest.raises(NotFound):
        preview_change(committed, "no-such-serving", None)


def test_a_change_that_does_not_render_is_422_with_its_fields(
    client: TestClient, demo: StackSnapshot
) -> None:
    answer = client.post(URL, json={**NEW, "placements": [{"region": "cn-east", "pool": "sh-h200"}]})
    assert answer.status_code == 422
    assert answer.json()["error"]["fields"][0]["field"] == "servings[my-chat].placements[0].pool"
    with pytest.raises(IssuesError):
        preview_change(demo, "my-chat", {**NEW, "extra_args": ["--no-such-flag"]})
