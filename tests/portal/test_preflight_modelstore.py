"""The model-store check against a real S3 API (moto's server mode): files found, a missing shard, a
wrong bucket, an unreachable endpoint, an explicit `s3://` model uri, and the key layout the
model-fetch init container uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from fastapi.testclient import TestClient

from benchmarks.processes import free_port
from fleet.manifests import placement_objects
from portal.modelstore import expected_missing
from portal.services import Services
from portal.settings import S3Credentials, Settings

URL = "/api/workspaces/team-a/servings:preflight"
KEYS = {"access_key_id": "moto-key", "secret_access_key": "moto-secret"}
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def _model_files(s3: Any, bucket: str, folder: str, shards: list[str]) -> int:
    """A model as a hub download lays it out; returns the bytes written."""
    index = {"metadata": {"total_size": 2048}, "weight_map": {"a.weight": SHARDS[0], "b.weight": SHARDS[1]}}
    files: dict[str, bytes] = {
        "config.json": b'{"architectures": ["Qwen3ForCausalLM"]}',
        "tokenizer.json": b"{}" * 10,
        "tokenizer_config.json": b"{}",
        "model.safetensors.index.json": json.dumps(index).encode(),
        **{shard: b"\0" * 1024 for shard in shards},
    }
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=data)
    return sum(len(d) for d in files.values())


@pytest.fixture(scope="module")
def stores(moto_url: str) -> dict[str, int]:
    """Buckets in moto: a complete model in `east`, one missing a shard in `west`, and an explicitly
    addressed model in `custom`. Returns bytes written per bucket."""
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id=KEYS["access_key_id"],
        aws_secret_access_key=KEYS["secret_access_key"],
        region_name="us-east-1",
    )
    for bucket in ("east", "west", "custom"):
        s3.create_bucket(Bucket=bucket)
    return {
        "east": _model_files(s3, "east", "models/qwen3-8b", SHARDS),
        "west": _model_files(s3, "west", "qwen3-8b", SHARDS[:1]),
        "custom": _model_files(s3, "custom", "acme/chat-8b", SHARDS),
    }


def _region(name: str, endpoint: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "cluster": {"context": name, "cluster_identifier": name},
        "model_store": {
            "endpoint": endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "credentials_secret": "moto-store",
        },
        "gateway_domain": f"{name}.example.com",
    }


def _stack_file(moto_url: str) -> str:
    regions = [
        _region("east", moto_url, "east", "models"),
        _region("west", moto_url, "west"),
        _region("nobucket", moto_url, "no-such-bucket"),
        _region("offline", f"http://127.0.0.1:{free_port()}", "east", "models"),
        {
            **{k: v for k, v in _region("here", moto_url, "west").items() if k != "cluster"},
            **{"runtime": "local", "local": {"engines": "simulate"}},
        },
    ]
    pools = [
        {
            "name": f"{r['name']}-h100",
            "region": r["name"],
            "accelerator": "nvidia/h100-80g",
            "devices_per_node": 8,
            "nodes": 1,
        }
        for r in regions
    ]
    templates = [{"name": "vllm", "engine": "vllm", "engine_version": "0.33.0"}]
    config = {"modelfleet:regions": regions, "modelfleet:pools": pools, "modelfleet:templates": templates}
    return yaml.safe_dump({"config": config}, sort_keys=False)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, admin_token: str) -> Settings:
    """The conftest's settings, with keys for the moto store and a short timeout."""
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        admin_token=admin_token,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        worker_enabled=False,
        s3_credentials={"moto-store": S3Credentials(**KEYS)},  # type: ignore[arg-type]
        s3_timeout_seconds=2,
    )


@pytest.fixture
def s3_stack(client: TestClient, services: Services, moto_url: str, stores: dict[str, int]) -> str:
    repo = services.repository
    repo.stacks_dir.mkdir(parents=True, exist_ok=True)
    (repo.stacks_dir / "Pulumi.s3test.yaml").write_text(_stack_file(moto_url), "utf-8")
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "s3 test stack")
    assert client.post("/api/workspaces", json={"slug": "team-a", "name": "A"}).status_code == 201
    return "s3test"


def body(*regions: str, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "chat",
        "model": "qwen3-8b",
        "template": "vllm",
        "max_model_len": 8192,
        "placements": [{"region": r, "pool": f"{r}-h100"} for r in regions],
    }
    out.update(changes)
    return out


def store_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["rule"] == "model-store"]


def test_a_complete_model_passes_and_its_size_is_reported(
    client: TestClient, s3_stack: str, stores: dict[str, int]
) -> None:
    report = client.post(URL, json=body("east")).json()
    assert report["ok"] is True and store_checks(report) == []
    assert report["facts"]["model_files"] == 6 and report["facts"]["model_bytes"] == stores["east"]
    east = report["facts"]["model_store"]["east"]
    assert east["status"] == "ok" and east["uri"] == "s3://east/models/qwen3-8b"


