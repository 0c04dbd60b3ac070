"""A small Kubernetes API server for tests: the list/watch wire format, exactly, over real HTTP.

- `GET /api/v1/namespaces/{ns}/{plural}` (and `/apis/{group}/{version}/…`): a `…List` with
  `metadata.resourceVersion`, paged with `limit` and an opaque `continue` token (410 once expired).
- `…?watch=1&resourceVersion=R`: `200`, chunked, one JSON event per line (ADDED, MODIFIED, DELETED,
  BOOKMARK when `allowWatchBookmarks=true`), ended after `timeoutSeconds` or when the test says.
  A resourceVersion older than the kept history gets an `ERROR` event whose object is a `Status`
  with `code: 410, reason: "Expired"` inside the 200 stream — or, when the test asks for it, a
  plain HTTP 410.
- `labelSelector` (equality terms) and `fieldSelector` (`involvedObject.kind=…`) select objects.
- `GET /api/v1/namespaces/{ns}/pods/{pod}/log` with `container`, `previous`, `tailLines`,
  `follow`: text/plain, or a `400` Status for a container that never ran.
- Every request must carry the kubeconfig's bearer token (401 otherwise).

Every object change gets the next resourceVersion of one global counter, as etcd does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

TOKEN = "observer-test-token"
PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)$"
)
LOG_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/log$")
PLURALS = {
    "Pod": "pods",
    "Event": "events",
    "Deployment": "deployments",
    "LeaderWorkerSet": "leaderworkersets",
}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Change:
    rv: int
    plural: str
    type: str
    obj: dict[str, Any]


@dataclass
class FakeApiServer:
    served: set[str] = field(default_factory=lambda: set(PLURALS.values()))
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    history: list[Change] = field(default_factory=list)
    rv: int = 100
    oldest_kept: int = 0  # watches from an RV below this get 410
    http_gone_once: bool = False  # the next watch request gets a plain HTTP 410
    continue_expired: bool = False  # continue tokens answer 410
    logs: dict[tuple[str, str, bool], str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    base_url: str = ""

    def __post_init__(self) -> None:
        self._watchers: list[asyncio.Queue[dict[str, Any] | None]] = []
        self._runner: web.AppRunner | None = None

    # -- the test's side ----------------------------------------------------------------------------

    def put(self, *objects: dict[str, Any]) -> None:
        """Create or replace objects (ADDED / MODIFIED), each at the next resourceVersion."""
        for obj in objects:
            obj = copy.deepcopy(obj)
            plural = PLURALS[obj["kind"]]
            name = obj["metadata"]["name"]
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            kind = "MODIFIED" if name in self.objects[plural] else "ADDED"
            self.objects[plural][name] = obj
            self._publish(Change(self.rv, plural, kind, obj))

    def delete(self, kind: str, name: str) -> None:
        plural = PLURALS[kind]
        obj = self.objects[plural].pop(name)
        self.rv += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self._publish(Change(self.rv, plural, "DELETED", obj))

    def compact(self) -> None:
        """Forget the history so far (etcd compaction): older resourceVersions are gone."""
        self.oldest_kept = self.rv + 1
        self.history.clear()

    def bookmark(self) -> None:
        for queue in self._watchers:
            queue.put_nowait({"type": "BOOKMARK", "rv": self.rv})

    def end_watches(self) -> None:
        """End every open watch normally (as the server's timeout does)."""
        for queue in self._watchers:
            queue.put_nowait(None)

    def expire_open_watches(self) -> None:
        """Send every open watch an in-stream 410 (its resourceVersion fell out of the window)."""
        self.compact()
        for queue in self._watchers:
            queue.put_nowait({"type": "EXPIRE"})

    def watch_requests(self, plural: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p.endswith(f"/{plural}") and q.get("watch")]

    def list_requests(self, plural: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p.endswith(f"/{plural}") and not q.get("watch")]

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.base_url}}],
                    "users": [{"name": "observer", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "observer"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the server's side --------------------------------------------------------------------------

    def _publish(self, change: Change) -> None:
        self.history.append(change)
        for queue in self._watchers:
            queue.put_nowait({"type": "CHANGE", "change": change})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append((request.path, query))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        if match := LOG_PATH.match(request.path):
            return await self._log(request, match["pod"], query)
        match = PATH.match(request.path)
        if match is None or match["plural"] not in self.served:
            return web.json_response(
                status(404, "NotFound", "the server could not find the requested resource"), status=404
            )
        if query.get("watch") in ("1", "true"):
            return await self._watch(request, match["plural"], query)
        return self._list(match["plural"], query)

    def _list(self, plural: str, query: dict[str, str]) -> web.Response:
        items = sorted(
            (o for o in self.objects[plural].values() if _selected(o, query)),
            key=lambda o: o["metadata"]["name"],
        )
        offset, rv = 0, self.rv
        if "continue" in query:
            if self.continue_expired:
                self.continue_expired = False
                message = "The provided continue parameter is too old to display a consistent list result."
                return web.json_response(status(410, "Expired", message), status=410)
            token = json.loads(base64.b64decode(query["continue"]))
            offset, rv = token["offset"], token["rv"]
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[offset : offset + limit]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if offset + limit < len(items):
            meta["continue"] = base64.b64encode(
                json.dumps({"offset": offset + limit, "rv": rv}).encode()
            ).decode()
        kind = next(k for k, p in PLURALS.items() if p == plural)
        return web.json_response({"kind": f"{kind}List", "apiVersion": "v1", "metadata": meta, "items": page})

    async def _watch(self, request: web.Request, plural: str, query: dict[str, str]) -> web.StreamResponse:
        if self.http_gone_once:
            self.http_gone_once = False
            return web.json_response(status(410, "Gone", "too old resource version"), status=410)
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        timeout = float(query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            if since and since < self.oldest_kept - 1:
                await _line(response, {"type": "ERROR", "object": _expired(since, self.oldest_kept)})
                return response
            for change in [c for c in self.history if c.rv > since and c.plural == plural]:
                if _selected(change.obj, query):
                    await _line(response, {"type": change.type, "object": change.obj})
            deadline = asyncio.get_running_loop().time() + timeout
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if item is None:
                    break
                if item["type"] == "EXPIRE":
                    await _line(response, {"type": "ERROR", "object": _expired(since, self.oldest_kept)})
                    break
                if item["type"] == "BOOKMARK":
                    if bookmarks:
                        mark = {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(item["rv"])},
                        }
                        await _line(response, {"type": "BOOKMARK", "object": mark})
                    continue
                change = item["change"]
                if change.plural == plural and _selected(change.obj, query):
                    await _line(response, {"type": change.type, "object": change.obj})
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.remove(queue)
        with contextlib.suppress(ConnectionResetError):  # the client went away first
            await response.write_eof()
        return response

    async def _log(self, request: web.Request, pod: str, query: dict[str, str]) -> web.StreamResponse:
        container = query.get("container", "engine")
        previous = query.get("previous") == "true"
        text = self.logs.get((pod, container, previous))
        if text is None:
            message = f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating'
            if previous:
                message = f'previous terminated container "{container}" in pod "{pod}" not found'
            return web.json_response(status(400, "BadRequest", message), status=400)
        lines = text.splitlines(keepends=True)
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :]
        if query.get("follow") != "true":
            return web.Response(text="".join(lines), content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for line in lines:
            await response.write(line.encode())
            await asyncio.sleep(0.01)  # as a running container writes them: one chunk each
        await response.write_eof()
        return response


async def _line(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(json.dumps(event).encode() + b"\n")


def _expired(since: int, oldest: int) -> dict[str, Any]:
    return status(410, "Expired", f"too old resource version: {since} ({oldest - 1})")


def _selected(obj: dict[str, Any], query: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        if key == "involvedObject.kind" and (obj.get("involvedObject") or {}).get("kind") != value:
            return False
    return True
