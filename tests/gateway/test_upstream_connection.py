"""The gateway's HTTP/1.1 client to upstreams (gateway/connection.py behind gateway/upstream.py), against
loopback servers written here byte by byte, so they can answer well, in pieces, slowly, wrongly or not
at all; and `parse_target`, the URL parser it runs once per upstream URL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import gzip
import ipaddress
import random
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pytest_httpserver import HTTPServer

from gateway.connection import Origin, Target, parse_target
from gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout

_T = TypeVar("_T")

TEST_LIMIT_S = 5.0  # a bug that hangs a test fails it instead


async def bounded(main: Coroutine[Any, Any, _T]) -> _T:
    return await asyncio.wait_for(main, TEST_LIMIT_S)


# -- loopback servers --


class Peer:
    """The server's side of one accepted connection."""

    def __init__(
        self, server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.index, self.reader, self.writer = server, index, reader, writer

    async def request(self) -> bytes | None:
        """One whole request (head and Content-Length body), or None once the client has closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        body = await self.reader.readexactly(int(match.group(1))) if match else b""
        self.server.requests.append((self.index, head + body))
        return head + body

    async def send(self, *parts: bytes) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()

    async def until_eof(self) -> None:
        """Wait for the client to close the connection (whatever else it sends is dropped)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass


Handler = Callable[[Peer], Awaitable[None]]


class RawServer:
    """A loopback server running `handler` for each connection it accepts; it keeps the connections
    (`peers`, in order) and the requests read (`requests`: connection index, bytes)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.peers: list[Peer] = []
        self.requests: list[tuple[int, bytes]] = []
        self.errors: list[BaseException] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def url(self, path: str = "/v1/chat") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if exc[0] is None and self.errors:
            raise self.errors[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # by __aexit__: end quietly (a cancelled handler is logged)
            pass
        except Exception as exc:  # a broken test server: fail the test, not only a log line
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()


def answer(body: bytes = b"ok", status: str = "200 OK", head: str = "") -> bytes:
    """A Content-Length framed answer; `head` holds extra header lines, each ending in CRLF."""
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def path_of(request: bytes) -> str:
    return request.split(b" ", 2)[1].decode()


def keep_alive(respond: Callable[[bytes], bytes] = lambda _: answer()) -> Handler:
    """Answers every request on its connection, for as long as the client keeps it."""

    async def handle(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(respond(request))

    return handle


def silent(got_request: asyncio.Event | None = None) -> Handler:
    """Reads the request and never answers."""

    async def handle(peer: Peer) -> None:
        await peer.request()
        if got_request is not None:
            got_request.set()
        await peer.until_eof()

    return handle


@contextlib.asynccontextmanager
async def upstream(
    *,
    max_connections: int = 4,
    connect_timeout_s: float = 0.5,
    read_timeout_s: float = 0.5,
    keepalive_s: float = 30,
) -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(
        max_connections=max_connections,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        keepalive_s=keepalive_s,
    )
    try:
        yield client
    finally:
        await client.aclose()
        await asyncio.sleep(0)  # the closed transports' connection_lost


async def read_and_close(response: UpstreamResponse) -> bytes:
    try:
        return await response.aread()
    finally:
        response.close()


async def first_piece(response: UpstreamResponse) -> bytes:
    pieces = response.aiter_raw()
    assert isinstance(pieces, AsyncGenerator)
    try:
        return await anext(pieces)
    finally:
        await pieces.aclose()


def refused_port() -> int:
    """A loopback port nobody listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- framing, status and headers --


def test_a_content_length_answer_is_read_whole_with_its_status_and_case_insensitive_headers() -> None:
    head = "Content-Type: application/json\r\nRetry-After: 7\r\nX-Trace: a\r\nx-trace: b\r\n"
    body = b'{"error": "slow down"}'

    async def run() -> None:
        handler = keep_alive(lambda _: answer(body, "429 Too Many Requests", head))
        async with RawServer(handler) as server, upstream() as client:
            url = server.url("/v1/chat/completions?stream=false")
            response = await client.post(url, b'{"q": 1}', [("x-request-id", "r1"), ("Authorization", "k")])
            assert response.status_code == 429
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["content-type"] == "application/json"
            assert response.headers.get("retry-after") == "7"
            assert response.headers.get("X-TRACE") == "a, b"
            assert response.headers.get("x-missing") is None
            assert "CONTENT-LENGTH" in response.headers
            assert await read_and_close(response) == body
        [(_, request)] = server.requests
        lines, _, sent = request.partition(b"\r\n\r\n")
        request_line, *header_lines = lines.split(b"\r\n")
        assert request_line == b"POST /v1/chat/completions?stream=false HTTP/1.1"
        sent_headers = {name.lower(): value for name, _, value in (h.partition(b": ") for h in header_lines)}
        assert sent_headers[b"host"] == f"127.0.0.1:{server.port}".encode()
        assert sent_headers[b"content-length"] == b"8"
        assert (sent_headers[b"x-request-id"], sent_headers[b"authorization"]) == (b"r1", b"k")
        assert sent == b'{"q": 1}'

    asyncio.run(bounded(run()))


def test_a_chunked_answer_is_relayed_piece_by_piece_as_each_arrives() -> None:
    first_seen = asyncio.Event()

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"data: 1\n\n"))
        # The second piece is sent only once the client has relayed the first: an answer buffered
        # to its end would never get it (and time out).
        await asyncio.wait_for(first_seen.wait(), 2)
        await peer.send(chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        await peer.until_eof()

    async def run() -> None:
        async with RawServer(handle) as server, upstream(read_timeout_s=1) as client:
            response = await client.post(server.url(), b"{}", [])
            pieces = []
            async for piece in response.aiter_raw():
                pieces.append(piece)
                first_seen.set()
            response.close()
            assert pieces == [b"data: 1\n\n", b"data: 2\n\n"]

    asyncio.run(bounded(run()))


def test_an_answer_ended_by_close_is_read_whole_and_its_connection_is_not_reused() -> None:
    async def handle(peer: Peer) -> None:
        if peer.index == 0:  # no Content-Length, not chunked: the body ends when the connection does
            await peer.request()
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
            await asyncio.sleep(0.02)
            await peer.send(b"it")
            return
        await keep_alive(lambda _: answer(b"again"))(peer)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            assert response.status_code == 200
            assert await read_and_close(response) == b"all of it"
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"again"
            assert len(server.peers) == 2

    asyncio.run(bounded(run()))


def test_a_no_content_answer_ends_at_its_head_and_keeps_the_connection() -> None:
    async def run() -> None:
        responses = iter([b"HTTP/1.1 204 No Content\r\n\r\n", answer(b"after")])
        async with RawServer(keep_alive(lambda _: next(responses))) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            assert response.status_code == 204
            assert await read_and_close(response) == b""
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"after"
            assert len(server.peers) == 1

    asyncio.run(bounded(run()))


# -- keep-alive --


def test_sequential_requests_share_one_connection_once_each_answer_is_read_and_closed() -> None:
    async def run() -> None:
        count = iter(range(100))
        handler = keep_alive(lambda _: answer(f"answer {next(count)}".encode()))
        async with RawServer(handler) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"1", [])) == b"answer 0"
            response = await client.post(server.url(), b"2", [])
            assert b"".join([piece async for piece in response.aiter_raw()]) == b"answer 1"
            response.close()
            assert await read_and_close(await client.post(server.url(), b"3", [])) == b"answer 2"
            assert len(server.peers) == 1
            assert [index for index, _ in server.requests] == [0, 0, 0]

    asyncio.run(bounded(run()))