def test_the_check_reads_the_keys_the_fetch_container_syncs(services: Services, s3_stack: str) -> None:
    snapshot = services.repository.snapshot(s3_stack)
    from fleet.incremental import check_change

    change = check_change(snapshot.index, {**body("east"), "workspace": "team-a"})
    assert change.rendered is not None and change.view is not None and change.serving is not None
    [placement] = change.rendered
    objects = placement_objects(change.view, change.serving, placement.plan, placement.launch)
    fetch = objects[0]["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["name"] == "model-fetch" and "s3://east/models/qwen3-8b/*" in fetch["args"]


def test_a_missing_shard_blocks_naming_region_and_key(client: TestClient, s3_stack: str) -> None:
    report = client.post(URL, json=body("east", "west")).json()
    assert report["ok"] is False
    [check] = store_checks(report)
    assert check["level"] == "mandatory" and check["subject"] == "regions[west].model_store"
    assert "region west" in check["message"] and SHARDS[1] in check["message"]
    assert SHARDS[0] not in check["message"]
    assert report["facts"]["model_store"]["west"]["missing"] == [SHARDS[1]]
    assert report["facts"]["model_store"]["east"]["status"] == "ok"


def test_a_wrong_bucket_blocks_and_an_unreachable_store_is_advice(client: TestClient, s3_stack: str) -> None:
    report = client.post(URL, json=body("nobucket", "offline")).json()
    by_region = {c["subject"]: c for c in store_checks(report)}
    nobucket = by_region["regions[nobucket].model_store"]
    assert (
        nobucket["level"] == "mandatory" and "bucket 'no-such-bucket' does not exist" in nobucket["message"]
    )
    offline = by_region["regions[offline].model_store"]
    assert offline["level"] == "advisory" and "could not check the model store" in offline["message"]
    assert report["facts"]["model_store"]["offline"]["status"] == "unreachable"


def test_an_explicit_s3_uri_is_looked_up_as_written(client: TestClient, s3_stack: str) -> None:
    model = {"uri": "s3://custom/acme/chat-8b", "params_b": 8, "dtype": "bfloat16"}
    report = client.post(URL, json=body("east", model=model)).json()
    assert store_checks(report) == []
    assert report["facts"]["model_store"]["east"]["uri"] == "s3://custom/acme/chat-8b"
    missing = {"uri": "s3://custom/acme/other", "params_b": 8, "dtype": "bfloat16"}
    [check] = store_checks(client.post(URL, json=body("east", model=missing)).json())
    assert check["level"] == "mandatory" and "config.json" in check["message"]


def test_what_counts_as_a_model() -> None:
    index = {"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}
    assert expected_missing({"config.json", "tokenizer.model", "a.safetensors", "b.safetensors"}, index) == []
    assert expected_missing({"config.json", "tokenizer.json", "a.safetensors"}, index) == ["b.safetensors"]
    assert expected_missing({"config.json", "vocab.json", "pytorch_model.bin"}, None) == []
    assert expected_missing(set(), None) == [
        "config.json",
        "tokenizer.json (or tokenizer.model, vocab.json)",
        "*.safetensors (or *.bin) weights",
    ]


def test_a_missing_model_says_how_far_its_download_is(
    client: TestClient, services: Services, s3_stack: str
) -> None:
    """The store lacks files and a copy into the region runs: the finding says how far it is."""
    from portal.files import records
    from store.db import transaction

    fleet = services.repository.snapshot(s3_stack).fleet
    wanted = records.Wanted(s3_stack, "qwen3-8b", "hf", "Qwen/Qwen3-8B", "main", (), ())
    with transaction(services.sessions) as session:
        row, _ = records.request(session, wanted, [fleet.regions["west"]], "ops")
        [loc] = row.locations
        loc.bytes_done, loc.bytes_total, loc.files_done, loc.files_total = 4, 10, 1, 6
        records.transition(session, row, loc, "downloading")
    [check] = store_checks(client.post(URL, json=body("west")).json())
    assert (
        "the download of 'qwen3-8b' into west is downloading: 40% (4 of 10 bytes, 1 of 6 files)"
        in (check["message"])
    )
    [nobucket] = store_checks(client.post(URL, json=body("nobucket")).json())
    assert "no download of 'qwen3-8b' into nobucket was requested" in nobucket["message"]


def test_missing_files_do_not_block_where_the_engine_simulator_stands_in(
    client: TestClient, s3_stack: str
) -> None:
    """A local region whose `local.engines` is `simulate` runs the simulator, which reads no weights:
    the same missing shard that blocks in `west` is advice there, and says why."""
    report = client.post(URL, json=body("here")).json()
    [check] = store_checks(report)
    assert report["ok"] is True and check["level"] == "advisory"
    assert SHARDS[1] in check["message"] and "engine simulator" in check["message"]
