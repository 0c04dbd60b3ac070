"""`POST /v1/compare` (a Modelfleet extension): one prompt to up to N models at once, one SSE stream.

```
{"models": ["qwen3-32b", "deepseek-r1"], "messages": [...] | "prompt": "...", "max_tokens": 128, ...}
```

Every other field (temperature, max_tokens, ...) goes to each model as a streamed chat completion.
**Admission is all or nothing**: every leg's rate limits and quotas are acquired first; if any leg is
refused, the legs already admitted are released and the answer is that leg's 429 (or 503), naming the
model in `param` (`models[i]`) and in the message. Nothing is sent upstream then.

The answer is one event stream; every event names its leg (`index`, `model`):

| event | data |
|---|---|
| `start` | `{"type": "start", "id", "models": [{"index", "model"}]}` |
| `chunk` | `{"type": "chunk", "index", "model", "chunk": <the model's chat.completion.chunk>}` |
| `done` | `{"type": "done", "index", "model", "status", "ttft_ms", "latency_ms", "usage", "cost", "error"}` |
| (end) | `data: [DONE]` |

`status` is `completed`, `client_disconnected`, `upstream_error` (the stream broke after it started) or
`error` (no upstream could serve the leg: `error` holds the OpenAI-shaped error). `cost` is a decimal
string in the model's price currency. Each leg is metered and recorded as its own usage row (endpoint
`compare`, request id `<id>.<index>`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.access import resolve_model
from gateway.admission import Admission
from gateway.bodies import id_headers, read_json, upstream_body
from gateway.core import Gateway, new_request_id
from gateway.errors import SSE_HEADERS, answer, error_body, invalid_request, openai_error
from gateway.metering import Outcome, StreamMeter, cost, prepare_upstream_body
from gateway.records import Sample
from gateway.refusal import ANSWERS, Refusal
from gateway.relay import Connected
from gateway.snapshot import ModelEntry
from gateway.streaming import after_disconnect
from gateway.validation import check_request
from store.db import utcnow

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_RESERVED = ("models", "model", "stream", "stream_options", "prompt")


@dataclass(eq=False)
class Leg:
    index: int
    model: ModelEntry
    admission: Admission
    sample: Sample


class CompareEndpoint:
    def __init__(self, gateway: Gateway, *, mounted: bool = False) -> None:
        self.gateway = gateway
        self.mounted = mounted

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        at = utcnow()
        request_id = new_request_id()
        identified = await self.gateway.identify(request.headers.get("authorization"))
        if isinstance(identified, Refusal):
            return answer(identified)
        snapshot, key = identified
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        gateway = self.gateway
        names = body.get("models")
        limit = gateway.settings.compare_max_models
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return invalid_request("`models` must be a non-empty list of model ids.", "models")
        if len(names) > limit:
            return invalid_request(f"Compare at most {limit} models at once.", "models")
        if len(set(names)) != len(names):
            return invalid_request("Each model may appear once in `models`.", "models")
        chat = {k: v for k, v in body.items() if k not in _RESERVED}
        if "messages" in chat and body.get("prompt") is not None:
            # Sending both would leave the caller guessing which conversation the models saw.
            return invalid_request("Give `messages` or `prompt`, not both.", "prompt")
        if "messages" not in chat:
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                return invalid_request("Give `messages` or a `prompt` string.", "messages")
            chat["messages"] = [{"role": "user", "content": prompt}]
        chat["stream"] = True
        malformed = check_request(chat, "chat.completions")
        if malformed is not None:
            return malformed
        models: list[ModelEntry] = []
        for i, name in enumerate(names):
            model = resolve_model(snapshot, key, name)
            if isinstance(model, Refusal):
                return _for_leg(answer(model), i, name)
            models.append(model)
        # Admission for every leg before anything starts; any refusal releases the others.
        legs: list[Leg] = []
        for i, model in enumerate(models):
            leg_body = {**chat, "model": model.public_id}
            tokens = gateway.admitter.reservation(snapshot, key, leg_body, "chat.completions")
            sample = Sample(f"{request_id}.{i}", at, started, key, model, "compare", True, status=200)
            admitted = await gateway.admitter.admit(snapshot, key, model, tokens, at)
            if isinstance(admitted, Refusal):
                with anyio.CancelScope(shield=True):
                    for leg in legs:
                        await leg.admission.cancel()
                refused = answer(admitted)
                sample.status, sample.error_type = refused.status_code, admitted.recorded
                gateway.recorder.record(sample)
                return _for_leg(refused, i, model.public_id)
            sample.charges = admitted.charges
            legs.append(Leg(i, model, admitted, sample))
        return CompareStream(gateway, legs, chat, request_id, id_headers(request_id, mounted=self.mounted))


def _for_leg(response: Response, index: int, model: str) -> Response:
    """The refusal of one leg as the whole request's answer, naming the leg."""
    try:
        error = json.loads(bytes(response.body))["error"]
    except (ValueError, KeyError, TypeError):
        return response
    error["message"] = f"models[{index}] ({model}): {error['message']}"
    error["param"] = f"models[{index}]"
    headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
    return openai_error(
        response.status_code, error["message"], error["type"], error.get("code"), error["param"], headers
    )


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class CompareStream(Response):
    """Runs the legs concurrently and multiplexes their events into one stream (see the module doc)."""

    def __init__(
        self,
        gateway: Gateway,
        legs: list[Leg],
        chat: dict[str, Any],
        request_id: str,
        headers: dict[str, str],
    ) -> None:
        self.gateway = gateway
        self.legs = legs
        self.chat = chat
        self.request_id = request_id
        self.status_code = 200
        self.background = None
        self.raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.raw_headers += SSE_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = anyio.Lock()
        disconnected = False
        finished = False

        async def emit(data: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": data, "more_body": True})

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            models = [{"index": leg.index, "model": leg.model.public_id} for leg in self.legs]
            await emit(_event("start", {"type": "start", "id": self.request_id, "models": models}))
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
                async with anyio.create_task_group() as legs:
                    for leg in self.legs:
                        legs.start_soon(self._run, leg, emit, lambda: disconnected)
                await emit(b"data: [DONE]\n\n")
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            disconnected = True
        finally:
            with anyio.CancelScope(shield=True):
                for leg in self.legs:  # legs that never ran (cancelled before starting) release here
                    await leg.admission.settle(0)

    async def _run(self, leg: Leg, emit: Callable[[bytes], Any], gone: Callable[[], bool]) -> None:
        gateway, sample = self.gateway, leg.sample
        name = json.dumps(leg.model.public_id)
        tag = f'{{"type":"chunk","index":{leg.index},"model":{name},"chunk":'.encode()
        prepared = prepare_upstream_body({**self.chat, "model": leg.model.public_id})
        if gateway.inflight is not None:
            try:
                await gateway.inflight.begin(sample, prepared.body)
            except BaseException:
                gateway.inflight.discard(sample)
                raise
        connected = await gateway.relay.connect(
            leg.model,
            "/chat/completions",
            upstream_body(prepared.body, leg.model),
            sample.request_id,
            sample.started,
        )
        if not isinstance(connected, Connected) or connected.response.status_code != 200:
            await self._failed(leg, connected, emit)
            return
        sample.target = connected.spec
        meter = StreamMeter.for_request(prepared, started_at=sample.started, clock=time.perf_counter)
        outcome: Outcome | None = None

        async def forward(data: bytes) -> None:
            out = bytearray()
            for event in _EVENT_END.split(data):
                payload = _data(event)
                if payload and payload != b"[DONE]":
                    out += b"event: chunk\ndata: " + tag + payload + b"}\n\n"
            if out:
                await emit(bytes(out))

        if gateway.inflight is not None:
            gateway.inflight.watch(sample.request_id, meter)
        try:
            outcome = await gateway.relay.pump(connected, meter, forward)
        except BaseException:
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        finally:
            if gateway.inflight is not None:
                gateway.inflight.unwatch(sample.request_id)
            if gone() or outcome is Outcome.CLIENT_DISCONNECTED:
                outcome = after_disconnect(meter)
            metered = meter.finish(
                outcome, bill_prompt_without_output=gateway.settings.gateway_bill_prompt_without_output
            )
            sample.metered = metered
            if metered.outcome is not Outcome.COMPLETED:
                sample.error_type = metered.outcome.value
            usage = gateway.recorder.record(sample)
            connected.attempt.close()
            with anyio.CancelScope(shield=True):
                connected.response.close()
                await leg.admission.settle(usage.total_tokens)
                if not gone():
                    await emit(
                        _event(
                            "done",
                            {
                                "type": "done",
                                "index": leg.index,
                                "model": leg.model.public_id,
                                "status": metered.outcome.value,
                                "ttft_ms": None
                                if metered.ttft_seconds is None
                                else round(metered.ttft_seconds * 1000, 3),
                                "latency_ms": round((time.perf_counter() - sample.started) * 1000, 3),
                                "usage": {
                                    "prompt_tokens": usage.prompt_tokens,
                                    "completion_tokens": usage.completion_tokens,
                                    "cached_tokens": usage.cached_tokens,
                                    "reasoning_tokens": usage.reasoning_tokens,
                                    "estimated": usage.estimated,
                                },
                                "cost": str(cost(usage, leg.model.prices)),
                                "error": metered.error,
                            },
                        )
                    )

    async def _failed(self, leg: Leg, connected: Any, emit: Callable[[bytes], Any]) -> None:
        """No upstream served the leg (or one refused the request): an error and a `done` for it."""
        gateway, sample = self.gateway, leg.sample
        if isinstance(connected, Connected):
            status = connected.response.status_code
            detail = _upstream_error(await connected.response.aread(), status)
            gateway.relay.close(connected)
            sample.target = connected.spec
            sample.status, sample.error_type = status, "upstream_rejected"
            # The upstream's `param` names the field it refused (`max_tokens`, `n`): keep it, as the
            # chat endpoints do when they pass such a refusal through.
            error = {
                "message": str(detail.get("message")),
                "type": detail.get("type"),
                "param": detail.get("param"),
                "code": detail.get("code"),
            }
        else:
            status, _, code = ANSWERS[connected.why]
            sample.status, sample.error_type, sample.target = status, connected.recorded, connected.target
            error = json.loads(error_body(connected.message, "upstream_error", code))["error"]
        gateway.recorder.record(sample)
        with anyio.CancelScope(shield=True):
            await leg.admission.settle(0)
        payload = {
            "type": "done",
            "index": leg.index,
            "model": leg.model.public_id,
            "status": "error",
            "ttft_ms": None,
            "latency_ms": round((time.perf_counter() - sample.started) * 1000, 3),
            "usage": None,
            "cost": "0",
            "error": error,
        }
        await emit(_event("done", payload))


def _upstream_error(body: bytes, status: int) -> dict[str, Any]:
    """The `error` object of an upstream's refusal, or a stand-in when the body is not OpenAI's shape."""
    try:
        detail = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        detail = None
    if isinstance(detail, dict):
        return detail
    message = detail if isinstance(detail, str) and detail else f"upstream status {status}"
    return {"message": message, "type": "upstream_error", "param": None, "code": None}


def _data(event: bytes) -> bytes:
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines).strip()
