"""`/v1/responses` (OpenAI's Responses API) served as chat completions upstream (gateway/translation.py).

Stateless: nothing is stored, so `previous_response_id`, `conversation` and `background` are refused
(naming the field) rather than silently ignored; `store` is accepted and has no effect. Items and parts
map one to one (`input_text` → text, `input_image` → image_url, `input_audio`, `input_file` → file,
`function_call` / `function_call_output` → tool calls and tool messages); `instructions` becomes the
system message, `max_output_tokens` the chat's `max_tokens`, `text.format` its `response_format`,
`reasoning.effort` its `reasoning_effort`. Streams follow the reference's event order, every event
with its `sequence_number`; usage is only in the terminal event's `response.usage`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from gateway.errors import openai_error
from gateway.metering import Usage
from gateway.refusal import Refusal, Why
from gateway.translation import chat_chunks, first_message, sse
from gateway.translation import obj as _obj

# The Responses API's own fields, translated or dropped; any other field (chat's own, an engine's
# extras such as vLLM's `top_k`) passes through to the chat request as sent.
OWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "text",
        "reasoning",
        "tools",
        "tool_choice",
        "stream",
        "stream_options",
        "previous_response_id",
        "conversation",
        "background",
        "store",
        "include",
        "truncation",
        "prompt",
        "prompt_cache_key",
        "safety_identifier",
        "max_tool_calls",
        "metadata",
    }
)
STATEFUL = ("previous_response_id", "conversation", "background")
PART_TYPES = {"input_text", "output_text", "input_image", "input_audio", "input_file", "refusal"}


def _bad(field: str, reason: str) -> Refusal:
    return Refusal(Why.INVALID_REQUEST, f"Invalid value for `{field}`: {reason}", field)


class ResponsesTranslation:
    def request(self, body: Mapping[str, Any]) -> dict[str, Any] | Refusal:
        for field in STATEFUL:
            if body.get(field) not in (None, False):
                return _bad(field, "this gateway does not store responses; send the whole input.")
        messages: list[dict[str, Any]] = []
        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                return _bad("instructions", "expected a string.")
            messages.append({"role": "system", "content": instructions})
        given = body.get("input")
        if isinstance(given, str):
            messages.append({"role": "user", "content": given})
        elif isinstance(given, list) and given:
            for i, item in enumerate(given):
                converted = _item(item, f"input[{i}]")
                if isinstance(converted, Refusal):
                    return converted
                messages.append(converted)
        else:
            return _bad("input", "expected a string or a non-empty array of input items.")
        chat: dict[str, Any] = {k: v for k, v in body.items() if k not in OWN}
        chat["model"], chat["messages"] = body.get("model"), messages
        limit = body.get("max_output_tokens")
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                return _bad("max_output_tokens", "expected an integer of at least 1.")
            chat["max_tokens"] = limit
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return _bad("stream", "expected a boolean.")
        if stream:
            chat["stream"] = True
        tools = body.get("tools")
        if tools:
            if not isinstance(tools, list):
                return _bad("tools", "expected an array.")
            converted_tools = []
            for i, tool in enumerate(tools):
                if not isinstance(tool, Mapping) or tool.get("type") != "function" or not tool.get("name"):
                    return _bad(
                        f"tools[{i}]", "only function tools ({type: function, name, parameters}) are served."
                    )
                function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
                converted_tools.append({"type": "function", "function": function})
            chat["tools"] = converted_tools
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping) and choice.get("type") == "function":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice is not None:
            chat["tool_choice"] = choice
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
            chat["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
            chat["response_format"] = {"type": "json_object"}
        reasoning = body.get("reasoning")
        if isinstance(reasoning, Mapping) and isinstance(reasoning.get("effort"), str):
            chat["reasoning_effort"] = reasoning["effort"]
        return chat

    def response(self, chat: Mapping[str, Any], usage: Usage) -> dict[str, Any]:
        message, finish = first_message(chat)
        output: list[dict[str, Any]] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            output.append(_reasoning_item(reasoning))
        content = message.get("content")
        if isinstance(content, str) and content:
            output.append(_message_item(content, "completed"))
        for call in message.get("tool_calls") or ():
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                function = call["function"]
                output.append(
                    _call_item(
                        str(call.get("id", "")),
                        str(function.get("name", "")),
                        str(function.get("arguments", "")),
                    )
                )
        return _response(
            f"resp_{chat.get('id') or secrets.token_hex(12)}",
            str(chat.get("model", "")),
            output,
            "incomplete" if finish == "length" else "completed",
            usage,
            int(chat.get("created") or time.time()),
        )

    def stream(self, body: Mapping[str, Any], model: str) -> ResponsesStream:
        return ResponsesStream(model)

    def error(
        self, status: int, message: str, type_: str, param: str | None, headers: Mapping[str, str]
    ) -> Response:
        return openai_error(status, message, type_, None, param, headers)


def _item(item: Any, where: str) -> dict[str, Any] | Refusal:
    if not isinstance(item, Mapping):
        return _bad(where, "expected an input item object.")
    kind = item.get("type", "message")
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function"}
        call["function"] = {"name": item.get("name"), "arguments": item.get("arguments", "")}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        return {
            "role": "tool",
            "tool_call_id": item.get("call_id"),
            "content": output if isinstance(output, str) else json.dumps(output),
        }
    if kind != "message":
        return _bad(
            f"{where}.type",
            f"items of type {kind!r} are not served (message, function_call, function_call_output).",
        )
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        return _bad(f"{where}.role", "expected user, assistant, system or developer.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        return _bad(f"{where}.content", "expected a string or an array of content parts.")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        converted = _part(part, f"{where}.content[{j}]")
        if isinstance(converted, Refusal):
            return converted
        parts.append(converted)
    if role == "assistant":  # chat's assistant content is text
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any] | Refusal:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if not isinstance(part, Mapping) or kind not in PART_TYPES:
        return _bad(f"{where}.type", f"expected one of {', '.join(sorted(PART_TYPES))}.")
    if kind in ("input_text", "output_text", "refusal"):
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            return _bad(f"{where}.text", "expected a string.")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            return _bad(f"{where}.image_url", "expected a URL or a data: URL (file_id is not served).")
        image: dict[str, Any] = {"url": url}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, Mapping):
            return _bad(f"{where}.input_audio", "expected {data, format}.")
        return {"type": "input_audio", "input_audio": dict(audio)}
    file = {k: part[k] for k in ("file_data", "file_id", "filename") if k in part}
    return {"type": "file", "file": file}


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _message_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or f"msg_{secrets.token_hex(12)}",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _reasoning_item(text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": f"rs_{secrets.token_hex(12)}",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def _call_item(call_id: str, name: str, arguments: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id or f"fc_{secrets.token_hex(12)}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def _response(
    response_id: str, model: str, output: list[dict[str, Any]], status: str, usage: Usage | None, created: int
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "output": output,
        "usage": None if usage is None else _usage(usage),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "instructions": None,
        "metadata": {},
        "text": {"format": {"type": "text"}},
    }


class ResponsesStream:
    """Chat chunks → Responses events: the message item opens with the first text, function calls
    open their own items; everything closes, and `response.completed` carries the usage, at the end."""

    def __init__(self, model: str) -> None:
        self.id = f"resp_{secrets.token_hex(12)}"
        self.model = model
        self.created = int(time.time())
        self.sequence = 0
        self.started = False
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.message_id: str | None = None
        self.message_index = -1
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → item (with output_index)
        self.items = 0
        self.finish: str | None = None
        self.error: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(kind, payload)

    def _shell(self, status: str) -> dict[str, Any]:
        return _response(self.id, self.model, [], status, None, self.created)

    def feed(self, events: bytes) -> bytes:
        out = bytearray()
        for chunk in chat_chunks(events):
            if chunk is None:
                continue
            if not self.started:
                self.started = True
                self.model = str(chunk.get("model") or self.model)
                out += self._event("response.created", response=self._shell("in_progress"))
                out += self._event("response.in_progress", response=self._shell("in_progress"))
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
        for key in ("reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str):
                self.reasoning.append(delta[key])
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.message_id is None:
                self.message_id = f"msg_{secrets.token_hex(12)}"
                self.message_index = self.items
                self.items += 1
                opened = {**_message_item("", "in_progress", self.message_id), "content": []}
                out += self._event("response.output_item.added", output_index=self.message_index, item=opened)
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                out += self._event(
                    "response.content_part.added",
                    item_id=self.message_id,
                    output_index=self.message_index,
                    content_index=0,
                    part=part,
                )
            self.text.append(content)
            out += self._event(
                "response.output_text.delta",
                item_id=self.message_id,
                output_index=self.message_index,
                content_index=0,
                delta=content,
                logprobs=[],
            )
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, Mapping):
                continue
            index = call.get("index", 0)
            function = _obj(call.get("function"))
            item = self.calls.get(index)
            if item is None:
                item = _call_item(str(call.get("id", "")), str(function.get("name", "")), "")
                item["status"], item["output_index"] = "in_progress", self.items
                self.items += 1
                self.calls[index] = item
                shown = {k: v for k, v in item.items() if k != "output_index"}
                out += self._event(
                    "response.output_item.added", output_index=item["output_index"], item=shown
                )
            piece = function.get("arguments")
            if isinstance(piece, str) and piece:
                item["arguments"] += piece
                out += self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=item["output_index"],
                    delta=piece,
                )
        if isinstance(choice.get("finish_reason"), str):
            self.finish = choice["finish_reason"]
        return bytes(out)

    def close(self, usage: Usage, failed: str | None) -> bytes:
        out = bytearray()
        if not self.started:
            self.started = True
            out += self._event("response.created", response=self._shell("in_progress"))
        failed = failed or self.error
        output: list[tuple[int, dict[str, Any]]] = []
        if self.reasoning:
            output.append((-1, _reasoning_item("".join(self.reasoning))))
        if self.message_id is not None:
            text = "".join(self.text)
            where = {"item_id": self.message_id, "output_index": self.message_index, "content_index": 0}
            out += self._event("response.output_text.done", **where, text=text, logprobs=[])
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out += self._event("response.content_part.done", **where, part=part)
            item = _message_item(text, "completed", self.message_id)
            out += self._event("response.output_item.done", output_index=self.message_index, item=item)
            output.append((self.message_index, item))
        for item in self.calls.values():
            index = item.pop("output_index")
            item["status"] = "completed"
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
            output.append((index, item))
        items = [item for _, item in sorted(output, key=lambda pair: pair[0])]
        if failed is not None:
            response = _response(self.id, self.model, items, "failed", usage, self.created)
            response["error"] = {"code": "server_error", "message": failed}
            return bytes(out + self._event("response.failed", response=response))
        status = "incomplete" if self.finish == "length" else "completed"
        response = _response(self.id, self.model, items, status, usage, self.created)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return bytes(out + self._event(kind, response=response))
