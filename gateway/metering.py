"""What a request used and what it costs, including streams that end badly.

1. `prepare_upstream_body` forces `stream_options.include_usage=true` on every stream sent upstream and
   remembers whether the client asked for it, so a client that did not ask never sees the usage-only
   chunk (OpenAI semantics are preserved) while the gateway always gets the engine's count.
2. `StreamMeter` is fed the upstream's raw bytes as they arrive, in chunks split anywhere (inside a
   line, inside a UTF-8 character). It returns the bytes to forward: complete SSE events, unchanged,
   except the usage-only chunk (empty `choices`) when the client did not ask for usage. It records the
   time to first token and takes `usage` from WHICHEVER chunk carries it, last non-null wins (usage on
   a chunk that still has choices is common, cf. LiteLLM #36168), and keeps the generated text.
3. `finish()` turns that into a `Metered` record. Without upstream usage (the engine ignored the
   option, the client went away, the upstream failed after the 200) the usage is estimated: prompt
   from the request, completion from the text generated so far, `estimated=True`: bill what was
   generated, no more (new-api #5287) and no less (new-api #7062).
4. `cost()` prices a usage in Decimal (see its docstring for the formula and the rounding).

Billing starts when the upstream answered 200: a request that never reached an engine, or that the
engine refused, is not metered here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from enum import StrEnum
from typing import Any

from gateway.tokens import TokenCounter, estimate_prompt_tokens, estimate_tokens

Clock = Callable[[], float]


class Outcome(StrEnum):
    COMPLETED = "completed"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_ERROR = "upstream_error"  # an error event, a dropped connection or a timeout after the 200


@dataclass(frozen=True, slots=True)
class Usage:
    """Billable token counts. `completion_tokens` includes reasoning tokens; `cached_tokens` is part
    of `prompt_tokens` (OpenAI's definitions). `total` is derived, never taken from the upstream,
    whose `total_tokens` may count hidden tokens differently (Kong #14816)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Usage from an OpenAI `usage` object (None when it is absent or not an object)."""
        if not isinstance(usage, Mapping):
            return None
        if "prompt_tokens" not in usage and "input_tokens" in usage:
            # The images API's (and the Responses API's) names for the same counts.
            prompt = _count(usage.get("input_tokens"))
            return cls(prompt_tokens=prompt, completion_tokens=_count(usage.get("output_tokens")))
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        prompt = _count(usage.get("prompt_tokens"))
        return cls(
            prompt_tokens=prompt,
            completion_tokens=_count(usage.get("completion_tokens")),
            cached_tokens=min(prompt, _count(_get(prompt_details, "cached_tokens"))),
            reasoning_tokens=_count(_get(completion_details, "reasoning_tokens")),
        )


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Metered:
    """The metering record of one request."""

    usage: Usage
    outcome: Outcome
    ttft_seconds: float | None = None  # from the request's start to the first generated token
    finish_reason: str | None = None
    error: str | None = None  # the upstream's error message, when it sent one
    units: int = 0  # images, seconds, characters or documents (gateway/units.py)

    @property
    def estimated(self) -> bool:
        return self.usage.estimated


# -- the upstream request ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PreparedRequest:
    body: dict[str, Any]  # what to send upstream
    stream: bool
    client_wants_usage: bool  # False: hide the usage-only chunk from this client

    @property
    def hide_usage_chunk(self) -> bool:
        return self.stream and not self.client_wants_usage


def prepare_upstream_body(body: Mapping[str, Any], upstream_model: str | None = None) -> PreparedRequest:
    """The body to send upstream: the client's, with usage forced on for streams (and the engine's
    model name when the public name differs). The client's body is not modified."""
    upstream = dict(body)
    if upstream_model is not None:
        upstream["model"] = upstream_model
    stream = body.get("stream") is True
    if not stream:
        return PreparedRequest(upstream, stream=False, client_wants_usage=True)
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, Mapping) else {}
    wants = options.get("include_usage") is True
    options["include_usage"] = True
    upstream["stream_options"] = options
    return PreparedRequest(upstream, stream=True, client_wants_usage=wants)


# -- streams -----------------------------------------------------------------------------------------
class StreamMeter:
    """Meters one SSE stream and filters what the client sees. Feed it every upstream byte, in order."""

    def __init__(
        self,
        request_body: Mapping[str, Any],
        *,
        hide_usage_chunk: bool,
        started_at: float | None = None,
        clock: Clock = time.monotonic,
        count: TokenCounter = estimate_tokens,
    ) -> None:
        self.request_body = request_body
        self.hide_usage_chunk = hide_usage_chunk
        self.clock = clock
        self.count = count
        self.started_at = clock() if started_at is None else started_at
        self.first_token_at: float | None = None
        self.done = False  # `data: [DONE]` seen
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.events = 0
        self.items = 0  # images completed, or transcripts done (media streams)
        self._buffer = bytearray()
        self._line_mode = False  # False: LF-only stream, split at blank lines; True: line by line
        self._line = 0  # line mode: where the current line starts in the buffer
        self._search = 0  # where the next search for an event (or line) end starts
        self._event_start = 0  # line mode: where the current event starts
        self._data: list[bytes] = []  # the current event's data lines
        self._usage: Any = None
        self._text: list[str] = []  # generated content, for the estimate
        self._reasoning: list[str] = []

    @classmethod
    def for_request(cls, prepared: PreparedRequest, **kwargs: Any) -> StreamMeter:
        return cls(prepared.body, hide_usage_chunk=prepared.hide_usage_chunk, **kwargs)

    @property
    def ttft_seconds(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    def feed(self, data: bytes) -> bytes:
        """Take upstream bytes; return the complete events to forward now (possibly b"")."""
        self._buffer += data
        out = bytearray()
        if not self._line_mode and b"\r" in data:
            self._line_mode = True  # CRLF line ends: the general line parser from here on
            self._search = 0
        if self._line_mode:
            self._feed_lines(out)
        else:
            self._feed_blocks(out)
        return bytes(out)

    def _feed_blocks(self, out: bytearray) -> None:
        """LF-only streams (what engines send): events are the blocks between blank lines."""
        buffer = self._buffer
        start = 0
        end = buffer.find(b"\n\n", self._search)
        while end >= 0:
            raw = bytes(buffer[start : end + 2])
            if raw.startswith(b"data:") and raw.find(b"\n") == len(raw) - 2:  # a single data line
                self._event(raw, raw[6:-2] if raw[5] == 0x20 else raw[5:-2], out)
            else:
                self._event(raw, _data_of(raw), out)
            start = end + 2
            end = buffer.find(b"\n\n", start)
        if start:
            del buffer[:start]
        self._search = max(0, len(buffer) - 1)  # a trailing "\n" may pair with the next byte

    def _feed_lines(self, out: bytearray) -> None:
        """Any mix of LF and CRLF line ends, line by line."""
        buffer = self._buffer
        line = self._line  # start of the current (incomplete) line
        newline = buffer.find(b"\n", self._search)
        while newline >= 0:
            end = newline - 1 if newline > line and buffer[newline - 1] == 0x0D else newline
            if end == line:  # a blank line ends the event
                raw = bytes(buffer[self._event_start : newline + 1])
                self._event_start = newline + 1
                data = b"\n".join(self._data)
                self._data.clear()
                self._event(raw, data, out)
            elif buffer.startswith(b"data:", line):
                start = line + 6 if buffer.startswith(b"data: ", line) else line + 5
                self._data.append(bytes(buffer[start:end]))
            line = newline + 1
            newline = buffer.find(b"\n", line)
        consumed = self._event_start
        if consumed:
            del buffer[:consumed]
            line -= consumed
            self._event_start = 0
        self._line = line
        self._search = len(buffer)  # a long line fed in pieces is searched once, not again and again

    def close(self) -> bytes:
        """The upstream ended: a last event without its blank line is forwarded, terminated; one cut
        off in the middle (its data is not complete JSON) is dropped rather than sent broken."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._data.clear()
        self._line = self._search = self._event_start = 0
        if not rest.strip():
            return b""
        data = _data_of(rest.replace(b"\r\n", b"\n"))
        if data != b"[DONE]" and not _is_json(data):
            return b""
        out = bytearray()
        raw = rest.rstrip(b"\r\n") + (b"\r\n\r\n" if b"\r" in rest else b"\n\n")
        self._event(raw, data, out)
        return bytes(out)

    def _event(self, raw: bytes, data: bytes, out: bytearray) -> None:
        if not data:
            out += raw  # comments, keep-alives
            return
        self.events += 1
        if self.first_token_at is not None and _plain_content(data):
            # The bulk of a stream: a content chunk with nothing else to learn. Take its text with a
            # regular expression instead of decoding the whole chunk (about half the cost per event).
            for match in _TEXT_FIELDS.finditer(data):
                text = _unescape(match.group(2))
                (self._reasoning if match.group(1).startswith(b"reasoning") else self._text).append(text)
            out += without_null_usage(raw) if self.hide_usage_chunk else raw
            return
        if data == b"[DONE]":
            self.done = True
            out += raw
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            out += raw
            return
        if not isinstance(chunk, dict):
            out += raw
            return
        if "error" in chunk or chunk.get("object") == "error":  # vLLM wraps it in "error"; older ones did not
            error = chunk.get("error", chunk)
            self.error = str(error.get("message", error) if isinstance(error, Mapping) else error)
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = usage
        kind = chunk.get("type")
        if isinstance(kind, str) and kind in MEDIA_EVENTS:  # an image or transcription stream
            self._media(kind, chunk)
        choices = chunk.get("choices")
        if isinstance(choices, list):
            if not choices and usage is not None and self.hide_usage_chunk:
                return  # the usage-only chunk this client did not ask for
            for choice in choices:
                if isinstance(choice, Mapping):
                    self._collect(choice)
        out += without_null_usage(raw) if self.hide_usage_chunk and usage is None else raw

    def _media(self, kind: str, chunk: Mapping[str, Any]) -> None:
        """Image and transcript events: the first one is the first "token"; a completed image (or the
        transcript's end) counts, and ends the stream as `[DONE]` ends a chat's."""
        if self.first_token_at is None:
            self.first_token_at = self.clock()
        if kind in MEDIA_DONE:
            self.done = True
            self.items += 1
        elif isinstance(chunk.get("delta"), str):
            self._text.append(chunk["delta"])

    @property
    def usage_seen(self) -> Any:
        """The last `usage` object the stream carried (None: none)."""
        return self._usage

    def _collect(self, choice: Mapping[str, Any]) -> None:
        produced = False
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text.append(content)
                produced = True
            for key in ("reasoning_content", "reasoning"):
                reasoning = delta.get(key)
                if isinstance(reasoning, str) and reasoning:
                    self._reasoning.append(reasoning)
                    produced = True
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    for key in ("name", "arguments"):
                        piece = function.get(key)
                        if isinstance(piece, str) and piece:
                            self._text.append(piece)
                            produced = True
        else:
            text = choice.get("text")  # /v1/completions
            if isinstance(text, str) and text:
                self._text.append(text)
                produced = True
        if produced and self.first_token_at is None:
            self.first_token_at = self.clock()
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self.finish_reason = finish

    def finish(self, outcome: Outcome | None = None, *, bill_prompt_without_output: bool = True) -> Metered:
        """The record. Pass `CLIENT_DISCONNECTED` or `UPSTREAM_ERROR` when the caller knows the stream
        was cut; otherwise the outcome is read from the stream (an error event, or an end without
        `[DONE]` and without a finish reason, is an upstream error)."""
        if outcome is None:
            if self.error is not None or not (self.done or self.finish_reason):
                outcome = Outcome.UPSTREAM_ERROR
            else:
                outcome = Outcome.COMPLETED
        usage = Usage.from_openai(self._usage)
        if usage is None:
            usage = self.estimate(bill_prompt_without_output=bill_prompt_without_output)
        return Metered(usage, outcome, self.ttft_seconds, self.finish_reason, self.error)

    def completion_so_far(self) -> tuple[int, int]:
        """(completion, reasoning) tokens estimated from the text generated so far. Safe to call from
        another thread while the stream is fed (the heartbeat's progress: joining a list that grows
        copies it first)."""
        reasoning = self.count("".join(self._reasoning)) if self._reasoning else 0
        return reasoning + (self.count("".join(self._text)) if self._text else 0), reasoning

    def estimate(self, *, bill_prompt_without_output: bool = True) -> Usage:
        """Prompt from the request, completion from the text generated so far; `estimated=True`."""
        completion, reasoning = self.completion_so_far()
        prompt = estimate_prompt_tokens(self.request_body, self.count)
        if not completion and not bill_prompt_without_output:
            prompt = 0
        return Usage(prompt, completion, 0, reasoning, estimated=True)


# Events of the images API's and the transcription API's streams (OpenAI's `type`s); the `…completed`
# and `…done` ones end an image or the transcript.
MEDIA_DONE = frozenset({"image_generation.completed", "image_edit.completed", "transcript.text.done"})
MEDIA_EVENTS = MEDIA_DONE | {
    "image_generation.partial_image",
    "image_edit.partial_image",
    "transcript.text.delta",
}

# A JSON string value of a generated-text field; JSON escapes every quote inside a string, so
# `"content":"` can only start such a value (logprobs' "content" is an array, not matched).
_TEXT_FIELDS = re.compile(rb'"(content|reasoning_content|reasoning|text|name|arguments)":"((?:[^"\\]|\\.)*)"')
_NULL_USAGE = re.compile(rb'"usage":\s*null')


def without_null_usage(raw: bytes) -> bytes:
    """An event without its `"usage": null` member: what a client that did not ask for usage gets
    from OpenAI, which leaves the field out of its chunks in that case.

    Engines put the member in every chunk once usage is asked for, compact or with json.dumps'
    spaces; it goes with the comma that joins it to a neighbour. A quote inside a JSON string is
    always escaped (`\\"`) and these quotes follow `,` or `{`, so they are structural: the member,
    never generated text. `null` is a whole token, so nothing else can follow it.
    """
    if b'"usage":null' in raw:
        return raw.replace(b',"usage":null', b"").replace(b'{"usage":null,', b"{")
    if b'"usage": null' in raw:
        return raw.replace(b', "usage": null', b"").replace(b'{"usage": null, ', b"{")
    return raw


def _plain_content(data: bytes) -> bool:
    """A chunk that is still generating (`"finish_reason":null`), carries no error and no usage."""
    if not data.startswith(b"{") or b'"finish_reason":null' not in data or b'"error"' in data:
        return False
    usage = data.count(b'"usage"')
    return usage == 0 or (usage == 1 and _NULL_USAGE.search(data) is not None)


def _unescape(value: bytes) -> str:
    return json.loads(b'"' + value + b'"') if b"\\" in value else value.decode("utf-8", "replace")


def _data_of(raw: bytes) -> bytes:
    """The data of one event: its `data:` lines joined by newlines (LF line ends)."""
    lines = raw.rstrip(b"\n").split(b"\n")
    return b"\n".join(
        line[6:] if line.startswith(b"data: ") else line[5:] for line in lines if line.startswith(b"data:")
    )


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


# -- non-streamed responses --------------------------------------------------------------------------
def meter_response(
    request_body: Mapping[str, Any], response: Mapping[str, Any], *, count: TokenCounter = estimate_tokens
) -> Metered:
    """The record of a complete JSON response (chat, completion or embeddings)."""
    finish: str | None = None
    texts: list[str] = []
    reasoning_texts: list[str] = []
    for choice in response.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        if isinstance(choice.get("finish_reason"), str):
            finish = choice["finish_reason"]
        message = choice.get("message")
        if isinstance(message, Mapping):
            for key, sink in (("content", texts), ("reasoning_content", reasoning_texts)):
                if isinstance(message.get(key), str):
                    sink.append(message[key])
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    texts.extend(str(function.get(k, "")) for k in ("name", "arguments"))
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    usage = Usage.from_openai(response.get("usage"))
    if usage is None:
        reasoning = count("".join(reasoning_texts))
        usage = Usage(
            estimate_prompt_tokens(request_body, count),
            reasoning + count("".join(texts)),
            0,
            reasoning,
            estimated=True,
        )
    return Metered(usage, Outcome.COMPLETED, None, finish)


# -- cost --------------------------------------------------------------------------------------------
COST_QUANTUM = Decimal("0.000000001")  # 1e-9 of the currency unit: one token at $0.001/M is $1e-9
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Prices:
    """Unit prices per million tokens. Cached prompt tokens cost `cached_input_per_million`, or the
    input price when that is None."""

    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None = None
    per_unit: Decimal = Decimal(0)  # an image, a second of audio, … (gateway/units.py)

    @classmethod
    def of(
        cls,
        input_per_million: Any,
        output_per_million: Any,
        cached_input_per_million: Any = None,
        per_unit: Any = 0,
    ) -> Prices:
        """From strings, ints, Decimals or floats (a float goes through its shortest repr, so the
        0.15 a database column returns becomes Decimal('0.15'), not 0.1499999...)."""
        return cls(
            _decimal(input_per_million),
            _decimal(output_per_million),
            None if cached_input_per_million is None else _decimal(cached_input_per_million),
            _decimal(per_unit),
        )

    def __post_init__(self) -> None:
        prices = (
            self.input_per_million,
            self.output_per_million,
            self.cached_input_per_million,
            self.per_unit,
        )
        if any(p is not None and (not p.is_finite() or p < 0) for p in prices):
            raise ValueError("prices must be finite and >= 0")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def cost(usage: Usage, prices: Prices, units: int = 0) -> Decimal:
    """`((prompt − cached) × p_in + cached × p_cached + completion × p_out) / 10^6 + units × p_unit`,
    in Decimal (units: images, seconds, characters or documents, gateway/units.py).

    Computed exactly (enough precision for any token count and price), then rounded ONCE per record
    to `COST_QUANTUM` (1e-9) with banker's rounding (ROUND_HALF_EVEN: unbiased over many records).
    Totals are sums of these rounded line items, so aggregates always equal the sum of the records.
    Reasoning tokens are inside `completion_tokens` and cost the output price.
    """
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = (
        prices.input_per_million
        if prices.cached_input_per_million is None
        else prices.cached_input_per_million
    )
    with localcontext() as ctx:
        ctx.prec = 60
        raw = (
            (usage.prompt_tokens - cached) * prices.input_per_million
            + cached * cached_price
            + usage.completion_tokens * prices.output_per_million
        ) / TOKENS_PER_PRICE_UNIT + units * prices.per_unit
        return raw.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)
