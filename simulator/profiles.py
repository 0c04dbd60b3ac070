"""How fast each simulated model answers: profiles that roughly match the models' sizes, so comparing
models in the demo (the gateway's simulated servings, a `local` region's simulated engines) shows
different speeds. Made-up numbers, not measurements."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelProfile:
    """How one simulated model behaves."""

    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0  # 0: no decode delay
    completion_tokens: int = 32  # the answer's natural length when max_tokens does not cut it
    embedding_dimensions: int = 32

    def __post_init__(self) -> None:
        if self.ttft_ms < 0 or self.tokens_per_second < 0 or self.completion_tokens < 1:
            raise ValueError("ttft_ms and tokens_per_second must be >= 0, completion_tokens >= 1")


# time to first token (ms), decode speed (tokens/s), natural answer length (tokens)
PROFILES = {
    "deepseek-r1": ModelProfile(ttft_ms=450, tokens_per_second=30, completion_tokens=96),
    "qwen2.5-72b-instruct": ModelProfile(ttft_ms=250, tokens_per_second=35, completion_tokens=64),
    "qwen3-32b": ModelProfile(ttft_ms=180, tokens_per_second=50, completion_tokens=64),
    "qwen2.5-7b-instruct": ModelProfile(ttft_ms=60, tokens_per_second=110, completion_tokens=64),
}
DEFAULT_PROFILE = ModelProfile(ttft_ms=120, tokens_per_second=60, completion_tokens=64)


def profile_for(model: str) -> ModelProfile:
    """The profile of `model`, or of the longest profiled name it starts with (`qwen2.5-7b-instruct-
    local` answers like `qwen2.5-7b-instruct`), else the default."""
    if model in PROFILES:
        return PROFILES[model]
    prefixes = [name for name in PROFILES if model.startswith(name)]
    return PROFILES[max(prefixes, key=len)] if prefixes else DEFAULT_PROFILE
