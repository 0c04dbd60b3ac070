"""A SIMULATED OpenAI-compatible inference engine, for tests and benchmarks of the gateway. Not a model.

It answers `/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/health` and
`/metrics` the way vLLM and OpenAI do, with made-up text, and the other modalities with made-up media
(simulator/media.py): `/v1/images/generations` (real PNGs), `/v1/audio/speech` (a real WAV),
`/v1/audio/transcriptions` (multipart in, words out, usage in seconds) and `/v1/rerank` (also `/rerank`,
`/v2/rerank`; vLLM's shape). Chat accepts `image_url` and `input_audio` parts (85 prompt tokens per
image, 10 per second of audio):

- timing per model: time to first token (`ttft_ms`) and a decode rate (`tokens_per_second`, 0 = no
  delay), paced by asyncio sleeps against a schedule (no drift, never blocks the loop);
- deterministic text seeded from the model and the prompt (the response `id` is unique per request,
  as OpenAI's is); one prompt per `/v1/completions` request; `max_tokens` / `max_completion_tokens`
  honoured (`finish_reason` "length"), otherwise `completion_tokens` tokens ("stop"). Every token is a
  short lowercase word with its leading space, so `gateway.tokens.estimate_tokens` counts the
  generated text exactly: tests of estimated billing can assert exact numbers;
- `usage` on non-streamed responses; streams are `data: {...}\\n\\n` chunks ending in `data: [DONE]`,
  with OpenAI's `stream_options.include_usage` semantics: every chunk carries `"usage": null` and one
  last chunk with empty `choices` carries the usage; without the option no chunk mentions usage;
- the engine's own prompt count is one token per whitespace-separated word plus 4 per message and 3
  for the reply (deliberately different from the gateway's estimate, so tests can tell them apart).

Fault knobs (`Faults`), set for the whole simulator (`sim.faults = ...`, also at run time) and
overridable per request with a `"simulator": {...}` object in the body (the OpenAI SDK's
`extra_body`): answer with an HTTP `status` (429 adds `retry-after`), break a stream after
`fail_after_chunks` content chunks (an error event, or a dropped connection), put the usage on the last
content chunk instead, omit usage, report cached and reasoning tokens (reasoning tokens are streamed
as `reasoning_content`, and are part of `completion_tokens` as in OpenAI's usage).

Run one: `python -m simulator --port 8001 --ttft-ms 200 --tokens-per-second 50`. A `local` region runs
it in place of an engine that is not installed (`--stands-in-for vllm`, which says so on its first log
line); `--exit-at-start CODE` and `--load-seconds S` (or `SIMULATOR_EXIT_AT_START`,
`SIMULATOR_LOAD_SECONDS`) make it fail at start or take a while to listen.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import random
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from simulator import media
from simulator.profiles import ModelProfile, profile_for

OWNER = "modelfleet-simulator"
_WORDS = """the a of to and in is it you that he was for on are with as his they be at one have this from or
    had by word but what some we can out other were all there when up use your how said an each she
    which do their time if will way about many then them write would like so these her long make thing
    see him two has look more day could go come did number sound no most people my over know water than
    call first who may down side been now find any new work part take get place made live where after
    back little only round man year came show every good me give our under name very through just form
    sentence great think say help low line differ turn cause much mean before move right boy old too
    same tell does set three want air well also play small end put home read hand port large spell add
    even land here must big high such follow act why ask men change went light kind off need house
    picture try us again animal point mother world near build self earth father head stand own page"""
VOCABULARY = tuple(_WORDS.split())
UsagePlacement = Literal["separate", "last_chunk", "none"]
FailMode = Literal["error_event", "disconnect"]


@dataclass(frozen=True)
class Faults:
    """Misbehaviour on demand (see the module docstring)."""

    status: int | None = None
    retry_after: float | None = None  # seconds, with `status`
    fail_after_chunks: int | None = None  # streams only: content chunks before the failure
    fail_mode: FailMode = "error_event"
    usage: UsagePlacement = "separate"
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def merged(self, overrides: Mapping[str, Any]) -> Faults:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise _BadRequest(f"unknown simulator option(s): {', '.join(sorted(unknown))}", "simulator")
        for name, value in overrides.items():
            if not _FAULT_CHECKS[name](value):
                raise _BadRequest(f"simulator.{name}: invalid value {value!r}", f"simulator.{name}")
        return replace(self, **overrides)


def _count_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


_FAULT_CHECKS: dict[str, Any] = {
    "status": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599),
    "retry_after": lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0),
    "fail_after_chunks": _count_or_none,
    "fail_mode": lambda v: v in ("error_event", "disconnect"),
    "usage": lambda v: v in ("separate", "last_chunk", "none"),
    "cached_tokens": lambda v: v is not None and _count_or_none(v),
    "reasoning_tokens": lambda v: v is not None and _count_or_none(v),
}


@dataclass
class Stats:
    """Counters for tests and `/metrics`."""

    requests: dict[str, int] = field(default_factory=dict)  # by endpoint
    by_model: dict[str, int] = field(default_factory=dict)
    injected_errors: int = 0
    active_streams: int = 0
    max_active_streams: int = 0
    completed_streams: int = 0
    client_disconnects: int = 0
    generated_tokens: int = 0


class Simulator:
    """The app and its state. `Simulator().app` is the ASGI app."""

    def __init__(
        self,
        models: Mapping[str, ModelProfile] | None = None,
        *,
        accept_any_model: bool = False,
        default_profile: ModelProfile | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.models: dict[str, ModelProfile] = dict(models or {"sim-chat": ModelProfile()})
        self.accept_any_model = accept_any_model
        self.default_profile = default_profile or ModelProfile()
        self.faults = faults or Faults()
        self.stats = Stats()
        self.started = int(time.time())
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/images/generations", self.images, methods=["POST"]),
                Route("/v1/images/edits", self.edits, methods=["POST"]),
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
                Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
                Route("/v1/audio/translations", self.transcriptions, methods=["POST"]),  # "into English"
                # vLLM serves rerank under all three paths (Jina and Cohere clients use the bare ones).
                Route("/v1/rerank", self.rerank, methods=["POST"]),
                Route("/v2/rerank", self.rerank, methods=["POST"]),
                Route("/rerank", self.rerank, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ]
        )

    # -- endpoints -------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def list_models(self, request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": self.started, "owned_by": OWNER}
            for name in self.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def metrics(self, request: Request) -> Response:
        s = self.stats
        lines = [f'simulator_requests_total{{endpoint="{k}"}} {v}' for k, v in sorted(s.requests.items())]
        lines += [
            f"simulator_injected_errors_total {s.injected_errors}",
            f"simulator_active_streams {s.active_streams}",
            f"simulator_max_active_streams {s.max_active_streams}",
            f"simulator_completed_streams_total {s.completed_streams}",
            f"simulator_client_disconnects_total {s.client_disconnects}",
            f"simulator_generated_tokens_total {s.generated_tokens}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "text")

    async def embeddings(self, request: Request) -> Response:
        try:
            body, model, profile, faults = await self._admit(request, "embeddings")
            inputs = _inputs(body.get("input"))
            dims = body.get("dimensions", profile.embedding_dimensions)
            if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 65536:
                raise _BadRequest("dimensions must be an integer in [1, 65536]", "dimensions")
            encoding = body.get("encoding_format", "float")
            if encoding not in ("float", "base64"):
                raise _BadRequest("encoding_format must be 'float' or 'base64'", "encoding_format")
        except _HTTPError as err:
            return err.response()
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        data = []
        prompt_tokens = 0
        for index, item in enumerate(inputs):
            vector = _embedding(model, item, dims)
            prompt_tokens += len(item) if isinstance(item, list) else len(item.split())
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
                if encoding == "base64"
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if faults.usage != "none":
            payload["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return JSONResponse(payload)

    async def images(self, request: Request) -> Response:
        """`/v1/images/generations`: `n` real PNGs of the asked size, the same for the same prompt."""
        try:
            body, model, profile, faults = await self._admit(request, "images")
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise _BadRequest("prompt must be a non-empty string", "prompt")
            n = body.get("n", 1)
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
                raise _BadRequest("n must be an integer from 1 to 10", "n")
            size = body.get("size") or "auto"
            width, height = _image_size(size)
            fmt = body.get("response_format") or "b64_json"
            if fmt not in ("b64_json", "url"):
                raise _BadRequest("response_format must be 'url' or 'b64_json'", "response_format")
            partials = body.get("partial_images", 0)
            if not isinstance(partials, int) or isinstance(partials, bool) or not 0 <= partials <= 3:
                raise _BadRequest("partial_images must be an integer from 0 to 3", "partial_images")
        except _HTTPError as err:
            return err.response()
        if body.get("stream") is True:
            return _EventStream(
                self._image_events(model, prompt, n, (width, height), partials, profile, faults), self
            )
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        data = []
        for i in range(n):
            encoded = base64.b64encode(media.png(width, height, _seed(model, [prompt, i]))).decode()
            item = {"b64_json": encoded} if fmt == "b64_json" else {"url": f"data:image/png;base64,{encoded}"}
            data.append({**item, "revised_prompt": None})
        words = _words(prompt)
        payload: dict[str, Any] = {
            "created": int(time.time()),
            "data": data,
            "size": f"{width}x{height}",
            "output_format": "png",
        }
        if faults.usage != "none":
            payload["usage"] = {
                "input_tokens": words,
                "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
                "output_tokens": 0,
                "total_tokens": words,
            }
        return JSONResponse(payload)

    async def _image_events(
        self,
        model: str,
        prompt: str,
        n: int,
        size: tuple[int, int],
        partials: int,
        profile: ModelProfile,
        faults: Faults,
    ) -> AsyncGenerator[bytes, None]:
        """OpenAI's image stream: `partial_images` previews (a smaller PNG each), then one
        `image_generation.completed` per image, the last with the usage."""
        words = _words(prompt)
        shape = {
            "size": f"{size[0]}x{size[1]}",
            "quality": "auto",
            "background": "opaque",
            "output_format": "png",
        }
        for i in range(n):
            if profile.ttft_ms:
                await asyncio.sleep(profile.ttft_ms / 1000)
            for index in range(partials):
                if faults.fail_after_chunks is not None and index >= faults.fail_after_chunks:
                    raise _Abort
                preview = media.png(
                    max(1, size[0] // 4), max(1, size[1] // 4), _seed(model, [prompt, i, index])
                )
                event = {
                    "type": "image_generation.partial_image",
                    "b64_json": base64.b64encode(preview).decode(),
                }
                yield _named_sse(
                    {**event, **shape, "partial_image_index": index, "created_at": int(time.time())}
                )
            final = base64.b64encode(media.png(*size, _seed(model, [prompt, i]))).decode()
            completed: dict[str, Any] = {"type": "image_generation.completed", "b64_json": final, **shape}
            completed["created_at"] = int(time.time())
            if i == n - 1 and faults.usage != "none":
                completed["usage"] = {
                    "input_tokens": words,
                    "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
                    "output_tokens": 0,
                    "total_tokens": words,
                }
            yield _named_sse(completed)

    async def edits(self, request: Request) -> Response:
        """`/v1/images/edits` (multipart: `image` or `image[]`, optional `mask`): `n` PNGs the size of
        the first image (or `size`), the same for the same images and prompt."""
        self.stats.requests["edits"] = self.stats.requests.get("edits", 0) + 1
        try:
            async with request.form(max_files=16, max_fields=32) as form:
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                images = [
                    await v.read()
                    for k, v in form.multi_items()
                    if k in ("image", "image[]") and not isinstance(v, str)
                ]
        except Exception as exc:
            return _BadRequest(f"the body is not a valid multipart form ({exc})", None).response()
        try:
            if not images or not all(images):
                raise _BadRequest("image is required (one or more image files)", "image")
            model = fields.get("model")
            if not model:
                raise _BadRequest("you must provide a model parameter", "model")
            profile = self._profile(model)
            prompt = fields.get("prompt", "")
            if not prompt.strip():
                raise _BadRequest("prompt must be a non-empty string", "prompt")
            n = int(fields["n"]) if fields.get("n", "").isdigit() else 1
            if not 1 <= n <= 10:
                raise _BadRequest("n must be an integer from 1 to 10", "n")
            size = media.png_size(images[0]) or _image_size(fields.get("size") or "auto")
            if fields.get("size"):
                size = _image_size(fields["size"])
        except _HTTPError as err:
            return err.response()
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        source = hashlib.blake2b(b"".join(images), digest_size=8).hexdigest()
        data = [
            {"b64_json": base64.b64encode(media.png(*size, _seed(model, [prompt, source, i]))).decode()}
            for i in range(n)
        ]
        words = _words(prompt)
        usage = {"input_tokens": words, "output_tokens": 0, "total_tokens": words}
        return JSONResponse(
            {"created": int(time.time()), "data": data, "size": f"{size[0]}x{size[1]}", "usage": usage}
        )

    async def speech(self, request: Request) -> Response:
        """`/v1/audio/speech`: a WAV (or raw PCM) of tones, 0.3 s per word of the input at speed 1."""
        try:
            body, model, profile, _ = await self._admit(request, "speech")
            text = body.get("input")
            if not isinstance(text, str) or not text.strip():
                raise _BadRequest("input must be a non-empty string", "input")
            if len(text) > 4096:
                raise _BadRequest("input must be at most 4096 characters", "input")
            voice = body.get("voice")
            if not (isinstance(voice, str) and voice) and not (isinstance(voice, dict) and voice.get("id")):
                raise _BadRequest("voice must be a voice name or {'id': ...}", "voice")
            fmt = body.get("response_format") or "wav"
            if fmt not in ("wav", "pcm"):
                raise _BadRequest(f"the simulator speaks wav or pcm, not {fmt!r}", "response_format")
            speed = body.get("speed", 1.0)
            if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4:
                raise _BadRequest("speed must be a number from 0.25 to 4", "speed")
        except _HTTPError as err:
            return err.response()
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        seconds = 0.3 * len(text.split()) / speed
        seed = _seed(model, [text, voice])
        if fmt == "pcm":
            return Response(media.pcm(seconds, seed), media_type="audio/pcm")
        return Response(media.wav(seconds, seed), media_type="audio/wav")

    async def transcriptions(self, request: Request) -> Response:
        """`/v1/audio/transcriptions` (multipart): made-up words, 2.5 per second of the audio heard;
        usage in whole seconds, as vLLM reports it."""
        self.stats.requests["transcriptions"] = self.stats.requests.get("transcriptions", 0) + 1
        try:
            async with request.form(max_files=1, max_fields=32) as form:
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                upload = form.get("file")
                audio = b"" if upload is None or isinstance(upload, str) else await upload.read()
        except Exception as exc:  # python-multipart's and Starlette's parse errors
            return _BadRequest(f"the body is not a valid multipart form ({exc})", None).response()
        try:
            if not audio:
                raise _BadRequest("file is required (a non-empty audio file)", "file")
            model = fields.get("model")
            if not model:
                raise _BadRequest("you must provide a model parameter", "model")
            profile = self._profile(model)
            try:
                overrides = json.loads(fields.get("simulator") or "{}")
            except ValueError:
                raise _BadRequest("simulator must be a JSON object", "simulator") from None
            faults = self.faults.merged(overrides if isinstance(overrides, dict) else {})
            if faults.status is not None:
                self.stats.injected_errors += 1
                raise _injected(faults)
            fmt = fields.get("response_format") or "json"
            if fmt not in ("json", "text", "verbose_json", "srt", "vtt"):
                raise _BadRequest(
                    "response_format must be json, text, verbose_json, srt or vtt", "response_format"
                )
        except _HTTPError as err:
            return err.response()
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        seconds = media.audio_seconds(audio)
        rng = random.Random(int.from_bytes(hashlib.blake2b(audio, digest_size=8).digest(), "big"))
        text = " ".join(rng.choices(VOCABULARY, k=max(1, round(seconds * 2.5)))).capitalize() + "."
        usage = {"type": "duration", "seconds": max(1, math.ceil(seconds))}
        language = fields.get("language") or "english"
        if fields.get("stream") == "true":  # OpenAI's transcript events, a word per delta
            return _EventStream(_transcript_events(text, usage), self)
        if fmt == "text":
            return PlainTextResponse(text)
        if fmt in ("srt", "vtt"):
            end = _timestamp(seconds, "," if fmt == "srt" else ".")
            start = "00:00:00,000" if fmt == "srt" else "00:00:00.000"
            cue = f"{start} --> {end}\n{text}\n"
            return PlainTextResponse(f"1\n{cue}" if fmt == "srt" else f"WEBVTT\n\n{cue}")
        if fmt == "verbose_json":
            segment = {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": round(seconds, 3),
                "text": text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
            return JSONResponse(
                {
                    "task": "transcribe",
                    "language": language,
                    "duration": round(seconds, 3),
                    "text": text,
                    "segments": [segment],
                    "usage": usage,
                }
            )
        return JSONResponse({"text": text, "usage": usage})

    async def rerank(self, request: Request) -> Response:
        """`/v1/rerank` (vLLM's shape): every document scored against the query, best first."""
        try:
            body, model, profile, faults = await self._admit(request, "rerank")
            query = body.get("query")
            if not isinstance(query, str) or not query:
                raise _BadRequest("query must be a non-empty string", "query")
            documents = body.get("documents")
            if not isinstance(documents, list) or not documents:
                raise _BadRequest("documents must be a non-empty array", "documents")
            texts = [_document_text(d, i) for i, d in enumerate(documents)]
            top_n = body.get("top_n", 0)
            if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0:
                raise _BadRequest("top_n must be an integer >= 0 (0: all)", "top_n")
        except _HTTPError as err:
            return err.response()
        if profile.ttft_ms:
            await asyncio.sleep(profile.ttft_ms / 1000)
        scored = sorted(
            ((media.relevance(query, text), i) for i, text in enumerate(texts)), key=lambda s: (-s[0], s[1])
        )
        if top_n:
            scored = scored[:top_n]
        results = [
            {"index": i, "document": {"text": texts[i]}, "relevance_score": score} for score, i in scored
        ]
        tokens = sum(_words(query) + _words(text) for text in texts)
        payload: dict[str, Any] = {
            "id": f"rerank-sim{secrets.token_hex(10)}",
            "model": model,
            "results": results,
        }
        if faults.usage != "none":
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(payload)

    # -- generation ------------------------------------------------------------------------------
    async def _generate(self, request: Request, kind: Literal["chat", "text"]) -> Response:
        try:
            body, model, profile, faults = await self._admit(request, kind)
            plan = _plan(body, model, profile, faults, kind)
        except _HTTPError as err:
            return err.response()
        if not body.get("stream"):
            return await self._complete(plan, profile)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return _EventStream(self._stream(plan, profile, include_usage), self)

    async def _admit(
        self, request: Request, endpoint: str
    ) -> tuple[dict[str, Any], str, ModelProfile, Faults]:
        self.stats.requests[endpoint] = self.stats.requests.get(endpoint, 0) + 1
        try:
            body = json.loads(await request.body())
        except ValueError as err:
            raise _BadRequest(f"request body is not JSON: {err}", None) from None
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object", None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("you must provide a model parameter", "model")
        profile = self._profile(model)
        overrides = body.get("simulator")
        if overrides is not None and not isinstance(overrides, dict):
            raise _BadRequest("simulator must be an object", "simulator")
        faults = self.faults.merged(overrides or {})
        if faults.status is not None:
            self.stats.injected_errors += 1
            raise _injected(faults)
        return body, model, profile, faults

    def _profile(self, model: str) -> ModelProfile:
        profile = self.models.get(model)
        if profile is None:
            if not self.accept_any_model:
                raise _HTTPError(
                    404,
                    f"The model `{model}` does not exist.",
                    "invalid_request_error",
                    "model",
                    "model_not_found",
                )
            profile = self.default_profile
        self.stats.by_model[model] = self.stats.by_model.get(model, 0) + 1
        return profile

    async def _complete(self, plan: _Plan, profile: ModelProfile) -> Response:
        delay = profile.ttft_ms / 1000
        if profile.tokens_per_second:
            delay += len(plan.tokens) / profile.tokens_per_second
        if delay:
            await asyncio.sleep(delay)
        self.stats.generated_tokens += len(plan.tokens)
        reasoning = "".join(plan.tokens[: plan.reasoning])
        text = "".join(plan.tokens[plan.reasoning :])
        choice: dict[str, Any]
        if plan.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if plan.reasoning:
                message["reasoning_content"] = reasoning
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
        else:
            choice = {
                "index": 0,
                "text": reasoning + text,
                "logprobs": None,
                "finish_reason": plan.finish_reason,
            }
        payload = plan.envelope()
        payload["choices"] = [choice]
        if plan.faults.usage != "none":
            payload["usage"] = plan.usage()
        return JSONResponse(payload)

    async def _stream(
        self, plan: _Plan, profile: ModelProfile, include_usage: bool
    ) -> AsyncGenerator[bytes, None]:
        """Paced events. Unpaced (no decode delay), due events go out in batches: one chunk per write
        is what a real engine's TCP stream rarely looks like, and it would make the simulator, not the
        gateway, the bottleneck of a benchmark."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        ttft = profile.ttft_ms / 1000
        per_token = 1 / profile.tokens_per_second if profile.tokens_per_second else 0.0
        pending: list[bytes] = []
        for due, event in self._events(plan, include_usage, ttft, per_token):
            wait = start + due - loop.time()
            if wait > 0:
                if pending:
                    yield b"".join(pending)
                    pending.clear()
                await asyncio.sleep(wait)
            if event is None:
                if pending:
                    yield b"".join(pending)
                raise _Abort
            if per_token:
                yield event
                continue
            pending.append(event)
            if len(pending) >= 32:
                yield b"".join(pending)
                pending.clear()
        if pending:
            yield b"".join(pending)

    def _events(
        self, plan: _Plan, include_usage: bool, ttft: float, per_token: float
    ) -> Iterator[tuple[float, bytes | None]]:
        """(seconds after the start when due, event bytes); None for `drop the connection`."""
        faults = plan.faults
        usage_inline = include_usage and faults.usage != "none"
        usage_key: dict[str, Any] = {"usage": None} if usage_inline else {}
        n = len(plan.tokens)
        if plan.kind == "chat":  # the role opens the stream, with the first token (after prefill)
            yield ttft, plan.chunk({"role": "assistant", "content": ""}, None, usage_key)
        content, reasoning = plan.token_templates(usage_inline)
        for i, token in enumerate(plan.tokens):
            due = ttft + i * per_token
            if faults.fail_after_chunks is not None and i >= faults.fail_after_chunks:
                if faults.fail_mode == "disconnect":
                    yield due, None
                    return
                error = {"object": "error", "message": "simulated engine failure", "type": "server_error"}
                yield due, _sse({"error": error})
                yield due, b"data: [DONE]\n\n"
                return
            self.stats.generated_tokens += 1
            if i < n - 1 or plan.kind == "chat":
                prefix, suffix = reasoning if i < plan.reasoning else content
                yield due, prefix + json.dumps(token).encode() + suffix
                continue
            extra = {"usage": plan.usage()} if usage_inline and faults.usage == "last_chunk" else usage_key
            yield due, plan.chunk(token, plan.finish_reason, extra)  # /v1/completions: finish on the last
        end = ttft + max(0, n - 1) * per_token
        if plan.kind == "chat":
            extra = {"usage": plan.usage()} if usage_inline and faults.usage == "last_chunk" else usage_key
            yield end, plan.chunk({}, plan.finish_reason, extra)
        if usage_inline and faults.usage == "separate":
            payload = plan.envelope(chunk=True)
            payload["choices"] = []
            payload["usage"] = plan.usage()
            yield end, _sse(payload)
        yield end, b"data: [DONE]\n\n"


@dataclass
class _Plan:
    """Everything about one generation, decided before the first byte."""

    kind: Literal["chat", "text"]
    id: str
    model: str
    created: int
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    reasoning: int  # the first `reasoning` tokens are reasoning_content
    faults: Faults

    def envelope(self, *, chunk: bool = False) -> dict[str, Any]:
        obj = (
            "text_completion"
            if self.kind == "text"
            else "chat.completion.chunk"
            if chunk
            else "chat.completion"
        )
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def usage(self) -> dict[str, Any]:
        completion = len(self.tokens)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if self.faults.cached_tokens:
            usage["prompt_tokens_details"] = {
                "cached_tokens": min(self.faults.cached_tokens, self.prompt_tokens)
            }
        if self.faults.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning}
        return usage

    def token_templates(self, usage_inline: bool) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """(prefix, suffix) around a JSON-encoded token for content and reasoning chunks: the same
        bytes `chunk` produces, without building and encoding a dict per token."""
        marker = "\x00"
        out = []
        for reasoning in (False, True):
            event = self.chunk(marker, None, {"usage": None} if usage_inline else {}, reasoning=reasoning)
            prefix, suffix = event.split(json.dumps(marker).encode())
            out.append((prefix, suffix))
        return out[0], out[1]

    def chunk(
        self,
        delta: dict[str, Any] | str,
        finish_reason: str | None,
        extra: Mapping[str, Any],
        *,
        reasoning: bool = False,
    ) -> bytes:
        choice: dict[str, Any]
        if self.kind == "chat":
            if isinstance(delta, str):
                delta = {"reasoning_content": delta} if reasoning else {"content": delta}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
            obj = "text_completion"
        payload = {"id": self.id, "object": obj, "created": self.created, "model": self.model}
        payload["choices"] = [choice]
        payload.update(extra)
        return _sse(payload)


def _plan(body: dict[str, Any], model: str, profile: ModelProfile, faults: Faults, kind: str) -> _Plan:
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("messages must be a non-empty array", "messages")
        prompt_tokens = 3 + sum(
            4 + _content_tokens(m.get("content") if isinstance(m, dict) else None, f"messages[{i}].content")
            for i, m in enumerate(messages)
        )
        seed_source: Any = messages
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise _BadRequest("prompt is required", "prompt")
        prompts = _inputs(prompt)
        if len(prompts) != 1:
            # OpenAI answers one choice per prompt; the simulator generates one choice, so a batch
            # would silently lose all its prompts but one.
            raise _BadRequest(f"the simulator answers one prompt per request, got {len(prompts)}", "prompt")
        prompt_tokens = sum(len(p) if isinstance(p, list) else _words(p) for p in prompts)
        seed_source = prompt
    if body.get("n", 1) != 1:
        raise _BadRequest("the simulator generates one choice (n=1)", "n")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise _BadRequest("max_tokens must be a positive integer", "max_tokens")
    natural = profile.completion_tokens
    count = natural if limit is None else min(limit, natural)
    seed = _seed(model, seed_source)
    rng = random.Random(seed)
    tokens = [" " + word for word in rng.choices(VOCABULARY, k=count)]
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return _Plan(
        kind="chat" if kind == "chat" else "text",
        # The text is the prompt's; the id is the request's, unique as OpenAI's are (clients key
        # logs, traces and caches by it).
        id=f"{prefix}-sim{secrets.token_hex(10)}",
        model=model,
        created=int(time.time()),
        tokens=tokens,
        finish_reason="length" if limit is not None and limit < natural else "stop",
        prompt_tokens=prompt_tokens,
        reasoning=min(faults.reasoning_tokens, count),
        faults=faults,
    )


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(
            len(p["text"].split()) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return 0


IMAGE_TOKENS = 85  # what one image part costs the prompt (OpenAI's low-detail price, any size here)
AUDIO_TOKENS_PER_SECOND = 10


def _content_tokens(content: Any, where: str) -> int:
    """A message's prompt tokens: its words, a fixed price per image and 10 per second of audio.
    Malformed image and audio parts are refused, naming the part, as vLLM does."""
    if not isinstance(content, list):
        return _words(content)
    tokens = 0
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            tokens += len(part["text"].split())
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url.startswith(("data:image/", "http://", "https://")):
                raise _BadRequest(
                    "an image_url part needs a data:image/... or http(s) URL", f"{where}[{j}].image_url"
                )
            tokens += IMAGE_TOKENS
        elif kind == "input_audio":
            audio = part.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else None
            try:
                raw = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
            except ValueError:
                raw = b""
            if not raw:
                raise _BadRequest("an input_audio part needs base64 data", f"{where}[{j}].input_audio.data")
            tokens += max(1, math.ceil(media.audio_seconds(raw) * AUDIO_TOKENS_PER_SECOND))
    return tokens


def _image_size(size: Any) -> tuple[int, int]:
    """`WxH` (each 16..2048) or `auto` (1024x1024)."""
    if size == "auto":
        return 1024, 1024
    if isinstance(size, str):
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit() and 16 <= int(width) <= 2048 and 16 <= int(height) <= 2048:
            return int(width), int(height)
    raise _BadRequest("size must be 'auto' or WIDTHxHEIGHT (16 to 2048 each)", "size")


def _document_text(document: Any, index: int) -> str:
    """A rerank document: a string, or `{"text": ...}` (vLLM also takes content parts)."""
    if isinstance(document, str):
        return document
    if isinstance(document, dict) and isinstance(document.get("text"), str):
        return str(document["text"])
    raise _BadRequest("a document is a string or {'text': string}", f"documents[{index}]")


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _inputs(value: Any) -> list[Any]:
    """A prompt or embedding input as a list of items (strings or token-id lists)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]
        if all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, int) for i in v)) for v in value
        ):
            return value
    raise _BadRequest("input must be a string, an array of strings, or token ids", "input")


