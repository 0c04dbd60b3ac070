"""The stand-alone gateway's connections (gateway/wire.py): one write per turn of the event loop, and
HTTP/1.1 served as uvicorn serves it (keep-alive, streams, malformed requests)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.wire import CoalescingHttpProtocol, CoalescingTransport
from tests.gateway.gateway_support import serve


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_turn_go_out_as_one_and_a_close_sends_what_waits() -> None:
    async def run() -> None:
        real = Recording()
        transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert real.writes == []  # not yet: the turn is not over
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        transport.write(b"event 1")
        await asyncio.sleep(0)
        transport.writelines([b"event ", b"2"])
        await asyncio.sleep(0)
        assert real.writes[1:] == [b"event 1", b"event 2"]  # a stream's events, each in its turn
        transport.write(b"last words")
        transport.close()
        assert real.writes[-1] == b"last words" and real.closed
        transport.write(b"after the close")
        await asyncio.sleep(0)
        assert real.writes[-1] == b"last words"  # a closing transport takes no more
        assert transport.get_extra_info("peername") == "info:peername"

    asyncio.run(run())


async def numbers(request: Request) -> Response:
    async def events() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"data: {n}\n\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(events(), media_type="text/event-stream")


async def echo(request: Request) -> Response:
    return JSONResponse({"got": (await request.json())})


def test_uvicorn_serves_answers_streams_and_refusals_through_it() -> None:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/stream", numbers)])
    with serve(app, http=CoalescingHttpProtocol) as url, httpx.Client(base_url=url) as client:
        for n in range(20):  # one keep-alive connection, answer after answer
            answer = client.post("/echo", json={"n": n})
            assert answer.status_code == 200 and answer.json() == {"got": {"n": n}}
        with client.stream("GET", "/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert b"".join(stream.iter_raw()) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw.settimeout(5)
            reply: Any = raw.recv(4096)
            assert reply.startswith(b"HTTP/1.1 400")