def test_an_answer_closed_before_its_end_closes_its_connection_and_the_next_request_opens_another() -> None:
    saw_eof = asyncio.Event()

    async def handle(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"token"))
            await peer.until_eof()  # how an engine learns that its client has left
            saw_eof.set()
            return
        await keep_alive()(peer)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            assert await first_piece(response) == b"token"
            response.close()
            await asyncio.wait_for(saw_eof.wait(), 1)
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            assert len(server.peers) == 2

    asyncio.run(bounded(run()))


@pytest.mark.parametrize(
    "closing",
    [
        answer(head="connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_an_answer_that_does_not_keep_its_connection_alive_is_not_followed_on_it(closing: bytes) -> None:
    saw_eof = asyncio.Event()

    async def handle(peer: Peer) -> None:
        if peer.index == 0:  # says it closes, but leaves that to the client
            await peer.request()
            await peer.send(closing)
            await peer.until_eof()
            saw_eof.set()
            return
        await keep_alive()(peer)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            await asyncio.wait_for(saw_eof.wait(), 1)
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            assert [index for index, _ in server.requests] == [0, 1]

    asyncio.run(bounded(run()))


def test_a_closed_idle_connection_is_replaced_without_an_error() -> None:
    close_now, closed = asyncio.Event(), asyncio.Event()

    async def handle(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            await close_now.wait()
            peer.writer.close()  # while the connection is idle in the client's pool
            await peer.writer.wait_closed()
            closed.set()
            return
        await keep_alive(lambda _: answer(b"second"))(peer)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"first"
            close_now.set()
            await closed.wait()
            await asyncio.sleep(0.05)
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"second"
            assert len(server.peers) == 2

    asyncio.run(bounded(run()))


def test_a_request_on_a_reused_connection_closed_without_an_answer_is_sent_once_more_on_a_new_one() -> None:
    async def handle(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            await peer.send(answer(b"first"))
            await peer.request()  # the keep-alive race: the request arrives as the server closes
            return
        await keep_alive(lambda _: answer(b"second"))(peer)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"one", [])) == b"first"
            assert await read_and_close(await client.post(server.url(), b"two", [])) == b"second"
            assert len(server.peers) == 2
            assert [(index, request.endswith(b"two")) for index, request in server.requests] == [
                (0, False),
                (0, True),
                (1, True),
            ]

    asyncio.run(bounded(run()))


def test_a_request_on_a_reused_connection_that_times_out_is_not_sent_again() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        await peer.request()  # read, never answered: the upstream may be working on it
        await peer.until_eof()

    async def run() -> None:
        async with RawServer(handle) as server, upstream(read_timeout_s=0.2) as client:
            assert await read_and_close(await client.post(server.url(), b"one", [])) == b"first"
            with pytest.raises(UpstreamTimeout):
                await client.post(server.url(), b"two", [])
            assert len(server.peers) == 1
            assert len(server.requests) == 2

    asyncio.run(bounded(run()))


def test_a_request_on_a_reused_connection_closed_mid_answer_is_not_sent_again() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-le")  # and close

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"one", [])) == b"first"
            with pytest.raises(UpstreamError) as failure:
                await client.post(server.url(), b"two", [])
            assert not isinstance(failure.value, UpstreamTimeout)
            assert len(server.peers) == 1

    asyncio.run(bounded(run()))


def test_a_request_on_a_new_connection_closed_without_an_answer_is_not_sent_again() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()  # and close

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            with pytest.raises(UpstreamError) as failure:
                await client.post(server.url(), b"{}", [])
            assert not isinstance(failure.value, UpstreamTimeout)
            assert "closed" in failure.value.cause
            assert len(server.peers) == 1

    asyncio.run(bounded(run()))


def test_an_idle_connection_is_closed_after_keepalive_s_and_the_next_request_opens_another() -> None:
    eof = asyncio.Event()

    async def handle(peer: Peer) -> None:
        await keep_alive()(peer)
        if peer.index == 0:
            eof.set()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with RawServer(handle) as server, upstream(keepalive_s=0.2) as client:
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            idle_from = loop.time()
            await asyncio.wait_for(eof.wait(), 1)
            assert 0.15 <= loop.time() - idle_from < 1
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            assert len(server.peers) == 2

    asyncio.run(bounded(run()))


def test_concurrent_requests_open_no_more_connections_than_the_limit() -> None:
    async def handle(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await asyncio.sleep(0.01)
            await peer.send(answer(request.rpartition(b"\r\n\r\n")[2]))

    async def run() -> None:
        async with RawServer(handle) as server, upstream(max_connections=3, connect_timeout_s=2) as client:

            async def call(n: int) -> bytes:
                return await read_and_close(await client.post(server.url(), str(n).encode(), []))

            bodies = await asyncio.gather(*(call(n) for n in range(30)))
            assert bodies == [str(n).encode() for n in range(30)]
            assert len(server.peers) == 3

    asyncio.run(bounded(run()))


# -- content-encodings --


def test_gzip_and_deflate_bodies_are_decoded_and_an_unknown_encoding_is_an_error_naming_it() -> None:
    text = b"".join(b"token %d " % n for n in range(2000))

    def respond(request: bytes) -> bytes:
        path = path_of(request)
        if path == "/gzip":
            return answer(gzip.compress(text), head="content-encoding: gzip\r\n")
        if path == "/deflate":  # zlib data, in pieces that cut through it
            packed = zlib.compress(text)
            pieces = b"".join(chunk(packed[i : i + 1000]) for i in range(0, len(packed), 1000))
            head = "HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ntransfer-encoding: chunked\r\n\r\n"
            return head.encode() + pieces + b"0\r\n\r\n"
        if path == "/br":
            return answer(b"\x1b\x00\x00", head="content-encoding: br\r\n")
        return answer(text, head="content-encoding: identity\r\n")

    async def run() -> None:
        async with RawServer(keep_alive(respond)) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url("/gzip"), b"{}", [])) == text
            response = await client.post(server.url("/deflate"), b"{}", [])
            assert b"".join([piece async for piece in response.aiter_raw()]) == text
            response.close()
            assert await read_and_close(await client.post(server.url("/identity"), b"{}", [])) == text
            with pytest.raises(UpstreamError) as failure:
                await client.post(server.url("/br"), b"{}", [])
            assert not isinstance(failure.value, UpstreamTimeout)
            assert re.search(r"\bbr\b", failure.value.cause), failure.value.cause
            assert await read_and_close(await client.post(server.url("/identity"), b"{}", [])) == text
            assert len(server.peers) == 2  # the one that sent br is not used again

    asyncio.run(bounded(run()))


