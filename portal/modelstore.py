"""Are a serving's weights where its regions will fetch them from? A look into each model store.

Each region's `model-fetch` init container syncs `<model source>/*` from the region's S3-compatible
store (`fleet.manifests.model_source`: `s3://<bucket>/<prefix>/<model id>`, or the serving's own
`s3://` uri). This module lists the same keys, before anything is deployed, and says what is missing:

- `config.json`;
- a tokenizer: `tokenizer.json`, `tokenizer.model` or `vocab.json` (any one; `tiktoken` files too);
- weights: every shard `model.safetensors.index.json` lists when that index exists, else at least
  one `*.safetensors` or `*.bin` file.

A store that answers and lacks any of these is a finding that blocks (the pods would crash-loop in
the fetch or the engine's load); a store the portal cannot ask (unreachable endpoint, no or refused
credentials) is advisory — the clusters may reach a store the portal cannot, so it is said, not
enforced. Regions are checked in parallel; identical locations once.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from fleet.manifests import model_source
from fleet.spec import ModelServing, ModelStore
from fleet.stack import Fleet
from portal.settings import Settings

log = logging.getLogger("modelfleet.portal")

CONFIG = "config.json"
TOKENIZERS = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "qwen.tiktoken")
INDEX = "model.safetensors.index.json"
WEIGHTS = (".safetensors", ".bin")
MISSING_BUCKET = ("NoSuchBucket",)

Status = Literal["ok", "missing", "unreachable"]


@dataclass(frozen=True)
class StoreCheck:
    """What one region's store holds for a model."""

    region: str
    endpoint: str
    uri: str  # s3://bucket/prefix, the folder the fetch syncs
    status: Status
    files: int = 0
    bytes: int = 0
    missing: tuple[str, ...] = ()  # keys (relative to `uri`) that should be there and are not
    reason: str = ""  # why the store could not be asked, or what is wrong with it

    def fact(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "endpoint": self.endpoint,
            "uri": self.uri,
            "status": self.status,
            "files": self.files,
            "bytes": self.bytes,
        }
        if self.missing:
            out["missing"] = list(self.missing)
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class _Target:
    endpoint: str
    bucket: str
    prefix: str
    credentials: str  # the store's credentials_secret, looked up in settings.s3_credentials


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _target(store: ModelStore, uri: str) -> _Target:
    bucket, prefix = split_uri(uri)
    return _Target(store.endpoint, bucket, prefix, store.credentials_secret)


@functools.lru_cache(maxsize=64)
def _client(endpoint: str, key_id: str | None, secret: str | None, region: str, timeout: float) -> Any:
    """One S3 client per endpoint and key pair (clients are thread-safe and slow to make); no key
    pair means boto3's default chain (environment, shared files, instance role)."""
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def _client_for(settings: Settings, target: _Target) -> Any:
    creds = settings.s3_credentials.get(target.credentials)
    if creds is None:
        return _client(target.endpoint, None, None, "us-east-1", settings.s3_timeout_seconds)
    return _client(
        target.endpoint,
        creds.access_key_id,
        creds.secret_access_key.get_secret_value(),
        creds.region,
        settings.s3_timeout_seconds,
    )


def expected_missing(names: set[str], index: dict[str, Any] | None) -> list[str]:
    """The expected files (top-level names) absent from `names`."""
    missing: list[str] = []
    if CONFIG not in names:
        missing.append(CONFIG)
    if not any(t in names for t in TOKENIZERS) and not any(n.endswith(".tiktoken") for n in names):
        missing.append("tokenizer.json (or tokenizer.model, vocab.json)")
    if index is not None:
        shards = sorted({str(v) for v in (index.get("weight_map") or {}).values()})
        missing += [shard for shard in shards if shard not in names]
        if not shards:
            missing.append(f"{INDEX} lists no shards (weight_map is empty)")
    elif not any(n.endswith(WEIGHTS) for n in names):
        missing.append("*.safetensors (or *.bin) weights")
    return missing


