"""The S3-compatible store a region's model files go to: `s3://<bucket>/<prefix>/<path>`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    bucket: str
    prefix: str = ""  # the model's folder, e.g. `models/qwen3-8b`
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, path: str) -> str:
        return f"{self.prefix.strip('/')}/{path}" if self.prefix.strip("/") else path

    def client(self, connections: int = 32, attempts: int = 5, connect_timeout: float = 10) -> Any:
        """A client for this store. Checksums only when required: since botocore 1.36 the default
        (CRC headers on every request) breaks MinIO/Ceph-class stores (boto/boto3#4392)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=120,
                max_pool_connections=connections,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


__all__ = ["Bucket"]
