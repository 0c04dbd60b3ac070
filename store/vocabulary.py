"""Words both the API and the console use for choices (the console offers exactly what the API accepts)."""

from __future__ import annotations

from typing import Literal, get_args

# How a MaaS model spreads requests over its targets (the gateway maps them to its router strategies).
Strategy = Literal["round_robin", "weighted", "random", "least_busy", "latency"]

Capability = Literal[
    "text-generation",
    "reasoning",
    "tools",
    "vision",
    "embedding",
    "rerank",
    "image-generation",
    "image-editing",
    "speech-to-text",
    "text-to-speech",
    "audio-to-audio",
    "video-understanding",
    "video-generation",
]
CAPABILITIES: tuple[str, ...] = get_args(Capability)
# The dtypes the core's planner sizes weights with (fleet.spec.ModelSource.dtype).
Dtype = Literal["bfloat16", "float16", "float32", "fp8", "int8", "int4"]
