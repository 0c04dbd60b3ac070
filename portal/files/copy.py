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

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx

from portal.files import http as hub
from portal.files.bucket import Bucket
from portal.files.buffers import Buffers
from portal.files.context import CopyJob, MiB, Tuning, named, settle
from portal.files.errors import FilesError, VerificationFailed
from portal.files.listing import Listing, RemoteFile
from portal.files.multipart import upload_multipart
from portal.files.progress import Meter
from portal.files.source import Source
from portal.files.stored import (
    TAG,
    delete,
    digest_of,
    mismatch,
    mismatch_stored,
    s3call,
    stored_state,
    tag,
)


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
        job = CopyJob(source, listing, bucket, http, s3, tuning, cancel, meter, parts, buffers)
        futures = [files.submit(_file, job, f) for f in listing.files]
        settle(futures, cancel)
    meter.phase("ready")


def _file(job: CopyJob, f: RemoteFile) -> None:
    key = job.bucket.key(f.path)
    state = stored_state(job, key, f)
    if state == "done":
        job.meter.skipped(f.size)
    elif state == "unverified":  # complete in the store, never checked (an interrupted verify, or by hand)
        job.meter.skipped(f.size)
        if mismatch_stored(job, key, f) is not None:
            delete(job, key)
            job.meter.skipped(-f.size)
            _transfer(job, key, f, resume=False)
    else:
        _transfer(job, key, f, resume=True)
    job.meter.file_done()


def _transfer(job: CopyJob, key: str, f: RemoteFile, *, resume: bool) -> None:
    if f.size <= job.tuning.part_size:
        _small(job, key, f)
        return
    reused, streamed = upload_multipart(job, key, f, resume=resume)
    if streamed is not None:  # every part read in this run, and the store acknowledged each one's MD5
        problem = mismatch(f, streamed)
        if problem is None:
            tag(job, key, f)
            return
        delete(job, key)
        raise VerificationFailed(f.path, f"{problem}; the copy was deleted from the store")
    problem = mismatch_stored(job, key, f)
    if problem is None:
        return
    delete(job, key)
    if not reused:
        raise VerificationFailed(f.path, f"{problem}; the copy was deleted from the store")
    job.meter.skipped(-f.size)  # parts of an earlier attempt did not fit: once more from scratch
    upload_multipart(job, key, f, resume=False)
    problem = mismatch_stored(job, key, f)
    if problem is not None:
        delete(job, key)
        raise VerificationFailed(f.path, f"{problem}; the copy was deleted from the store")


def _small(job: CopyJob, key: str, f: RemoteFile) -> None:
    url, headers = job.source.locate(job.listing, f)
    data = (
        hub.retrying(
            lambda: hub.read_range(
                job.http,
                url,
                headers,
                0,
                f.size,
                what=named(job, f),
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
    problem = mismatch(f, digest_of(f, [data]))
    if problem:
        raise VerificationFailed(f.path, problem)
    s3call(
        f.path,
        job.s3.put_object,
        Bucket=job.bucket.bucket,
        Key=key,
        Body=data,
        Tagging=f"{TAG}={quote(f.digest)}",
    )


__all__ = ["TAG", "FilesError", "MiB", "Tuning", "copy"]
