"""API call examples for a model's detail page: curl, Python and Node.js with the OpenAI SDKs.

Generated from the templates below with every value JSON-encoded (a valid literal in JSON, Python
and JavaScript alike), so a model id can never break the snippet it is pasted into. The examples
read the key from MODELFLEET_API_KEY rather than embedding one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from string import Template
from typing import Any

from portal.plaza.schemas import ApiExamples

KEY_ENV = "MODELFLEET_API_KEY"

_CURL = Template(
    """curl $url \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $$$key_env" \\
  -d '$body'"""
)

_PYTHON_HEAD = Template(
    """import os

from openai import OpenAI

client = OpenAI(base_url=$base_url, api_key=os.environ[$key_env])
"""
)

_NODE_HEAD = Template(
    """import OpenAI from "openai";

const client = new OpenAI({ baseURL: $base_url, apiKey: process.env[$key_env] });
"""
)

_PYTHON_CALL = {
    "chat": Template(
        """response = client.chat.completions.create(
    model=$model,
    messages=[{"role": "user", "content": $prompt}],
)
print(response.choices[0].message.content)
"""
    ),
    "embedding": Template(
        """response = client.embeddings.create(model=$model, input=[$text])
print(len(response.data[0].embedding))
"""
    ),
    "image": Template(
        """response = client.images.generate(model=$model, prompt=$prompt, size="1024x1024")
print(response.data[0].b64_json is not None)
"""
    ),
    # The OpenAI SDKs have no rerank call; their generic POST reaches the gateway's /v1/rerank.
    "rerank": Template(
        """response = client.post(
    "/rerank",
    body={"model": $model, "query": $prompt, "documents": [$text, $other]},
    cast_to=object,
)
print(response)
"""
    ),
}

_NODE_CALL = {
    "chat": Template(
        """const response = await client.chat.completions.create({
  model: $model,
  messages: [{ role: "user", content: $prompt }],
});
console.log(response.choices[0].message.content);
"""
    ),
    "embedding": Template(
        """const response = await client.embeddings.create({ model: $model, input: [$text] });
console.log(response.data[0].embedding.length);
"""
    ),
    "image": Template(
        """const response = await client.images.generate({
  model: $model,
  prompt: $prompt,
  size: "1024x1024",
});
console.log(response.data[0].b64_json !== undefined);
"""
    ),
    "rerank": Template(
        """const response = await client.post("/rerank", {
  body: { model: $model, query: $prompt, documents: [$text, $other] },
});
console.log(response);
"""
    ),
}

PROMPT = "Hello! What can you do?"
TEXT = "Modelfleet serves large models on your own GPUs."
OTHER = "The weather is nice today."


def kind_of(capabilities: Sequence[str]) -> str:
    """Which endpoint the examples call: chat unless the model only embeds, ranks or draws."""
    caps = set(capabilities)
    if caps & {"text-generation", "vision", "reasoning", "tools"}:
        return "chat"
    if "embedding" in caps:
        return "embedding"
    if "rerank" in caps:
        return "rerank"
    if "image-generation" in caps:
        return "image"
    return "chat"


def _curl_body(kind: str, model: str) -> tuple[str, dict[str, Any]]:
    if kind == "embedding":
        return "embeddings", {"model": model, "input": [TEXT]}
    if kind == "rerank":
        return "rerank", {"model": model, "query": PROMPT, "documents": [TEXT, OTHER]}
    if kind == "image":
        return "images/generations", {"model": model, "prompt": PROMPT, "size": "1024x1024"}
    return "chat/completions", {"model": model, "messages": [{"role": "user", "content": PROMPT}]}


def api_examples(gateway_base_url: str, model: str, capabilities: Sequence[str]) -> ApiExamples:
    base_url = f"{gateway_base_url.rstrip('/')}/v1"
    kind = kind_of(capabilities)
    path, body = _curl_body(kind, model)
    shell_body = json.dumps(body, ensure_ascii=False).replace("'", "'\\''")  # inside '…'
    values = {
        "base_url": json.dumps(base_url),
        "key_env": json.dumps(KEY_ENV),
        "model": json.dumps(model),
        "prompt": json.dumps(PROMPT),
        "text": json.dumps(TEXT),
        "other": json.dumps(OTHER),
    }
    return ApiExamples(
        base_url=base_url,
        curl=_CURL.substitute(url=f"{base_url}/{path}", key_env=KEY_ENV, body=shell_body),
        python=_PYTHON_HEAD.substitute(values) + "\n" + _PYTHON_CALL[kind].substitute(values),
        node=_NODE_HEAD.substitute(values) + "\n" + _NODE_CALL[kind].substitute(values),
    )
