"""API call examples for a model's detail page: curl, Python and Node.js with the OpenAI SDKs.

Generated from the templates below with every value JSON-encoded (a valid literal in JSON, Python
and JavaScript alike), so a model id can never break the snippet it is pasted into. The examples
read the key from MODELFLEET_API_KEY rather than embedding one.
"""

from __future__ import annotations

import json
import shlex
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

_CURL_FORM = Template(
    """curl $url \\
  -H "Authorization: Bearer $$$key_env" \\
  -F model=$model \\
  -F file=@$audio"""
)

# A 1x1 PNG: the vision examples send a real image and run offline (the demo's simulated engines too).
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGOIqp0DAAKoAXRcvbGTAAAAAElFTkSuQmCC"
)
AUDIO_FILE = "speech.wav"  # what the speech example writes and the transcription example reads
IMAGE_FILE = "input.png"  # what the image-editing example edits

_PYTHON_CALL = {
    "edit": Template(
        """with open($image, "rb") as image:
    response = client.images.edit(model=$model, image=image, prompt=$edit)
print(response.data[0].b64_json is not None)
"""
    ),
    "vision": Template(
        """response = client.chat.completions.create(
    model=$model,
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": $pixel}},
            ],
        }
    ],
)
print(response.choices[0].message.content)
"""
    ),
    "transcription": Template(
        """with open($audio, "rb") as audio:
    transcript = client.audio.transcriptions.create(model=$model, file=audio)
print(transcript.text)
"""
    ),
    "speech": Template(
        """response = client.audio.speech.create(
    model=$model, voice="alloy", input=$text, response_format="wav"
)
response.write_to_file($audio)
"""
    ),
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
        """response = client.images.generate(model=$model, prompt=$prompt)
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
    "edit": Template(
        """import fs from "node:fs";

const response = await client.images.edit({
  model: $model,
  image: fs.createReadStream($image),
  prompt: $edit,
});
console.log(response.data[0].b64_json !== undefined);
"""
    ),
    "vision": Template(
        """const response = await client.chat.completions.create({
  model: $model,
  messages: [
    {
      role: "user",
      content: [
        { type: "text", text: "What is in this picture?" },
        { type: "image_url", image_url: { url: $pixel } },
      ],
    },
  ],
});
console.log(response.choices[0].message.content);
"""
    ),
    "transcription": Template(
        """import fs from "node:fs";

const transcript = await client.audio.transcriptions.create({
  model: $model,
  file: fs.createReadStream($audio),
});
console.log(transcript.text);
"""
    ),
    "speech": Template(
        """import fs from "node:fs";

const response = await client.audio.speech.create({
  model: $model,
  voice: "alloy",
  input: $text,
  response_format: "wav",
});
fs.writeFileSync($audio, Buffer.from(await response.arrayBuffer()));
"""
    ),
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
        """const response = await client.images.generate({ model: $model, prompt: $prompt });
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
EDIT = "Add a red scarf."


def kind_of(capabilities: Sequence[str]) -> str:
    """Which endpoint the examples call: chat (with an image for a vision model) unless the model
    only embeds, ranks, draws, transcribes or speaks."""
    caps = set(capabilities)
    if "vision" in caps:
        return "vision"
    if caps & {"text-generation", "reasoning", "tools"}:
        return "chat"
    for capability, kind in (
        ("embedding", "embedding"),
        ("rerank", "rerank"),
        ("image-generation", "image"),
        ("image-editing", "edit"),
        ("speech-to-text", "transcription"),
        ("text-to-speech", "speech"),
    ):
        if capability in caps:
            return kind
    return "chat"


def _curl_body(kind: str, model: str) -> tuple[str, dict[str, Any]]:
    if kind == "embedding":
        return "embeddings", {"model": model, "input": [TEXT]}
    if kind == "rerank":
        return "rerank", {"model": model, "query": PROMPT, "documents": [TEXT, OTHER]}
    if kind == "image":
        return "images/generations", {"model": model, "prompt": PROMPT}  # the model's own default size
    if kind == "speech":
        return "audio/speech", {"model": model, "voice": "alloy", "input": TEXT, "response_format": "wav"}
    if kind == "vision":
        parts = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": PIXEL}},
        ]
        return "chat/completions", {"model": model, "messages": [{"role": "user", "content": parts}]}
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
        "pixel": json.dumps(PIXEL),
        "audio": json.dumps(AUDIO_FILE),
        "image": json.dumps(IMAGE_FILE),
        "edit": json.dumps(EDIT),
    }
    if kind == "edit":  # an upload: multipart, not JSON
        fields = {"model": model, "prompt": EDIT}
        said = " \\\n".join(f"  -F {shlex.quote(f'{k}={v}')}" for k, v in fields.items())
        curl = (
            f'curl {base_url}/images/edits \\\n  -H "Authorization: Bearer ${KEY_ENV}" \\\n'
            f"{said} \\\n  -F image=@{IMAGE_FILE}"
        )
    elif kind == "transcription":  # an upload: multipart, not JSON
        quoted = shlex.quote(model)
        curl = _CURL_FORM.substitute(
            url=f"{base_url}/audio/transcriptions", key_env=KEY_ENV, model=quoted, audio=AUDIO_FILE
        )
    else:
        curl = _CURL.substitute(url=f"{base_url}/{path}", key_env=KEY_ENV, body=shell_body)
        if kind == "speech":
            curl += f" \\\n  -o {AUDIO_FILE}"
    return ApiExamples(
        base_url=base_url,
        curl=curl,
        python=_PYTHON_HEAD.substitute(values) + "\n" + _PYTHON_CALL[kind].substitute(values),
        node=_NODE_HEAD.substitute(values) + "\n" + _NODE_CALL[kind].substitute(values),
    )