def _seed(model: str, source: Any) -> int:
    digest = hashlib.blake2b(
        json.dumps([model, source], sort_keys=True, separators=(",", ":")).encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def _embedding(model: str, item: Any, dims: int) -> list[float]:
    rng = random.Random(_seed(model, item))
    vector = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


async def _transcript_events(text: str, usage: Mapping[str, Any]) -> AsyncGenerator[bytes, None]:
    for i, word in enumerate(text.split(" ")):
        yield _named_sse({"type": "transcript.text.delta", "delta": word if i == 0 else " " + word})
    yield _named_sse({"type": "transcript.text.done", "text": text, "usage": dict(usage)})


def _named_sse(payload: Mapping[str, Any]) -> bytes:
    """An event whose `event:` line is its type, as OpenAI's image and transcription streams send them."""
    return f"event: {payload['type']}\n".encode() + _sse(payload)


def _sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


class _BadRequest(_HTTPError):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(400, message, "invalid_request_error", param)


def _injected(faults: Faults) -> _HTTPError:
    status = faults.status or 500
    headers: dict[str, str] = {}
    if faults.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(faults.retry_after)))
        headers["retry-after-ms"] = str(round(faults.retry_after * 1000))
    if status == 429:
        return _HTTPError(
            429,
            "Simulated rate limit reached. Please try again later.",
            "requests",
            None,
            "rate_limit_exceeded",
            headers,
        )
    return _HTTPError(status, f"Simulated upstream failure ({status}).", "server_error", None, None, headers)


