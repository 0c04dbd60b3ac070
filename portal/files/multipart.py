"""A file of more than one part: a multipart upload of ranged reads, several parts at a time, taking
up an unfinished upload of the same key (its finished parts are not fetched again), its digest
computed in part order and each part's MD5 checked against the store's etag; one stream from the
first byte for a server that ignores Range."""

from __future__ import annotations

import hashlib

from portal.files import http as hub
from portal.files.context import CopyJob, named, settle
from portal.files.errors import Cancelled, SourceUnavailable, StoreFailed
from portal.files.inorder import InOrderDigest
from portal.files.listing import RemoteFile
from portal.files.stored import MD5, s3call


def upload_multipart(
    job: CopyJob, key: str, f: RemoteFile, *, resume: bool
) -> tuple[bool, tuple[int, str] | None]:
    """Upload `f` in parts: whether some parts came from an earlier attempt, and the (size, digest)
    of what streamed when every part was read in this run and the store confirmed each part's MD5
    (else None: the copy is verified by reading it back)."""
    size = job.tuning.part_size_for(f.size)
    layout = [(n + 1, start, min(size, f.size - start)) for n, start in enumerate(range(0, f.size, size))]
    upload, have = _resumable(job, key, f.path) if resume else (None, {})
    if upload is None:
        created = s3call(f.path, job.s3.create_multipart_upload, Bucket=job.bucket.bucket, Key=key)
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
        uploaded = settle(
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
    s3call(
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
    job: CopyJob,
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
    what = f"{named(job, f)} (part {number}, bytes {start}-{start + length - 1})"
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
            answer = s3call(
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
    job: CopyJob,
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
    for chunk in hub.stream(job.http, url, headers, what=named(job, f), cancel=job.cancel):
        buf += chunk
        while len(buf) >= length:
            data, buf = bytes(buf[:length]), buf[length:]
            if number not in etags:
                answer = s3call(
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


def _resumable(job: CopyJob, key: str, what: str) -> tuple[str | None, dict[int, tuple[int, str]]]:
    """The newest unfinished upload of `key` and its parts (number → size, etag); older ones are
    aborted (ours too: one download per key runs at a time)."""
    listed = s3call(what, job.s3.list_multipart_uploads, Bucket=job.bucket.bucket, Prefix=key)
    uploads = sorted(
        (u for u in listed.get("Uploads", []) if u.get("Key") == key), key=lambda u: u.get("Initiated") or 0
    )
    if not uploads:
        return None, {}
    for stale in uploads[:-1]:
        s3call(
            what, job.s3.abort_multipart_upload, Bucket=job.bucket.bucket, Key=key, UploadId=stale["UploadId"]
        )
    upload = str(uploads[-1]["UploadId"])
    have: dict[int, tuple[int, str]] = {}
    marker = 0
    while True:
        page = s3call(
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


__all__ = ["upload_multipart"]
