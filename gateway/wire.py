"""The stand-alone gateway's HTTP/1.1 connections: uvicorn's, with the writes of one turn of the event
loop sent together.

uvicorn writes an answer's status line and headers as soon as the app sends `http.response.start`,
and its body when the app sends it, and uvloop sends each write at once: two system calls per answer
where one would do. On loopback a write does the receiving side's work too, so it is one of the
largest costs a request has here (docs/gateway/usage-and-operations.md). `CoalescingHttpProtocol`
hands uvicorn a transport whose writes wait for the end of the current turn of the loop and then go
out as one: a complete answer is one write; a streamed one is a write per event, as before. `python -m
gateway` passes it to uvicorn (`http=`, which takes a protocol class).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop go out as one write; every other
    call reaches the real transport (a close sends what is waiting first)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, is_closing, ...
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
