"""Keep-alive HTTP/1.1 connections to upstreams, and the pool that lends them: asyncio and llhttp.

Why not aiohttp's client (the gateway's until this round): the proxied call is the data plane's
hottest path, and aiohttp spent ~190 µs of CPU on each JSON call (a request object, a header
multidict, a payload object, a timer re-armed per received piece) where the wire needs ~40
(`benchmarks/upstream_client.py` measures both side by side). Parsing is llhttp through httptools,
the parser uvicorn already runs for the gateway's own server side; what is here is the framing of a
request, the pool and the timeouts, and it is all the gateway asks of a client:

- one request at a time per connection; bodies framed by Content-Length, chunked or ended by close;
  `gzip` and `deflate` content-encodings decoded (the gateway asks for none, an upstream may send one);
- `http` and `https` (the system's trust store; SNI by host name);
- at most `limit` connections in use at once; idle ones reused last-in first-out and closed after
  `keepalive_s`, or as soon as the upstream closes them;
- a connect timeout over waiting for a free slot, TCP and TLS; a read timeout on the longest silence
  before the answer's head and between pieces of its body (while the reader has stopped reading, the
  silence is not the upstream's);
- a request on a reused connection that the upstream closed before answering any byte is sent once
  more on a new one (a keep-alive connection the server closed as the request left: it was not read).

No redirects, cookies, proxies, `100-continue` or upgrades: the gateway uses none.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, TypeVar, cast, overload
from urllib.parse import urlsplit

import httptools

# Backpressure: a reader slower than its upstream stops the socket past HIGH buffered bytes, and
# resumes it below LOW (a streamed answer is relayed as it comes; this bounds a slow client's cost).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024

_T = TypeVar("_T")


class UpstreamError(Exception):
    """The upstream could not be reached or broke off. `cause` names what happened, for messages."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or send in time."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class Target(NamedTuple):
    """A parsed URL: where to connect, the Host header and the request target."""

    origin: Origin
    authority: str
    path: str


