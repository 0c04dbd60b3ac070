"""One download: list the source at a pinned commit, keep the files the patterns select, copy them into
the bucket; and the registry that lets requests for the same files share one running download.

A shared download counts its sharers: each `Downloads.start` is one, and `Download.detach` lets one
go. Cancelling one request's copy detaches it; the run stops only when its last sharer detaches
(`Download.cancel` stops it for everybody: a failure, or the process stopping)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from portal.files import http as hub
from portal.files.bucket import Bucket
from portal.files.copy import Tuning, copy
from portal.files.errors import Cancelled, FilesError, SourceRefused
from portal.files.listing import Listing
from portal.files.progress import Callback, Meter, Progress
from portal.files.source import Source

log = logging.getLogger("modelfleet.files")
DEFAULT_TUNING = Tuning()


@dataclass(frozen=True)
class Request:
    source: Source
    bucket: Bucket
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two requests the same download: the source at its revision, the place, the
        patterns. (Credentials are not part of it.)"""
        s = self.source
        return (
            s.kind,
            s.repository,
            getattr(s, "revision", ""),
            getattr(s, "endpoint", ""),
            self.bucket.endpoint,
            self.bucket.bucket,
            self.bucket.prefix,
            self.include,
            self.exclude,
        )


def run(
    request: Request,
    *,
    tuning: Tuning = DEFAULT_TUNING,
    cancel: threading.Event | None = None,
    progress: Callback | None = None,
    http: httpx.Client | None = None,
    s3: Any = None,
) -> Listing:
    """Copy the request's files; returns what was copied (with the resolved commit). Raises a
    `FilesError` whose message names the repository or file and the reason."""
    cancel = cancel or threading.Event()
    meter = Meter(progress)
    own = http is None
    client = http or hub.client()
    try:
        listing = hub.retrying(
            lambda: request.source.listing(client),
            attempts=tuning.attempts,
            cancel=cancel,
            base=tuning.backoff,
        ).select(request.include, request.exclude)
        if not listing.files:
            raise SourceRefused(
                f"{request.source.repository}@{listing.commit}: no file matches the include/exclude patterns"
            )
        copy(
            request.source,
            listing,
            request.bucket,
            http=client,
            s3=s3 if s3 is not None else request.bucket.client(tuning.parts + tuning.files + 4),
            tuning=tuning,
            cancel=cancel,
            meter=meter,
        )
        return listing
    finally:
        if own:
            client.close()


@dataclass(eq=False)
class Download:
    """A running (or finished) download, shared by every request for the same files."""

    request: Request
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False  # by somebody (the event is also set by a failure, to stop the siblings)
    listing: Listing | None = None
    error: FilesError | None = None
    last: Progress = field(default_factory=lambda: Progress("listing"))
    sharers: int = 0  # the requests following it (`Downloads.start` counts them)
    _listeners: list[Callback] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def follow(self, callback: Callback) -> None:
        with self._lock:
            self._listeners.append(callback)
        callback(self.last)

    def unfollow(self, callback: Callback) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def cancel(self) -> None:
        """Stop the run for every sharer."""
        self.cancelled = True
        self.cancel_event.set()

    def detach(self, callback: Callback | None = None) -> bool:
        """One sharer lets go (and stops following with `callback`); the run is cancelled when it was
        the last. True when the run stops (or had ended), False when others still need it."""
        with self._lock:
            self.sharers = max(0, self.sharers - 1)
            last = self.sharers == 0
            if callback is not None and callback in self._listeners:
                self._listeners.remove(callback)
        if last and not self.finished:
            self.cancel()
        return last or self.finished

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Listing:
        """The listing copied, or the error; `TimeoutError` if still running after `timeout`."""
        if not self._done.wait(timeout):
            raise TimeoutError("the download is still running")
        if self.error is not None:
            raise self.error
        assert self.listing is not None
        return self.listing

    def _progress(self, p: Progress) -> None:
        with self._lock:
            self.last = p
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(p)
            except Exception:  # a listener's bug must not stop the bytes
                log.exception("a download progress listener failed")


class Downloads:
    """Starts downloads in threads; a request for files already downloading joins that download."""

    def __init__(self, tuning: Tuning = DEFAULT_TUNING) -> None:
        self.tuning = tuning
        self._running: dict[tuple[Any, ...], Download] = {}
        self._lock = threading.Lock()

    def start(self, request: Request, progress: Callback | None = None) -> tuple[Download, bool]:
        """The download of `request` and whether it was already running (shared). Each call is one
        sharer: it lets go with `Download.detach`."""
        with self._lock:
            running = self._running.get(request.key)
            shared = running is not None and not running.finished and not running.cancelled
            if not shared:
                running = Download(request)
                self._running[request.key] = running
                threading.Thread(
                    target=self._run, args=(running,), name="files-download", daemon=True
                ).start()
            assert running is not None
            with running._lock:
                running.sharers += 1
        if progress is not None:
            running.follow(progress)
        return running, shared

    def _run(self, d: Download) -> None:
        try:
            d.listing = run(d.request, tuning=self.tuning, cancel=d.cancel_event, progress=d._progress)
        except FilesError as exc:
            d.error = Cancelled("cancelled") if d.cancelled else exc
        except (
            Exception
        ) as exc:  # an unexpected failure is still this download's, said once, not raised in a thread
            log.exception("download of %s failed", d.request.source.repository)
            d.error = FilesError(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                if self._running.get(d.request.key) is d:
                    del self._running[d.request.key]
            d._done.set()


__all__ = ["Download", "Downloads", "Request", "run"]
