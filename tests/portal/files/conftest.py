"""Real peers for the downloader: the stand-in hub (Hugging Face's and ModelScope's wire formats,
Range, redirects, gates) on a loopback port, and moto's S3 in server mode
(`moto_url`, tests/portal/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from portal.files.bucket import Bucket
from portal.files.standin import StandInHub, serve

KEYS = {"aws_access_key_id": "moto-key", "aws_secret_access_key": "moto-secret"}


@pytest.fixture
def hub() -> StandInHub:
    return StandInHub()


@pytest.fixture
def hub_url(hub: StandInHub) -> Iterator[str]:
    with serve(hub.app()) as url:
        yield url


@pytest.fixture
def s3(moto_url: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **KEYS)


@pytest.fixture
def bucket(moto_url: str, s3: Any) -> Bucket:
    """A fresh bucket per test (moto's server is shared by the session)."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return Bucket(moto_url, name, "models/tiny", KEYS["aws_access_key_id"], KEYS["aws_secret_access_key"])
