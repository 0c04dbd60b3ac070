"""Words both the API and the console use for choices (the console offers exactly what the API accepts)."""

from __future__ import annotations

from enum import StrEnum
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


# What runs: the observed state of a serving's replicas and placements (portal/observe/states.py says
# how replicas sum up), and the console's word for each.
class State(StrEnum):
    COMMITTED = "committed"  # in git; nothing observed yet
    PENDING = "pending"  # not scheduled (the scheduler's message says why) / process not started
    PULLING = "pulling"  # pulling the image
    DOWNLOADING = "downloading"  # the model init container is fetching weights
    LOADING = "loading"  # started; the startup/readiness probe does not pass yet
    READY = "ready"
    DEGRADED = "degraded"  # some replicas ready (placements only)
    FAILED = "failed"
    STOPPED = "stopped"  # scaled to zero / stopped
    DELETED = "deleted"


# Start-up phases in order: a placement with no ready replica shows the furthest one reached.
PROGRESS = (State.PENDING, State.PULLING, State.DOWNLOADING, State.LOADING)


def badge(state: str) -> str:
    """The console's word for a state: the start-up phases are all "starting"."""
    return "starting" if state in PROGRESS else state
