"""Checks of the request fields the gateway itself reads, made before anything is admitted.

The gateway reserves tokens from `max_tokens` / `max_completion_tokens` and `n`, chooses between a
stream and one answer from `stream`, forces `stream_options.include_usage` on streams, and estimates
the prompt from `messages`, `prompt` or `input`. A value of the wrong type there would otherwise be
read as "absent" (the default reservation, no stream) and refused by the engine only after the request
had taken a rate-limit slot and its tokens; so it is refused here, in OpenAI's shape, naming the field
and the reason. Every other field passes through to the engine, which validates its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from gateway.errors import invalid_request
from gateway.refusal import Refusal, Why

MAX_CHOICES = 128  # OpenAI's bound on `n`

# The field that holds the prompt, per endpoint.
PROMPT_FIELDS = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}


MAX_IMAGES = 10  # OpenAI's bound on `n` for images
MAX_DOCUMENTS = 1000
MAX_SPEECH_CHARACTERS = 4096  # OpenAI's bound on `input`


def check_request(body: Mapping[str, Any], endpoint: str) -> Response | None:
    """None when the fields the gateway reads are well-formed; else the 400 that names the first bad one."""
    refusal = invalid(body, endpoint)
    if refusal is None:
        return None
    return invalid_request(refusal.message, refusal.param)


def invalid(body: Mapping[str, Any], endpoint: str) -> Refusal | None:
    """`check_request`'s finding as a refusal (any endpoint; Responses and Messages bodies are checked
    after their translation to chat, gateway/responses_api.py and messages_api.py, which name their
    own fields)."""
    checks = _OTHER_CHECKS.get(endpoint)
    if checks is not None:
        problem = checks(body)
    else:
        problem = _prompt_problem(body, endpoint)
        if problem is None and endpoint != "embeddings":
            problem = _generation_problem(body)
    if problem is None:
        return None
    field, reason = problem
    return Refusal(Why.INVALID_REQUEST, f"Invalid value for `{field}`: {reason}", field)


def _images_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt", "expected a non-empty string."
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= MAX_IMAGES):
        return "n", f"expected an integer from 1 to {MAX_IMAGES}, got {_shown(n)}."
    size = body.get("size")
    if size is not None and not isinstance(size, str):
        return "size", "expected a string such as '1024x1024' or 'auto'."
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return "stream", "expected a boolean."
    partials = body.get("partial_images")
    if partials is not None and (not _is_int(partials) or not 0 <= partials <= 3):
        return "partial_images", f"expected an integer from 0 to 3, got {_shown(partials)}."
    return None


def _edits_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """An image edit's form fields (strings, as a form sends them)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt", "expected a non-empty string."
    n = body.get("n")
    if n is not None and not (isinstance(n, str) and n.isdigit() and 1 <= int(n) <= MAX_IMAGES):
        return "n", f"expected an integer from 1 to {MAX_IMAGES}, got {_shown(n)}."
    if body.get("stream") not in (None, "false", "False"):
        return "stream", "image streams are not served by this gateway; ask without `stream`."
    return None


def _speech_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        return "input", "expected a non-empty string."
    if len(text) > MAX_SPEECH_CHARACTERS:
        return "input", f"expected at most {MAX_SPEECH_CHARACTERS} characters, got {len(text)}."
    voice = body.get("voice")
    if not (isinstance(voice, str) and voice) and not (isinstance(voice, Mapping) and voice.get("id")):
        return "voice", "expected a voice name or an object with an `id`."
    if body.get("stream_format") == "sse":
        return "stream_format", "speech streams are not served by this gateway; ask for `audio`."
    return None


def _rerank_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    if not isinstance(body.get("query"), str) or not body["query"]:
        return "query", "expected a non-empty string."
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        return "documents", "expected a non-empty array of strings or objects."
    if len(documents) > MAX_DOCUMENTS:
        return "documents", f"expected at most {MAX_DOCUMENTS} documents, got {len(documents)}."
    for i, document in enumerate(documents):
        if not isinstance(document, str | Mapping):
            return f"documents[{i}]", "expected a string or an object with `text`."
    top_n = body.get("top_n")
    if top_n is not None and (not _is_int(top_n) or top_n < 0):
        return "top_n", f"expected an integer of at least 0, got {_shown(top_n)}."
    return None


def _transcription_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    if body.get("stream") not in (None, "true", "false"):
        return "stream", "expected true or false."
    return None


_OTHER_CHECKS = {
    "images.generations": _images_problem,
    "images.edits": _edits_problem,
    "audio.speech": _speech_problem,
    "rerank": _rerank_problem,
    "audio.transcriptions": _transcription_problem,
    "audio.translations": _transcription_problem,
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompt_problem(body: Mapping[str, Any], endpoint: str) -> tuple[str, str] | None:
    field = PROMPT_FIELDS[endpoint]
    value = body.get(field)
    if value is None:
        return field, "this field is required."
    if endpoint == "chat.completions":
        if not isinstance(value, list) or not value:
            return field, "expected a non-empty array of message objects."
        for i, message in enumerate(value):
            if not isinstance(message, Mapping):
                return f"{field}[{i}]", "expected a message object."
            if not isinstance(message.get("role"), str):
                return f"{field}[{i}].role", "expected a string (system, user, assistant, tool, ...)."
        return None
    if isinstance(value, str):
        return None
    if not isinstance(value, list) or not value:
        return field, "expected a string, an array of strings, or token ids."
    if all(isinstance(item, str) for item in value) or all(_is_int(item) for item in value):
        return None
    if all(isinstance(item, list) and item and all(_is_int(t) for t in item) for item in value):
        return None
    return field, "expected a string, an array of strings, an array of token ids, or an array of those."


def _generation_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return "stream", "expected a boolean."
    options = body.get("stream_options")
    if options is not None:
        if stream is not True:
            return "stream_options", "only allowed when `stream` is true."
        if not isinstance(options, Mapping):
            return "stream_options", "expected an object."
        include = options.get("include_usage")
        if include is not None and not isinstance(include, bool):
            return "stream_options.include_usage", "expected a boolean."
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is not None and (not _is_int(value) or value < 1):
            return field, f"expected an integer of at least 1, got {_shown(value)}."
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= MAX_CHOICES):
        return "n", f"expected an integer from 1 to {MAX_CHOICES}, got {_shown(n)}."
    return None
