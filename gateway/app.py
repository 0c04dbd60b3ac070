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
from dataclasses import replace
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import capabilities, endpoint, metrics, units
from gateway.access import lookup, resolve_model, usable_models
from gateway.bodies import id_headers, model_object, parse_json, upstream_body
from gateway.compare import CompareEndpoint
from gateway.core import Gateway, new_request_id
from gateway.endpoint import Endpoint, Modality
from gateway.errors import answer, openai_error
from gateway.messages_api import MessagesTranslation
from gateway.metering import Metered, Outcome, PreparedRequest, Usage, meter_response, prepare_upstream_body
from gateway.metrics import ops_routes
from gateway.multipart import Upload, read_upload
from gateway.records import Sample
from gateway.refusal import Refusal, Why
from gateway.relay import Connected
from gateway.resources import Backing
from gateway.responses_api import ResponsesTranslation
from gateway.snapshot import KeyEntry, Snapshot
from gateway.streaming import RelayResponse, SettledAfter
from gateway.tokens import estimate_prompt_tokens
from gateway.translation import Translation
from gateway.upstream import UpstreamError
from gateway.validation import invalid
from store.db import utcnow
from store.heap import freeze_startup_heap

log = logging.getLogger("modelfleet.gateway")

# The APIs served by translation to chat completions upstream (gateway/translation.py).
TRANSLATIONS: dict[str, Translation] = {
    "responses": ResponsesTranslation(),
    "messages": MessagesTranslation(),
}