def test_a_gzip_body_that_ends_before_its_stream_does_is_an_error() -> None:
    text = b"".join(b"token %d " % n for n in range(2000))
    packed = gzip.compress(text)
    cut = packed[: len(packed) // 2]

    async def run() -> None:
        handler = keep_alive(lambda _: answer(cut, head="content-encoding: gzip\r\n"))
        async with RawServer(handler) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            with pytest.raises(UpstreamError):
                await read_and_close(response)

    asyncio.run(bounded(run()))


# -- failures --


def test_a_refused_connection_is_an_error_saying_so_not_a_timeout() -> None:
    async def run() -> None:
        async with upstream() as client:
            with pytest.raises(UpstreamError) as failure:
                await client.post(f"http://127.0.0.1:{refused_port()}/v1", b"{}", [])
            assert not isinstance(failure.value, UpstreamTimeout)
            assert "refused" in failure.value.cause

    asyncio.run(bounded(run()))


def test_an_upstream_silent_before_its_answer_times_out_after_the_read_timeout() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with RawServer(silent()) as server, upstream(read_timeout_s=0.2) as client:
            started = loop.time()
            with pytest.raises(UpstreamTimeout) as failure:
                await client.post(server.url(), b"{}", [])
            assert 0.15 <= loop.time() - started < 1.0
            assert "0.2" in failure.value.cause
            assert len(server.peers) == 1  # a timeout is not sent again

    asyncio.run(bounded(run()))


def test_an_upstream_silent_mid_body_times_out_while_the_body_is_relayed() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"x" * 100)[:-90])  # the head and 10 of 100 bytes
        await peer.until_eof()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with RawServer(handle) as server, upstream(read_timeout_s=0.2) as client:
            response = await client.post(server.url(), b"{}", [])
            received = []
            started = loop.time()
            with pytest.raises(UpstreamTimeout):
                async for piece in response.aiter_raw():
                    received.append(piece)
            assert loop.time() - started < 1.0
            assert b"".join(received) == b"x" * 10
            response.close()

    asyncio.run(bounded(run()))


