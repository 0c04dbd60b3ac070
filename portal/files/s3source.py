"""Files already in an S3-compatible bucket (`s3://bucket/prefix`), read through presigned GETs so the
same ranged reads, retries and parts serve them as a hub's. S3 publishes no content digest that
survives multipart uploads, so these are verified by size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from portal.files.bucket import Bucket
from portal.files.errors import SourceRefused, SourceUnavailable
from portal.files.listing import Listing, RemoteFile, SourceKind

PRESIGN_SECONDS = 6 * 3600  # a part is read long after the listing on a slow link


@dataclass(frozen=True)
class S3Folder:
    store: Bucket  # endpoint and keys to read with; `bucket`/`prefix` are the source folder
    _client: Any = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> SourceKind:
        return "s3"

    @property
    def repository(self) -> str:
        return self.store.uri

    def _s3(self) -> Any:
        if self._client is None:
            object.__setattr__(self, "_client", self.store.client())
        return self._client

    def listing(self, http: httpx.Client) -> Listing:
        folder = f"{self.store.prefix.strip('/')}/" if self.store.prefix.strip("/") else ""
        files: list[RemoteFile] = []
        try:
            for page in (
                self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.store.bucket, Prefix=folder)
            ):
                for item in page.get("Contents", ()):
                    path = str(item["Key"])[len(folder) :]
                    if path and not path.endswith("/"):
                        files.append(RemoteFile(path, int(item.get("Size", 0))))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise SourceRefused(f"{self.store.uri}: the source store refused the listing ({code})") from exc
        except BotoCoreError as exc:
            raise SourceUnavailable(f"{self.store.uri}: the source store did not answer ({exc})") from exc
        return Listing("s3", self.store.uri, "", "", tuple(sorted(files, key=lambda f: f.path)))

    def locate(self, listing: Listing, file: RemoteFile) -> tuple[str, dict[str, str]]:
        url = self._s3().generate_presigned_url(
            "get_object",
            Params={"Bucket": self.store.bucket, "Key": self.store.key(file.path)},
            ExpiresIn=PRESIGN_SECONDS,
        )
        return str(url), {}


__all__ = ["S3Folder"]
