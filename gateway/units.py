"""Units where tokens are not the unit: what a request asks for (charged by `upm`/`upd` limits at
admission, exactly) and what it was served (the usage row's `units`, priced by `price_per_unit`).

| modality      | unit                 | asked (admission)                | served (usage row)         |
|---------------|----------------------|----------------------------------|----------------------------|
| image         | an image             | `n` (default 1)                  | images in the answer       |
| transcription | a second of audio,   | a WAV's duration from its header | the engine's usage.seconds |
|               | rounded up           | else the size at 16 kB/s         | rounded up, else as asked  |
| speech        | a character of input | `len(input)`                     | the same                   |
| rerank        | a document           | `len(documents)`                 | the same                   |
| text, embedding | none               | 0                                | 0                          |
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from gateway.endpoint import Endpoint, Modality

BYTES_PER_SECOND_GUESS = 16_000


def asked(endpoint: Endpoint, body: Mapping[str, Any], upload: bytes | None = None) -> int:
    modality = endpoint.modality
    if modality is Modality.IMAGE:
        n = body.get("n", 1)
        if isinstance(n, str) and n.isdigit():  # a form's field (image edits)
            n = int(n)
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    if modality is Modality.RERANK:
        documents = body.get("documents")
        return len(documents) if isinstance(documents, list) else 0
    if modality is Modality.SPEECH:
        text = body.get("input")
        return len(text) if isinstance(text, str) else 0
    if modality is Modality.TRANSCRIPTION and upload is not None:
        seconds = wav_seconds(upload)
        return math.ceil(seconds if seconds is not None else len(upload) / BYTES_PER_SECOND_GUESS)
    return 0


def streamed(modality: str, items: int, usage: Any, asked_units: int) -> int:
    """The units of a streamed answer: the images completed (a stream cut short bills what came), the
    transcript's seconds from its last event's usage."""
    if modality == Modality.IMAGE:
        return items
    if modality == Modality.TRANSCRIPTION:
        seconds = usage.get("seconds") if isinstance(usage, Mapping) else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            return math.ceil(seconds)
        return asked_units if items else 0
    return 0


def served(endpoint: Endpoint, answer: Any, asked_units: int) -> int:
    """The units of a 200 answer (parsed JSON, or None for bytes)."""
    modality = endpoint.modality
    if modality is Modality.IMAGE and isinstance(answer, Mapping) and isinstance(answer.get("data"), list):
        return len(answer["data"])
    if modality is Modality.TRANSCRIPTION and isinstance(answer, Mapping):
        usage = answer.get("usage")
        seconds = usage.get("seconds") if isinstance(usage, Mapping) else None
        if seconds is None:
            seconds = answer.get("duration")  # verbose_json without usage
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            return math.ceil(seconds)
    return asked_units


def wav_seconds(data: bytes) -> float | None:
    """The duration of a RIFF/WAVE file from its `fmt ` and `data` chunks; None when it is not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    byte_rate = 0
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], int(struct.unpack("<I", data[at + 4 : at + 8])[0])
        if kind == b"fmt " and size >= 16 and at + 20 <= len(data):
            byte_rate = int(struct.unpack("<I", data[at + 16 : at + 20])[0])
        elif kind == b"data":
            return min(size, len(data) - at - 8) / byte_rate if byte_rate else None
        at += 8 + size + (size & 1)
    return None
