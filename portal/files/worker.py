"""The control plane's model-files worker: it downloads the queued copies of `local` regions (the
embedded setup: no cluster to run a Job in) in this process, and reports their progress in SQL.

One pass (`Worker.run_once`, which tests drive directly): take over copies whose holder stopped
(no heartbeat for `STALE_SECONDS`: a restart resumes them, finished files and parts stay), claim the
queued ones, write each running copy's latest progress, pass on cancels asked through the API, and
record how finished copies ended. Downloads run in threads of `Downloads`, which also makes two
copies of the same files into the same folder one download.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.spec import Region
from portal.files import records, targets
from portal.files.copy import Tuning
from portal.files.download import Download, Downloads, Request
from portal.files.errors import Cancelled, FilesError
from portal.files.listing import SourceKind
from portal.files.progress import Progress
from portal.services import Services
from store.db import transaction, utcnow
from store.models import ModelFiles, ModelFilesLocation

log = logging.getLogger("modelfleet.portal.files")
STALE_SECONDS = 60.0
IDLE_SECONDS = 30.0
WAKE = "files_worker_wake"
IN_PROCESS_RUNTIMES = ("local",)


@dataclass
class _Running:
    download: Download
    latest: Progress | None = None
    detached: bool = False  # this copy was cancelled: it no longer holds the (shared) run
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, p: Progress) -> None:
        with self.lock:
            self.latest = p


class Worker:
    def __init__(self, services: Services, tuning: Tuning | None = None) -> None:
        self.services = services
        self.id = f"portal-{uuid.uuid4().hex[:8]}"
        self.downloads = Downloads(tuning or Tuning())
        self.running: dict[int, _Running] = {}  # location id -> its download
        # Embedded SQLite means one process: a copy held by anyone else was left by an earlier run.
        self.single_process = services.engine.url.get_backend_name() == "sqlite"

    def _regions(self, stack: str) -> dict[str, Region]:
        repo = self.services.repository
        return dict(repo.snapshot(stack).fleet.regions) if stack in repo.stacks() else {}

    def run_once(self) -> None:
        with transaction(self.services.sessions) as session:
            stale = utcnow() - timedelta(seconds=STALE_SECONDS)
            for loc in session.scalars(
                select(ModelFilesLocation).where(
                    ModelFilesLocation.state.in_(("downloading", "verifying")),
                    ModelFilesLocation.runtime.in_(IN_PROCESS_RUNTIMES),
                )
            ):
                if loc.id in self.running:
                    continue
                if self.single_process or loc.heartbeat_at is None or loc.heartbeat_at < stale:
                    # Its holder stopped (this process restarted, or another died): resume it.
                    records.transition(
                        session, loc.files, loc, "queued", "the worker holding it stopped; resuming"
                    )
            for loc in session.scalars(
                select(ModelFilesLocation)
                .where(
                    ModelFilesLocation.state == "queued", ModelFilesLocation.runtime.in_(IN_PROCESS_RUNTIMES)
                )
                .order_by(ModelFilesLocation.id)
            ):
                self._claim(session, loc)
        self._report()

    def _claim(self, session: Session, loc: ModelFilesLocation) -> None:
        row = loc.files
        region = self._regions(row.stack).get(loc.region)
        if region is None:
            records.finish(
                session,
                row,
                loc,
                "failed",
                f"region {loc.region!r} is no longer in stack {row.stack!r}",
                None,
            )
            return
        kind: SourceKind = row.source  # type: ignore[assignment]  # checked on the way in (API)
        request = Request(
            targets.source(self.services.settings, region, kind, row.repository, row.revision),
            targets.bucket(self.services.settings, region, row.model_id),
            tuple(row.include),
            tuple(row.exclude),
        )
        running = _Running(self.downloads.start(request)[0])
        running.download.follow(running.take)
        self.running[loc.id] = running
        loc.worker, loc.heartbeat_at = self.id, utcnow()
        loc.attempt += 1
        loc.cancel_requested = False
        records.transition(session, row, loc, "downloading", None)

    def _report(self) -> None:
        if not self.running:
            return
        with transaction(self.services.sessions) as session:
            for loc_id, running in list(self.running.items()):
                loc = session.get(ModelFilesLocation, loc_id)
                if loc is None:  # the request was deleted: it lets go (others may share the run)
                    running.download.detach(running.take)
                    del self.running[loc_id]
                    continue
                row: ModelFiles = loc.files
                if loc.cancel_requested and not running.download.finished and not running.detached:
                    running.detached = True
                    if not running.download.detach(running.take):
                        # Another request still needs the shared run: it goes on for them, and this
                        # copy is cancelled now (it would otherwise read `ready` when they finish).
                        del self.running[loc_id]
                        records.finish(session, row, loc, "cancelled", "cancelled by request", None)
                        continue
                loc.heartbeat_at = utcnow()  # held, even while a listing or a slow part shows no bytes
                with running.lock:
                    latest = running.latest
                if latest is not None:
                    records.report(loc, latest)
                    if latest.phase == "verifying" and loc.state == "downloading":
                        records.transition(session, row, loc, "verifying", None)
                if not running.download.finished:
                    continue
                del self.running[loc_id]
                try:
                    listing = running.download.wait(0)
                except Cancelled:
                    records.finish(session, row, loc, "cancelled", "cancelled by request", None)
                except FilesError as exc:
                    records.finish(session, row, loc, "failed", str(exc), None)
                else:
                    loc.bytes_done, loc.bytes_total = listing.total_bytes, listing.total_bytes
                    loc.files_done = loc.files_total = len(listing.files)
                    records.finish(session, row, loc, "ready", None, listing.commit)

    def stop(self) -> None:
        for running in self.running.values():
            running.download.cancel()


def wake(services: Services) -> None:
    """Something was queued here: the worker's next pass comes now, not at its idle interval."""
    event = services.extras.get(WAKE)
    if isinstance(event, threading.Event):
        event.set()


def start_worker(services: Services, poll_seconds: float | None = None) -> Callable[[], None]:
    worker = Worker(services)
    stop = threading.Event()
    woken = services.extras.setdefault(WAKE, threading.Event())
    poll = poll_seconds if poll_seconds is not None else services.settings.files_poll_seconds

    def loop() -> None:
        last = 0.0
        while not stop.is_set():
            # Idle, a pass every IDLE_SECONDS is enough (another replica may have queued a copy);
            # while copies run, or when this process queued one, every `poll`.
            if worker.running or woken.is_set() or time.monotonic() - last >= IDLE_SECONDS:
                woken.clear()
                last = time.monotonic()
                try:
                    worker.run_once()
                except Exception:  # the database blinked; the rows are still there next round
                    log.exception("model-files worker pass failed")
            woken.wait(poll)

    thread = threading.Thread(target=loop, name="modelfleet-files-worker", daemon=True)
    thread.start()

    def stop_worker() -> None:
        stop.set()
        woken.set()  # the loop sleeps on it: stopping must not wait out the poll
        thread.join()
        worker.stop()

    return stop_worker


def files_worker_starter(services: Services) -> Callable[[], None] | None:
    """For the app's STARTERS: runs unless `files_worker_enabled` is off."""
    return start_worker(services) if services.settings.files_worker_enabled else None


__all__ = ["Worker", "files_worker_starter", "start_worker", "wake"]
