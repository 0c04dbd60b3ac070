"""The bridge from the console's session cookie to the portal's bearer-token API.

The console's pages call the same JSON API as every other client (`/api/*`, and `/v1/*` for the
gateway). A browser cannot put the HttpOnly session cookie's token into an `Authorization` header, so
this middleware does it: a request to `/api/*` or `/v1/*` that carries a valid console cookie and **no**
`Authorization` header gets `Authorization: Bearer <the user's token>` added before the API sees it.
A request with its own `Authorization` header is left exactly as it is (the console sends its API key
explicitly to `/v1`, since the gateway takes API keys, not user tokens).

CSRF: a cookie is sent by the browser whatever page started the request, so a request that changes
something (anything but GET, HEAD, OPTIONS) and is authenticated by the cookie must also carry
`X-Modelfleet-Console: 1`. Another site cannot add a custom header to a cross-site request without a
CORS preflight, which the portal does not grant; without the header the answer is a 403 and the API is
not called. Requests with an explicit `Authorization` header need no such proof (a foreign page cannot
know the token).
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie

from starlette.types import ASGIApp, Receive, Scope, Send

from console.session import COOKIE, CSRF_HEADER, SessionCodec

BRIDGED_PREFIXES = ("/api/", "/v1/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_MESSAGE = (
    "requests that change something with the console's session cookie must carry the header "
    "X-Modelfleet-Console: 1 (cross-site request refused)"
)


def cookie_value(raw: bytes | None, name: str = COOKIE) -> str | None:
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _refusal(path: str, request_id: str | None) -> bytes:
    if path.startswith("/v1/"):  # the gateway answers in OpenAI's error shape
        error: dict[str, object] = {
            "message": CSRF_MESSAGE,
            "type": "invalid_request_error",
            "param": None,
            "code": "csrf_header_missing",
        }
    else:
        error = {
            "code": "forbidden",
            "message": CSRF_MESSAGE,
            "fields": [],
            "request_id": request_id,
        }
    return json.dumps({"error": error}).encode()


class ConsoleBridge:
    def __init__(self, app: ASGIApp, codec: SessionCodec) -> None:
        self.app = app
        self.codec = codec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(BRIDGED_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        names = {k for k, _ in headers}
        if b"authorization" in names:
            await self.app(scope, receive, send)
            return
        session = self.codec.open(cookie_value(dict(headers).get(b"cookie")))
        if session is None:
            await self.app(scope, receive, send)  # the API answers 401 as for any anonymous call
            return
        if scope["method"] not in SAFE_METHODS and dict(headers).get(CSRF_HEADER.encode()) != b"1":
            body = _refusal(scope["path"], scope.get("state", {}).get("request_id"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        bridged = [*headers, (b"authorization", f"Bearer {session.token}".encode())]
        await self.app({**scope, "headers": bridged}, receive, send)
