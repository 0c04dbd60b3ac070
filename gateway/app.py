"""The gateway's ASGI app: OpenAI's `/v1` surface in front of the MaaS models (docs/gateway/api.md).

`create_gateway(services)` builds it. It runs alone (`python -m gateway --port P`, routes under
`/v1`) and inside the portal (`python -m portal` mounts it at `/v1` with `prefix=""`), so
`/v1/chat/completions` answers on the portal's port. Nothing happens at import time; the gateway's
connections, limiter, writer thread and snapshot start with the app's lifespan, or lazily on the first
request when the app runs without one (a mount, a test server).

"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import metrics
from gateway.access import lookup, resolve_model, usable_models
from gateway.bodies import id_headers, model_object, read_json, upstream_body
from gateway.compare import CompareEndpoint
from gateway.core import Gateway, new_request_id
from gateway.errors import answer, openai_error
from gateway.metering import PreparedRequest, meter_response, prepare_upstream_body
from gateway.metrics import ops_routes
from gateway.records import Sample
from gateway.refusal import Refusal, Why
from gateway.relay import Connected
from gateway.resources import Backing
from gateway.snapshot import KeyEntry, Snapshot
from gateway.streaming import RelayResponse, SettledAfter
from gateway.upstream import UpstreamError
from gateway.validation import check_request
from store.db import utcnow
from store.heap import freeze_startup_heap

log = logging.getLogger("modelfleet.gateway")

ENDPOINTS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


class GatewayApp:
    """The HTTP layer: parse, authenticate, admit, relay, record. One per process.

    A request goes straight down: `identify` (key) → `read_json` → `resolve_model` → `check_request`
    → `admit` (limits, quotas) → `relay.connect` (routing, failover) → the answer (complete, streamed
    or passed through) → `record` (usage row) → `settle` (the real token count). Each step that says
    no returns a `Refusal`, answered here by `refuse`.
    """

    def __init__(self, gateway: Gateway, *, mounted: bool = False) -> None:
        self.gateway = gateway
        self.mounted = mounted

    async def caller(self, request: Request) -> tuple[Snapshot, KeyEntry] | Response:
        identified = await self.gateway.identify(request.headers.get("authorization"))
        if isinstance(identified, Refusal):
            metrics.observe_request("", "auth", 401, 0.0)
            return answer(identified)
        return identified

    def refuse(self, refusal: Refusal, sample: Sample, headers: dict[str, str]) -> Response:
        """Answer a refusal; recorded (unbilled) when it happened after the model was known."""
        response = answer(refusal, headers)
        sample.status, sample.error_type = response.status_code, refusal.recorded
        if refusal.target is not None:
            sample.target = refusal.target
        self.gateway.recorder.record(sample)
        return response

    # -- GET /models ---------------------------------------------------------------------------------
    async def list_models(self, request: Request) -> Response:
        caller = await self.caller(request)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        models = sorted(usable_models(snapshot, key), key=lambda m: m.public_id)
        return JSONResponse({"object": "list", "data": [model_object(m) for m in models]})

    async def get_model(self, request: Request) -> Response:
        caller = await self.caller(request)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        model = resolve_model(snapshot, key, request.path_params["model"])
        if isinstance(model, Refusal):
            return answer(model)
        return JSONResponse(model_object(model))

    # -- POST /chat/completions, /completions, /embeddings ----------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        return await self.proxy(request, "chat.completions")

    async def completions(self, request: Request) -> Response:
        return await self.proxy(request, "completions")

    async def embeddings(self, request: Request) -> Response:
        return await self.proxy(request, "embeddings")

    async def proxy(self, request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        at = utcnow()
        request_id = new_request_id()
        caller = await self.caller(request)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        gateway = self.gateway
        ids = id_headers(request_id, mounted=self.mounted)
        model = resolve_model(snapshot, key, body.get("model"))
        stream = endpoint != "embeddings" and body.get("stream") is True
        if isinstance(model, Refusal):
            forbidden = model.why is Why.MODEL_FORBIDDEN
            known = lookup(snapshot, key.workspace, body["model"]) if forbidden else None
            if known is None:  # an unknown (or invisible) model: nothing to record it against
                return answer(model)
            return self.refuse(model, Sample(request_id, at, started, key, known, endpoint, stream, 200), ids)
        sample = Sample(request_id, at, started, key, model, endpoint, stream, status=200)
        malformed = check_request(body, endpoint)
        if malformed is not None:
            sample.status, sample.error_type = malformed.status_code, "invalid_request_error"
            gateway.recorder.record(sample)
            malformed.headers.update(ids)
            return malformed
        tokens = gateway.admitter.reservation(snapshot, key, body, endpoint)
        admission = await gateway.admitter.admit(snapshot, key, model, tokens, at)
        if isinstance(admission, Refusal):
            return self.refuse(admission, sample, ids)
        sample.charges = admission.charges
        headers = {**admission.headers, **ids}
        prepared = prepare_upstream_body(body) if stream else PreparedRequest(body, False, True)
        metrics.IN_FLIGHT.inc()
        try:
            if gateway.inflight is not None:
                await gateway.inflight.begin(sample, body)
            connected = await gateway.relay.connect(
                model, ENDPOINTS[endpoint], upstream_body(prepared.body, model), request_id, started
            )
            if isinstance(connected, Refusal):
                response = self.refuse(connected, sample, headers)
            elif connected.response.status_code != 200:
                sample.target = connected.spec
                response = await self._passthrough(connected, sample, headers)
            elif not stream:
                sample.target = connected.spec
                response = await self._complete(connected, body, sample, headers)
            else:
                sample.target = connected.spec
                return RelayResponse(gateway, connected, admission, sample, prepared, headers)
        except BaseException:
            metrics.IN_FLIGHT.dec()
            if gateway.inflight is not None:
                gateway.inflight.discard(sample)
            with anyio.CancelScope(shield=True):
                await admission.settle(0)
            raise
        metrics.IN_FLIGHT.dec()
        used = sample.metered.usage.total_tokens if sample.metered is not None else 0
        return SettledAfter(response, admission, used)

    async def _complete(
        self, connected: Connected, body: Mapping[str, Any], sample: Sample, headers: dict[str, str]
    ) -> Response:
        gateway = self.gateway
        try:
            data = await connected.response.aread()
            parsed = json.loads(data)
        except (UpstreamError, ValueError) as exc:
            await gateway.relay.close(connected)
            cause = exc.cause if isinstance(exc, UpstreamError) else "invalid JSON"
            broken = Refusal(Why.UPSTREAM_ERROR, f"The upstream sent a broken response ({cause}).")
            return self.refuse(broken, sample, headers)
        await gateway.relay.close(connected)
        sample.metered = meter_response(body, parsed if isinstance(parsed, dict) else {})
        gateway.recorder.record(sample)
        return Response(data, 200, headers=headers, media_type="application/json")

    async def _passthrough(self, connected: Connected, sample: Sample, headers: dict[str, str]) -> Response:
        """A non-failure, non-200 answer (the request's fault, e.g. 400): the client sees the upstream's
        error, unbilled. An upstream refusing our credentials (401/403) is our problem: 502."""
        gateway = self.gateway
        status = connected.response.status_code
        try:
            data = await connected.response.aread()
        except UpstreamError:
            data = b""
        await gateway.relay.close(connected)
        if status in (401, 403):
            refused = Refusal(Why.UPSTREAM_AUTH_FAILED, "The upstream refused the gateway's credentials.")
            return self.refuse(refused, sample, headers)
        sample.status, sample.error_type = status, "upstream_rejected"
        gateway.recorder.record(sample)
        media = connected.response.headers.get("content-type", "application/json")
        return Response(data, status, headers=headers, media_type=media)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        return openai_error(405, f"Method {request.method} is not allowed here.", "invalid_request_error")
    return openai_error(
        status,
        f"Unknown request URL: {request.method} {request.url.path}.",
        "invalid_request_error",
        "unknown_url",
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    """The last word on a request that raised: a 500 with an id the log line carries too, so an
    operator finds the traceback from what the client saw."""
    request_id = new_request_id()
    log.exception("gateway: unexpected error (request %s)", request_id, exc_info=exc)
    message = f"The gateway failed to handle the request (request id {request_id})."
    headers = {"x-request-id": request_id}
    return openai_error(500, message, "server_error", "internal_error", headers=headers)


def create_gateway(
    services: Backing,
    *,
    prefix: str = "/v1",
    gateway: Gateway | None = None,
) -> Starlette:
    """The gateway as an ASGI app (`app.state.gateway` is the `Gateway`)."""

    gateway = gateway or Gateway(services)
    http = GatewayApp(gateway, mounted=not prefix)
    compare = CompareEndpoint(gateway, mounted=not prefix)
    routes: list[BaseRoute] = [
        Route(f"{prefix}/models", http.list_models, methods=["GET"]),
        Route(f"{prefix}/models/{{model:path}}", http.get_model, methods=["GET"]),
        Route(f"{prefix}/chat/completions", http.chat_completions, methods=["POST"]),
        Route(f"{prefix}/completions", http.completions, methods=["POST"]),
        Route(f"{prefix}/embeddings", http.embeddings, methods=["POST"]),
        Route(f"{prefix}/compare", compare.handle, methods=["POST"]),
    ]
    if prefix:  # stand-alone: probes and scrapes (inside the portal, the portal serves both)
        routes += ops_routes()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.ensure_started()
        freeze_startup_heap()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_found, Exception: _server_error},
    )
    app.state.gateway = gateway
    return app
