"""Anthropic's `/v1/messages` served as chat completions upstream (gateway/translation.py).

The key comes as `x-api-key` (anthropic SDK 1.x) or `Authorization: Bearer` (2.x); `anthropic-version`
is accepted whatever its value (2023-06-01, 2026-10-21). Errors take Anthropic's shape
(`{"type": "error", "error": {"type", "message"}, "request_id"}`) with its error types per status.

Blocks map one to one: text → text part, image (base64 or url source) → image_url part, tool_use →
the assistant's tool call, tool_result → a tool message; thinking blocks sent back are dropped (the
engine reasons afresh). Usage: `input_tokens` excludes cache reads, as Anthropic counts them; the stream
sends `message_start` with 0 input tokens (the engine reports usage at the end) and the real input and
output counts in its last `message_delta`, which is what Anthropic's SDK keeps.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from gateway.metering import Usage
from gateway.refusal import Refusal, Why
from gateway.translation import chat_chunks, first_message, sse
from gateway.translation import obj as _obj

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


# Anthropic's own fields, translated or dropped; any other field (an engine's extras) passes through.
OWN = frozenset(
    {
        "model",
        "max_tokens",
        "system",
        "messages",
        "stop_sequences",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "output_config",
        "cache_control",
        "container",
        "mcp_servers",
        "context_management",
    }
)


def _bad(field: str, reason: str) -> Refusal:
    return Refusal(Why.INVALID_REQUEST, f"{field}: {reason}", field)


class MessagesTranslation:
    def request(self, body: Mapping[str, Any]) -> dict[str, Any] | Refusal:
        limit = body.get("max_tokens")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return _bad("max_tokens", "Field required: an integer of at least 1.")
        messages: list[dict[str, Any]] = []
        system = body.get("system")
        if isinstance(system, list):
            system = "".join(b.get("text", "") for b in system if isinstance(b, Mapping))
        if system is not None:
            if not isinstance(system, str):
                return _bad("system", "expected a string or text blocks.")
            messages.append({"role": "system", "content": system})
        given = body.get("messages")
        if not isinstance(given, list) or not given:
            return _bad("messages", "expected a non-empty array of messages.")
        for i, message in enumerate(given):
            converted = _message(message, f"messages.{i}")
            if isinstance(converted, Refusal):
                return converted
            messages.extend(converted)
        chat: dict[str, Any] = {k: v for k, v in body.items() if k not in OWN}  # temperature, top_p, top_k, …
        chat.update(model=body.get("model"), messages=messages, max_tokens=limit)
        stops = body.get("stop_sequences")
        if stops:
            chat["stop"] = stops
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return _bad("stream", "expected a boolean.")
        if stream:
            chat["stream"] = True
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
            chat["user"] = metadata["user_id"]
        tools = body.get("tools")
        if tools:
            if not isinstance(tools, list):
                return _bad("tools", "expected an array.")
            chat["tools"] = []
            for i, tool in enumerate(tools):
                if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
                    return _bad(f"tools.{i}", "expected {name, description, input_schema}.")
                function = {"name": tool["name"], "parameters": tool.get("input_schema", {"type": "object"})}
                if tool.get("description"):
                    function["description"] = tool["description"]
                chat["tools"].append({"type": "function", "function": function})
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping):
            kind = choice.get("type")
            if kind == "tool":
                chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
            elif kind in ("auto", "none"):
                chat["tool_choice"] = kind
            elif kind == "any":
                chat["tool_choice"] = "required"
        return chat

    def response(self, chat: Mapping[str, Any], usage: Usage) -> dict[str, Any]:
        message, finish = first_message(chat)
        content: list[dict[str, Any]] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
        if isinstance(message.get("content"), str) and message["content"]:
            content.append({"type": "text", "text": message["content"]})
        for call in message.get("tool_calls") or ():
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                content.append(_tool_use(call))
        return {
            "id": f"msg_{chat.get('id') or secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": chat.get("model"),
            "content": content,
            "stop_reason": STOP_REASONS.get(finish, "end_turn") if finish else "end_turn",
            "stop_sequence": None,
            "usage": _usage(usage),
        }

    def stream(self, body: Mapping[str, Any], model: str) -> MessagesStream:
        return MessagesStream(model)

    def error(
        self, status: int, message: str, type_: str, param: str | None, headers: Mapping[str, str]
    ) -> Response:
        return anthropic_error(status, message, headers)


def anthropic_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    kind = ERROR_TYPES.get(status, "api_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    request_id = (headers or {}).get("x-request-id") or (headers or {}).get("x-modelfleet-request-id")
    if request_id:
        body["request_id"] = request_id
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _tool_use(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call["function"]
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        arguments = {"_raw": function.get("arguments")}
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}


def _message(message: Any, where: str) -> list[dict[str, Any]] | Refusal:
    if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
        return _bad(f"{where}.role", "expected 'user' or 'assistant'.")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        return _bad(f"{where}.content", "expected a string or an array of content blocks.")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            source = _obj(block.get("source"))
            if source.get("type") == "base64" and isinstance(source.get("data"), str):
                url = f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
            elif source.get("type") == "url" and isinstance(source.get("url"), str):
                url = source["url"]
            else:
                return _bad(f"{at}.source", "expected a base64 or url image source.")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}), separators=(",", ":"))
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind == "tool_result":
            value = block.get("content", "")
            if isinstance(value, list):
                value = "".join(b.get("text", "") for b in value if isinstance(b, Mapping))
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": str(value)})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            return _bad(f"{at}.type", "expected text, image, tool_use, tool_result or thinking.")
    out: list[dict[str, Any]] = list(results)
    if role == "assistant":
        said: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(p.get("text", "") for p in parts) or None,
        }
        if calls:
            said["tool_calls"] = calls
        out.append(said)
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


class MessagesStream:
    """Chat chunks → Anthropic events: one content block per kind as it starts (thinking, text, each
    tool call), closed in order; `message_delta` with the stop reason and the usage, then `message_stop`."""

    def __init__(self, model: str) -> None:
        self.id = f"msg_{secrets.token_hex(12)}"
        self.model = model
        self.started = False
        self.index = -1
        self.open: str | None = None  # "thinking", "text" or "tool:<chat index>"
        self.finish: str | None = None
        self.error: str | None = None

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _block(self, key: str, block: dict[str, Any]) -> bytes:
        out = self._stop_block()
        self.index += 1
        self.open = key
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self.index, "content_block": block},
        )

    def _stop_block(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse(
            "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
        )

    def feed(self, events: bytes) -> bytes:
        out = bytearray()
        for chunk in chat_chunks(events):
            if chunk is None:
                continue
            if not self.started:
                self.model = str(chunk.get("model") or self.model)
                out += self._start()
            error = chunk.get("error")
            if error is not None:
                self.error = str(error.get("message", error) if isinstance(error, Mapping) else error)
            for choice in chunk.get("choices") or ():
                if isinstance(choice, Mapping):
                    out += self._choice(choice)
        return bytes(out)

    def _choice(self, choice: Mapping[str, Any]) -> bytes:
        out = bytearray()
        delta = _obj(choice.get("delta"))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self.open != "thinking":
                out += self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": reasoning})
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.open != "text":
                out += self._block("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": content})
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, Mapping):
                continue
            key = f"tool:{call.get('index', 0)}"
            function = _obj(call.get("function"))
            if self.open != key:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": {},
                }
                out += self._block(key, block)
            piece = function.get("arguments")
            if isinstance(piece, str) and piece:
                out += self._delta({"type": "input_json_delta", "partial_json": piece})
        if isinstance(choice.get("finish_reason"), str):
            self.finish = choice["finish_reason"]
        return bytes(out)

    def close(self, usage: Usage, failed: str | None) -> bytes:
        out = bytearray() if self.started else bytearray(self._start())
        out += self._stop_block()
        failed = failed or self.error
        if failed is not None:
            error = {"type": "error", "error": {"type": "api_error", "message": failed}}
            return bytes(out + sse("error", error))
        stop = STOP_REASONS.get(self.finish or "stop", "end_turn")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": _usage(usage),
        }
        out += sse("message_delta", delta)
        return bytes(out + sse("message_stop", {"type": "message_stop"}))
