"""The portal's usage upkeep thread: roll up new rows, then prune old ones, every
`usage_rollup_interval_seconds` (one of the app's STARTERS)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from portal.services import Services
from portal.usage.retention import prune_usage, retention_cutoff
from portal.usage.rollup import rollup_once

log = logging.getLogger("modelfleet.portal.usage")


def upkeep_once(sessions: sessionmaker[Session], retention_days: int | None) -> None:
    """One round. A failing step is logged and retried next round; pruning runs even when the rollup
    step failed (a lock timeout on a busy database), since it only touches rows already rolled up."""
    try:
        run = rollup_once(sessions)
        if run.rows:
            log.info(
                "usage rollup: %d rows into %d buckets (watermark %d)", run.rows, run.buckets, run.last_id
            )
    except Exception:  # the database blinked, or a lock timed out: the rows wait for next round
        log.exception("usage rollup pass failed")
    if retention_days is None:
        return
    try:
        deleted = prune_usage(sessions, retention_cutoff(retention_days))
        if deleted:
            log.info("usage retention: deleted %d rows older than %d days", deleted, retention_days)
    except Exception:
        log.exception("usage retention pass failed")


def start_rollups(
    services: Services, *, interval_seconds: float | None = None, retention_days: int | None = None
) -> Callable[[], None]:
    """Run `upkeep_once` every `interval_seconds` (default: the settings') in a daemon thread, pruning
    rows older than `retention_days` (default: the settings'; None there keeps every row); returns the
    function that stops it."""
    settings = services.settings
    interval = interval_seconds if interval_seconds is not None else settings.usage_rollup_interval_seconds
    retention = retention_days if retention_days is not None else settings.usage_retention_days
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            upkeep_once(services.sessions, retention)

    thread = threading.Thread(target=loop, name="modelfleet-usage-rollup", daemon=True)
    thread.start()

    def stop_rollups() -> None:
        stop.set()
        thread.join()

    return stop_rollups


def rollup_starter(services: Services) -> Callable[[], None] | None:
    """For the app's STARTERS: statistics are exact without it (they read the raw tail), the rollups
    keep that tail short, and retention keeps the raw rows bounded."""
    return start_rollups(services)
