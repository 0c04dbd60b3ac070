"""The gateway's HTTP client to upstreams (engines and external providers).

The rest of the gateway sees only `UpstreamResponse` and two errors, so how the bytes move stays an
implementation detail (gateway/connection.py: keep-alive HTTP/1.1 on asyncio and llhttp, chosen over
aiohttp's client and httpx for CPU; the numbers are in its docstring and `make bench`):

- `UpstreamTimeout`: no connection, or no byte, within the configured time;
- `UpstreamError`: anything else that went wrong on the wire (refused, reset, a broken body).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

from gateway.connection import Connection, Pool, Target, UpstreamError, UpstreamTimeout, parse_target

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse", "UpstreamTimeout"]


class UpstreamResponse:
    """One upstream answer: status and headers at once, the body read whole or relayed in pieces.

    `close()` must be called (the callers do it in `finally`): a body read to its end gives the
    connection back to the pool; one abandoned midway closes it, which tells an engine to stop
    generating for a client that left."""

    __slots__ = ("_connection", "_lending", "_pool")

    def __init__(self, pool: Pool, connection: Connection) -> None:
        self._pool = pool
        self._connection = connection
        # The connection outlives this answer: given back, it carries other requests. Closing (or
        # collecting) this answer must never touch a later lending of it.
        self._lending = connection.lendings

    @property
    def status_code(self) -> int:
        return self._connection.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive, like every HTTP header lookup."""
        return self._connection.headers

    async def aread(self) -> bytes:
        return await self._connection.read_all()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, piece by piece (no re-buffering: SSE events go out as they come)."""
        read = self._connection.read_piece
        while piece := await read():
            yield piece

    def close(self) -> None:
        """Give the connection back (or close it) at once. It never suspends, so it needs no shield
        from cancellation: a cancelled task's `finally` runs it to the end. Closing twice is harmless."""
        if self._holds():
            self._pool.give_back(self._connection)

    def _holds(self) -> bool:
        return self._connection.lent and self._connection.lendings == self._lending

    def __del__(self) -> None:
        # The safety net for a path that forgot to close (a task cancelled between the answer's head
        # and its reader's `finally`): the connection is closed rather than counted in use for ever.
        # Collected on whichever thread ran the collector: the loop does the closing.
        if self._holds():
            with contextlib.suppress(RuntimeError):  # the loop is closed: so is everything on it
                self._connection.loop.call_soon_threadsafe(self._give_back_if_held)

    def _give_back_if_held(self) -> None:
        if self._holds():  # still this answer's lending once the loop gets to it
            self._pool.give_back(self._connection, reuse=False)


class UpstreamClient:
    """POSTs JSON to upstreams over one pool of keep-alive connections. Create and use it in one event
    loop. No cookies, redirects, `User-Agent` or `Accept-Encoding`; URLs are parsed once each."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_s: float = 30,
    ) -> None:
        # `connect` covers waiting for a free connection too; `read` is the longest silence before an
        # answer and between two pieces of its body (a stream may last minutes, each gap may not).
        self._pool = Pool(
            limit=max_connections,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            keepalive_s=keepalive_s,
        )
        self._targets: dict[str, Target] = {}

    async def post(self, url: str, content: bytes, headers: Sequence[tuple[str, str]]) -> UpstreamResponse:
        connection = await self._pool.request(self._target(url), "POST", content, headers)
        return UpstreamResponse(self._pool, connection)

    async def healthy(self, url: str, timeout_s: float) -> bool:
        """A GET of an engine's health path answers 200 within `timeout_s` (what its readiness probe
        asks); any other status, an error or a timeout is unhealthy."""
        connection: Connection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                connection = await self._pool.request(self._target(url), "GET", b"", ())
                await connection.read_all()
                return connection.status == 200
        except (UpstreamError, TimeoutError):
            return False
        finally:
            if connection is not None:
                self._pool.give_back(connection)

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            try:
                target = parse_target(url)
            except ValueError as exc:
                raise UpstreamError(str(exc)) from None
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = target
        return target
