"""Bounded input for both planes: a pure ASGI middleware that refuses what is too big before the app
sees it — headers (431), bodies (413) and JSON nested too deep (400).

Why here and not in each app: the portal and the gateway must refuse the same way and early, before a
parser spends memory or recursion on the input (four 100 MB bodies took the portal to 1 GB; JSON
nested 1,000 deep is a RecursionError in `json.loads`). The middleware reads the body itself, counting
bytes as they arrive and stopping at the limit, then replays it to the app; later `receive` calls go
through, so apps still see the client disconnect.

It imports nothing but the standard library: each plane passes `answer`, which renders a refusal in
its own error shape (OpenAI's for the gateway, the portal's with its request id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# (status, message, field) -> the JSON body of the refusal, in the plane's error shape.
Answer = Callable[[int, str, str | None], bytes]

_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


@dataclass(frozen=True, slots=True)
class Bounds:
    max_body_bytes: int
    max_header_bytes: int
    max_json_depth: int


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when `body` nests arrays/objects deeper than `limit` (brackets left open count too).

    No parse and no Python loop over the input: every step is a C-speed bytes operation, so a hostile
    body costs at most `limit` linear passes. A body with no more brackets than `limit` cannot be too
    deep, which is every ordinary request, so the passes run only for suspicious ones."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    # Outside strings only: drop escaped backslashes, then escaped quotes; every other quote toggles.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    parens = outside.translate(_PARENS, _NOT_BRACKETS)
    for _ in range(limit):  # each pass removes the innermost pairs: one level of nesting
        shorter = parens.replace(b"()", b"")
        if shorter == parens:
            break
        parens = shorter
    else:
        if b"()" in parens:
            return True
    return parens.count(b"(") > limit  # brackets opened and never closed


def _looks_like_json(body: bytes) -> bool:
    start = body.lstrip()[:1]
    return start in (b"{", b"[")


class BoundsMiddleware:
    """Refuses oversized headers (431) and bodies (413), and JSON nested deeper than allowed (400).

    `skip` names path prefixes another bounded app serves (the portal's `/v1`, where the gateway
    applies its own limits in OpenAI's shape)."""

    def __init__(self, app: ASGIApp, *, bounds: Bounds, answer: Answer, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.bounds = bounds
        self.answer = answer
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.skip and str(scope.get("path", "")).startswith(self.skip)):
            await self.app(scope, receive, send)
            return
        bounds = self.bounds
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
        if header_bytes > bounds.max_header_bytes:
            await self._refuse(
                send, 431, f"the request headers are {header_bytes} bytes; at most {bounds.max_header_bytes}"
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > bounds.max_body_bytes:
            await self._refuse(send, 413, _too_large(declared, bounds.max_body_bytes))
            return
        body, outcome = await _read_body(receive, bounds.max_body_bytes)
        if outcome == "gone":  # the client left mid-body: nobody to answer
            return
        if outcome == "too_large":
            await self._refuse(send, 413, _too_large(None, bounds.max_body_bytes))
            return
        if body and _looks_like_json(body) and json_depth_exceeds(body, bounds.max_json_depth):
            await self._refuse(
                send, 400, f"the JSON body nests deeper than {bounds.max_json_depth} levels", "body"
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, status: int, message: str, field: str | None = None) -> None:
        payload = self.answer(status, message, field)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status in (413, 431):
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


def _too_large(size: int | None, limit: int) -> str:
    said = f"{size} bytes" if size is not None else "more than that"
    return f"the request body is {said}; at most {limit} bytes are accepted"


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, str]:
    """The body and "whole"; or "too_large" (reading stopped at `limit`), or "gone" (disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", "gone"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", "too_large"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), "whole"
