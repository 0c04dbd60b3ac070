"""The console's pages read the portal through its own JSON API, in process.

A page handler asks `/api/...` with the signed-in user's token through an ASGI transport (no socket,
no second server): the API decides what the user may see, exactly as it does for curl or the
browser's scripts, so the console never re-implements tenant isolation or validation, and an API
error reaches the page with its `message` and `fields` unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

Params = Mapping[str, str | int | float | bool | Sequence[str | int] | None]


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    fields: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json().get("error", {})
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ApiError(
        response.status_code,
        str(body.get("code") or "error"),
        str(body.get("message") or f"HTTP {response.status_code}"),
        list(body.get("fields") or []),
    )


class ApiClient:
    """One user's view of the API, for one page render."""

    def __init__(self, http: httpx.AsyncClient, token: str, lang: str = "en") -> None:
        self.http = http
        # The page's language reaches the API, which answers its messages in it.
        self.headers = {"Authorization": f"Bearer {token}", "Accept-Language": lang}

    async def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        response = await self.http.request(method, path, params=clean, json=json, headers=self.headers)
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)


def http_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console.internal", timeout=30
    )


async def all_of(*calls: Awaitable[Any]) -> list[Any]:
    """Make a page's API calls at once, wait for every one, then raise the first failure.

    Not a bare `asyncio.gather`: on the first failure it returns while the other calls run on,
    orphaned, and they were seen leaving their request's database session open until the garbage
    collector found it. Cancelling them instead would interrupt FastAPI between entering a session
    dependency and exiting it, with the same result. The calls are quick; waiting costs nothing.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
