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
from starlette.types import Message, Receive, Scope, Send

from gateway import metrics
from gateway.core import Admission, Connected, Gateway, Refused, Sample, new_request_id
from gateway.errors import SSE_HEADERS, invalid_request, openai_error
from gateway.metering import (
    Outcome,
    PreparedRequest,
    StreamMeter,
    meter_response,
    prepare_upstream_body,
)
from gateway.metrics import ops_routes
from gateway.resources import Backing
from gateway.snapshot import KeyEntry, ModelEntry, TargetSpec
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
    """The HTTP layer: parse, authenticate, admit, relay, record. One per process."""

    def __init__(self, gateway: Gateway, *, mounted: bool = False) -> None:
        self.gateway = gateway
        self.mounted = mounted

    # -- helpers -----------------------------------------------------------------------------------
    def id_headers(self, request_id: str) -> dict[str, str]:
        # Inside the portal its middleware already sends x-request-id (the portal's id); the usage row
        # keeps the gateway's own id, returned here as x-modelfleet-request-id in that case.
        if not self.mounted:
            return {"x-request-id": request_id}
        return {"x-modelfleet-request-id": request_id}

    def refuse(self, response: Response, sample: Sample, error_type: str, ids: dict[str, str]) -> Response:
        """Answer a refusal made before any upstream was called: recorded, unbilled, with our id."""
        sample.status, sample.error_type = response.status_code, error_type
        self.gateway.record(sample)
        response.headers.update(ids)
        return response

    async def caller(self, request: Request) -> tuple[Any, KeyEntry] | Response:
        gateway = self.gateway
        await gateway.ensure_started()
        snapshot = await gateway.current()
        key = gateway.authenticate(snapshot, request.headers.get("authorization"))
        if isinstance(key, Response):
            metrics.observe_request("", "auth", key.status_code, 0.0)
            return key
        return snapshot, key

    # -- GET /models ---------------------------------------------------------------------------------
    async def list_models(self, request: Request) -> Response:
        caller = await self.caller(request)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        models = sorted(self.gateway.usable_models(snapshot, key), key=lambda m: m.public_id)
        return JSONResponse({"object": "list", "data": [_model_object(m) for m in models]})

    async def get_model(self, request: Request) -> Response:
        caller = await self.caller(request)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        model = self.gateway.resolve_model(snapshot, key, request.path_params["model"])
        if isinstance(model, Response):
            return model
        return JSONResponse(_model_object(model))

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
        ids = self.id_headers(request_id)
        model = gateway.resolve_model(snapshot, key, body.get("model"))
        stream = endpoint != "embeddings" and body.get("stream") is True
        if isinstance(model, Response):
            known = snapshot.models.get(body["model"]) if model.status_code == 403 else None
            if known is None:  # an unknown (or invisible) model: nothing to record it against
                return model
            sample = Sample(request_id, at, started, key, known, endpoint, stream, status=200)
            return self.refuse(model, sample, "model_not_found", ids)
        sample = Sample(request_id, at, started, key, model, endpoint, stream, status=200)
        malformed = check_request(body, endpoint)
        if malformed is not None:
            return self.refuse(malformed, sample, "invalid_request_error", ids)
        tokens = gateway.reservation(snapshot, key, body, endpoint)
        admitted = await gateway.admit(snapshot, key, model, tokens, at)
        if isinstance(admitted, Refused):
            return self.refuse(admitted.response, sample, admitted.error_type, ids)
        admission = admitted
        sample.charges = admission.charges
        headers = {**admission.headers, **ids}
        prepared = prepare_upstream_body(body) if stream else PreparedRequest(body, False, True)
        metrics.IN_FLIGHT.inc()
        try:
            connected = await gateway.connect(
                model, ENDPOINTS[endpoint], upstream_body(prepared.body, model), request_id, started
            )
            if not isinstance(connected, Connected):
                sample.status, sample.error_type, sample.target = (
                    connected.status,
                    connected.code,
                    connected.target,
                )
                gateway.record(sample)
                response = connected.response(headers)
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
            await gateway.close_upstream(connected)
            sample.status, sample.error_type = 502, "upstream_error"
            gateway.record(sample)
            cause = exc.cause if isinstance(exc, UpstreamError) else "invalid JSON"
            return openai_error(
                502,
                f"The upstream sent a broken response ({cause}).",
                "upstream_error",
                "upstream_error",
                headers=headers,
            )
        await gateway.close_upstream(connected)
        sample.metered = meter_response(body, parsed if isinstance(parsed, dict) else {})
        gateway.record(sample)
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
        await gateway.close_upstream(connected)
        if status in (401, 403):
            sample.status, sample.error_type = 502, "upstream_auth_failed"
            gateway.record(sample)
            return openai_error(
                502,
                "The upstream refused the gateway's credentials.",
                "upstream_error",
                "upstream_auth_failed",
                headers=headers,
            )
        sample.status, sample.error_type = status, "upstream_rejected"
        gateway.record(sample)
        media = connected.response.headers.get("content-type", "application/json")
        return Response(data, status, headers=headers, media_type=media)


