"""Model files as desired state: `stacks/<stack>/model-files/<model>.yaml` read into the spec, checked
with errors naming the field, rendered as one schema-valid Job per listed cluster region, and shown by
`python -m fleet render/plan/check`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fleet.cli import app
from fleet.errors import SpecError
from fleet.files_job import STACK_ANNOTATIONS
from fleet.kube import validate_manifest
from fleet.loader import load_fleet, read_model_files, stack_config
from fleet.pipeline import build
from fleet.stack import build_fleet

STACKS = Path(__file__).resolve().parents[2] / "stacks"
IMAGE = "ghcr.io/modelfleet/portal:1.0"


def files_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "qwen3-8b",
        "id": 12,
        "source": "hf",
        "repository": "Qwen/Qwen3-8B",
        "revision": "main",
        "include": ["*.safetensors", "*.json"],
        "regions": [{"name": "cn-east", "attempt": 1}, {"name": "cn-south", "attempt": 3}],
        "image": IMAGE,
        "report_url": "https://portal.example.com",
    }
    return {**doc, **changes}


def stacks_with(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    stacks = tmp_path / "stacks"
    shutil.copytree(STACKS, stacks)
    folder = stacks / "demo" / "model-files"
    folder.mkdir()
    for doc in docs:
        (folder / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc))
    return stacks


def issues_of(*docs: dict[str, Any]) -> dict[str, str]:
    config = stack_config(STACKS, "demo")
    with pytest.raises(SpecError) as err:
        build_fleet("demo", config, [], [(f"model_files[{d.get('name')}]", d) for d in docs])
    return {i.path: i.message for i in err.value.issues}


def test_a_model_files_file_becomes_one_checked_job_per_cluster_region(tmp_path: Path) -> None:
    rendering = build(stacks_with(tmp_path, files_doc()), "demo")
    (files,) = rendering.fleet.model_files
    assert (files.name, files.id) == ("qwen3-8b", 12)
    assert [r.name for r in files.regions] == ["cn-east", "cn-south"]
    jobs = {j.region: j.manifest for j in rendering.files_jobs}
    assert set(jobs) == {"cn-east", "cn-south"}
    for region, manifest in jobs.items():
        assert validate_manifest(manifest, "1.33") == [], region
        assert manifest["metadata"]["namespace"] == rendering.fleet.regions[region].namespace
        assert manifest["metadata"]["annotations"] == STACK_ANNOTATIONS  # pulumi up does not wait hours
        assert "ttlSecondsAfterFinished" not in manifest["spec"]  # the stack owns it, not a TTL
        args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--files-id") + 1] == "12" and args[args.index("--region") + 1] == region
    # the attempt is in the Job's name: a retry written to the file is a new Job
    assert jobs["cn-south"]["metadata"]["name"].startswith("model-files-12-3-")
    assert ("cn-east", jobs["cn-east"]) in rendering.objects()


def test_no_folder_means_no_model_files() -> None:
    assert read_model_files(STACKS, "demo") == []
    assert load_fleet(STACKS, "demo").model_files == ()


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"regions": [{"name": "mars"}]}, "model_files[qwen3-8b].regions[0].name", "unknown region 'mars'"),
        ({"regions": [{"name": "local"}]}, "model_files[qwen3-8b].regions[0].name", "runs no Jobs"),
        (
            {"regions": [{"name": "cn-east"}, {"name": "cn-east", "attempt": 2}]},
            "model_files[qwen3-8b].regions[1].name",
            "listed twice",
        ),
        ({"regions": []}, "model_files[qwen3-8b].regions", "at least 1"),
        ({"source": "ftp"}, "model_files[qwen3-8b].source", "'hf'"),
        ({"image": "Not An Image"}, "model_files[qwen3-8b].image", "image reference"),
        ({"report_url": "portal"}, "model_files[qwen3-8b].report_url", "pattern"),
        ({"id": 0}, "model_files[qwen3-8b].id", "greater than or equal to 1"),
        ({"regions": [{"name": "cn-east", "attempt": 0}]}, "model_files[qwen3-8b].regions[0].attempt", "1"),
        ({"colour": "red"}, "model_files[qwen3-8b].colour", "unknown field"),
    ],
)
def test_errors_name_the_field(changes: dict[str, Any], path: str, words: str) -> None:
    found = issues_of(files_doc(**changes))
    assert path in found, found
    assert words in found[path], found[path]


def test_two_files_for_one_request_are_refused() -> None:
    found = issues_of(files_doc(), files_doc(name="other"))
    assert "request 12 is also model_files[qwen3-8b]" in found["model_files[other].id"]


def test_the_file_name_must_be_the_model(tmp_path: Path) -> None:
    stacks = stacks_with(tmp_path, files_doc())
    (stacks / "demo/model-files/qwen3-8b.yaml").rename(stacks / "demo/model-files/other.yaml")
    with pytest.raises(SpecError) as err:
        load_fleet(stacks, "demo")
    assert [i.path for i in err.value.issues] == ["model_files[other].name"]


def test_fleet_render_plan_and_check_show_the_job(tmp_path: Path) -> None:
    stacks = stacks_with(tmp_path, files_doc())
    runner = CliRunner()
    out = tmp_path / "out"
    done = runner.invoke(app, ["render", "--stack", "demo", "--stacks-dir", str(stacks), "--out", str(out)])
    assert done.exit_code == 0, done.output
    east = [o for o in yaml.safe_load_all((out / "cn-east/job.yaml").read_text())]
    assert [o["metadata"]["name"] for o in east] == [job_name_of(east[0])]
    plan = runner.invoke(app, ["plan", "--stack", "demo", "--stacks-dir", str(stacks), "--output", "json"])
    assert plan.exit_code == 0, plan.output
    rows = json.loads(plan.output)["model_files"]
    assert [(r["model_files"], r["region"], r["request"]) for r in rows] == [
        ("qwen3-8b", "cn-east", 12),
        ("qwen3-8b", "cn-south", 12),
    ]
    check = runner.invoke(
        app, ["check", "--stack", "demo", "--stacks-dir", str(stacks), "--no-policies", "--output", "json"]
    )
    assert check.exit_code == 0, check.output
    assert json.loads(check.output)["schema_errors"] == []


def job_name_of(manifest: dict[str, Any]) -> str:
    name = str(manifest["metadata"]["name"])
    assert name.startswith("model-files-12-1-") and len(name) <= 63
    return name
