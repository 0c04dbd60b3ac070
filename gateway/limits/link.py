"""The gateway's line to Redis: a script call retried once on a fresh connection, and a down state that
a background probe ends as soon as Redis answers.

A Redis restart or failover leaves every pooled connection stale. Each would fail once, and a failure
used to send the replica to its fallback for a second -- with one stale connection per concurrent
request, a healthy Redis looked down for many seconds. Now a connection error drops every idle
connection of the pool and the call is sent again, once, on a fresh one; only when that fails too is
Redis down. While it is down no request waits for it: a probe pings it every `probe_interval_s` and
the first answer brings it back (and runs the `on_up` callbacks, which put back what the fallback did).

A retried call can only err towards refusing: the first try either never reached Redis (a stale or
refused connection: the usual case) or ran and lost its reply (a read timeout on a loaded machine, a
connection cut after the command), and then the retry charges a second time -- a request cell or a
reservation counted twice, never one admitted that should not be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.limits.pipe import RedisPipe

log = logging.getLogger(__name__)


# A pool with every connection busy for `pool_timeout_s` says the replica is overloaded, not that a
# connection went stale: a retry would only wait again.
_POOL_EXHAUSTED = "No connection available"


def retryable(exc: BaseException) -> bool:
    """A connection's failure (broken, refused, timed out), not Redis refusing the command."""
    if isinstance(exc, RedisTimeoutError):
        return True
    if isinstance(exc, RedisConnectionError):
        return _POOL_EXHAUSTED not in str(exc)
    return isinstance(exc, OSError)


class RedisLink:
    def __init__(
        self, client: aioredis.Redis, *, probe_interval_s: float = 0.25, what: str = "Redis"
    ) -> None:
        self.client = client
        # Script calls share one multiplexed connection (gateway/limits/pipe.py); redis-py's pool
        # keeps the rest, and the script calls too where a pipe cannot go (TLS, a Unix socket).
        self.pipe = RedisPipe.serving(client.connection_pool.connection_kwargs)
        self.probe_interval_s = probe_interval_s
        self.what = what
        self.on_up: list[Callable[[], Awaitable[None]]] = []
        self._down = False
        self._probe: asyncio.Task[None] | None = None

    @staticmethod
    def pool_from_url(
        url: str,
        *,
        timeout_s: float = 0.5,
        connect_timeout_s: float = 1.0,
        max_connections: int = 64,
        pool_timeout_s: float = 1.0,
    ) -> aioredis.Redis:
        """A client with a bounded pool (requests queue for a connection, up to `pool_timeout_s`,
        instead of opening one each), read and connect timeouts that a loaded machine can meet (0.25 s
        failed freshly started gateways under CPU load), and no retries of its own: `call` decides
        what is retried."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        return aioredis.Redis(connection_pool=pool)

    @property
    def up(self) -> bool:
        return not self._down

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a script; raises the error (Redis now marked down) when the retry failed too."""
        try:
            return await self._run(script, keys, args)
        except (RedisError, OSError) as exc:
            if not retryable(exc):
                self.mark_down(exc)
                raise
        await self.drop_idle()
        try:
            return await self._run(script, keys, args)
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            raise

    async def _run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if self.pipe is not None:
            return await self.pipe.evalsha(script.sha, script.script, keys, args)
        return await script(keys=keys, args=args)

    async def drop_idle(self) -> None:
        """Close every idle pooled connection: after one went stale, the others are too. The pipe
        moves to a fresh connection."""
        if self.pipe is not None:
            self.pipe.retire()
        with contextlib.suppress(RedisError, OSError):
            await self.client.connection_pool.disconnect(inuse_connections=False)

    def mark_down(self, exc: BaseException) -> None:
        if not self._down:
            log.warning("%s: Redis failed (%s); deciding without it until it answers again", self.what, exc)
        self._down = True
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._until_up())

    async def _until_up(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            await self.drop_idle()
            try:
                await self.client.ping()
            except (RedisError, OSError):
                continue
            break
        for callback in self.on_up:
            try:
                await callback()
            except (RedisError, OSError) as exc:  # Redis left again: the next failure probes again
                log.warning("%s: catching up after Redis came back failed: %s", self.what, exc)
        self._down = False
        log.warning("%s: Redis answers again", self.what)

    async def aclose(self) -> None:
        if self.pipe is not None:
            await self.pipe.aclose()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
