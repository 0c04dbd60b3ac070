"""Requests in flight, recorded in the database before the upstream call, so that a gateway that dies
mid-request leaves a trace the reaper (gateway/reaper.py) turns into a usage row.

`InflightLedger.begin()` queues a marker (`usage_inflight`: who, what, the prices, the prompt
estimate) and waits until it is committed -- at most `wait_s`, and not at all while the last write
failed: with the database down the request goes on (the gateway keeps serving while the database
blinks) and the marker is written when it is back. The usage writer deletes the marker in the
transaction that writes the request's usage row (gateway/usage.py). A thread is the replica's
heartbeat: every `heartbeat_s` it updates `gateway_replicas.seen_at` and the completion tokens each
live stream has relayed so far, which is what the reaper bills when the replica stops beating.

Why the database and not Redis: the marker must outlive the gateway, and be settled exactly once in
the same database as the usage rows (a unique request id); Redis may be emptied, and a gateway without
Redis needs it too. It is committed with `synchronous_commit = off` on PostgreSQL: the row is in the
server once the statement returns, so a gateway crash cannot lose it; a crash of PostgreSQL itself
within its WAL writer delay (200 ms by default) could.

Markers are written by a task on the event loop, not by a thread: a thread woken per request and
handing the GIL back and forth with the loop made ~13 futex calls a request (strace) and cost more CPU
than the marker's own I/O. On PostgreSQL the task owns a libpq connection in autocommit (`_PostgresSink`)
and sends one prepared INSERT a marker (the markers queued meanwhile go as one multi-row INSERT): a
marker is one statement, so it needs no BEGIN and COMMIT of its own. Markers of requests dropped
before they reached an upstream are deleted by the same task, after the inserts queued before them.
Elsewhere (SQLite) the task hands the writes to a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Engine, bindparam, delete, insert, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway import metrics
from gateway.feed import listen_url
from gateway.metering import StreamMeter
from gateway.records import Sample
from gateway.tokens import estimate_prompt_tokens
from store.db import utcnow
from store.models import GatewayReplica, UsageInflight

log = logging.getLogger("modelfleet.gateway")

_Job = tuple[dict[str, Any], "asyncio.Future[None]"]


def replica_id() -> str:
    """This process among the gateways: host, pid and a random tail (pids are reused)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"


