"""`ModelFilesJob` under mocks: a stack's model-files Job registered unchanged, with its region's
provider, under its component, after the namespace; and the whole program creating one per region."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import ModelFilesJob, Region
from components.offline import capture_stack, run_program
from fleet.files_job import StackFilesJob
from fleet.pipeline import Rendering, build

from .conftest import STACKS
from .test_components import PROVIDER, children, one, provider_urn

TYPE = "modelfleet:index:ModelFilesJob"
FILES: dict[str, Any] = {
    "name": "qwen3-8b",
    "id": 5,
    "source": "hf",
    "repository": "Qwen/Qwen3-8B",
    "regions": [{"name": "cn-east"}, {"name": "cn-north", "attempt": 2}],
    "image": "ghcr.io/modelfleet/portal:1.0",
    "report_url": "https://portal.example.com",
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files") / "stacks"
    shutil.copytree(STACKS, root)
    (root / "demo/model-files").mkdir()
    (root / "demo/model-files/qwen3-8b.yaml").write_text(yaml.safe_dump(FILES))
    return root


@pytest.fixture(scope="module")
def rendering(stacks: Path) -> Rendering:
    return build(stacks, "demo")


def test_the_component_registers_the_rendered_job_with_the_regions_provider(rendering: Rendering) -> None:
    job = next(j for j in rendering.files_jobs if j.region == "cn-east")
    spec = rendering.fleet.regions["cn-east"]

    def program() -> dict[str, Any]:
        region = Region("cn-east", spec, rendering.namespaces["cn-east"], kubeconfig="kc")
        copy = ModelFilesJob(job, provider=region.provider, depends_on=[region.namespace])
        return {"job": copy.job_name}

    cap = run_program(program, "unit")
    component = one(cap, TYPE, "files-qwen3-8b-cn-east")
    (child,) = children(cap, component)
    assert child.type == "kubernetes:batch/v1:Job"
    assert child.urn.endswith(f"::{TYPE}$kubernetes:batch/v1:Job::files-qwen3-8b-cn-east-job")
    assert provider_urn(child.provider) == one(cap, PROVIDER, "cn-east").urn
    assert one(cap, "kubernetes:core/v1:Namespace", "cn-east-namespace").urn in child.dependencies
    assert child.props == job.manifest  # registered unchanged
    assert cap.exports == {"job": job.manifest["metadata"]["name"]}


def test_the_component_refuses_anything_but_a_job(rendering: Rendering) -> None:
    job = rendering.files_jobs[0]
    bad = StackFilesJob(job.files, job.region, {**job.manifest, "kind": "Deployment"})

    def program() -> None:
        spec = rendering.fleet.regions[job.region]
        region = Region(job.region, spec, rendering.namespaces[job.region], kubeconfig="kc")
        ModelFilesJob(bad, provider=region.provider)

    with pytest.raises(ValueError, match="expected a batch/v1 Job"):
        run_program(program, "unit")


def test_the_program_creates_a_job_per_listed_region_and_exports_their_names(
    stacks: Path, rendering: Rendering
) -> None:
    cap = capture_stack(stacks, "demo")
    jobs = cap.by_type("kubernetes:batch/v1:Job")
    assert sorted(j.name for j in jobs) == ["files-qwen3-8b-cn-east-job", "files-qwen3-8b-cn-north-job"]
    expected = {j.region: j.manifest["metadata"]["name"] for j in rendering.files_jobs}
    assert cap.exports["modelFiles"] == {"qwen3-8b": expected}
    assert expected["cn-north"].startswith("model-files-5-2-")
    north = next(j for j in jobs if j.name.endswith("cn-north-job"))
    assert provider_urn(north.provider) == one(cap, PROVIDER, "cn-north").urn


def test_a_stack_without_model_files_exports_none(demo_capture: Any) -> None:
    assert "modelFiles" not in demo_capture.exports
    assert not demo_capture.by_type("kubernetes:batch/v1:Job")
