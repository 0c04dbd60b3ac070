"""Resumable list/watch of one kind in one namespace, over the Kubernetes API's own wire format.

List (paged with `limit`/`continue`; an expired `continue` token restarts the list), hand the whole
list to the sink, then watch from the list's resourceVersion with `allowWatchBookmarks=true` and a
`timeoutSeconds`. A watch that ends normally (the server's timeout) is resumed from the last
resourceVersion seen — of an object or of a BOOKMARK. `410 Gone` means the history the watch needs
is gone: it arrives as an ERROR event with a `Status` of code 410 inside a 200 stream (the usual
case) or as a plain HTTP 410; either way the list is done again and handed over whole, so objects
deleted meanwhile disappear too. Other errors are retried from the last resourceVersion after a
back-off.

Why not a client library's watch: lightkube's drops bookmarks (it cannot ask for them) and, on a
410, silently restarts the watch "from now" without telling the caller to relist, so deletions in
the gap are never seen; kubernetes_asyncio's (and `kubernetes.aio`'s) retries a 410 once and then
raises, and hands back typed models of 1,700 generated files; kr8s restarts a 410 with the same
expired resourceVersion. The protocol itself is small (api-concepts "Efficient detection of
changes"), so it is spoken here over the authenticated client lightkube builds (`access`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx2

from portal.observe.kubernetes.kinds import Kind
from portal.observe.kubernetes.objects import Obj, resource_version

log = logging.getLogger("modelfleet.observe.kubernetes")

PAGE_SIZE = 500
WATCH_SECONDS = 300
NOT_INSTALLED_RETRY_SECONDS = 300.0  # a CRD that is not installed (no LeaderWorkerSet controller)


class Expired(Exception):
    """410 Gone: the resourceVersion is older than the server's history; list again."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Relisted:
    """Every object of the kind as of `resource_version` (replaces whatever the sink held)."""

    objects: list[Obj]
    resource_version: str


@dataclass(frozen=True)
class Changed:
    type: str  # ADDED, MODIFIED, DELETED
    object: Obj


Sink = Callable[[Kind, Relisted | Changed], None]


class ListWatch:
    def __init__(
        self,
        client: httpx2.AsyncClient,
        kind: Kind,
        namespace: str,
        region: str,
        *,
        page_size: int = PAGE_SIZE,
        watch_seconds: int = WATCH_SECONDS,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.client = client
        self.kind = kind
        self.path = kind.path(namespace)
        self.selectors = kind.selectors(region)
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self.resource_version: str | None = None
        self.lists = 0  # how many times the kind was listed (1 + relists)

    async def run(self, sink: Sink) -> NoReturn:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    listed = await self.list()
                    self.resource_version = listed.resource_version
                    sink(self.kind, listed)
                await self.watch(sink)
                failures = 0
            except Expired:
                log.info("%s: resourceVersion %s expired; listing again", self.path, self.resource_version)
                self.resource_version = None
            except ApiError as exc:
                if exc.status == 404 and self.resource_version is None:
                    log.info("%s: not served (CRD not installed?); trying again later", self.path)
                    sink(self.kind, Relisted([], ""))
                    await asyncio.sleep(NOT_INSTALLED_RETRY_SECONDS)
                    continue
                failures += 1
                await self._back_off(failures, exc)
            except (httpx2.TransportError, json.JSONDecodeError) as exc:
                failures += 1
                await self._back_off(failures, exc)

    async def _back_off(self, failures: int, exc: Exception) -> None:
        first, cap = self.backoff
        delay = min(cap, first * 2 ** (failures - 1))
        level = logging.WARNING if failures == 1 or delay >= cap else logging.DEBUG
        log.log(level, "%s: %s; retrying in %.1fs", self.path, exc or type(exc).__name__, delay)
        await asyncio.sleep(delay)

    async def list(self) -> Relisted:
        """Every object, page by page; the resourceVersion of the list (the same on every page)."""
        self.lists += 1
        objects: list[Obj] = []
        params: dict[str, Any] = {**self.selectors, "limit": self.page_size}
        while True:
            response = await self.client.get(self.path, params=params)
            if response.status_code == 410 and "continue" in params:  # the continue token expired
                objects, params = [], {**self.selectors, "limit": self.page_size}
                continue
            _raise_for(response.status_code, response.content)
            body = response.json()
            objects.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return Relisted(objects, str(meta.get("resourceVersion") or ""))
            params["continue"] = token

    async def watch(self, sink: Sink) -> None:
        """One watch request from `resource_version`, until the server ends it."""
        params = {
            **self.selectors,
            "watch": "1",
            "resourceVersion": self.resource_version or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        async with self.client.stream("GET", self.path, params=params) as response:
            if response.status_code != 200:
                _raise_for(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    if code == 410:
                        raise Expired(obj.get("message"))
                    raise ApiError(code, str(obj.get("message") or obj))
                version = resource_version(obj)
                if kind != "BOOKMARK":
                    sink(self.kind, Changed(str(kind), obj))
                if version:
                    self.resource_version = version


def _raise_for(status: int, body: bytes) -> None:
    if status == 200:
        return
    try:
        message = str(json.loads(body).get("message") or body[:200].decode(errors="replace"))
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    if status == 410:
        raise Expired(message)
    raise ApiError(status, message)