class SettledAfter(Response):
    """A complete answer whose reservation is settled after its last byte went out, so the limiter's
    and the quota store's round trips are not part of the client's latency."""

    def __init__(self, inner: Response, admission: Admission, used_tokens: int) -> None:
        self.inner = inner
        self.admission = admission
        self.used_tokens = used_tokens
        self.status_code = inner.status_code
        self.background = None
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.admission.settle(self.used_tokens)


class RelayResponse(Response):
    """A streamed answer: headers (rate limits included) first, then the upstream's events as they come.

    Everything after the first byte is settled in `finally`, whatever happens: the record is made
    synchronously first (a cancelled task raises again at every await), then the upstream is closed
    and the reservation settled under a shield. A disconnect is noticed by listening for
    `http.disconnect` next to the relay, which then stops reading the upstream.
    """

    def __init__(
        self,
        gateway: Gateway,
        connected: Connected,
        admission: Admission,
        sample: Sample,
        prepared: PreparedRequest,
        headers: Mapping[str, str],
    ) -> None:
        self.gateway = gateway
        self.connected = connected
        self.admission = admission
        self.sample = sample
        self.prepared = prepared
        self.status_code = 200
        self.background = None
        self.raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.raw_headers += SSE_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway, connected = self.gateway, self.connected
        meter = StreamMeter.for_request(self.prepared, started_at=connected.started, clock=time.perf_counter)
        outcome: Outcome | None = None
        disconnected = False
        finished = False  # the last byte is out: a disconnect from now on is the normal end

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    nonlocal disconnected
                    while True:
                        message: Message = await receive()
                        if message["type"] == "http.disconnect":
                            if not finished:
                                disconnected = True
                                group.cancel_scope.cancel()
                            return

                group.start_soon(watch)
                group.start_soon(gateway.renew_leases, self.admission)
                outcome = await gateway.pump(connected, meter, emit)
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            disconnected = not finished
        except BaseException:
            disconnected = not finished  # cancelled from outside: the server is stopping or the client left
            raise
        finally:
            if disconnected:
                outcome = _after_disconnect(meter)
            metered = meter.finish(
                outcome, bill_prompt_without_output=gateway.settings.gateway_bill_prompt_without_output
            )
            sample = self.sample
            sample.metered = metered
            if metered.outcome is not Outcome.COMPLETED:
                sample.error_type = metered.outcome.value
            usage = gateway.record(sample)
            connected.attempt.close()
            metrics.IN_FLIGHT.dec()
            with anyio.CancelScope(shield=True):
                await connected.response.aclose()
                await self.admission.settle(usage.total_tokens)


def _after_disconnect(meter: StreamMeter) -> Outcome | None:
    """The outcome of a stream whose client went away: if the upstream had failed first (the client may
    leave because of it) an upstream error; if the stream was already complete (`[DONE]` relayed, the
    client closed before our last bookkeeping) read it from the stream; otherwise a disconnect."""
    if meter.error is not None:
        return Outcome.UPSTREAM_ERROR
    if meter.done:
        return None
    return Outcome.CLIENT_DISCONNECTED


def upstream_body(body: Mapping[str, Any], model: ModelEntry) -> Any:
    """The body for one target: the client's (with usage forced on for streams), the upstream's model
    name. Encoded once per distinct upstream name."""
    cache: dict[str | None, bytes] = {}

    def encode(spec: TargetSpec) -> bytes:
        name = spec.upstream_model
        encoded = cache.get(name)
        if encoded is None:
            encoded = cache[name] = json.dumps(
                {**body, "model": name or model.public_id}, separators=(",", ":"), ensure_ascii=False
            ).encode()
        return encoded

    return encode


async def read_json(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        return invalid_request("We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return invalid_request("The request body must be a JSON object.")
    return body


def _model_object(model: ModelEntry) -> dict[str, Any]:
    return {"id": model.public_id, "object": "model", "created": model.created, "owned_by": "modelfleet"}


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
    log.exception("gateway: unexpected error", exc_info=exc)
    return openai_error(500, "The gateway failed to handle the request.", "server_error", "internal_error")


def create_gateway(
    services: Backing,
    *,
    prefix: str = "/v1",
    gateway: Gateway | None = None,
) -> Starlette:
    """The gateway as an ASGI app (`app.state.gateway` is the `Gateway`)."""
    from gateway.compare import CompareEndpoint

    gateway = gateway or Gateway(services)
    http = GatewayApp(gateway, mounted=not prefix)
    compare = CompareEndpoint(gateway, http)
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
