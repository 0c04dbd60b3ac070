"""The copy of a listing into a bucket: parallel files and parts, resumable, verified.

- A file up to one part is read into memory, checked against its digest and written with one PUT.
- A larger file is a multipart upload of parts read with ranged GETs, several at a time. Memory stays
  bounded, whatever the file sizes: at most `parts` part buffers, reused (and one small file per file
  in flight) are alive.
- Resume: a stored object tagged with the file's digest is done (not read again); an unfinished
  multipart upload of the same key is taken up again, its finished parts (listed, of the right size)
  are not fetched again.
- Verification: a file's digest (sha256, or git's blob id) is computed as its parts stream, in order
  (`portal.files.inorder`), and each part's MD5 is compared with the etag the store answers, so the
  store is known to hold exactly the bytes that were hashed. A file built partly from an earlier
  attempt's parts (or on a store whose etags are not MD5s) is read back from the store and hashed
  instead. Then the object is tagged `modelfleet-digest=<digest>`. A mismatch deletes the object; if
  it was built on an earlier attempt's parts it is copied once more from scratch, else the download
  fails naming the file.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from portal.files import http as hub
from portal.files.bucket import Bucket
from portal.files.buffers import Buffers
from portal.files.errors import Cancelled, FilesError, SourceUnavailable, StoreFailed, VerificationFailed
from portal.files.inorder import InOrderDigest, hasher_for
from portal.files.listing import Listing, RemoteFile
from portal.files.progress import Meter
from portal.files.source import Source

TAG = "modelfleet-digest"
MiB = 1 << 20
MIN_PART = 5 * MiB  # S3's smallest part (but the last)
MAX_PARTS = 10_000
Stored = Literal["done", "unverified", "absent"]
MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Tuning:
    part_size: int = 8 * MiB
    parts: int = 8  # part transfers in flight, across files
    files: int = 4  # files in flight
    attempts: int = 5  # per request to the hub; the store's client retries on its own
    backoff: float = 0.5  # seconds, doubled each attempt (with jitter)

    def part_size_for(self, size: int) -> int:
        """`part_size`, raised (in MiB steps) so a file fits in S3's 10,000 parts."""
        need = -(-size // MAX_PARTS)
        return max(self.part_size, MIN_PART, -(-need // MiB) * MiB)


@dataclass(frozen=True)
class _Job:
    source: Source
    listing: Listing
    bucket: Bucket
    http: httpx.Client
    s3: Any
    tuning: Tuning
    cancel: threading.Event
    meter: Meter
    parts: ThreadPoolExecutor
    buffers: Buffers  # the part buffers, bounded and reused


def copy(
    source: Source,
    listing: Listing,
    bucket: Bucket,
    *,
    http: httpx.Client,
    s3: Any,
    tuning: Tuning,
    cancel: threading.Event,
    meter: Meter,
) -> None:
    """Copy every file of `listing` to `bucket`; the first failure stops the rest and is raised."""
    meter.begin(listing.total_bytes, len(listing.files))
    with (
        ThreadPoolExecutor(tuning.parts, thread_name_prefix="files-part") as parts,
        ThreadPoolExecutor(tuning.files, thread_name_prefix="files-file") as files,
    ):
        buffers = Buffers(tuning.parts, tuning.part_size)  # a slow part holds the others back
        job = _Job(source, listing, bucket, http, s3, tuning, cancel, meter, parts, buffers)
        futures = [files.submit(_file, job, f) for f in listing.files]
        _settle(futures, cancel)
    meter.phase("ready")


def _settle(futures: list[Future[Any]], cancel: threading.Event) -> list[Any]:
    """Every result, or the first real failure (not a cancel it caused) once the others stopped."""
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    if pending:  # something failed: stop the rest, then say what failed first
        failed = next(f.exception() for f in done if f.exception() is not None)
        if not isinstance(failed, hub.RangeIgnored):  # the siblings will say the same, and that is no failure
            cancel.set()
        for f in pending:
            f.cancel()
        wait(pending)
    errors = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception()]
    first = next((e for e in errors if not isinstance(e, Cancelled)), errors[0] if errors else None)
    if first is not None:
        raise first
    return [f.result() for f in futures]


def _file(job: _Job, f: RemoteFile) -> None:
    key = job.bucket.key(f.path)
    state = _stored(job, key, f)
    if state == "done":
        job.meter.skipped(f.size)
    elif state == "unverified":  # complete in the store, never checked (an interrupted verify, or by hand)
        job.meter.skipped(f.size)
        if _mismatch_stored(job, key, f) is not None:
            _delete(job, key)
            job.meter.skipped(-f.size)
            _transfer(job, key, f, resume=False)
    else:
        _transfer(job, key, f, resume=True)
    job.meter.file_done()


def _transfer(job: _Job, key: str, f: RemoteFile, *, resume: bool) -> None:
    if f.size <= job.tuning.part_size:
        _small(job, key, f)
        return
    reused, streamed = _multipart(job, key, f, resume=resume)
    if streamed is not None:  # every part read in this run, and the store acknowledged each one's MD5
        problem = _mismatch(f, streamed)
        if problem is None:
            _tag(job, key, f)
            return
        _delete(job, key)
        raise VerificationFailed(f.path, f"{problem}; the copy was deleted from the store")
    problem = _mismatch_stored(job, key, f)
    if problem is None:
        return
    _delete(job, key)
    if not reused:
        raise VerificationFailed(f.path, f"{problem}; the copy was deleted from the store")
    job.meter.skipped(-f.size)  # parts of an earlier attempt did not fit: once more from scratch
    _multipart(job, key, f, resume=False)
    problem = _mismatch_stored(job, key, f)
    if problem is not None:
        _delete(job, key)
        raise VerificationFailed(f.path, f"{problem}; the copy was deleted from the store")


def _small(job: _Job, key: str, f: RemoteFile) -> None:
    url, headers = job.source.locate(job.listing, f)
    data = (
        hub.retrying(
            lambda: hub.read_range(
                job.http,
                url,
                headers,
                0,
                f.size,
                what=_named(job, f),
                cancel=job.cancel,
                progress=job.meter.moved,
            ),
            attempts=job.tuning.attempts,
            cancel=job.cancel,
            base=job.tuning.backoff,
        )
        if f.size
        else bytearray()
    )
    problem = _mismatch(f, _digest_of(f, [data]))
    if problem:
        raise VerificationFailed(f.path, problem)
    _s3(
        f.path,
        job.s3.put_object,
        Bucket=job.bucket.bucket,
        Key=key,
        Body=data,
        Tagging=f"{TAG}={quote(f.digest)}",
    )


def _multipart(job: _Job, key: str, f: RemoteFile, *, resume: bool) -> tuple[bool, tuple[int, str] | None]:
    """Upload `f` in parts: whether some parts came from an earlier attempt, and the (size, digest)
    of what streamed when every part was read in this run and the store confirmed each part's MD5
    (else None: the copy is verified by reading it back)."""
    size = job.tuning.part_size_for(f.size)
    layout = [(n + 1, start, min(size, f.size - start)) for n, start in enumerate(range(0, f.size, size))]
    upload, have = _resumable(job, key, f.path) if resume else (None, {})
    if upload is None:
        created = _s3(f.path, job.s3.create_multipart_upload, Bucket=job.bucket.bucket, Key=key)
        upload = str(created["UploadId"])
    etags: dict[int, str] = {}
    for number, _start, length in layout:
        if have.get(number, (0, ""))[0] == length:
            etags[number] = have[number][1]
            job.meter.skipped(length)
    url, headers = job.source.locate(job.listing, f)
    todo = [(n, s, length) for n, s, length in layout if n not in etags]
    digest = InOrderDigest(f, job.buffers) if len(todo) == len(layout) else None
    confirmed = True
    try:
        uploaded = _settle(
            [job.parts.submit(_part, job, key, f, upload, url, headers, digest, *p) for p in todo], job.cancel
        )
        etags.update({n: etag for n, etag, _ in uploaded})
        confirmed = all(ok for _, _, ok in uploaded)
    except hub.RangeIgnored:
        if digest is not None:
            digest.close()
        digest, confirmed = None, False
        hub.retrying(
            lambda: _sequential(job, key, f, upload, url, headers, layout, etags),
            attempts=job.tuning.attempts,
            cancel=job.cancel,
            base=job.tuning.backoff,
        )
    finally:
        if digest is not None:
            digest.close()
    parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
    _s3(
        f.path,
        job.s3.complete_multipart_upload,
        Bucket=job.bucket.bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": parts},
    )
    streamed = (digest.size, digest.hexdigest()) if digest is not None and confirmed else None
    return len(todo) < len(layout), streamed


def _part(
    job: _Job,
    key: str,
    f: RemoteFile,
    upload: str,
    url: str,
    headers: dict[str, str],
    digest: InOrderDigest | None,
    number: int,
    start: int,
    length: int,
) -> tuple[int, str, bool]:
    """Read one part, upload it, hand it to the file's digest: (number, etag, whether the store's
    etag is the part's MD5, i.e. it holds exactly these bytes)."""
    if job.cancel.is_set():
        raise Cancelled("cancelled")
    what = f"{_named(job, f)} (part {number}, bytes {start}-{start + length - 1})"
    buf = job.buffers.take(length, job.cancel)
    try:
        data = hub.retrying(
            lambda: hub.read_range(
                job.http,
                url,
                headers,
                start,
                length,
                what=what,
                cancel=job.cancel,
                progress=job.meter.moved,
                into=buf,
            ),
            attempts=job.tuning.attempts,
            cancel=job.cancel,
            base=job.tuning.backoff,
        )
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        for _ in range(job.tuning.attempts):
            answer = _s3(
                what,
                job.s3.upload_part,
                Bucket=job.bucket.bucket,
                Key=key,
                UploadId=upload,
                PartNumber=number,
                Body=data,
            )
            etag = str(answer["ETag"])
            plain = etag.strip('"').lower()
            # An MD5 etag that differs: the store got other bytes than were sent; send them again.
            if not MD5.match(plain) or plain == md5:
                break
        else:
            raise StoreFailed(
                f"{what}: the store keeps answering another MD5 than the part's ({plain} != {md5})"
            )
    except BaseException:
        job.buffers.give(buf)
        raise
    if digest is not None:
        digest.done(number, buf)  # hashed in order, then given back
    else:
        job.buffers.give(buf)
    return number, etag, plain == md5


def _sequential(
    job: _Job,
    key: str,
    f: RemoteFile,
    upload: str,
    url: str,
    headers: dict[str, str],
    layout: list[tuple[int, int, int]],
    etags: dict[int, str],
) -> None:
    """The file in one stream from its first byte (a server without Range): parts are uploaded as
    they fill, in order; parts uploaded already are read past. Counted as moved once uploaded."""
    ends = iter(layout)
    number, _start, length = next(ends)
    buf = bytearray()
    for chunk in hub.stream(job.http, url, headers, what=_named(job, f), cancel=job.cancel):
        buf += chunk
        while len(buf) >= length:
            data, buf = bytes(buf[:length]), buf[length:]
            if number not in etags:
                answer = _s3(
                    f"{f.path} (part {number})",
                    job.s3.upload_part,
                    Bucket=job.bucket.bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    Body=data,
                )
                etags[number] = str(answer["ETag"])
                job.meter.moved(length)
            nxt = next(ends, None)
            if nxt is None:
                return
            number, _start, length = nxt
    raise SourceUnavailable(f"{f.path}: the body ended before byte {f.size}")


def _resumable(job: _Job, key: str, what: str) -> tuple[str | None, dict[int, tuple[int, str]]]:
    """The newest unfinished upload of `key` and its parts (number → size, etag); older ones are
    aborted (ours too: one download per key runs at a time)."""
    listed = _s3(what, job.s3.list_multipart_uploads, Bucket=job.bucket.bucket, Prefix=key)
    uploads = sorted(
        (u for u in listed.get("Uploads", []) if u.get("Key") == key), key=lambda u: u.get("Initiated") or 0
    )
    if not uploads:
        return None, {}
    for stale in uploads[:-1]:
        _s3(
            what, job.s3.abort_multipart_upload, Bucket=job.bucket.bucket, Key=key, UploadId=stale["UploadId"]
        )
    upload = str(uploads[-1]["UploadId"])
    have: dict[int, tuple[int, str]] = {}
    marker = 0
    while True:
        page = _s3(
            what,
            job.s3.list_parts,
            Bucket=job.bucket.bucket,
            Key=key,
            UploadId=upload,
            PartNumberMarker=marker,
        )
        for p in page.get("Parts", []):
            have[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]))
        if not page.get("IsTruncated"):
            return upload, have
        marker = int(page["NextPartNumberMarker"])