def _look(settings: Settings, target: _Target) -> tuple[Status, int, int, tuple[str, ...], str]:
    client = _client_for(settings, target)
    folder = f"{target.prefix}/" if target.prefix else ""
    sizes: dict[str, int] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=folder):
            for item in page.get("Contents", ()):
                sizes[item["Key"][len(folder) :]] = int(item.get("Size", 0))
        index: dict[str, Any] | None = None
        if INDEX in sizes:
            body = client.get_object(Bucket=target.bucket, Key=folder + INDEX)["Body"].read()
            try:
                parsed = json.loads(body)
            except ValueError:
                return "missing", len(sizes), sum(sizes.values()), (INDEX,), f"{INDEX} is not valid JSON"
            index = parsed if isinstance(parsed, dict) else {}
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in MISSING_BUCKET:
            return "missing", 0, 0, (), f"bucket {target.bucket!r} does not exist at {target.endpoint}"
        return "unreachable", 0, 0, (), f"the store refused the request ({code or exc})"
    except BotoCoreError as exc:  # connection refused or timed out, no credentials, bad endpoint
        return "unreachable", 0, 0, (), str(exc)
    top = {key for key in sizes if "/" not in key}
    missing = tuple(expected_missing(top, index))
    reason = "" if sizes else "no objects under this prefix"
    return ("missing" if missing else "ok"), len(sizes), sum(sizes.values()), missing, reason


def check_model_store(
    settings: Settings, fleet: Fleet, serving: ModelServing, regions: Iterable[str]
) -> list[StoreCheck]:
    """Look for `serving`'s model in the store of each of `regions` (in parallel), in that order.

    `fleet` must know the serving's model (`fleet.models[serving.name]`), as the candidate's view
    from `fleet.incremental.check_change` does."""
    wanted = [r for r in dict.fromkeys(regions) if r in fleet.regions]
    uris = {r: model_source(fleet, serving, fleet.regions[r]) for r in wanted}
    # Only a store is looked into: `pvc://`, `hf://` and `modelscope://` sources are mounted or fetched
    # from their hub at start (fleet.manifests), not read from the region's store.
    wanted = [r for r in wanted if uris[r].startswith("s3://")]
    targets = {r: _target(fleet.regions[r].model_store, uris[r]) for r in wanted}
    unique = list(dict.fromkeys(targets.values()))
    if len(unique) == 1:
        answers = {unique[0]: _look(settings, unique[0])}
    elif unique:
        with ThreadPoolExecutor(max_workers=min(8, len(unique)), thread_name_prefix="model-store") as pool:
            answers = dict(zip(unique, pool.map(lambda t: _look(settings, t), unique), strict=True))
    out: list[StoreCheck] = []
    for r in wanted:
        status, files, size, missing, reason = answers[targets[r]]
        out.append(StoreCheck(r, targets[r].endpoint, uris[r], status, files, size, missing, reason))
    return out


@dataclass(frozen=True)
class StoreFinding:
    level: Literal["mandatory", "advisory"]
    subject: str
    message: str


def findings(checks: Iterable[StoreCheck], simulated: Collection[str] = ()) -> list[StoreFinding]:
    """The checks as preflight findings: missing files block, a store not asked is advice. In the
    `simulated` regions (a local region whose `local.engines` is `simulate`) the engine simulator runs
    in the engine's place and reads no weights, so missing files there are advice too."""
    out: list[StoreFinding] = []
    for c in checks:
        subject = f"regions[{c.region}].model_store"
        if c.status == "missing":
            what = ", ".join(c.missing) if c.missing else c.reason
            detail = f" ({c.reason})" if c.missing and c.reason else ""
            message = (
                f"region {c.region}: the model store ({c.endpoint}) lacks {what} under {c.uri}/{detail}; "
            )
            if c.region in simulated:
                message += (
                    "the engine simulator runs in this region in the engine's place (local.engines: "
                    "simulate) and reads no weights, so this does not block here; a real engine would "
                    "need them"
                )
                out.append(StoreFinding("advisory", subject, message))
                continue
            message += "upload the model there before deploying, or the pods' model-fetch will not get it"
            out.append(StoreFinding("mandatory", subject, message))
        elif c.status == "unreachable":
            out.append(
                StoreFinding(
                    "advisory",
                    subject,
                    f"region {c.region}: could not check the model store at {c.endpoint} for {c.uri}/ "
                    f"({c.reason}); the weights were NOT verified. Set MODELFLEET_S3_CREDENTIALS for "
                    "the store's credentials_secret, or check the files yourself",
                )
            )
    return out


__all__ = ["StoreCheck", "StoreFinding", "check_model_store", "expected_missing", "findings", "split_uri"]