def test_a_stream_longer_than_the_read_timeout_lives_while_its_gaps_are_shorter() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for n in range(10):  # 0.5 s in all, twice the read timeout, a piece every 0.05 s
            await asyncio.sleep(0.05)
            await peer.send(chunk(b"%d" % n))
        await peer.send(b"0\r\n\r\n")
        await peer.until_eof()

    async def run() -> None:
        async with RawServer(handle) as server, upstream(read_timeout_s=0.25) as client:
            response = await client.post(server.url(), b"{}", [])
            assert b"".join([piece async for piece in response.aiter_raw()]) == b"0123456789"
            response.close()

    asyncio.run(bounded(run()))


def test_a_body_cut_short_by_a_close_is_an_error_not_a_short_body() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"x" * 100)[:-90])  # Content-Length 100, 10 bytes sent, then close

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            with pytest.raises(UpstreamError) as failure:
                await response.aread()
            response.close()
            assert not isinstance(failure.value, UpstreamTimeout)
            assert "closed" in failure.value.cause

    asyncio.run(bounded(run()))


def test_a_chunked_body_cut_short_by_a_close_is_an_error_after_the_pieces_that_came() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"partial"))

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            received = []
            with pytest.raises(UpstreamError) as failure:
                async for piece in response.aiter_raw():
                    received.append(piece)
            response.close()
            assert received == [b"partial"]
            assert not isinstance(failure.value, UpstreamTimeout)

    asyncio.run(bounded(run()))


