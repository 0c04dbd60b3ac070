"""The usage writer: one `UsageRecord` per request, written in batches by a thread, off the request path.

The request path only appends a row to a queue (no I/O). A daemon thread writes up to
`usage_batch_size` rows per transaction, at the latest `usage_flush_seconds` after the first one
arrived. In the same transaction it charges the tokens to the API keys' and workspaces' quotas with
atomic SQL increments (`used_tokens = used_tokens + n`, restarted at a new refresh period), so the
usage rows and the quota counters cannot disagree.

Idempotent on `request_id`: rows go in with `ON CONFLICT (request_id) DO NOTHING ... RETURNING`, and
only the rows really inserted are charged, so a batch retried after a failed commit (the database was
down) charges nothing twice. A failed batch is retried with back-off; rows wait in memory meanwhile.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from portal.gateway import metrics
from portal.gateway.quotas import Counter
from portal.models import ApiKey, UsageRecord, Workspace

log = logging.getLogger("modelfleet.gateway")

# Fields of a queued row that are not columns: the quota counters the row is charged to.
CHARGES = "_charges"


class UsageWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.5,
        lock: threading.Lock | None = None,
        on_flushed: Callable[[Counter, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.lock = lock or threading.Lock()  # shared with the snapshot loader (see quotas.py)
        self.on_flushed = on_flushed
        # The request path appends to a deque (atomic, no lock, no thread wake-up); the thread wakes on
        # its own every `flush_seconds`, or early when a full batch is waiting.
        self._rows: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._queued = 0  # only the gateway's event loop thread adds to it
        self._written = 0  # rows handled (inserted or found already there)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="gateway-usage-writer", daemon=True)
            self._thread.start()

    def put(self, row: dict[str, Any]) -> None:
        """Queue one row (a dict of `UsageRecord` columns plus `_charges`). Never blocks."""
        self._queued += 1
        self._rows.append(row)
        if len(self._rows) >= self.batch_size:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is written (tests, shutdown). False on timeout."""
        target = self._queued
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._written >= target, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        rows = self._rows
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            metrics.USAGE_QUEUE.set(len(rows))
            while rows:
                batch = [rows.popleft() for _ in range(min(self.batch_size, len(rows)))]
                self._write_until_done(batch)
            if self._stopping:
                return

    def _write_until_done(self, rows: list[dict[str, Any]]) -> None:
        delay = 0.2
        while True:
            try:
                self.write(rows)
                break
            except Exception:
                metrics.USAGE_WRITE_FAILURES.inc()
                log.exception("gateway: writing %d usage rows failed; retrying in %.1f s", len(rows), delay)
                if self._stopping and delay > 2:
                    log.error("gateway: giving up on %d usage rows at shutdown", len(rows))
                    break
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        with self._done:
            self._written += len(rows)
            self._done.notify_all()

    def write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the rows that are new and charge their tokens to the quotas, in one transaction."""
        columns = [{k: v for k, v in row.items() if k != CHARGES} for row in rows]
        by_id = {row["request_id"]: row for row in rows}
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(UsageRecord)
            .on_conflict_do_nothing(index_elements=["request_id"])
            .returning(UsageRecord.request_id)
        )
        totals: dict[Counter, int] = {}
        last_used: dict[str, datetime] = {}
        with self.lock:
            with self.engine.begin() as conn:
                inserted = conn.execute(statement, columns).scalars().all() if columns else []
                for request_id in inserted:
                    row = by_id[request_id]
                    tokens = row["prompt_tokens"] + row["completion_tokens"]
                    if row["api_key"] and row["at"] > last_used.get(row["api_key"], row["at"]):
                        last_used[row["api_key"]] = row["at"]
                    last_used.setdefault(row["api_key"], row["at"])
                    if tokens:
                        for counter in row.get(CHARGES, ()):
                            totals[counter] = totals.get(counter, 0) + tokens
                for counter, tokens in totals.items():
                    conn.execute(_charge(counter, tokens))
                for key, at in last_used.items():
                    conn.execute(
                        update(ApiKey)
                        .where(ApiKey.public_id == key)
                        .values(last_used_at=at, updated_at=ApiKey.updated_at)
                    )
            if self.on_flushed is not None:
                for counter, tokens in totals.items():
                    self.on_flushed(counter, tokens)
        return len(inserted)


def _charge(counter: Counter, tokens: int) -> Any:
    """`used_tokens += tokens` in the counter's period: a newer period restarts the count, a row of an
    older period (written late) is not charged to the new one. `updated_at` is left alone, so usage
    does not look like a configuration change to the gateways polling it."""
    kind, ident, period = counter
    model: Any = ApiKey if kind == "api_key" else Workspace
    where = model.public_id == ident if kind == "api_key" else model.slug == ident
    used, start = model.used_tokens, model.quota_period_start
    values: dict[str, ColumnElement[Any] | Any] = {"updated_at": model.updated_at}
    if period is None:
        values["used_tokens"] = used + tokens
    else:
        newer = start.is_(None) | (start < period)
        values["used_tokens"] = case((start == period, used + tokens), (newer, tokens), else_=used)
        values["quota_period_start"] = case((newer, period), else_=start)
    return update(model).where(where).values(**values)
