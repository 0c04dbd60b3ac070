"""The gateway's HTTP client to upstreams (engines and external providers), on aiohttp.

Why aiohttp and not httpx (which the rest of the portal uses): this is the data plane's hottest path,
and aiohttp's C-accelerated HTTP parser and connection pool cost about 0.15 ms of CPU per proxied
request against httpx/httpcore's 1.1 ms (measured by `make bench`, gateway group; httpcore also
polls every pooled socket on each checkout, so its cost grows with the pool).

The rest of the gateway sees only `UpstreamResponse` and two errors, so the client library stays an
implementation detail of this module:

- `UpstreamTimeout`: no connection, or no byte, within the configured time;
- `UpstreamError`: anything else that went wrong on the wire (refused, reset, a broken body).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
from yarl import URL


class UpstreamError(Exception):
    """The upstream could not be reached or broke off. `cause` names what happened, for messages."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or send in time."""


def _translated(exc: BaseException) -> UpstreamError:
    cause = type(exc).__name__  # e.g. ClientConnectorError, ServerDisconnectedError, ClientPayloadError
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors (and ClientErrors)
        return UpstreamTimeout(cause)
    return UpstreamError(cause)


class UpstreamResponse:
    """One upstream answer: status and headers at once, the body read whole or relayed in pieces.

    `aclose()` must be called (the callers do it in `finally`): a body read to its end gives the
    connection back to the pool; one abandoned midway closes it, which tells an engine to stop
    generating for a client that left."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive, like every HTTP header lookup."""
        return self._response.headers

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translated(exc) from exc

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk (no re-buffering: SSE events go out as they come)."""
        content = self._response.content
        try:
            while True:
                piece = await content.readany()
                if not piece:
                    return
                yield piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translated(exc) from exc

    async def aclose(self) -> None:
        self._response.release()


class UpstreamClient:
    """POSTs JSON to upstreams over one pooled aiohttp session. Create and use it in one event loop.

    No cookies, redirects, `User-Agent` or `Accept-Encoding` (bodies arrive uncompressed, so streamed
    events are relayed as they are); URLs are parsed once each."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        keepalive_s: float = 30,
    ) -> None:
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=keepalive_s)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # `connect` covers waiting for a pooled connection too; `sock_read` is the longest silence
            # between two pieces of a body (a stream may last minutes, each gap may not).
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=connect_timeout_s,
                sock_connect=connect_timeout_s,
                sock_read=read_timeout_s,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            auto_decompress=True,
        )
        self._urls: dict[str, URL] = {}

    async def post(self, url: str, content: bytes, headers: Sequence[tuple[str, str]]) -> UpstreamResponse:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        try:
            response = await self._session.post(parsed, data=content, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translated(exc) from exc
        return UpstreamResponse(response)

    async def healthy(self, url: str, timeout_s: float) -> bool:
        """A GET of an engine's health path answers 200 within `timeout_s` (what its readiness probe
        asks); any other status, an error or a timeout is unhealthy."""
        try:
            async with self._session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def aclose(self) -> None:
        await self._session.close()
