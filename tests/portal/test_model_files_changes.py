"""Model-files requests in a stack change, planned offline like serving changes: the file written or
removed, and a request that would break the stack refused alone, with the field the core names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from portal.repository import StackRepository
from portal.stacks.changes import FILES_ACTION, RequestView, plan_change

STACKS = Path(__file__).resolve().parents[2] / "stacks"
PATH = "stacks/demo/model-files/qwen3-8b.yaml"


def doc(**changes: Any) -> dict[str, Any]:
    base = {
        "name": "qwen3-8b",
        "id": 4,
        "source": "hf",
        "repository": "Qwen/Qwen3-8B",
        "regions": [{"name": "cn-east", "attempt": 1}],
        "image": "ghcr.io/modelfleet/portal:1.0",
        "report_url": "https://portal.example.com",
    }
    return {**base, **changes}


def files_request(request_id: int, desired: dict[str, Any] | None, name: str = "qwen3-8b") -> RequestView:
    return RequestView(
        request_id, f"model-files/{request_id}", FILES_ACTION, desired, {"name": name}, "ops", None
    )


def repository(tmp_path: Path) -> StackRepository:
    repo = StackRepository(tmp_path / "repo")
    repo.ensure(seed=STACKS)
    return repo


def test_a_files_request_writes_its_file_and_a_broken_one_is_refused_alone(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    bad = doc(name="other", id=5, regions=[{"name": "mars"}])
    plan = plan_change(repo, "demo", [files_request(1, doc()), files_request(2, bad, "other")])
    assert plan.applied == [1]
    assert plan.refused[2].fields == [
        {"field": "model_files[other].regions[0].name", "message": "unknown region 'mars'"}
    ]
    files = plan.files(repo)
    assert list(files) == [PATH]
    text = files[PATH]
    assert text is not None and text.startswith(
        "# Written by the Modelfleet portal for model-files request 4"
    )
    assert yaml.safe_load(text) == doc()
    assert plan.rendering is not None and [j.region for j in plan.rendering.files_jobs] == ["cn-east"]


def test_removing_the_file_is_a_change_and_removing_it_twice_is_none(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    (repo.stacks_dir / "demo/model-files").mkdir()
    (repo.stacks_dir / "demo/model-files/qwen3-8b.yaml").write_text(yaml.safe_dump(doc()))
    plan = plan_change(repo, "demo", [files_request(1, None), files_request(2, None)])
    assert plan.applied == [1, 2] and plan.files(repo) == {PATH: None}
    assert plan.rendering is not None and plan.rendering.files_jobs == ()