def test_a_garbage_answer_is_an_error_and_its_connection_is_closed_not_reused() -> None:
    saw_eof = asyncio.Event()

    async def handle(peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            await peer.send(b"NOT HTTP\r\n\r\n")
            await peer.until_eof()
            saw_eof.set()
            return
        await keep_alive()(peer)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            with pytest.raises(UpstreamError) as failure:
                await client.post(server.url(), b"{}", [])
            assert not isinstance(failure.value, UpstreamTimeout)
            await asyncio.wait_for(saw_eof.wait(), 1)
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            assert len(server.peers) == 2

    asyncio.run(bounded(run()))


@pytest.mark.parametrize(
    "header",
    [("x-note", "one\r\nx-injected: two"), ("x-note", "one\ntwo"), ("x-a\r\nx-b", "v")],
    ids=["crlf-in-value", "lf-in-value", "crlf-in-name"],
)
def test_a_header_holding_a_line_break_is_refused_and_nothing_is_sent(header: tuple[str, str]) -> None:
    async def run() -> None:
        async with RawServer(keep_alive()) as server, upstream() as client:
            with pytest.raises(UpstreamError) as failure:
                await client.post(server.url(), b"{}", [("content-type", "application/json"), header])
            assert "line break" in failure.value.cause
            await asyncio.sleep(0.05)
            assert server.peers == []

    asyncio.run(bounded(run()))


def test_bytes_after_the_end_of_an_answer_are_not_taken_as_part_of_it() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        # One request, two answers in one write: the second can only be the upstream's mistake.
        await peer.send(answer(b"mine") + answer(b"stray", "500 Internal Server Error"))
        await peer.until_eof()

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            assert response.status_code == 200
            assert await read_and_close(response) == b"mine"

    asyncio.run(bounded(run()))


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n"],
    ids=["100-continue", "103-early-hints"],
)
@pytest.mark.parametrize("apart", [True, False], ids=["apart", "together"])
def test_an_interim_answer_is_skipped_and_the_final_one_is_what_the_client_sees(
    interim: bytes, apart: bool
) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            final = answer(b"done", head="x-final: yes\r\n")
            if apart:
                await peer.send(interim)
                await asyncio.sleep(0.02)
                await peer.send(final)
            else:
                await peer.send(interim + final)

    async def run() -> None:
        async with RawServer(handle) as server, upstream() as client:
            response = await client.post(server.url(), b"{}", [])
            assert response.status_code == 200
            assert response.headers["x-final"] == "yes"
            assert "link" not in response.headers
            assert await read_and_close(response) == b"done"
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"done"
            assert len(server.peers) == 1

    asyncio.run(bounded(run()))


# -- the pool's limit and its connect timeout --


def hold_or_answer() -> Handler:
    """`/hold` gets the head and a first piece of an answer that never ends; anything else `ok`."""

    async def handle(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if path_of(request) == "/hold":
                await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"held"))
                await peer.until_eof()
                return
            await peer.send(answer())

    return handle


