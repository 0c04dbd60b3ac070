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
than the marker's own I/O. On PostgreSQL the task owns an asynchronous libpq connection in autocommit
and sends one prepared INSERT a marker (a batch of the markers queued meanwhile is pipelined): a
marker is one statement, so it needs no BEGIN and COMMIT of its own. Markers of requests dropped
before they reached an upstream are deleted by the same task, after the inserts queued before them.
Elsewhere (SQLite) the task hands the writes to a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import psycopg
from sqlalchemy import Connection, Engine, bindparam, delete, insert, update

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
    """Markers on an asynchronous libpq connection of their own, in autocommit."""

    INSERT = (
        f"INSERT INTO {UsageInflight.__tablename__} ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    )
    DELETE = f"DELETE FROM {UsageInflight.__tablename__} WHERE request_id = ANY(%s)"
    TIMEOUT_S = 5.0  # a statement the server does not answer: the connection is dropped, the write retried

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
            # Markers must survive the gateway, not the database: no WAL flush wait.
            await conn.execute("SET synchronous_commit = off")
            self._conn = conn
        return self._conn

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        values = [tuple(row[name] for name in _COLUMNS) for row in rows]
        async with asyncio.timeout(self.TIMEOUT_S):
            conn = await self._connection()
            async with conn.cursor() as cursor:
                if len(values) == 1:
                    await cursor.execute(self.INSERT, values[0], prepare=True)
                else:
                    await cursor.executemany(self.INSERT, values)

    async def delete(self, request_ids: list[str]) -> None:
        async with asyncio.timeout(self.TIMEOUT_S):
            conn = await self._connection()
            await conn.execute(self.DELETE, [request_ids])

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class _EngineSink:
    """Markers through SQLAlchemy on a worker thread (SQLite: no asynchronous driver here)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._run, insert(UsageInflight), rows)

    async def delete(self, request_ids: list[str]) -> None:
        await asyncio.to_thread(
            self._run, delete(UsageInflight).where(UsageInflight.request_id.in_(request_ids))
        )

    def _run(self, statement: Any, rows: list[dict[str, Any]] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement, rows) if rows is not None else conn.execute(statement)

    async def reset(self) -> None:
        return None
