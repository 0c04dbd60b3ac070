"""The model-files Job the core renders for a cluster region: valid for the stack's Kubernetes version,
the downloader's argv without secrets, keys and tokens from the region's Secrets, no disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.files_job import FilesJob, argv, files_job, job_name
from fleet.kube import validate_manifest
from fleet.loader import load_fleet
from fleet.spec import Region, SecretKey

STACKS = Path(__file__).resolve().parents[2] / "stacks"


@pytest.fixture(scope="module")
def region() -> Region:
    fleet = load_fleet(STACKS, "demo")
    east = fleet.regions["cn-east"]
    hub = east.model_hub.model_copy(
        update={"hf_endpoint": "https://hf-mirror.com", "token_secret": SecretKey(name="hub", key="hf")}
    )
    return east.model_copy(update={"model_hub": hub})


def job(**changes: object) -> FilesJob:
    base = FilesJob(
        files_id=7,
        attempt=1,
        model_id="qwen3-8b",
        source="hf",
        repository="Qwen/Qwen3-8B",
        revision="main",
        image="ghcr.io/modelfleet/portal:1.0",
        report_url="https://portal.example.com",
        report_token=SecretKey(name="modelfleet-files-report", key="token"),
        include=("*.safetensors", "*.json"),
    )
    return FilesJob(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_the_job_passes_the_kubernetes_schema(region: Region) -> None:
    manifest = files_job(job(), region)
    assert validate_manifest(manifest, "1.33") == []
    assert manifest["metadata"]["namespace"] == region.namespace
    assert len(job_name(job(), region)) <= 63


def test_the_job_runs_the_same_downloader_into_the_regions_store_folder(region: Region) -> None:
    args = argv(job(), region)
    assert args[:4] == ["python", "-m", "portal.files", "copy"]
    pairs = dict(zip(args[4::2], args[5::2], strict=False))
    assert pairs["--bucket"] == region.model_store.bucket
    assert pairs["--prefix"] == f"{region.model_store.prefix}/qwen3-8b"  # where a catalog serving syncs from
    assert pairs["--endpoint"] == "https://hf-mirror.com"
    assert args.count("--include") == 2


def test_secrets_come_from_secret_refs_never_values(region: Region) -> None:
    container = files_job(job(), region)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "MODELFLEET_REPORT_TOKEN"}
    assert all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in env.values())
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hub", "key": "hf"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # no local copy of the weights


def test_a_retry_is_a_new_job(region: Region) -> None:
    assert job_name(job(), region) != job_name(job(attempt=2), region)