def _stored(job: _Job, key: str, f: RemoteFile) -> Stored:
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
    tags = _s3(f.path, job.s3.get_object_tagging, Bucket=job.bucket.bucket, Key=key)
    digest = {t["Key"]: t["Value"] for t in tags.get("TagSet", [])}.get(TAG)
    return "done" if digest == f.digest else "unverified"


def _mismatch_stored(job: _Job, key: str, f: RemoteFile) -> str | None:
    """Read the stored object back and compare it with the hub's digest: what differs, or None
    (and the object is tagged as verified)."""
    job.meter.phase("verifying")
    body = _s3(f.path, job.s3.get_object, Bucket=job.bucket.bucket, Key=key)["Body"]

    def chunks() -> Any:
        for chunk in body.iter_chunks(hub.CHUNK):
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            yield chunk

    try:
        problem = _mismatch(f, _digest_of(f, chunks()))
    except (BotoCoreError, ClientError) as exc:
        raise StoreFailed(f"{f.path}: reading it back from the store failed: {exc}") from exc
    finally:
        body.close()
    if problem:
        return problem
    _tag(job, key, f)
    return None


def _tag(job: _Job, key: str, f: RemoteFile) -> None:
    """Mark the stored object verified: a later run skips it without reading it."""
    _s3(
        f.path,
        job.s3.put_object_tagging,
        Bucket=job.bucket.bucket,
        Key=key,
        Tagging={"TagSet": [{"Key": TAG, "Value": f.digest}]},
    )