def test_with_the_pool_full_a_request_times_out_after_the_connect_timeout_then_succeeds_once_freed() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with (
            RawServer(hold_or_answer()) as server,
            upstream(max_connections=1, connect_timeout_s=0.2, read_timeout_s=2) as client,
        ):
            held = await client.post(server.url("/hold"), b"{}", [])
            started = loop.time()
            with pytest.raises(UpstreamTimeout) as failure:
                await client.post(server.url("/ok"), b"{}", [])
            assert 0.15 <= loop.time() - started < 1.0
            assert "connection" in failure.value.cause
            assert len(server.peers) == 1  # it waited for a slot, it did not connect
            held.close()
            assert await read_and_close(await client.post(server.url("/ok"), b"{}", [])) == b"ok"

    asyncio.run(bounded(run()))


def test_a_request_waiting_for_a_slot_gets_the_connection_given_back() -> None:
    async def run() -> None:
        async with RawServer(keep_alive()) as server, upstream(max_connections=1) as client:
            first = await client.post(server.url(), b"{}", [])
            waiting = asyncio.create_task(client.post(server.url(), b"{}", []))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            assert await read_and_close(first) == b"ok"
            assert await read_and_close(await waiting) == b"ok"
            assert len(server.peers) == 1  # the connection given back, reused

    asyncio.run(bounded(run()))


@pytest.mark.parametrize(
    "woken_first",
    [False, True],
    ids=["cancelled-while-waiting", "cancelled-just-after-it-was-woken"],
)
def test_a_cancelled_waiter_leaves_the_slot_to_the_next_waiter(woken_first: bool) -> None:
    async def run() -> None:
        async with (
            RawServer(hold_or_answer()) as server,
            upstream(max_connections=1, connect_timeout_s=0.3) as client,
        ):
            held = await client.post(server.url("/hold"), b"{}", [])
            cancelled = asyncio.create_task(client.post(server.url("/ok"), b"{}", []))
            waiting = asyncio.create_task(client.post(server.url("/ok"), b"{}", []))
            await asyncio.sleep(0.02)
            if woken_first:
                held.close()  # wakes `cancelled`, which has not run yet when it is cancelled
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            held.close()  # (a second close is harmless)
            assert await read_and_close(await waiting) == b"ok"

    asyncio.run(bounded(run()))


