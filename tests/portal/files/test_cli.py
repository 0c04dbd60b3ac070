"""`python -m portal.files copy`, as a cluster region's Job runs it: keys from the environment, JSON
progress lines, exit status by outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portal.files.__main__ import main
from portal.files.bucket import Bucket
from portal.files.standin import Bytes, Pattern, Repo, StandInHub
from tests.portal.files.conftest import KEYS


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEYS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEYS["aws_secret_access_key"])
    monkeypatch.delenv("HF_TOKEN", raising=False)


def args(hub_url: str, bucket: Bucket, repository: str) -> list[str]:
    return [
        "copy",
        "--source",
        "hf",
        "--repository",
        repository,
        "--endpoint",
        hub_url,
        "--store-endpoint",
        bucket.endpoint,
        "--bucket",
        bucket.bucket,
        "--prefix",
        bucket.prefix,
        "--part-size-mib",
        "5",
    ]


def test_copy_prints_progress_and_ends_ready(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = Pattern(12 * 1024 * 1024, seed=9)
    hub.repos["acme/tiny"] = Repo({"config.json": Bytes(b"{}"), "model.safetensors": weights})
    assert main(args(hub_url, bucket, "acme/tiny")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1] == {"state": "ready", "commit": hub.repos["acme/tiny"].sha, "files": 2}
    assert any(line.get("phase") == "downloading" for line in lines)
    got = s3.get_object(Bucket=bucket.bucket, Key=bucket.key("model.safetensors"))["Body"].read()
    assert got == weights.read(0, weights.size)


def test_a_gated_repository_exits_1_with_the_reason(
    hub: StandInHub, hub_url: str, bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.repos["acme/gated"] = Repo({"config.json": Bytes(b"{}")}, gated=True)
    assert main(args(hub_url, bucket, "acme/gated")) == 1
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["state"] == "failed" and "is gated (401)" in last["reason"]


def test_reporting_needs_its_token(hub_url: str, bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELFLEET_REPORT_TOKEN", raising=False)
    assert main([*args(hub_url, bucket, "acme/tiny"), "--report-url", "http://127.0.0.1:1"]) == 2