class GatewayApp:
    """The HTTP layer: parse, authenticate, admit, relay, record. One per process.

    A request goes straight down, whatever its endpoint (gateway/endpoint.py says what differs):
    `identify` (key) → the body (JSON or an upload) → `resolve_model` → its translation to chat (the
    Responses API, Anthropic Messages) → `invalid` (fields) → `capabilities.check` (what the model
    serves) → `admit` (limits, quotas; tokens and modality units) → `relay.connect` (routing, failover)
    → the answer (complete, streamed or passed through) → `record` (usage row) → `settle` (the real
    token count). Each step that says no returns a `Refusal`, answered here by `refuse`.
    """

    def __init__(self, gateway: Gateway, *, mounted: bool = False) -> None:
        self.gateway = gateway
        self.mounted = mounted

    async def caller(
        self, request: Request, translation: Translation | None = None
    ) -> tuple[Snapshot, KeyEntry] | Response:
        authorization = request.headers.get("authorization")
        if authorization is None:  # Anthropic's SDK 1.x sends the key alone, as x-api-key
            authorization = request.headers.get("x-api-key")
        identified = await self.gateway.identify(authorization)
        if isinstance(identified, Refusal):
            metrics.observe_request("", "auth", 401, 0.0)
            return answer(identified, None, translation)
        return identified

    def refuse(
        self,
        refusal: Refusal,
        sample: Sample,
        headers: dict[str, str],
        translation: Translation | None = None,
    ) -> Response:
        """Answer a refusal; recorded (unbilled) when it happened after the model was known."""
        response = answer(refusal, headers, translation)
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

    # -- POST /chat/completions, /completions, /embeddings, images, audio, rerank, responses, messages --
    async def chat_completions(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.CHAT)

    async def completions(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.COMPLETIONS)

    async def embeddings(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.EMBEDDINGS)

    async def images(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.IMAGES)

    async def edits(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.EDITS)

    async def transcriptions(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.TRANSCRIPTIONS)

    async def translations(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.TRANSLATIONS)

    async def speech(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.SPEECH)

    async def rerank(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.RERANK)

    async def responses(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.RESPONSES)

    async def messages(self, request: Request) -> Response:
        return await self.proxy(request, endpoint.MESSAGES)

    async def count_tokens(self, request: Request) -> Response:
        """Anthropic's `/v1/messages/count_tokens`: the gateway's own estimate of the prompt (the
        one admission reserves), for a model the key may call; not metered, no limit charged."""
        translation = TRANSLATIONS["messages"]
        caller = await self.caller(request, translation)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        body = await parse_json(request)
        if isinstance(body, Refusal):
            return answer(body, None, translation)
        model = resolve_model(snapshot, key, body.get("model"))
        if isinstance(model, Refusal):
            return answer(model, None, translation)
        chat = translation.request({"max_tokens": 1, **body})
        if isinstance(chat, Refusal):
            return answer(chat, None, translation)
        return JSONResponse({"input_tokens": estimate_prompt_tokens(chat)})

    async def proxy(self, request: Request, ep: Endpoint) -> Response:
        started = time.perf_counter()
        at = utcnow()
        request_id = new_request_id()
        translation = TRANSLATIONS.get(ep.name)
        caller = await self.caller(request, translation)
        if isinstance(caller, Response):
            return caller
        snapshot, key = caller
        gateway = self.gateway
        ids = id_headers(request_id, mounted=self.mounted)
        upload: Upload | None = None
        body: dict[str, Any]
        if ep.form:
            read = await read_upload(request, frozenset(ep.files), ep.files[0])
            if isinstance(read, Refusal):
                return answer(read, ids, translation)
            upload, body = read, dict(read.fields)
        else:
            parsed = await parse_json(request)
            if isinstance(parsed, Refusal):
                return answer(parsed, ids, translation)
            body = parsed
        model = resolve_model(snapshot, key, body.get("model"))
        stream = ep.streams and body.get("stream") in (True, "true")  # a form says "true"
        if isinstance(model, Refusal):
            forbidden = model.why is Why.MODEL_FORBIDDEN
            known = lookup(snapshot, key.workspace, body["model"]) if forbidden else None
            if known is None:  # an unknown (or invisible) model: nothing to record it against
                return answer(model, ids, translation)
            sample = Sample(request_id, at, started, key, known, ep.name, stream, 200, modality=ep.modality)
            return self.refuse(model, sample, ids, translation)
        sample = Sample(
            request_id, at, started, key, model, ep.name, stream, status=200, modality=ep.modality
        )
        sent = body  # what goes upstream: the client's body, or its chat translation
        if translation is not None:
            translated = translation.request(body)
            if isinstance(translated, Refusal):
                return self.refuse(translated, sample, ids, translation)
            sent = translated
        refused = invalid(sent, "chat.completions" if translation is not None else ep.name)
        if refused is None:
            refused = capabilities.check(model, ep, body)  # names the client's own fields
        if refused is not None:
            return self.refuse(refused, sample, ids, translation)
        tokens = gateway.admitter.reservation(snapshot, key, sent, ep.name)
        asked = units.asked(ep, body, upload.data if upload is not None else None)
        admission = await gateway.admitter.admit(snapshot, key, model, tokens, at, asked)
        if isinstance(admission, Refusal):
            return self.refuse(admission, sample, ids, translation)
        sample.charges, sample.units_asked = admission.charges, asked
        headers = {**admission.headers, **ids}
        if not stream:
            prepared = PreparedRequest(sent, False, True)
        elif ep.modality is not Modality.TEXT:  # image and transcript streams end with their usage
            prepared = PreparedRequest(sent, True, True)
        else:
            prepared = prepare_upstream_body(sent)
            if translation is not None:  # the translator reads the usage chunk: always forward it
                prepared = PreparedRequest(prepared.body, True, True)
        if upload is not None:
            body_for, content_type = upload.body_for(model), upload.media_type
        else:
            body_for, content_type = upstream_body(prepared.body, model), "application/json"
        metrics.IN_FLIGHT.inc()
        try:
            if gateway.inflight is not None:
                await gateway.inflight.begin(sample, sent)
            connected = await gateway.relay.connect(
                model, ep.path, body_for, request_id, started, content_type
            )
            if isinstance(connected, Refusal):
                response = self.refuse(connected, sample, headers, translation)
            elif connected.response.status_code != 200:
                sample.target = connected.spec
                response = await self._passthrough(connected, sample, headers, translation)
            elif not stream:
                sample.target = connected.spec
                response = await self._complete(connected, ep, sent, sample, headers, asked)
            else:
                sample.target = connected.spec
                translator = translation.stream(body, model.public_id) if translation is not None else None
                return RelayResponse(gateway, connected, admission, sample, prepared, headers, translator)
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
        self,
        connected: Connected,
        ep: Endpoint,
        body: Mapping[str, Any],
        sample: Sample,
        headers: dict[str, str],
        asked: int,
    ) -> Response:
        gateway = self.gateway
        translation = TRANSLATIONS.get(ep.name)
        media = connected.response.headers.get("content-type", "application/json")
        try:
            data = await connected.response.aread()
            parsed: Any = (
                json.loads(data)
                if "json" in media or (not ep.binary and not media.startswith("text/"))
                else None
            )
        except (UpstreamError, ValueError) as exc:
            cause = exc.cause if isinstance(exc, UpstreamError) else "invalid JSON"
            broken = Refusal(Why.UPSTREAM_ERROR, f"The upstream sent a broken response ({cause}).")
            return self.refuse(broken, sample, headers, translation)
        finally:  # cancelled mid-read too: the connection is closed, not left counted in use
            gateway.relay.close(connected)
        if ep is endpoint.RERANK and isinstance(
            parsed, list
        ):  # SGLang's bare list: reshape (its usage is estimated)
            parsed = rerank_answer(parsed, body)
            data = json.dumps(parsed).encode()
        if parsed is None:  # audio, or a transcript as text/srt/vtt: no usage in the body
            metered = Metered(Usage(), Outcome.COMPLETED, units=asked)
        else:
            metered = meter_response(body, parsed if isinstance(parsed, dict) else {})
            metered = replace(metered, units=units.served(ep, parsed, asked))
        sample.metered = metered
        gateway.recorder.record(sample)
        if translation is not None and isinstance(parsed, dict):
            data = json.dumps(translation.response(parsed, metered.usage), ensure_ascii=False).encode()
            media = "application/json"
        return Response(data, 200, headers=headers, media_type=media)

    async def _passthrough(
        self, connected: Connected, sample: Sample, headers: dict[str, str], translation: Translation | None
    ) -> Response:
        """A non-failure, non-200 answer (the request's fault, e.g. 400): the client sees the upstream's
        error, unbilled. An upstream refusing our credentials (401/403) is our problem: 502."""
        gateway = self.gateway
        status = connected.response.status_code
        try:
            data = await connected.response.aread()
        except UpstreamError:
            data = b""
        finally:
            gateway.relay.close(connected)
        if status in (401, 403):
            refused = Refusal(Why.UPSTREAM_AUTH_FAILED, "The upstream refused the gateway's credentials.")
            return self.refuse(refused, sample, headers, translation)
        sample.status, sample.error_type = status, "upstream_rejected"
        gateway.recorder.record(sample)
        if translation is not None:  # the engine's OpenAI-shaped error, in the API's own shape
            error = _upstream_error(data)
            return translation.error(status, error[0], "invalid_request_error", error[1], headers)
        media = connected.response.headers.get("content-type", "application/json")
        return Response(data, status, headers=headers, media_type=media)