class InflightLedger:
    def __init__(self, engine: Engine, *, heartbeat_s: float = 1.0, wait_s: float = 1.0) -> None:
        self.engine = engine
        self.replica = replica_id()
        self.heartbeat_s = heartbeat_s
        self.wait_s = wait_s
        self.started_at = utcnow()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._dropped: collections.deque[str] = collections.deque()  # markers of requests never recorded
        self._streams: dict[str, StreamMeter] = {}  # live streams: their progress goes out each beat
        self._failing = False  # the last write failed: requests do not wait for theirs
        # The marker writer: a task on the loop that serves the requests (started by the first marker).
        self._writer: asyncio.Task[None] | None = None
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._wake_writer = asyncio.Event()
        self._closing = False
        # The heartbeat thread and its connection.
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None  # the thread's own, opened on first use

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="gateway-heartbeat", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the heartbeat (markers: `aclose`)."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write what is queued (one try), then stop the writer and the heartbeat."""
        writer = self._writer
        if writer is not None and not writer.done() and self._writer_loop is asyncio.get_running_loop():
            self._closing = True
            self._wake_writer.set()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(writer)
            except TimeoutError:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            finally:
                self._closing = False
        self._writer = None
        await asyncio.to_thread(self.stop, timeout)

    async def begin(self, sample: Sample, body: Mapping[str, Any]) -> None:
        """Record the admitted request before its upstream call; returns once the marker is committed
        (or after `wait_s`, the marker still queued)."""
        prices = sample.model.prices
        cached = prices.cached_input_per_million
        row = {
            "request_id": sample.request_id,
            "replica": self.replica,
            "at": sample.at,
            "api_key": sample.key.public_id,
            "workspace": sample.key.workspace,
            "model": sample.model.public_id,
            "endpoint": sample.endpoint,
            "stream": sample.stream,
            "prompt_tokens": estimate_prompt_tokens(body),
            "completion_tokens": 0,
            "price_input_per_m": prices.input_per_million,
            "price_output_per_m": prices.output_per_million,
            "price_cached_per_m": prices.input_per_million if cached is None else cached,
        }
        written: asyncio.Future[None] = self._writer_running().create_future()
        self._jobs.append((row, written))
        self._wake_writer.set()
        sample.inflight = True
        if self._failing:
            return
        try:
            async with asyncio.timeout(self.wait_s):  # not wait_for: it can swallow a cancel on 3.11
                await asyncio.shield(written)
        except TimeoutError:
            log.warning("gateway: in-flight marker of %s not written yet; going on", sample.request_id)

    def discard(self, sample: Sample) -> None:
        """The request ends without a usage row (cancelled before it reached an upstream): its marker
        goes, so that no reaper bills it. Synchronous: it runs where a cancelled task cannot await."""
        if sample.inflight:
            sample.inflight = False
            self._dropped.append(sample.request_id)
            self._writer_running()
            self._wake_writer.set()

    def watch(self, request_id: str, meter: StreamMeter) -> None:
        """A stream's progress, written with each heartbeat until `unwatch`."""
        self._streams[request_id] = meter

    def unwatch(self, request_id: str) -> None:
        self._streams.pop(request_id, None)

    # -- the marker writer -----------------------------------------------------------------------
    def _writer_running(self) -> asyncio.AbstractEventLoop:
        """The running loop, with the writer started on it (a test may run requests on new loops)."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done() or self._writer_loop is not loop:
            self._writer_loop = loop
            self._wake_writer = asyncio.Event()
            self._writer = loop.create_task(self._write_markers(), name="gateway-inflight")
        return loop

    async def _write_markers(self) -> None:
        sink: _Sink = (
            _PostgresSink(listen_url(self.engine.url))
            if self.engine.dialect.name == "postgresql"
            else _EngineSink(self.engine)
        )
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer.clear()
                while self._jobs or self._dropped:
                    try:
                        if self._jobs:
                            await self._insert(sink)
                        else:
                            await self._delete(sink)
                    except Exception:
                        metrics.USAGE_WRITE_FAILURES.inc()
                        log.exception("gateway: writing in-flight markers failed; retrying")
                        await sink.reset()
                        if self._closing:
                            return
                        await asyncio.sleep(0.2)
                if self._closing:
                    return
        finally:
            await sink.reset()

    async def _insert(self, sink: _Sink) -> None:
        """Write every queued marker, then wake the requests waiting on them. A failed write keeps
        them queued (in order) for the next round."""
        jobs = [self._jobs.popleft() for _ in range(len(self._jobs))]
        try:
            await sink.insert([row for row, _ in jobs])
        except BaseException:
            self._failing = True
            self._jobs.extendleft(reversed(jobs))
            raise
        self._failing = False
        for _, written in jobs:
            if not written.done():
                written.set_result(None)

    async def _delete(self, sink: _Sink) -> None:
        dropped = [self._dropped.popleft() for _ in range(len(self._dropped))]
        try:
            await sink.delete(dropped)
        except BaseException:
            self._dropped.extendleft(reversed(dropped))
            raise

    # -- the heartbeat thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception:
                metrics.USAGE_WRITE_FAILURES.inc()
                log.exception("gateway: writing the heartbeat failed; retrying")
                self._close()  # the next beat starts on a fresh connection
            if self._stopping:
                self._close()
                return
            self._wake.wait(self.heartbeat_s)
            self._wake.clear()

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect()
            if conn.dialect.name == "postgresql":
                # Heartbeats must survive the gateway, not the database: no WAL flush wait.
                conn.exec_driver_sql("SET synchronous_commit = off")
                conn.commit()
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("gateway: closing the heartbeat's connection failed", exc_info=True)

    def _beat(self) -> None:
        now = utcnow()
        progress = [
            {"rid": request_id, "done": meter.completion_so_far()[0]}
            for request_id, meter in list(self._streams.items())
        ]
        conn = self._connection()
        with conn.begin():
            seen = conn.execute(
                update(GatewayReplica).where(GatewayReplica.id == self.replica).values(seen_at=now)
            )
            if seen.rowcount == 0:
                conn.execute(
                    insert(GatewayReplica).values(
                        id=self.replica,
                        host=socket.gethostname()[:255],
                        pid=os.getpid(),
                        started_at=self.started_at,
                        seen_at=now,
                    )
                )
            if progress:
                conn.execute(
                    update(UsageInflight)
                    .where(UsageInflight.request_id == bindparam("rid"))
                    .values(completion_tokens=bindparam("done")),
                    progress,
                )


_COLUMNS = [column.name for column in UsageInflight.__table__.columns]


class _Sink(Protocol):
    async def insert(self, rows: list[dict[str, Any]]) -> None: ...
    async def delete(self, request_ids: list[str]) -> None: ...
    async def reset(self) -> None: ...


class _PostgresSink:
    """Markers on a libpq connection of their own, in autocommit, read by the event loop as they come.

    psycopg's asynchronous connection waits for each statement by registering its socket with the loop,
    polling it and unregistering it again: four system calls and a generator round per statement,
    twice the CPU of the marker itself. Here the socket stays registered, the statement is sent through
    psycopg's libpq wrapper (`pgconn`: prepared once, parameters in text) and its result is picked up
    when the socket turns readable: 58 against 126 µs of CPU a marker, measured one at a time. One
    statement is in flight at a time (the writer awaits each); a batch is one multi-row statement.
    """

    TIMEOUT_S = 5.0  # a statement the server does not answer: the connection is dropped, the write retried
    PREPARED = b"modelfleet_marker"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None  # opens and closes the libpq connection
        self._waiting: asyncio.Future[pq.abc.PGresult | None] | None = None
        self._result: pq.abc.PGresult | None = None

    BATCH = 500  # rows a statement: 13 parameters each, PostgreSQL takes 65,535 at most

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        for first in range(0, len(rows), self.BATCH):
            chunk = rows[first : first + self.BATCH]
            params = [_text(row[name]) for row in chunk for name in _COLUMNS]
            await self._run(None if len(chunk) == 1 else _insert_rows(len(chunk)), params)

    async def delete(self, request_ids: list[str]) -> None:
        for first in range(0, len(request_ids), self.BATCH):
            chunk = request_ids[first : first + self.BATCH]
            await self._run(_delete_ids(len(chunk)), [_text(rid) for rid in chunk])

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()  # its statement timed out: nobody waits for it any more
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.pgconn.socket)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self, sql: bytes | None, params: list[bytes | None]) -> None:
        """One statement (`None`: the prepared INSERT of one marker); raises on any failure."""
        async with asyncio.timeout(self.TIMEOUT_S):
            pg = await self._connection()
            waiting = self._waiting = asyncio.get_running_loop().create_future()
            if sql is None:
                pg.send_query_prepared(self.PREPARED, params)
            else:
                pg.send_query_params(sql, params)
            while pg.flush():  # 1: libpq could not send it all yet
                await asyncio.sleep(0.001)
            result = await waiting
        if result is None or result.status != pq.ExecStatus.COMMAND_OK:
            message = result.error_message.decode(errors="replace") if result is not None else "no result"
            raise psycopg.OperationalError(f"writing in-flight markers failed: {message}")

    async def _connection(self) -> pq.abc.PGconn:
        if self._conn is None:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
            # Markers must survive the gateway, not the database: no WAL flush wait.
            await conn.execute("SET synchronous_commit = off")
            placeholders = ", ".join(f"${n + 1}" for n in range(len(_COLUMNS)))
            await conn.execute(
                f"PREPARE {self.PREPARED.decode()} AS INSERT INTO {UsageInflight.__tablename__} "
                f"({', '.join(_COLUMNS)}) VALUES ({placeholders}) {_IDEMPOTENT}"
            )
            conn.pgconn.nonblocking = 1
            asyncio.get_running_loop().add_reader(conn.pgconn.socket, self._readable, conn.pgconn)
            self._conn = conn
        return self._conn.pgconn

    def _readable(self, pg: pq.abc.PGconn) -> None:
        try:
            pg.consume_input()
            while self._waiting is not None and not pg.is_busy():
                result = pg.get_result()
                if result is not None:
                    self._result = result  # the statement's; a None follows it
                    continue
                waiting, self._waiting = self._waiting, None
                if not waiting.done():
                    waiting.set_result(self._result)
                self._result = None
        except psycopg.Error as exc:  # the server went away (consume_input on a closed socket)
            self._fail(exc)
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(pg.socket)

    def _fail(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_exception(exc)


# A statement whose reply was lost (a timeout after the commit) is sent again: it must not fail then.
_IDEMPOTENT = "ON CONFLICT (request_id) DO NOTHING"


@functools.lru_cache(maxsize=32)
def _insert_rows(n: int) -> bytes:
    width = len(_COLUMNS)
    rows = ", ".join(
        "(" + ", ".join(f"${row * width + column + 1}" for column in range(width)) + ")" for row in range(n)
    )
    columns = ", ".join(_COLUMNS)
    return f"INSERT INTO {UsageInflight.__tablename__} ({columns}) VALUES {rows} {_IDEMPOTENT}".encode()


@functools.lru_cache(maxsize=32)
def _delete_ids(n: int) -> bytes:
    ids = ", ".join(f"${k + 1}" for k in range(n))
    return f"DELETE FROM {UsageInflight.__tablename__} WHERE request_id IN ({ids})".encode()


def _text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format (the column's type is the server's to apply)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, datetime):
        return value.isoformat().encode()
    return str(value).encode()


class _EngineSink:
    """Markers through SQLAlchemy on a worker thread (SQLite: no asynchronous driver here)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        # Idempotent like PostgreSQL's: a write retried after its commit must not fail.
        statement = sqlite_insert(UsageInflight).on_conflict_do_nothing(index_elements=["request_id"])
        await asyncio.to_thread(self._run, statement, rows)

    async def delete(self, request_ids: list[str]) -> None:
        await asyncio.to_thread(
            self._run, delete(UsageInflight).where(UsageInflight.request_id.in_(request_ids))
        )

    def _run(self, statement: Any, rows: list[dict[str, Any]] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement, rows) if rows is not None else conn.execute(statement)

    async def reset(self) -> None:
        return None