def parse_target(url: str) -> Target:
    """`http(s)://host[:port]/path?query` as a Target; ValueError names what is wrong."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"upstream URL {url!r}: {exc}") from None
    scheme, netloc = parts.scheme.lower(), parts.netloc
    if scheme not in ("http", "https"):
        raise ValueError(f"upstream URL {url!r}: the scheme must be http or https")
    if "@" in netloc:
        raise ValueError(f"upstream URL {url!r}: credentials belong in headers, not the URL")
    if netloc.startswith("["):
        host, _, after = netloc[1:].partition("]")
        if after and not after.startswith(":"):
            raise ValueError(f"upstream URL {url!r}: text after the IPv6 address that is not a port")
        raw_port = after[1:] if after else None
    else:
        host, colon, raw_port_text = netloc.partition(":")
        raw_port = raw_port_text if colon else None
    if not host:
        raise ValueError(f"upstream URL {url!r}: no host")
    port = 443 if scheme == "https" else 80
    if raw_port is not None:
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise ValueError(f"upstream URL {url!r}: the port must be a number from 1 to 65535")
        port = int(raw_port)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError(f"upstream URL {url!r}: the path holds spaces or control characters")
    return Target(Origin(scheme, host.lower(), port), netloc, path)


class Headers(Mapping[str, str]):
    """An answer's headers, looked up case-insensitively; repeated ones joined by commas."""

    __slots__ = ("_items",)

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        items: dict[str, str] = {}
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            items[key] = f"{items[key]}, {text}" if key in items else text
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str) -> str: ...
    @overload
    def get(self, name: str, /, default: _T) -> str | _T: ...
    def get(self, name: str, /, default: object = None) -> object:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Connection(asyncio.Protocol):
    """One connection and, while it is lent out, the one answer it is receiving.

    The pool lends it (`Pool.request`); the borrower reads the answer (`read_piece`, `read_all`) and
    gives it back (`Pool.give_back`), which keeps it only if the answer was read to its end and both
    sides allow another request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin, read_timeout_s: float) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self.lost = False  # closed by either side, or broken: never lent again
        self.lendings = 0  # requests sent on it so far: which lending a borrower's answer belongs to
        self.received_any = False  # a byte of the current answer arrived (else a resend is safe)
        self.status = 0
        self.headers: Headers = Headers(())
        self.loop = loop
        self._read_timeout_s = read_timeout_s
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self.lent = False
        self._interim = False
        self._until_close = False
        self.complete = False
        self._keep_alive = False
        self._failure: UpstreamError | None = None
        self._decoder: zlib._Decompress | None = None
        self._last_data = 0.0
        self._silence: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        if not self.lent:  # bytes nobody asked for: the connection cannot be trusted again
            self.close()
            return
        self.received_any = True
        self._last_data = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:  # (raised from a callback too, then wrapped)
            self._fail(UpstreamError(f"a broken HTTP answer ({exc.__context__ or exc})"))
            self.close()

    def eof_received(self) -> bool | None:
        self._ended()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._transport = None
        self._ended(exc)

    # -- llhttp callbacks --

    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the end of the answer: stop before they touch it
            raise UpstreamError("bytes after the end of the answer")
        self._raw_headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the real one follows on the same connection
            self._interim = True
            return
        self.status = status
        self.headers = headers = Headers(self._raw_headers)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            self._fail(UpstreamError(f"an answer in an encoding the gateway cannot read ({encoding})"))
            self.close()
            return
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._until_close = not chunked and "content-length" not in headers and status not in (204, 304)
        _wake(self._head)

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self._fail(UpstreamError(f"a body that does not decode ({exc})"))
                self.close()
                return
            if not body:
                return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        waiter, self._waiter = self._waiter, None
        _wake(waiter)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- the borrower's side --

    def send(self, data: bytes) -> asyncio.Future[None]:
        """Write a whole request; the returned future completes when the answer's head has arrived."""
        assert self._transport is not None and not self.lent
        self.lent, self.received_any, self.complete = True, False, False
        self.lendings += 1
        self._pieces.clear()
        self._buffered, self._failure, self._decoder = 0, None, None
        self._head = head = self.loop.create_future()
        self._last_data = self.loop.time()
        self._silence = self.loop.call_later(self._read_timeout_s, self._check_silence)
        self._transport.write(data)
        return head

    async def read_piece(self) -> bytes:
        """What has arrived of the body since the last call (waiting for something); b"" at its end."""
        while not self._pieces:
            if self._failure is not None:
                raise self._failure
            if self.complete:
                return b""
            self._waiter = waiter = self.loop.create_future()
            await waiter
        piece = self._pieces.popleft() if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        self._resume()
        return piece

    async def read_all(self) -> bytes:
        """The whole body (waiting for its end)."""
        while not self.complete:
            if self._failure is not None:
                raise self._failure
            self._waiter = waiter = self.loop.create_future()
            self._resume()  # reading it all: take it all in
            await waiter
        body = b"".join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        self._resume()
        return body

    def reusable(self) -> bool:
        """The answer was read to its end and both sides keep the connection open."""
        return self.complete and self._keep_alive and not self.lost and not self._pieces

    def release(self) -> None:
        """The borrower is done with this answer (the pool decides what happens to the connection)."""
        self.lent = False
        self._head = self._waiter = None
        self._cancel_silence()
        self._resume()  # a connection kept for the next request must be read again

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._last_data = self.loop.time()  # the pause was the reader's, not the upstream's silence
            self._transport.resume_reading()

    def close(self) -> None:
        self.lost = True
        self._cancel_silence()
        if self._transport is not None:
            self._transport.close()

    # -- internals --

    def _ended(self, exc: Exception | None = None) -> None:
        """The upstream closed (or the connection broke): the end of an answer framed by close, or a
        failure of the one in progress."""
        if not self.lent or self.complete:
            return
        if self._until_close and self._head is not None and self._head.done() and exc is None:
            self._keep_alive = False
            self._finish()
            return
        before = "before answering" if self._head is None or not self._head.done() else "mid-answer"
        reason = f": {exc}" if exc is not None else ""
        self._fail(UpstreamError(f"the upstream closed the connection {before}{reason}"))

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if not self._decoder.eof:
                self._fail(UpstreamError("a compressed body that ends before its stream does"))
                self.close()
                return
            if tail:
                self._pieces.append(tail)
                self._buffered += len(tail)
        self.complete = True
        self._cancel_silence()
        waiter, self._waiter = self._waiter, None
        _wake(waiter)

    def _fail(self, failure: UpstreamError) -> None:
        if self._failure is not None or self.complete:
            return
        self._failure = failure
        self._cancel_silence()
        head = self._head
        if head is not None and not head.done():
            head.set_exception(failure)
        waiter, self._waiter = self._waiter, None
        _wake(waiter)

    def _check_silence(self) -> None:
        # One timer per answer, not one per received piece: it re-arms itself for whatever is left of
        # the allowed silence since the last byte.
        self._silence = None
        silent = self.loop.time() - self._last_data
        if self._paused:  # the reader is behind, not the upstream
            silent = 0.0
        if silent < self._read_timeout_s:
            self._silence = self.loop.call_later(self._read_timeout_s - silent, self._check_silence)
            return
        self._fail(UpstreamTimeout(f"no answer from the upstream for {self._read_timeout_s:g} s"))
        self.close()

    def _cancel_silence(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class Pool:
    """Connections to any number of upstreams, at most `limit` in use at once. Use it in one loop."""

    def __init__(
        self, *, limit: int, connect_timeout_s: float, read_timeout_s: float, keepalive_s: float
    ) -> None:
        self._limit = limit
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._keepalive_s = keepalive_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._in_use = 0
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def request(
        self, target: Target, method: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> Connection:
        """Send a request and wait for the answer's head; the connection is the borrower's until it
        calls `give_back`."""
        data = _request_bytes(target, method, body, headers)
        for _ in range(2):
            connection, reused = await self._borrow(target.origin)
            head = connection.send(data)
            try:
                await head
            except UpstreamError as exc:
                self.give_back(connection)
                if reused and not connection.received_any and not isinstance(exc, UpstreamTimeout):
                    continue  # the upstream closed an idle connection as the request left: resend
                raise
            except BaseException:
                self.give_back(connection)
                raise
            return connection
        raise AssertionError("unreachable: the second attempt returns or raises")

    def give_back(self, connection: Connection, *, reuse: bool = True) -> None:
        """Take back a lent connection: kept for the next request if its answer was read to the end,
        closed otherwise (which tells an engine to stop generating for a client that left)."""
        if not connection.lent:  # given back already
            return
        reusable = reuse and connection.reusable() and not self._closed
        connection.release()
        self._in_use -= 1
        if reusable:
            connection.idle_since = connection.loop.time()
            self._idle.setdefault(connection.origin, []).append(connection)
            if self._sweep is None:
                self._sweep = connection.loop.call_later(self._keepalive_s, self._close_expired)
        else:
            connection.close()
            self._open.discard(connection)
        self._wake_next_slot()

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        while self._slots:  # requests waiting for a slot end now, not at their connect timeout
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_exception(UpstreamError("the gateway is stopping"))

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle or self._in_use >= self._limit:
            return None
        deadline = asyncio.get_running_loop().time() - self._keepalive_s
        while idle:
            connection = idle.pop()
            if not connection.lost and connection.idle_since > deadline:
                self._in_use += 1
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    async def _borrow(self, origin: Origin) -> tuple[Connection, bool]:
        """An idle connection to `origin` (True), or a new one once a slot is free (False)."""
        connection = self._reuse(origin)
        if connection is not None:
            return connection, True
        if self._closed:
            raise UpstreamError("the gateway is stopping")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                while self._in_use >= self._limit:
                    slot = loop.create_future()
                    self._slots.append(slot)
                    try:
                        await slot
                    except BaseException:
                        if slot.done() and not slot.cancelled():  # woken, then cancelled: pass it on
                            self._wake_next_slot()
                        raise
                    connection = self._reuse(origin)
                    if connection is not None:
                        return connection, True
                self._in_use += 1
                try:
                    connection = await self._connect(loop, origin)
                except BaseException:
                    self._in_use -= 1
                    self._wake_next_slot()
                    raise
        except TimeoutError:
            cause = f"no connection to the upstream within {self._connect_timeout_s:g} s"
            raise UpstreamTimeout(cause) from None
        self._open.add(connection)
        return connection, False

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> Connection:
        tls = origin.scheme == "https"
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(loop, origin, self._read_timeout_s),
                origin.host,
                origin.port,
                ssl=self._tls if tls else None,
                server_hostname=origin.host if tls else None,
            )
        except OSError as exc:  # refused, unreachable, unknown host, TLS (ssl.SSLError is an OSError)
            raise UpstreamError(_connect_cause(exc)) from exc
        return connection

    def _wake_next_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def _close_expired(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        earliest: float | None = None
        for origin, idle in list(self._idle.items()):
            keep = []
            for connection in idle:
                if connection.lost or connection.idle_since + self._keepalive_s <= now:
                    connection.close()
                    self._open.discard(connection)
                else:
                    keep.append(connection)
                    earliest = min(earliest or connection.idle_since, connection.idle_since)
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        if earliest is not None:
            self._sweep = asyncio.get_running_loop().call_at(
                earliest + self._keepalive_s, self._close_expired
            )


def _request_bytes(target: Target, method: str, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    length = f"content-length: {len(body)}\r\n" if body or method != "GET" else ""
    lines = [f"{method} {target.path} HTTP/1.1\r\nhost: {target.authority}\r\n{length}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError(f"a header that cannot be sent ({name!r} holds a line break)")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode() + body


def _connect_cause(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"cannot connect: {exc.strerror or exc}"