def test_cancelling_a_request_awaiting_its_answer_frees_its_slot_and_closes_its_connection() -> None:
    got_request = asyncio.Event()

    async def run() -> None:
        async with (
            RawServer(silent(got_request)) as quiet,
            RawServer(keep_alive()) as good,
            upstream(max_connections=1, connect_timeout_s=0.3, read_timeout_s=5) as client,
        ):
            call = asyncio.create_task(client.post(quiet.url(), b"{}", []))
            await asyncio.wait_for(got_request.wait(), 1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await read_and_close(await client.post(good.url(), b"{}", [])) == b"ok"
            # The silent server sees its connection closed (its handler returns on EOF).
            await asyncio.sleep(0.05)
            assert quiet.peers[0].reader.at_eof()

    asyncio.run(bounded(run()))


def test_a_request_after_the_client_is_closed_is_refused() -> None:
    async def run() -> None:
        async with RawServer(keep_alive()) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            await client.aclose()
            with pytest.raises(UpstreamError):
                await client.post(server.url(), b"{}", [])

    asyncio.run(bounded(run()))


# -- backpressure --


def streaming(data: bytes) -> Handler:
    """Streams `data` in 64 KiB chunks, as fast as the client takes them in."""

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for start in range(0, len(data), 64 * 1024):
            await peer.send(chunk(data[start : start + 64 * 1024]))
        await peer.send(b"0\r\n\r\n")
        await peer.until_eof()

    return handle


def test_a_large_stream_read_slowly_arrives_whole_in_order_with_bounded_buffering() -> None:
    data = random.Random(14).randbytes(4 * 1024 * 1024)

    async def run() -> None:
        async with RawServer(streaming(data)) as server, upstream(read_timeout_s=1) as client:
            response = await client.post(server.url(), b"{}", [])
            pieces = []
            async for piece in response.aiter_raw():
                pieces.append(piece)
                await asyncio.sleep(0.3 if len(pieces) == 1 else 0.002)
            response.close()
            assert b"".join(pieces) == data
            # While the reader sleeps, the client stops taking bytes in: no piece holds the whole.
            assert max(len(piece) for piece in pieces) <= 1024 * 1024

    asyncio.run(bounded(run()))


def test_a_reader_holding_the_upstream_back_past_the_read_timeout_is_not_timed_out() -> None:
    data = random.Random(17).randbytes(2 * 1024 * 1024)

    async def run() -> None:
        async with RawServer(streaming(data)) as server, upstream(read_timeout_s=0.2) as client:
            response = await client.post(server.url(), b"{}", [])
            await asyncio.sleep(0.05)  # the client's buffer fills and it stops reading the socket
            time.sleep(0.3)  # a stall of the loop (a busy process) past the read timeout
            await asyncio.sleep(0.02)  # the silence check, now due, runs while the reader holds back
            assert b"".join([piece async for piece in response.aiter_raw()]) == data
            response.close()

    asyncio.run(bounded(run()))


def test_resuming_after_holding_the_upstream_back_does_not_count_the_pause_as_its_silence() -> None:
    data = random.Random(18).randbytes(2 * 1024 * 1024)

    async def run() -> None:
        async with RawServer(streaming(data)) as server, upstream(read_timeout_s=0.2) as client:
            response = await client.post(server.url(), b"{}", [])
            await asyncio.sleep(0.05)  # the client's buffer fills and it stops reading the socket
            time.sleep(0.3)  # a stall of the loop past the read timeout: the silence check is due
            await asyncio.sleep(0)  # the reader runs first in the next iteration, then the check
            assert b"".join([piece async for piece in response.aiter_raw()]) == data
            response.close()

    asyncio.run(bounded(run()))


def test_a_large_answer_read_whole_arrives_whole() -> None:
    data = random.Random(15).randbytes(3 * 1024 * 1024 + 17)

    async def run() -> None:
        async with RawServer(keep_alive(lambda _: answer(data))) as server, upstream() as client:
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == data

    asyncio.run(bounded(run()))


def test_a_connection_whose_large_answer_was_read_whole_serves_the_next_request() -> None:
    data = random.Random(16).randbytes(300 * 1024)  # past the client's 256 KiB high-water mark

    async def run() -> None:
        async with (
            RawServer(keep_alive(lambda _: answer(data))) as server,
            upstream(read_timeout_s=0.3) as client,
        ):
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == data
            # The same connection, reused: answered at once (or, at worst, a timeout after 0.3 s).
            again = await asyncio.wait_for(client.post(server.url(), b"{}", []), 1)
            assert await read_and_close(again) == data
            assert len(server.peers) == 1

    asyncio.run(bounded(run()))


# -- health probes --


def test_healthy_is_true_only_for_a_200_within_the_time_allowed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health", method="GET").respond_with_data("ok")
    httpserver.expect_request("/broken", method="GET").respond_with_data("down", status=500)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with RawServer(silent()) as quiet, upstream(read_timeout_s=5.0) as client:
            assert await client.healthy(httpserver.url_for("/health"), 1.0) is True
            assert await client.healthy(httpserver.url_for("/broken"), 1.0) is False
            started = loop.time()
            assert await client.healthy(quiet.url("/health"), 0.2) is False
            assert 0.15 <= loop.time() - started < 1.0
            assert await client.healthy(f"http://127.0.0.1:{refused_port()}/health", 1.0) is False
            assert await client.healthy("ftp://nowhere/health", 1.0) is False
        [(_, probe)] = quiet.requests
        assert probe.startswith(b"GET /health HTTP/1.1\r\n")
        assert b"content-length" not in probe.lower()

    asyncio.run(bounded(run()))


# -- parse_target --


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (
            "http://example.com/v1/chat/completions?stream=true",
            Target(Origin("http", "example.com", 80), "example.com", "/v1/chat/completions?stream=true"),
        ),
        ("https://api.example.com", Target(Origin("https", "api.example.com", 443), "api.example.com", "/")),
        ("HTTP://engine:8000/v1", Target(Origin("http", "engine", 8000), "engine:8000", "/v1")),
        ("https://engine:8443/", Target(Origin("https", "engine", 8443), "engine:8443", "/")),
        ("http://[::1]:8080/health", Target(Origin("http", "::1", 8080), "[::1]:8080", "/health")),
        ("https://[2001:db8::1]/v1", Target(Origin("https", "2001:db8::1", 443), "[2001:db8::1]", "/v1")),
        ("http://engine/v1?q=1#part", Target(Origin("http", "engine", 80), "engine", "/v1?q=1")),
    ],
)
def test_parse_target_splits_a_url_into_origin_host_header_and_request_target(
    url: str, target: Target
) -> None:
    assert parse_target(url) == target


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/v1", "scheme"),
        ("example.com/v1", "scheme"),
        ("ws://example.com/v1", "scheme"),
        ("http://example.com:0/v1", "port"),
        ("http://example.com:65536/v1", "port"),
        ("http://example.com:http/v1", "port"),
        ("http://example.com:/v1", "port"),
        ("http://[::1]:x/v1", "port"),
        ("http://user:secret@example.com/v1", "credentials"),
        ("http:///v1", "host"),
    ],
)
def test_parse_target_refuses_a_bad_url_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_target(url)


