"""Made-up media for the SIMULATED engine: real, small, deterministic files, not a model's output.

- `png(width, height, seed)`: a valid PNG (a two-colour gradient chosen by the seed) that any image
  library opens; rows repeat, so even 1024x1024 compresses to a few kilobytes.
- `wav(seconds, seed)`: a valid 16-bit mono PCM WAV (8 kHz) of short tones; `pcm()` the same samples
  without the header.
- `wav_seconds(data)`: the duration of a PCM WAV from its header, None for anything else.
- `relevance(query, document)`: a score in (0, 1): word overlap first, a hash for the ties.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from functools import lru_cache

SAMPLE_RATE = 8000
_BYTES_PER_SECOND_GUESS = 16_000  # compressed audio of unknown format: ~128 kbit/s


@lru_cache(maxsize=64)
def png(width: int, height: int, seed: int) -> bytes:
    """A `width` x `height` RGB PNG; the same arguments give the same bytes."""
    r0, g0, b0, r1, g1, b1 = seed.to_bytes(8, "big")[:6]
    row = bytearray(b"\x00")  # filter type 0 (None) for every row
    for x in range(width):
        t = x / max(1, width - 1)
        row += bytes((round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t)))
    raw = bytes(row) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, None when `data` is not one."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def pcm(seconds: float, seed: int) -> bytes:
    """16-bit little-endian mono samples at `SAMPLE_RATE`: a tone per quarter second, pitch from the seed."""
    count = max(1, round(seconds * SAMPLE_RATE))
    samples = bytearray()
    digest = hashlib.blake2b(seed.to_bytes(8, "big"), digest_size=32).digest()
    quarter = SAMPLE_RATE // 4
    for start in range(0, count, quarter):
        pitch = 220 + digest[(start // quarter) % len(digest)] * 2
        n = min(quarter, count - start)
        step = 2 * math.pi * pitch / SAMPLE_RATE
        samples += struct.pack(f"<{n}h", *(round(8000 * math.sin(step * i)) for i in range(n)))
    return bytes(samples)


def wav(seconds: float, seed: int) -> bytes:
    """A PCM WAV file of `pcm(seconds, seed)`."""
    data = pcm(seconds, seed)
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def wav_seconds(data: bytes) -> float | None:
    """The duration of a RIFF/WAVE file from its `fmt ` and `data` chunks; None when it is not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    byte_rate: int | None = None
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], int(struct.unpack("<I", data[at + 4 : at + 8])[0])
        if kind == b"fmt " and size >= 16 and at + 16 <= len(data):
            byte_rate = int(struct.unpack("<I", data[at + 16 : at + 20])[0])
        elif kind == b"data":
            if not byte_rate:
                return None
            size = min(size, len(data) - at - 8)  # a streamed WAV may declare 0xFFFFFFFF
            return size / byte_rate
        at += 8 + size + (size & 1)
    return None


def audio_seconds(data: bytes) -> float:
    """A WAV's exact duration, else a guess from the size (what the simulator 'hears')."""
    seconds = wav_seconds(data)
    return seconds if seconds is not None else len(data) / _BYTES_PER_SECOND_GUESS


def relevance(query: str, document: str) -> float:
    """Deterministic relevance: the share of query words the document contains, plus a small hash part
    so that documents without shared words still get distinct scores."""
    words = {w.lower() for w in query.split()}
    shared = len(words & {w.lower() for w in document.split()}) / max(1, len(words))
    digest = hashlib.blake2b(f"{query}\0{document}".encode(), digest_size=4).digest()
    jitter = int.from_bytes(digest, "big") / 2**32
    return round(0.05 + 0.85 * shared + 0.09 * jitter, 6)
