"""The simulator's other modalities through the official OpenAI SDK: real PNGs and WAVs, transcripts,
embeddings in every input form, rerank scores, vision and audio parts in chat; all deterministic."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator

import httpx
import openai
import pytest

from simulator import media
from simulator.app import Simulator, serve_in_thread


@pytest.fixture(scope="module")
def sdk() -> Iterator[tuple[openai.OpenAI, str]]:
    with serve_in_thread(Simulator(accept_any_model=True).app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        yield client, url
        client.close()


def _png_pixels_ok(data: bytes) -> tuple[int, int]:
    """Decode the PNG far enough to prove it is one: chunks' CRCs, and IDAT inflating to the rows."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    at, idat, size = 8, b"", (0, 0)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        idat += body if kind == b"IDAT" else b""
        at += 12 + length
    assert len(zlib.decompress(idat)) == size[1] * (1 + 3 * size[0])
    return size


def test_images_are_real_pngs_of_the_asked_size_and_deterministic(sdk: tuple[openai.OpenAI, str]) -> None:
    client, _ = sdk
    first = client.images.generate(model="img", prompt="a red fox", size="256x128", n=2)
    again = client.images.generate(model="img", prompt="a red fox", size="256x128", n=2)
    assert first.data is not None and again.data is not None and len(first.data) == 2
    images = [base64.b64decode(d.b64_json or "") for d in first.data]
    assert [_png_pixels_ok(i) for i in images] == [(256, 128), (256, 128)]
    assert images[0] != images[1] and [d.b64_json for d in again.data] == [d.b64_json for d in first.data]
    assert first.usage is not None and first.usage.input_tokens == 3
    url = client.images.generate(model="img", prompt="a red fox", response_format="url", size="32x32")
    assert url.data is not None and (url.data[0].url or "").startswith("data:image/png;base64,")
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(model="img", prompt="x", size="huge")
    assert bad.value.body["param"] == "size"  # type: ignore[index]


def test_speech_is_a_wav_that_transcribes_back_with_seconds_of_usage(sdk: tuple[openai.OpenAI, str]) -> None:
    client, _ = sdk
    audio = client.audio.speech.create(model="tts", input="one two three four", voice="alloy").content
    assert audio[:4] == b"RIFF" and media.wav_seconds(audio) == pytest.approx(1.2)
    pcm = client.audio.speech.create(model="tts", input="one two", voice="alloy", response_format="pcm")
    assert len(pcm.content) == round(0.6 * media.SAMPLE_RATE) * 2
    text = client.audio.transcriptions.create(model="asr", file=("a.wav", audio, "audio/wav"))
    assert (
        text.text and text.text == client.audio.transcriptions.create(model="asr", file=("a.wav", audio)).text
    )
    assert text.usage is not None and text.usage.type == "duration" and text.usage.seconds == 2
    verbose = client.audio.transcriptions.create(
        model="asr", file=("a.wav", audio), response_format="verbose_json"
    )
    assert verbose.duration == pytest.approx(1.2) and verbose.text == text.text
    plain = client.audio.transcriptions.create(model="asr", file=("a.wav", audio), response_format="text")
    assert plain.strip() == text.text


@pytest.mark.parametrize(
    ("given", "count", "tokens"),
    [("a b c", 1, 3), (["a b", "c"], 2, 3), ([1, 2, 3, 4], 1, 4), ([[1, 2], [3]], 2, 3)],
)
def test_embeddings_take_every_input_form_and_both_encodings(
    sdk: tuple[openai.OpenAI, str], given: object, count: int, tokens: int
) -> None:
    client, _ = sdk
    as_base64 = client.embeddings.create(model="emb", input=given, dimensions=8)  # type: ignore[arg-type]
    as_float = client.embeddings.create(model="emb", input=given, dimensions=8, encoding_format="float")  # type: ignore[arg-type]
    assert len(as_base64.data) == count and as_base64.usage.prompt_tokens == tokens
    for a, b in zip(as_base64.data, as_float.data, strict=True):
        assert len(a.embedding) == 8 and a.embedding == pytest.approx(b.embedding, abs=1e-6)


def test_rerank_scores_every_document_best_first_under_its_three_paths(
    sdk: tuple[openai.OpenAI, str],
) -> None:
    _, url = sdk
    body = {"model": "rr", "query": "big cat", "documents": ["a dog", "the big cat", {"text": "cat"}]}
    answers = [
        httpx.post(f"{url}{path}", json=body).json() for path in ("/v1/rerank", "/rerank", "/v2/rerank")
    ]
    results = answers[0]["results"]
    assert [r["index"] for r in results] == [1, 2, 0] and results[0]["document"] == {"text": "the big cat"}
    assert [a["results"] for a in answers[1:]] == [results, results]
    assert answers[0]["usage"] == {"prompt_tokens": 3 * 2 + 2 + 3 + 1, "total_tokens": 12}
    top = httpx.post(f"{url}/v1/rerank", json={**body, "top_n": 1}).json()["results"]
    assert top == results[:1]
    bad = httpx.post(f"{url}/v1/rerank", json={**body, "documents": ["ok", 3]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "documents[1]"


def test_chat_prices_image_and_audio_parts_and_names_a_broken_one(sdk: tuple[openai.OpenAI, str]) -> None:
    client, _ = sdk
    wav = base64.b64encode(media.wav(2.0, 1)).decode()
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
    ]
    reply = client.chat.completions.create(model="vl", messages=[{"role": "user", "content": content}])  # type: ignore[list-item,misc]
    assert reply.usage is not None and reply.usage.prompt_tokens == 3 + 4 + 3 + 85 + 20
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="vl",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],  # type: ignore[list-item,misc]
        )
    assert bad.value.body["param"] == "messages[0].content[0].image_url"  # type: ignore[index]
