"""The gateway: the OpenAI-compatible data plane (API keys, limits, routing, metering)."""
