"""The stack worker: a thread started with the app that applies queued requests, job after job.

`run_once` does one pass synchronously (tests drive it directly); `start_worker` loops it in a
thread, and now and then also re-queues jobs of dead workers and asks GitHub about open pull
requests (webhooks make that faster, the poll makes it certain).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from portal import placements
from portal.services import Services
from portal.stacks import jobs

log = logging.getLogger("modelfleet.portal.worker")
HOUSEKEEPING_SECONDS = 60.0  # stale-job recovery and pull-request polling


def run_once(services: Services, worker: str | None = None, settle: jobs.Settle = jobs.NOW) -> int:
    """Claim and run jobs until no stack has work left; the number of jobs run."""
    worker = worker or jobs.new_worker_id()
    done = 0
    while (job_id := jobs.claim(services, worker, settle)) is not None:
        jobs.execute(services, job_id, worker)
        done += 1
    return done


def housekeeping(services: Services) -> None:
    jobs.recover(services)
    for job_id in jobs.proposed_jobs(services):
        try:
            jobs.sync_pull_request(services, job_id)
        except Exception as exc:  # GitHub down or misconfigured: try again next round
            log.warning("pull request of job %s not synced: %s", job_id, exc)
    placements.publish_all(services)  # merged pull requests changed what should run


def start_worker(
    services: Services,
    *,
    poll_seconds: float | None = None,
    housekeeping_seconds: float = HOUSEKEEPING_SECONDS,
) -> Callable[[], None]:
    """Start the worker thread; returns the function that stops it (waiting for the current job)."""
    worker = jobs.new_worker_id()
    poll = poll_seconds if poll_seconds is not None else services.settings.worker_poll_seconds
    # Embedded SQLite means one process: whatever is `running` was left by a previous run of it.
    single_process = services.engine.url.get_backend_name() == "sqlite"
    jobs.recover(services, stale_after=None if single_process else jobs.STALE_AFTER)
    stop = threading.Event()

    def loop() -> None:
        next_housekeeping = time.monotonic() + housekeeping_seconds
        while not stop.is_set():
            try:
                run_once(services, worker, jobs.BURSTS)
                if time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + housekeeping_seconds
                    housekeeping(services)
            except Exception:  # the database blinked; the rows are still there next round
                log.exception("stack worker pass failed")
            stop.wait(poll)

    thread = threading.Thread(target=loop, name="modelfleet-stack-worker", daemon=True)
    thread.start()
    log.info("stack worker %s started (backend %s)", worker, services.settings.stack_backend)

    def stop_worker() -> None:
        stop.set()
        thread.join()

    return stop_worker


def worker_starter(services: Services) -> Callable[[], None] | None:
    """For the app's STARTERS: the worker runs unless `worker_enabled` is off."""
    return start_worker(services) if services.settings.worker_enabled else None
