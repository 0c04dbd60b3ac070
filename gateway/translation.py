"""APIs the gateway serves by translating them to chat completions upstream (the Responses API,
Anthropic Messages): what a translation provides, and the chat stream's events as objects.

Why translate rather than forward: every engine and OpenAI-compatible provider speaks chat, while
`/v1/responses` and `/v1/messages` depend on the engine and its version; and chat's metering (usage
forced on streams, estimates when it is missing) is the exact one, so these APIs bill the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from starlette.responses import Response

from gateway.metering import Usage
from gateway.refusal import Refusal

_EVENT_END = re.compile(rb"\r?\n\r?\n")


class StreamTranslator(Protocol):
    def feed(self, events: bytes) -> bytes:
        """Complete chat SSE events in (as the meter forwards them), the API's events out."""
        ...

    def close(self, usage: Usage, failed: str | None) -> bytes:
        """The stream's last events: its end with the usage (the engine's, or the estimate), or its
        failure (`failed`: what went wrong)."""
        ...


class Translation(Protocol):
    def request(self, body: Mapping[str, Any]) -> dict[str, Any] | Refusal:
        """The chat completion request for a client's body, or a refusal naming the client's field."""
        ...

    def response(self, chat: Mapping[str, Any], usage: Usage) -> dict[str, Any]:
        """The client's answer for a chat completion."""
        ...

    def stream(self, body: Mapping[str, Any], model: str) -> StreamTranslator: ...

    def error(
        self, status: int, message: str, type_: str, param: str | None, headers: Mapping[str, str]
    ) -> Response:
        """An error in the API's own shape."""
        ...


def chat_chunks(events: bytes) -> Iterator[dict[str, Any] | None]:
    """The JSON chunks of complete SSE events; None for `[DONE]`. Comments and broken data are skipped."""
    for raw in _EVENT_END.split(events):
        data = b"\n".join(
            line[6:] if line.startswith(b"data: ") else line[5:]
            for line in raw.replace(b"\r\n", b"\n").split(b"\n")
            if line.startswith(b"data:")
        )
        if not data:
            continue
        if data == b"[DONE]":
            yield None
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        if isinstance(chunk, dict):
            yield chunk


def sse(event: str, payload: Mapping[str, Any]) -> bytes:
    """One named event (`event:` equal to the payload's type, as OpenAI and Anthropic send them)."""
    return f"event: {event}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def obj(value: Any) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty one (for reading optional nested fields)."""
    return value if isinstance(value, Mapping) else {}


def first_message(chat: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """A chat completion's first choice: its message (empty when absent) and its finish reason."""
    choices = chat.get("choices")
    choice = obj(choices[0]) if isinstance(choices, list) and choices else {}
    reason = choice.get("finish_reason")
    return obj(choice.get("message")), reason if isinstance(reason, str) else None