def test_parse_target_reads_a_query_that_follows_the_host_directly() -> None:
    assert parse_target("http://example.com?x=1") == Target(
        Origin("http", "example.com", 80), "example.com", "/?x=1"
    )


@pytest.mark.parametrize("url", ["http://[::1/v1", "http://[::1]junk/v1"])
def test_parse_target_refuses_a_malformed_ipv6_authority(url: str) -> None:
    with pytest.raises(ValueError):
        parse_target(url)


def test_a_bad_upstream_url_is_an_upstream_error_from_post() -> None:
    async def run() -> None:
        async with upstream() as client:
            with pytest.raises(UpstreamError) as failure:
                await client.post("http://user:secret@example.com/v1", b"{}", [])
            assert "credentials" in failure.value.cause

    asyncio.run(bounded(run()))


def test_an_answer_dropped_without_being_closed_frees_its_slot() -> None:
    # The safety net for a path that forgot to close: once the answer is collected, its connection is
    # closed and no longer counted in use (with one slot, the next request would wait it out).
    async def run() -> None:
        async with (
            RawServer(keep_alive()) as server,
            upstream(max_connections=1, connect_timeout_s=0.3) as client,
        ):
            forgotten = await client.post(server.url(), b"{}", [])
            del forgotten
            gc.collect()
            await asyncio.sleep(0)  # the loop runs the closing the collector handed it
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            assert len(server.peers) == 2  # the forgotten answer's connection was closed, not reused

    asyncio.run(bounded(run()))


LOOPBACK_SAN = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelfleet test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream.pem", directory / "upstream.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_an_https_upstream_is_reached_when_its_certificate_is_trusted_and_refused_when_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # External providers are https: the pool verifies against the system's trust store, which
    # SSL_CERT_FILE points at here (OpenSSL reads it when a client's context is made).
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def run() -> None:
        async with RawServer(keep_alive(), tls=server_tls) as server:
            async with upstream() as untrusting:
                with pytest.raises(UpstreamError) as refused:
                    await untrusting.post(server.url(), b"{}", [])
                assert not isinstance(refused.value, UpstreamTimeout)
                assert "TLS" in refused.value.cause and "CERTIFICATE_VERIFY_FAILED" in refused.value.cause
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            async with upstream() as trusting:
                assert await read_and_close(await trusting.post(server.url(), b"{}", [])) == b"ok"
                assert await read_and_close(await trusting.post(server.url(), b"{}", [])) == b"ok"
            assert len(server.peers) == 1  # both over one kept-alive connection (a refused handshake
            # never reaches the server's handler)

    asyncio.run(bounded(run()))


def test_an_answer_closed_again_or_collected_late_leaves_the_next_request_on_its_connection_alone() -> None:
    # A connection outlives each answer: once given back it carries the next request, and closing the
    # old answer again, or the collector finishing it off, must not take the connection from under
    # the new one (whose reader would then wait for ever).
    async def run() -> None:
        async with RawServer(keep_alive()) as server, upstream(max_connections=1) as client:
            first = await client.post(server.url(), b"{}", [])
            assert await read_and_close(first) == b"ok"
            second = await client.post(server.url(), b"{}", [])
            assert len(server.peers) == 1  # the same connection, lent again
            first.close()
            del first
            gc.collect()
            await asyncio.sleep(0)  # anything the collector handed the loop runs now
            assert await read_and_close(second) == b"ok"
            assert await read_and_close(await client.post(server.url(), b"{}", [])) == b"ok"
            assert len(server.peers) == 1

    asyncio.run(bounded(run()))
