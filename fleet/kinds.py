"""What kind of model a serving runs, and which engines serve that kind.

A model's capabilities use the platform's one vocabulary (the plaza's and the gateway's words, in
`fleet.spec.ModelCapability`); its *kind* is what an engine has to do with it, and decides how the
planner sizes it (docs/ops-guide.md, "What serves each kind"):

- `llm`: generates tokens (chat, vision, omni); sized by weights + KV cache for one full-length
  sequence;
- `embedding`, `rerank`: pooling models, one forward pass per input, no KV cache kept;
- `transcription`: Whisper-class encoder-decoder speech-to-text; a 448-token decoder, no context to size;
- `speech`: text to speech;
- `diffusion`: image (or video) generation with a diffusion pipeline; not a language model at all.

The non-LLM kinds are sized by weights plus activation headroom (`ACTIVATION_GIB`), never by a
context length.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Kind = Literal["llm", "embedding", "rerank", "transcription", "speech", "diffusion"]

# What a kind is called in messages.
DESCRIBED: dict[str, str] = {
    "llm": "language model",
    "embedding": "embedding model",
    "rerank": "reranker",
    "transcription": "speech-to-text model",
    "speech": "text-to-speech model",
    "diffusion": "image-generation (diffusion) model",
}

# Activation headroom per replica beside the weights, GiB, for the kinds sized without a KV cache.
# Pooling and Whisper batches are small next to their weights; a diffusion step at 1024x1024 over a
# 20B MMDiT holds latents, attention over ~4k image tokens and the VAE decode (the reason SGLang
# Diffusion offers CPU offload flags at all).
ACTIVATION_GIB: dict[str, float] = {
    "embedding": 2.0,
    "rerank": 2.0,
    "transcription": 2.0,
    "speech": 4.0,
    "diffusion": 8.0,
}


def a(kind: str) -> str:
    """'a language model', 'an image-generation (diffusion) model'."""
    text = DESCRIBED[kind]
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


_GENERATES_MEDIA = ("image-generation", "image-editing", "video-generation")


def kind_of(capabilities: Iterable[str]) -> Kind:
    """The kind of a model with these capabilities; an unknown mix is a language model."""
    caps = frozenset(capabilities)
    if caps.intersection(_GENERATES_MEDIA):
        return "diffusion"
    if "text-to-speech" in caps:
        return "speech"
    if "text-generation" in caps:
        return "llm"
    if "rerank" in caps:
        return "rerank"
    if "embedding" in caps:
        return "embedding"
    if "speech-to-text" in caps:
        return "transcription"
    return "llm"


# The capability a model needs for each kind of multimodal_limits input.
READS: dict[str, tuple[str, ...]] = {
    "image": ("vision",),
    "video": ("video-understanding",),
    "audio": ("speech-to-text", "audio-to-audio"),
}
