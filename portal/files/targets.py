"""From a stack's region and a request to the downloader's values: the source (with the region's hub
endpoint and token) and the bucket folder (`s3://<bucket>/<prefix>/<model id>`, the folder a catalog
serving's model-fetch syncs from, `fleet.sources.of`)."""

from __future__ import annotations

import re

from fleet.spec import Region
from portal.files.bucket import Bucket
from portal.files.errors import SourceRefused
from portal.files.huggingface import REPOSITORY, HuggingFace
from portal.files.listing import SourceKind
from portal.files.modelscope import ModelScope
from portal.files.s3source import S3Folder
from portal.files.source import Source
from portal.files.web import WebFile
from portal.settings import Settings

SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HUB_URI = re.compile(r"^(hf|modelscope)://([^@\s]+?)(?:@([^\s]+))?$")


def folder(region: Region, model_id: str) -> tuple[str, str]:
    store = region.model_store
    return store.bucket, f"{store.prefix}/{model_id}" if store.prefix else model_id


def uri(region: Region, model_id: str) -> str:
    bucket, prefix = folder(region, model_id)
    return f"s3://{bucket}/{prefix}"


def bucket(settings: Settings, region: Region, model_id: str) -> Bucket:
    """The region's store, with the keys its `credentials_secret` names in the settings (boto3's default
    chain when there are none: environment, shared files, instance role)."""
    name, prefix = folder(region, model_id)
    creds = settings.s3_credentials.get(region.model_store.credentials_secret)
    if creds is None:
        return Bucket(region.model_store.endpoint, name, prefix)
    return Bucket(
        region.model_store.endpoint,
        name,
        prefix,
        creds.access_key_id,
        creds.secret_access_key.get_secret_value(),
        creds.region,
    )


def token(settings: Settings, region: Region) -> str | None:
    ref = region.model_hub.token_secret
    if ref is None:
        return None
    found = settings.hub_tokens.get(f"{ref.name}/{ref.key}")
    return found.get_secret_value() if found is not None else None


def source(settings: Settings, region: Region, kind: SourceKind, repository: str, revision: str) -> Source:
    """The request's source as this region reaches it (its mirror, its token)."""
    hub = region.model_hub
    if kind == "hf":
        return HuggingFace(
            repository,
            revision or "main",
            hub.hf_endpoint or settings.files_hf_endpoint,
            token(settings, region),
        )
    if kind == "modelscope":
        endpoint = hub.modelscope_endpoint or settings.files_modelscope_endpoint
        return ModelScope(repository, revision or "master", endpoint, token(settings, region))
    if kind == "https":
        return WebFile(repository, revision if SHA256.match(revision) else None)
    store = bucket(settings, region, "")
    name, _, prefix = repository.removeprefix("s3://").partition("/")
    return S3Folder(
        Bucket(
            store.endpoint,
            name,
            prefix.strip("/"),
            store.access_key_id,
            store.secret_access_key,
            store.region,
        )
    )


def parse_source_uri(value: str) -> tuple[SourceKind, str, str]:
    """A plaza model's `source_uri` as (kind, repository, revision): `hf://org/name@rev`,
    `modelscope://org/name`, `s3://bucket/prefix`, `https://…`."""
    if value.startswith("s3://"):
        return "s3", value.rstrip("/"), ""
    if value.startswith("https://") or value.startswith("http://"):
        return "https", value, ""
    match = _HUB_URI.match(value)
    if match is None or not REPOSITORY.match(match.group(2)):
        raise SourceRefused(
            f"{value!r} is not a hub source (hf://org/name[@revision], modelscope://org/name)"
        )
    kind: SourceKind = "hf" if match.group(1) == "hf" else "modelscope"
    return kind, match.group(2), match.group(3) or ""


__all__ = ["bucket", "folder", "parse_source_uri", "source", "token", "uri"]
