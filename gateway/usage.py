"""The usage writer: one `UsageRecord` per request, written in batches by a thread, off the request path.

The request path only appends a row to a queue (no I/O). A daemon thread writes up to
`usage_batch_size` rows per transaction, at the latest `usage_flush_seconds` after the first one
arrived. In the same transaction it charges the tokens to the API keys' and workspaces' quotas with
atomic SQL increments (`used_tokens = used_tokens + n`, restarted at a new refresh period; the period is
the one of the subject's current cycle that the request arrived in, see `_charge`), so the usage rows
and the quota counters cannot disagree.

The same transaction deletes the rows' in-flight markers (`usage_inflight`, gateway/inflight.py): a
request is either in flight or recorded, never both and never neither, so a crash at any point leaves
the reaper (gateway/reaper.py) exactly the requests that have no row.

Idempotent on `request_id`: rows go in with `ON CONFLICT (request_id) DO NOTHING ... RETURNING`, and
only the rows really inserted are charged, so a batch retried after a failed commit (the database was
down) charges nothing twice. A failed batch is retried with back-off; rows wait in memory meanwhile.

On PostgreSQL a batch is one statement of constant text, `INSERT ... SELECT FROM unnest(<one array per
column>)`: psycopg prepares it once, where a multi-row `VALUES` list is new text for every batch size
and is parsed by Python each time. The arrays go in binary (`%b`): the text format runs a regex over
every element to quote it, twice the CPU. The charges, the keys' last use and the markers' deletion are
statements built once with bound parameters. The thread shares the GIL with the event loop, so this is
request latency, not only throughput: a batch of 75 rows (a worker's flush at 150 requests/s) costs
1.9 ms of CPU against 4.1 ms with statements built per batch and arrays in text
(`python -m benchmarks.usage_batch`, beside the rows' INSERT alone).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, Engine, Integer, bindparam, case, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from gateway import metrics
from gateway.quotas import Counter
from store.models import ApiKey, UsageInflight, UsageRecord, Workspace
from store.periods import QUOTA_REFRESH_CYCLES, period_bounds

log = logging.getLogger("modelfleet.gateway")

# Fields of a queued row that are not columns: the quota counters the row is charged to, and whether
# an in-flight marker was written for it (deleted with the row's insert).
CHARGES = "_charges"
INFLIGHT = "_inflight"


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
            # Write what was queued when the thread woke, and no more: rows that arrive during a write
            # wait for the next wake-up (a full batch or the timer). Draining until empty wrote batches
            # of the ~10 rows that came in during each write, and a batch's fixed cost (transaction,
            # quota and key updates: ~4 ms) then cost 360-460 µs of CPU a row, under the GIL the
            # requests need (600 req/s: p99 +170 ms, against +7 ms with no writes at all).
            pending = len(rows)
            while pending > 0 or (self._stopping and rows):
                size = min(self.batch_size, pending) if pending > 0 else min(self.batch_size, len(rows))
                batch = [rows.popleft() for _ in range(size)]
                pending -= size
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
        with self.lock:
            with self.engine.begin() as conn:
                inserted, totals = write_rows(conn, rows)
            if self.on_flushed is not None:
                for counter, tokens in totals.items():
                    self.on_flushed(counter, tokens)
        return inserted


def write_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> tuple[int, dict[Counter, int]]:
    """In the caller's transaction: insert the rows that are new, charge their tokens to the quotas,
    delete their in-flight markers. The rows inserted, and the tokens charged per counter."""
    by_id = {row["request_id"]: row for row in rows}
    totals: dict[Counter, int] = {}  # per counter, for this process's ledger (`on_flushed`)
    charges: dict[tuple[Counter, date], int] = {}  # per counter and UTC day of arrival (`_charge`)
    last_used: dict[str, datetime] = {}
    inserted = _insert(conn, rows) if rows else []
    for request_id in inserted:
        row = by_id[request_id]
        tokens = row["prompt_tokens"] + row["completion_tokens"]
        if row["api_key"] and row["at"] > last_used.get(row["api_key"], row["at"]):
            last_used[row["api_key"]] = row["at"]
        last_used.setdefault(row["api_key"], row["at"])
        if tokens:
            day = _utc_day(row["at"])
            for counter in row.get(CHARGES, ()):
                totals[counter] = totals.get(counter, 0) + tokens
                charges[counter, day] = charges.get((counter, day), 0) + tokens
    # Rows are locked in one order, the same in every gateway and the portal: API keys (sorted), then
    # workspaces (sorted). The portal's quota changes lock a key before its workspace, and two
    # replicas' writers charge the same rows; any other order could deadlock with them.
    ordered = sorted(charges.items(), key=lambda item: (item[0][0][0] != "api_key", item[0]))
    for (counter, day), tokens in ordered:
        if counter[0] == "api_key":
            conn.execute(_CHARGE_KEY, _charge_params(counter, day, tokens))
    if last_used:
        conn.execute(_LAST_USED, [{"key": key, "at": at} for key, at in sorted(last_used.items())])
    for (counter, day), tokens in ordered:
        if counter[0] != "api_key":
            conn.execute(_CHARGE_WORKSPACE, _charge_params(counter, day, tokens))
    settled = [row["request_id"] for row in rows if row.get(INFLIGHT)]
    if settled:
        if conn.dialect.name == "postgresql":  # one array parameter: constant text, one dump
            conn.exec_driver_sql(_POSTGRESQL_SETTLE, {"ids": settled})
        else:
            conn.execute(_SETTLE, {"ids": settled})
    return len(inserted), totals


_COLUMNS = tuple(column for column in UsageRecord.__table__.columns if column.name != "id")
_PG_DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
_POSTGRESQL_INSERT = "INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {tail}".format(
    table=UsageRecord.__tablename__,
    names=", ".join(c.name for c in _COLUMNS),
    arrays=", ".join(f"%({c.name})b::{c.type.compile(dialect=_PG_DIALECT)}[]" for c in _COLUMNS),
    tail="ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
)


# Columns a row may leave out (rows built before modalities existed: tests, the reaper's old markers).
_DEFAULTS: dict[str, Any] = {"modality": "text", "units": 0, "price_per_unit": 0}


def _insert(conn: Connection, rows: Sequence[dict[str, Any]]) -> Sequence[str]:
    """Insert the rows not already there; the request ids really inserted."""
    for row in rows:
        for name, default in _DEFAULTS.items():
            if row.get(name) is None:
                row[name] = default
    if conn.dialect.name == "postgresql":
        arrays = {c.name: [row[c.name] for row in rows] for c in _COLUMNS}
        return [r[0] for r in conn.exec_driver_sql(_POSTGRESQL_INSERT, arrays)]
    columns = [{c.name: row[c.name] for c in _COLUMNS} for row in rows]
    statement = (
        sqlite.insert(UsageRecord)
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(UsageRecord.request_id)
    )
    return conn.execute(statement, columns).scalars().all()


def _utc_day(at: datetime) -> date:
    """The UTC day a request arrived on (a naive time is UTC already)."""
    return (at.astimezone(UTC) if at.tzinfo else at).date()


_PERIOD_START = DateTime(timezone=True)


def _charge(model: Any) -> Any:
    """`used_tokens += :tokens` for requests that arrived on one day, in the period of the row's
    CURRENT refresh cycle that contains that day: the rule `portal.keys.set_quota_refresh` recounts
    with. Built once per subject kind; `_charge_params` gives the day's period starts.

    - The row's stored period is that period: the count goes on.
    - The stored period is older (or there is none): that period is newer, and restarts the count.
    - The stored period is newer: the tokens belong to a period that no longer counts (a row written
      late) and are not charged to the current one.
    - A lifetime row (no cycle) counts everything.

    The counter's own period (the one the gateway reserved in, under the cycle it knew when it admitted
    the request) decides nothing here. It can belong to the key's previous cycle: a request admitted
    under a daily cycle and written after a switch to monthly carries the day's start, which is newer
    than the month's, and used to restart the month's count at that one batch (and leave the later
    monthly charges behind it uncounted, their period being older). Under the current cycle, the day a
    request arrived always falls in one of its periods, so a cycle change neither resets nor drops
    the requests in flight during it.

    `updated_at` is left alone, so usage does not look like a configuration change to the gateways
    polling it."""
    where = model.public_id == bindparam("ident") if model is ApiKey else model.slug == bindparam("ident")
    used, start, cycle = model.used_tokens, model.quota_period_start, model.quota_refresh
    tokens = bindparam("tokens", type_=Integer)
    starts = {c: bindparam(f"start_{c}", type_=_PERIOD_START) for c in QUOTA_REFRESH_CYCLES}
    period = case(starts, value=cycle)  # NULL for a lifetime row
    newer = start.is_(None) | (start < period)
    values: dict[str, ColumnElement[Any] | Any] = {
        "used_tokens": case(
            (cycle.is_(None) | (start == period), used + tokens), (newer, tokens), else_=used
        ),
        "quota_period_start": case((cycle.is_(None), start), (newer, period), else_=start),
        "updated_at": model.updated_at,
    }
    return update(model).where(where).values(**values)


def _charge_params(counter: Counter, day: date, tokens: int) -> dict[str, Any]:
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    params: dict[str, Any] = {f"start_{c}": period_bounds(c, midnight)[0] for c in QUOTA_REFRESH_CYCLES}
    params.update(ident=counter[1], tokens=tokens)
    return params


# The batch's statements, built once (building them cost more CPU than running them, in a thread that
# shares the GIL with the requests).
_CHARGE_KEY = _charge(ApiKey)
_CHARGE_WORKSPACE = _charge(Workspace)
_LAST_USED = (
    update(ApiKey)
    .where(ApiKey.public_id == bindparam("key"))
    .values(last_used_at=bindparam("at"), updated_at=ApiKey.updated_at)
)
_SETTLE = delete(UsageInflight).where(UsageInflight.request_id.in_(bindparam("ids", expanding=True)))
_POSTGRESQL_SETTLE = f"DELETE FROM {UsageInflight.__tablename__} WHERE request_id = ANY(%(ids)s)"
