"""What a model can serve, checked before admission: a request it cannot serve is refused with a 400
naming the part (OpenAI's `param`), before any limit or quota is charged and before any engine sees it.

A model's capabilities are its MaaS model's own list, else its plaza model's (gateway/snapshot.py);
a model with neither is not checked (an external provider we know nothing about).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gateway.endpoint import EDITS, IMAGES, Endpoint, Modality
from gateway.refusal import Refusal, Why
from gateway.snapshot import ModelEntry

# Content part types (chat, Responses, Anthropic Messages, vLLM's extras) → the capabilities that read them.
PART_NEEDS: dict[str, tuple[str, frozenset[str]]] = {
    kind: ("image input", frozenset({"vision"}))
    for kind in ("image_url", "input_image", "image", "image_pil", "image_embeds")
}
PART_NEEDS.update(
    {
        kind: ("audio input", frozenset({"speech-to-text", "audio-to-audio"}))
        for kind in ("input_audio", "audio_url", "audio_embeds")
    }
)
PART_NEEDS.update(
    {kind: ("video input", frozenset({"video-understanding"})) for kind in ("video_url", "video_embeds")}
)
WHAT = {
    Modality.TEXT: "chat or text generation",
    Modality.EMBEDDING: "embeddings",
    Modality.IMAGE: "image generation",
    Modality.TRANSCRIPTION: "speech to text",
    Modality.SPEECH: "text to speech",
    Modality.RERANK: "rerank",
}


def check(model: ModelEntry, endpoint: Endpoint, body: Mapping[str, Any]) -> Refusal | None:
    caps = model.capabilities
    if caps is not None:
        if not caps & endpoint.needs:
            offered = ", ".join(sorted(caps)) or "nothing"
            return _refuse(
                f"The model `{model.public_id}` does not serve {WHAT[endpoint.modality]} "
                f"(it serves: {offered}).",
                "model",
            )
        if endpoint.modality is Modality.TEXT:
            for param, kind in _parts(body):
                what, needs = PART_NEEDS.get(kind, ("", frozenset()))
                if needs and not caps & needs:
                    return _refuse(
                        f"The model `{model.public_id}` does not accept {what} ({kind} parts).", param
                    )
    if endpoint in (IMAGES, EDITS) and model.image_sizes is not None:
        size = body.get("size")
        if size is not None and size not in model.image_sizes:
            offered = ", ".join(sorted(model.image_sizes))
            return _refuse(
                f"The model `{model.public_id}` does not offer size {size!r}; it offers {offered}.", "size"
            )
    return None


def _refuse(message: str, param: str) -> Refusal:
    return Refusal(Why.UNSUPPORTED, message, param)


def _parts(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(param, type) of every typed content part of a chat (`messages`), a Responses `input` or an
    Anthropic `messages` list."""
    for field in ("messages", "input"):
        items = body.get(field)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            content = item.get("content") if isinstance(item, Mapping) else None
            if isinstance(item, Mapping) and isinstance(item.get("type"), str) and content is None:
                yield f"{field}[{i}]", item["type"]  # a bare Responses input item
            if isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, Mapping) and isinstance(part.get("type"), str):
                        yield f"{field}[{i}].content[{j}]", part["type"]
