"""The copy's view of the store: is a file there already (verified, or to be checked), read it back
and compare it with the hub's digest, tag it verified, delete it; the store's errors as ours."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from portal.files import http as hub
from portal.files.context import CopyJob
from portal.files.errors import Cancelled, StoreFailed
from portal.files.inorder import hasher_for
from portal.files.listing import RemoteFile

TAG = "modelfleet-digest"
Stored = Literal["done", "unverified", "absent"]
MD5 = re.compile(r"^[0-9a-f]{32}$")


def stored_state(job: CopyJob, key: str, f: RemoteFile) -> Stored:
    try:
        head = job.s3.head_object(Bucket=job.bucket.bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return "absent"
        raise StoreFailed(f"{f.path}: the store refused a HEAD of {key}: {exc}") from exc
    except BotoCoreError as exc:
        raise StoreFailed(f"{f.path}: the store at {job.bucket.endpoint} did not answer: {exc}") from exc
    if int(head.get("ContentLength", -1)) != f.size:
        return "absent"  # another file (or a cut one) under the same name: overwritten
    tags = s3call(f.path, job.s3.get_object_tagging, Bucket=job.bucket.bucket, Key=key)
    digest = {t["Key"]: t["Value"] for t in tags.get("TagSet", [])}.get(TAG)
    return "done" if digest == f.digest else "unverified"


def mismatch_stored(job: CopyJob, key: str, f: RemoteFile) -> str | None:
    """Read the stored object back and compare it with the hub's digest: what differs, or None
    (and the object is tagged as verified)."""
    job.meter.phase("verifying")
    body = s3call(f.path, job.s3.get_object, Bucket=job.bucket.bucket, Key=key)["Body"]

    def chunks() -> Any:
        for chunk in body.iter_chunks(hub.CHUNK):
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            yield chunk

    try:
        problem = mismatch(f, digest_of(f, chunks()))
    except (BotoCoreError, ClientError) as exc:
        raise StoreFailed(f"{f.path}: reading it back from the store failed: {exc}") from exc
    finally:
        body.close()
    if problem:
        return problem
    tag(job, key, f)
    return None


def tag(job: CopyJob, key: str, f: RemoteFile) -> None:
    """Mark the stored object verified: a later run skips it without reading it."""
    s3call(
        f.path,
        job.s3.put_object_tagging,
        Bucket=job.bucket.bucket,
        Key=key,
        Tagging={"TagSet": [{"Key": TAG, "Value": f.digest}]},
    )


def digest_of(f: RemoteFile, chunks: Any) -> tuple[int, str]:
    """(size, hex digest) of the chunks, with the hash `f` is published with."""
    h = hasher_for(f)
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def mismatch(f: RemoteFile, got: tuple[int, str]) -> str | None:
    size, digest = got
    if size != f.size:
        return f"{size} bytes where the hub lists {f.size}"
    if f.sha256 and digest != f.sha256.lower():
        return f"sha256 {digest} where the hub lists {f.sha256}"
    if not f.sha256 and f.git_oid and digest != f.git_oid.lower():
        return f"git blob id {digest} where the hub lists {f.git_oid}"
    return None


def delete(job: CopyJob, key: str) -> None:
    s3call(key, job.s3.delete_object, Bucket=job.bucket.bucket, Key=key)


def s3call(what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise StoreFailed(f"{what}: the store refused the request ({code}: {exc})") from exc
    except BotoCoreError as exc:
        raise StoreFailed(f"{what}: the store did not answer ({exc})") from exc


__all__ = [
    "MD5",
    "TAG",
    "Stored",
    "delete",
    "digest_of",
    "mismatch",
    "mismatch_stored",
    "s3call",
    "stored_state",
    "tag",
]
