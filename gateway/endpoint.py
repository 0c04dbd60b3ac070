"""The gateway's endpoints as data: what each one forwards where, what it serves (its modality, the
capability a model needs for it), and how its body and answer travel.

`app.py` runs every endpoint through one pipeline (key → body → model → checks → admission → relay →
metering → usage row); this table is what differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Modality(StrEnum):
    """What a request is served as; the usage row's `modality`, and what its units count."""

    TEXT = "text"  # tokens
    EMBEDDING = "embedding"  # tokens
    IMAGE = "image"  # images generated
    TRANSCRIPTION = "transcription"  # seconds of audio heard
    SPEECH = "speech"  # characters spoken
    RERANK = "rerank"  # documents scored


# Capabilities (store.vocabulary.Capability) of a model that can answer a chat: any generative one.
GENERATIVE = frozenset(
    {"text-generation", "reasoning", "tools", "vision", "audio-to-audio", "video-understanding"}
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # the usage row's `endpoint` and the metrics label
    path: str  # upstream, under a target's OpenAI-compatible base (`…/v1`)
    modality: Modality
    needs: frozenset[str]  # a model serves it with any one of these capabilities
    streams: bool = False  # `stream: true` is relayed as server-sent events
    form: bool = False  # a multipart/form-data body (an upload)
    files: tuple[str, ...] = ()  # an upload's file fields; the first is required
    binary: bool = False  # the answer is bytes (audio), relayed as they are


CHAT = Endpoint("chat.completions", "/chat/completions", Modality.TEXT, GENERATIVE, streams=True)
COMPLETIONS = Endpoint("completions", "/completions", Modality.TEXT, GENERATIVE, streams=True)
EMBEDDINGS = Endpoint("embeddings", "/embeddings", Modality.EMBEDDING, frozenset({"embedding"}))
IMAGES = Endpoint(
    "images.generations", "/images/generations", Modality.IMAGE, frozenset({"image-generation"}), streams=True
)
AUDIO_FILE = ("file",)
TRANSCRIPTIONS = Endpoint(
    "audio.transcriptions",
    "/audio/transcriptions",
    Modality.TRANSCRIPTION,
    frozenset({"speech-to-text"}),
    streams=True,
    form=True,
    files=AUDIO_FILE,
)
TRANSLATIONS = Endpoint(
    "audio.translations",
    "/audio/translations",
    Modality.TRANSCRIPTION,
    frozenset({"speech-to-text"}),
    streams=True,
    form=True,
    files=AUDIO_FILE,
)
# Images to edit: one `image`, or several as `image[]` (the OpenAI SDK's array format), a `mask`.
EDITS = Endpoint(
    "images.edits",
    "/images/edits",
    Modality.IMAGE,
    frozenset({"image-editing"}),
    form=True,
    files=("image", "image[]", "mask", "markup"),
)
SPEECH = Endpoint(
    "audio.speech", "/audio/speech", Modality.SPEECH, frozenset({"text-to-speech"}), binary=True
)
RERANK = Endpoint("rerank", "/rerank", Modality.RERANK, frozenset({"rerank"}))
# Translated to chat completions upstream (gateway/responses_api.py, gateway/messages_api.py): every
# engine and every OpenAI-compatible provider speaks chat, and chat's metering is the exact one.
RESPONSES = Endpoint("responses", "/chat/completions", Modality.TEXT, GENERATIVE, streams=True)
MESSAGES = Endpoint("messages", "/chat/completions", Modality.TEXT, GENERATIVE, streams=True)

ENDPOINTS = {
    e.name: e
    for e in (
        CHAT,
        COMPLETIONS,
        EMBEDDINGS,
        IMAGES,
        EDITS,
        TRANSCRIPTIONS,
        TRANSLATIONS,
        SPEECH,
        RERANK,
        RESPONSES,
        MESSAGES,
    )
}
