"""How fast each simulated model answers: profiles that roughly match the models' sizes, so comparing
models in the demo (the gateway's simulated servings, a `local` region's simulated engines) shows
different speeds. Made-up numbers, not measurements."""

from __future__ import annotations

from simulator.app import ModelProfile

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
