"""What one copy shares across its files and parts: the tuning, the clients, the cancel, the meter,
the part pool and buffers; and how its concurrent steps settle."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx

from portal.files import http as hub
from portal.files.bucket import Bucket
from portal.files.buffers import Buffers
from portal.files.errors import Cancelled
from portal.files.listing import Listing, RemoteFile
from portal.files.progress import Meter
from portal.files.source import Source

MiB = 1 << 20
MIN_PART = 5 * MiB  # S3's smallest part (but the last)
MAX_PARTS = 10_000


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
class CopyJob:
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


def settle(futures: list[Future[Any]], cancel: threading.Event) -> list[Any]:
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


def named(job: CopyJob, f: RemoteFile) -> str:
    """A file as a refusal names it: the repository (a gate or a 404 is about it) and the path."""
    return f"{job.listing.repository}: {f.path}" if job.listing.source in ("hf", "modelscope") else f.path


__all__ = ["MAX_PARTS", "MIN_PART", "CopyJob", "MiB", "Tuning", "named", "settle"]