def _digest_of(f: RemoteFile, chunks: Any) -> tuple[int, str]:
    """(size, hex digest) of the chunks, with the hash `f` is published with."""
    h = hasher_for(f)
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def _mismatch(f: RemoteFile, got: tuple[int, str]) -> str | None:
    size, digest = got
    if size != f.size:
        return f"{size} bytes where the hub lists {f.size}"
    if f.sha256 and digest != f.sha256.lower():
        return f"sha256 {digest} where the hub lists {f.sha256}"
    if not f.sha256 and f.git_oid and digest != f.git_oid.lower():
        return f"git blob id {digest} where the hub lists {f.git_oid}"
    return None


def _named(job: _Job, f: RemoteFile) -> str:
    """A file as a refusal names it: the repository (a gate or a 404 is about it) and the path."""
    return f"{job.listing.repository}: {f.path}" if job.listing.source in ("hf", "modelscope") else f.path


def _delete(job: _Job, key: str) -> None:
    _s3(key, job.s3.delete_object, Bucket=job.bucket.bucket, Key=key)


def _s3(what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise StoreFailed(f"{what}: the store refused the request ({code}: {exc})") from exc
    except BotoCoreError as exc:
        raise StoreFailed(f"{what}: the store did not answer ({exc})") from exc


__all__ = ["TAG", "FilesError", "Tuning", "copy"]