class _Abort(Exception):
    """Drop the connection mid-stream, as a crashing engine would."""


class _EventStream(Response):
    """An SSE response that notices the client leaving and can end without completing the body.

    Starlette's StreamingResponse always terminates the body cleanly, which cannot simulate an engine
    that dies mid-stream; this one returns early on `_Abort`, so the server closes the connection.
    """

    def __init__(self, events: AsyncGenerator[bytes, None], simulator: Simulator) -> None:
        super().__init__(media_type="text/event-stream")
        self.events = events
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.simulator.stats
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        stats.active_streams += 1
        stats.max_active_streams = max(stats.max_active_streams, stats.active_streams)
        outcome: list[str] = []

        async def stream(cancel: anyio.CancelScope) -> None:
            try:
                async for event in self.events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                outcome.append("completed")
            except _Abort:
                outcome.append("aborted")
            cancel.cancel()

        async def watch(cancel: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not outcome:
                outcome.append("disconnected")
            cancel.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(stream, group.cancel_scope)
                group.start_soon(watch, group.cancel_scope)
        finally:
            await self.events.aclose()
            stats.active_streams -= 1
            if outcome and outcome[0] == "completed":
                stats.completed_streams += 1
            elif outcome and outcome[0] == "disconnected":
                stats.client_disconnects += 1


# -- serving ---------------------------------------------------------------------------------------
@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn on a free port in a daemon thread; yields its base URL.

    For tests and benchmarks that need a real socket (the OpenAI SDK, the gateway's HTTP client).
    """
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response waits ~40 ms for a delayed ACK (headers and body are two writes).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the simulator did not start")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A SIMULATED OpenAI-compatible engine (made-up text) for gateway tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--model", action="append", help="a model name to serve (repeatable; default sim-chat)"
    )
    parser.add_argument("--any-model", action="store_true", help="accept any model name")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-second", type=float, default=0.0, help="0: no decode delay")
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument(
        "--profiles",
        action="store_true",
        help="each model answers at its profile's speed (simulator/profiles.py), not the timing flags",
    )
    parser.add_argument(
        "--stands-in-for", metavar="ENGINE", help="say on start that it runs in place of ENGINE"
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=float(os.environ.get("SIMULATOR_LOAD_SECONDS", "0")),
        help="wait this long before listening, as an engine loading weights does "
        "(default: $SIMULATOR_LOAD_SECONDS or 0)",
    )
    parser.add_argument(
        "--exit-at-start",
        type=int,
        metavar="CODE",
        default=_env_int("SIMULATOR_EXIT_AT_START"),
        help="fault injection: fail at start with this exit code (default: $SIMULATOR_EXIT_AT_START)",
    )
    args = parser.parse_args(argv)
    profile = ModelProfile(
        ttft_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        completion_tokens=args.completion_tokens,
    )
    names = args.model or ["sim-chat"]
    if args.stands_in_for:
        print(
            f"modelfleet engine SIMULATOR standing in for {args.stands_in_for} (made-up text, not a model): "
            f"serving {', '.join(names)} on {args.host}:{args.port}",
            flush=True,
        )
    if args.exit_at_start is not None:
        print(f"simulated start failure: exiting with code {args.exit_at_start}", file=sys.stderr, flush=True)
        sys.exit(args.exit_at_start)
    if args.load_seconds > 0:
        print(f"loading (simulated) for {args.load_seconds:g} s", flush=True)
        time.sleep(args.load_seconds)

    models = {name: profile_for(name) if args.profiles else profile for name in names}
    simulator = Simulator(models, accept_any_model=args.any_model, default_profile=profile)
    uvicorn.run(simulator.app, host=args.host, port=args.port, log_level="warning", access_log=False)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


if __name__ == "__main__":
    main()