def _upstream_error(data: bytes) -> tuple[str, str | None]:
    """(message, param) of an upstream's OpenAI-shaped error body."""
    try:
        error = json.loads(data).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        param = error.get("param")
        return str(error.get("message") or "The upstream refused the request."), param if isinstance(
            param, str
        ) else None
    return "The upstream refused the request.", None


def rerank_answer(results: list[Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """SGLang's rerank answer (a bare list of {index, score, document?}) in vLLM's (Jina/Cohere) shape."""
    documents = body.get("documents")
    documents = documents if isinstance(documents, list) else []
    shaped = []
    for item in results:
        if not isinstance(item, dict):
            continue
        index = item.get("index", 0)
        text = documents[index] if isinstance(index, int) and 0 <= index < len(documents) else None
        if isinstance(text, dict):
            text = text.get("text")
        entry: dict[str, Any] = {"index": index, "relevance_score": item.get("score")}
        if isinstance(text, str):
            entry["document"] = {"text": text}
        shaped.append(entry)
    return {"id": f"rerank-{new_request_id()}", "model": body.get("model"), "results": shaped}


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
        Route(f"{prefix}/images/generations", http.images, methods=["POST"]),
        Route(f"{prefix}/images/edits", http.edits, methods=["POST"]),
        Route(f"{prefix}/audio/transcriptions", http.transcriptions, methods=["POST"]),
        Route(f"{prefix}/audio/translations", http.translations, methods=["POST"]),
        Route(f"{prefix}/audio/speech", http.speech, methods=["POST"]),
        Route(f"{prefix}/rerank", http.rerank, methods=["POST"]),
        Route(f"{prefix}/responses", http.responses, methods=["POST"]),
        Route(f"{prefix}/messages", http.messages, methods=["POST"]),
        Route(f"{prefix}/messages/count_tokens", http.count_tokens, methods=["POST"]),
        Route(f"{prefix}/compare", compare.handle, methods=["POST"]),
    ]
    if prefix:  # stand-alone: probes and scrapes (inside the portal, the portal serves both)
        routes += ops_routes()
        # Jina's and Cohere's clients call rerank at the root (vLLM serves all three paths).
        routes += [Route(path, http.rerank, methods=["POST"]) for path in ("/rerank", "/v2/rerank")]

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
