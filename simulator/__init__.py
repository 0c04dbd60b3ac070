"""The engine simulator: an OpenAI-compatible stand-in for vLLM/SGLang (made-up text, real usage)."""
