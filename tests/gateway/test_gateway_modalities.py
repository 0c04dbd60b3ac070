"""Every modality end to end: the official OpenAI and Anthropic SDKs → the gateway → the simulator,
with keys, models and prices made through the portal's API; usage rows exact, capabilities checked
before admission (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from portal.plaza.examples import AUDIO_FILE, IMAGE_FILE, KEY_ENV, api_examples
from portal.services import Services
from simulator import media
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import Harness, harness

PRICES = ("1", "2", "0.5")  # per million input, output, cached tokens


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    simulator = Simulator({"m": ModelProfile(completion_tokens=8)}, accept_any_model=True)
    with serve_in_thread(simulator.app) as url:
        yield f"{url}/v1"


@pytest.fixture
def gw(client: TestClient, services: Services, engine: str) -> Iterator[Harness]:
    def target(name: str) -> list[dict[str, str]]:
        return [{"kind": "external", "base_url": engine, "upstream_model": name}]

    with harness(client, services) as h:
        h.workspace("team-a")
        h.model("chat", target("m"), capabilities=["text-generation"])
        h.model("vl", target("m"), capabilities=["text-generation", "vision"])
        h.model("emb", target("e"), capabilities=["embedding"])
        h.model(
            "img",
            target("i"),
            capabilities=["image-generation"],
            image_sizes=["64x64", "32x16"],
            price_per_unit=0.04,
        )
        h.model("edit", target("x"), capabilities=["image-editing"], price_per_unit=0.04)
        h.model("tts", target("t"), capabilities=["text-to-speech"], price_per_unit=0.000015)
        h.model("asr", target("a"), capabilities=["speech-to-text"], price_per_unit=0.0001)
        h.model("rr", target("r"), capabilities=["rerank"], price_per_unit=0.002)
        h.key("main", "team-a")
        yield h


def row(gw: Harness, n: int) -> dict[str, object]:
    r = gw.records(n)[n - 1]
    return {
        "endpoint": r.endpoint,
        "modality": r.modality,
        "units": r.units,
        "prompt": r.prompt_tokens,
        "completion": r.completion_tokens,
        "status": r.status,
        "cost": Decimal(r.cost),
        "stream": r.stream,
    }


def test_images_are_served_counted_and_priced_per_image(gw: Harness) -> None:
    answer = gw.sdk().images.generate(model="img", prompt="a red fox", size="64x64", n=2)
    assert answer.data is not None and len(answer.data) == 2
    assert media.png_size(base64.b64decode(answer.data[0].b64_json or "")) == (64, 64)
    assert row(gw, 1) == {
        "endpoint": "images.generations",
        "modality": "image",
        "units": 2,
        "prompt": 3,
        "completion": 0,
        "status": 200,
        "cost": Decimal("0.080003000"),  # 2 × 0.04 + 3 tokens × 1 per million
        "stream": False,
    }
    scraped = httpx.get(f"{gw.url}/metrics").text  # and the Prometheus figures
    assert 'modelfleet_gateway_units_total{modality="image",model="img"}' in scraped
    since = (gw.records(1)[0].at - timedelta(hours=1)).strftime("%Y-%m-%dT%H:00Z")  # statistics per model
    report = gw.client.get("/api/usage", params={"group_by": "model", "since": since}).json()
    assert [(i["model"], i["units"], i["cost"]) for i in report["items"]] == [("img", 2, "0.080003000")]


def test_speech_and_transcription_are_metered_in_characters_and_seconds(gw: Harness) -> None:
    sdk = gw.sdk()
    text = "one two three four five six seven eight nine ten"  # 3 s of speech
    audio = sdk.audio.speech.create(model="tts", input=text, voice="alloy", response_format="wav").content
    assert media.wav_seconds(audio) == pytest.approx(3.0)
    assert row(gw, 1) | {"cost": None} == {
        "endpoint": "audio.speech",
        "modality": "speech",
        "units": len(text),
        "prompt": 0,
        "completion": 0,
        "status": 200,
        "cost": None,
        "stream": False,
    }
    assert gw.records(1)[0].cost == Decimal("0.000720000")  # 48 characters × 0.000015
    transcript = sdk.audio.transcriptions.create(model="asr", file=("speech.wav", audio, "audio/wav"))
    assert transcript.text and transcript.usage is not None and transcript.usage.seconds == 3  # type: ignore[union-attr]
    plain = sdk.audio.transcriptions.create(model="asr", file=("speech.wav", audio), response_format="text")
    assert plain.strip() == transcript.text
    for n in (2, 3):
        assert row(gw, n)["endpoint"] == "audio.transcriptions" and row(gw, n)["units"] == 3
        assert row(gw, n)["cost"] == Decimal("0.000300000")


def test_rerank_is_served_under_its_three_paths_and_priced_per_document(gw: Harness) -> None:
    body = {"model": "rr", "query": "big cat", "documents": ["a dog", "the big cat", {"text": "cat"}]}
    headers = {"authorization": f"Bearer {gw.keys['main']}"}
    answers = [
        httpx.post(f"{gw.url}{p}", json=body, headers=headers)
        for p in ("/v1/rerank", "/rerank", "/v2/rerank")
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [r["index"] for r in answers[0].json()["results"]] == [1, 2, 0]
    rows = gw.records(3)
    assert {(r.endpoint, r.modality, r.units, r.prompt_tokens) for r in rows} == {("rerank", "rerank", 3, 12)}
    assert rows[0].cost == Decimal("0.006012000")  # 3 × 0.002 + 12 tokens × 1 per million


@pytest.mark.parametrize(
    ("given", "count", "tokens"),
    [("a b c", 1, 3), (["a b", "c"], 2, 3), ([1, 2, 3, 4], 1, 4), ([[1, 2], [3]], 2, 3)],
)
def test_embeddings_take_every_input_form(gw: Harness, given: object, count: int, tokens: int) -> None:
    sdk = gw.sdk()
    as_base64 = sdk.embeddings.create(model="emb", input=given, dimensions=8)  # type: ignore[arg-type]
    as_float = sdk.embeddings.create(model="emb", input=given, dimensions=8, encoding_format="float")  # type: ignore[arg-type]
    assert [len(d.embedding) for d in as_base64.data] == [8] * count
    assert as_base64.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    assert {(r.endpoint, r.modality, r.prompt_tokens, r.units) for r in gw.records(2)} == {
        ("embeddings", "embedding", tokens, 0)
    }


def test_what_a_model_cannot_serve_is_refused_before_any_limit_naming_the_part(gw: Harness) -> None:
    gw.rule(scope="api_key", subject=gw.key_ids["main"], unit="rpm", limit=1)
    sdk = gw.sdk()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": "what is this"}, image]
    cases = [
        (
            lambda: sdk.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": content}]
            ),
            "messages[0].content[1]",
        ),  # type: ignore[misc,list-item]
        (lambda: sdk.embeddings.create(model="chat", input="x"), "model"),
        (lambda: sdk.images.generate(model="img", prompt="x", size="1024x1024"), "size"),
        (lambda: sdk.audio.speech.create(model="img", input="x", voice="alloy"), "model"),
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.code == "unsupported_capability" and refused.value.param == param
    # None of them took the one request a minute: a model with vision answers.
    reply = sdk.chat.completions.create(model="vl", messages=[{"role": "user", "content": content}])  # type: ignore[misc,list-item]
    assert reply.usage is not None and reply.usage.prompt_tokens == 3 + 4 + 3 + 85
    assert [r.status for r in gw.records(5)] == [400, 400, 400, 400, 200]


def test_responses_api_answers_and_streams_its_events_with_usage(gw: Harness) -> None:
    sdk = gw.sdk()
    answer = sdk.responses.create(model="chat", input="Tell me about gateways", instructions="Be brief.")
    assert answer.status == "completed" and answer.output_text.split() and answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (3 + 4 + 2 + 4 + 4, 8)
    events = list(sdk.responses.create(model="chat", input="Tell me about gateways", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.output_tokens == 8
    assert done.output_text == "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    rows = gw.records(2)
    assert [(r.endpoint, r.stream, r.completion_tokens, r.estimated) for r in rows] == [
        ("responses", False, 8, False),
        ("responses", True, 8, False),
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="chat", input="x", previous_response_id="resp_1")
    assert refused.value.param == "previous_response_id"


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_anthropic_messages_with_either_key_header_and_streams(gw: Harness, header: str) -> None:
    key = gw.keys["main"]
    if header == "x-api-key":  # the 1.x SDK's way
        client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    else:  # the 2.x SDK sends `Authorization: Bearer`
        client = anthropic.Anthropic(base_url=gw.url, auth_token=key, api_key=None, max_retries=0)
    with client:
        message = client.messages.create(
            model="chat",
            max_tokens=100,
            system="Be brief.",
            messages=[{"role": "user", "content": "Hi there"}],
        )
        assert message.stop_reason == "end_turn" and message.content[0].type == "text"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (3 + 4 + 2 + 4 + 2, 8)
        with client.messages.stream(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "Hi there"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5
        assert final.content[0].text == text  # type: ignore[union-attr]
        with pytest.raises(anthropic.NotFoundError) as missing:
            client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.messages.create(
                model="chat",
                max_tokens=10,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                            }
                        ],
                    }
                ],
            )
        assert bad.value.body["type"] == "error" and "image input" in bad.value.message  # type: ignore[index]
    rows = gw.records(3)  # the unknown model has nothing to be recorded against
    assert [(r.endpoint, r.stream, r.completion_tokens, r.status) for r in rows] == [
        ("messages", False, 8, 200),
        ("messages", True, 5, 200),
        ("messages", False, 0, 400),
    ]


def test_anthropic_errors_have_anthropics_shape(gw: Harness) -> None:
    r = httpx.post(
        f"{gw.url}/v1/messages",
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "sk-wrong", "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 401 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(
        f"{gw.url}/v1/messages",
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": gw.keys["main"], "anthropic-version": "2026-10-21"},
    )
    assert r.status_code == 400 and r.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required: an integer of at least 1.",
    }
    assert r.json()["request_id"]
    assert [(r.endpoint, r.status, r.error_type) for r in gw.records(1)] == [
        ("messages", 400, "invalid_request_error")
    ]


BAD_INPUTS: list[tuple[str, dict[str, object], str]] = [
    ("/images/generations", {"model": "img", "prompt": ""}, "prompt"),
    ("/images/generations", {"model": "img", "prompt": "x", "n": "2"}, "n"),
    ("/images/generations", {"model": "img", "prompt": "x", "size": 64}, "size"),
    ("/images/generations", {"model": "img", "prompt": "x", "stream": "yes"}, "stream"),
    ("/images/generations", {"model": "img", "prompt": "x", "partial_images": 5}, "partial_images"),
    ("/audio/speech", {"model": "tts", "input": "hi"}, "voice"),
    ("/audio/speech", {"model": "tts", "input": "x" * 5000, "voice": "a"}, "input"),
    ("/rerank", {"model": "rr", "query": "q", "documents": []}, "documents"),
    ("/rerank", {"model": "rr", "query": "q", "documents": ["a", 3]}, "documents[1]"),
    ("/rerank", {"model": "rr", "query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
    ("/embeddings", {"model": "emb", "input": [[1], "a"]}, "input"),
    ("/responses", {"model": "chat", "input": 3}, "input"),
    (
        "/responses",
        {"model": "chat", "input": [{"role": "user", "content": [{"type": "x"}]}]},
        "input[0].content[0].type",
    ),
    ("/responses", {"model": "chat", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ("/responses", {"model": "chat", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ("/audio/transcriptions", {"model": "asr"}, "file"),  # JSON where a form is expected
]


def test_bad_inputs_are_400s_naming_the_field(gw: Harness) -> None:
    """Every case on one gateway: they are refused before anything is stored, so they need no fresh
    one each (a gateway per case cost the suite a minute)."""
    for path, body, param in BAD_INPUTS:
        r = gw.post(path, body)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"]["param"] == param, (path, body, r.json())


def test_a_form_without_its_file_or_with_an_unexpected_one_is_a_400(gw: Harness) -> None:
    headers = {"authorization": f"Bearer {gw.keys['main']}"}
    url = f"{gw.url}/v1/audio/transcriptions"
    missing = httpx.post(url, data={"model": "asr"}, files={"other": ("x", b"y")}, headers=headers)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "other"
    empty = httpx.post(url, data={"model": "asr"}, files={"file": ("a.wav", b"")}, headers=headers)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "file"
    broken = httpx.post(
        url,
        content=b"--x\r\nnot a form",
        headers={**headers, "content-type": "multipart/form-data; boundary=x"},
    )
    assert broken.status_code == 400


@pytest.mark.parametrize(
    ("model", "capabilities", "endpoint"),
    [
        ("chat", ["text-generation"], "chat.completions"),
        ("vl", ["text-generation", "vision"], "chat.completions"),
        ("emb", ["embedding"], "embeddings"),
        ("rr", ["rerank"], "rerank"),
        ("img", ["image-generation"], "images.generations"),
        ("edit", ["image-editing"], "images.edits"),
        ("tts", ["text-to-speech"], "audio.speech"),
        ("asr", ["speech-to-text"], "audio.transcriptions"),
    ],
)
def test_every_plaza_example_runs_against_the_gateway(
    gw: Harness,
    model: str,
    capabilities: list[str],
    endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    examples = api_examples(gw.url, model, capabilities)
    monkeypatch.setenv(KEY_ENV, gw.keys["main"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / AUDIO_FILE).write_bytes(media.wav(2.0, 7))  # what the transcription example reads
    (tmp_path / IMAGE_FILE).write_bytes(media.png(16, 16, 7))  # what the image-editing example edits
    exec(compile(examples.python, "example.py", "exec"), {})  # the snippet exactly as the plaza shows it
    (row,) = gw.records(1)
    assert (row.endpoint, row.status) == (endpoint, 200)
    if model == "tts":
        assert media.wav_seconds((tmp_path / AUDIO_FILE).read_bytes()) is not None


def test_a_stream_that_breaks_ends_in_each_apis_failure_event_and_is_billed_what_was_sent(
    gw: Harness,
) -> None:
    broken = {"simulator": {"fail_after_chunks": 3}}
    events = list(gw.sdk().responses.create(model="chat", input="Tell me", stream=True, extra_body=broken))
    assert events[-1].type == "response.failed"
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["main"], max_retries=0) as client:
        raw = client.messages.create(
            model="chat",
            max_tokens=50,
            messages=[{"role": "user", "content": "Tell me"}],
            stream=True,
            extra_body=broken,
        )
        with pytest.raises(anthropic.APIStatusError):
            list(raw)  # the SDK raises on Anthropic's `error` event
    rows = gw.records(2)
    assert [(r.endpoint, r.error_type, r.completion_tokens, r.estimated) for r in rows] == [
        ("responses", "upstream_error", 3, True),
        ("messages", "upstream_error", 3, True),
    ]


def test_translations_and_anthropics_token_count(gw: Harness) -> None:
    audio = media.wav(2.0, 9)
    english = gw.sdk().audio.translations.create(model="asr", file=("speech.wav", audio, "audio/wav"))
    assert english.text
    (row,) = gw.records(1)
    assert (row.endpoint, row.modality, row.units) == ("audio.translations", "transcription", 2)
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["main"], max_retries=0) as client:
        counted = client.messages.count_tokens(
            model="chat", system="Be brief.", messages=[{"role": "user", "content": "Tell me about gateways"}]
        )
    assert counted.input_tokens == 3 + (4 + 3) + (4 + 5)  # the gateway's estimate, as admission reserves
    assert len(gw.records(1)) == 1  # counting is not a metered request


def test_image_edits_take_one_image_or_several_and_are_priced_per_image(gw: Harness) -> None:
    fox = media.png(16, 8, 1)
    sdk = gw.sdk()
    one = sdk.images.edit(model="edit", image=("fox.png", fox, "image/png"), prompt="add a hat", n=2)
    assert one.data is not None and len(one.data) == 2
    assert media.png_size(base64.b64decode(one.data[0].b64_json or "")) == (16, 8)  # the source's size
    several = sdk.images.edit(
        model="edit",
        image=[("a.png", fox, "image/png"), ("b.png", media.png(8, 8, 2), "image/png")],
        prompt="merge",
    )
    assert several.data is not None and len(several.data) == 1
    rows = gw.records(2)
    assert [(r.endpoint, r.modality, r.units, r.status) for r in rows] == [
        ("images.edits", "image", 2, 200),
        ("images.edits", "image", 1, 200),
    ]
    assert rows[0].cost == Decimal("0.080003000")  # 2 × 0.04 + "add a hat" (3 tokens) × 1 per million
    headers = {"authorization": f"Bearer {gw.keys['main']}"}
    missing = httpx.post(
        f"{gw.url}/v1/images/edits",
        data={"model": "edit", "prompt": "x"},
        files={"mask": ("m.png", fox)},
        headers=headers,
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.edit(model="img", image=("fox.png", fox, "image/png"), prompt="add a hat")
    assert refused.value.param == "model"  # an image generator that does not edit


def test_image_and_transcript_streams_are_relayed_and_billed_by_what_came(gw: Harness) -> None:
    sdk = gw.sdk()
    events = list(
        sdk.images.generate(model="img", prompt="a red fox", size="64x64", stream=True, partial_images=2)
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert media.png_size(base64.b64decode(events[-1].b64_json)) == (64, 64)
    assert events[-1].usage is not None and events[-1].usage.input_tokens == 3  # type: ignore[union-attr]
    audio = media.wav(2.0, 4)
    transcript = list(sdk.audio.transcriptions.create(model="asr", file=("a.wav", audio), stream=True))
    assert transcript[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in transcript[:-1]) == transcript[-1].text  # type: ignore[union-attr]
    cut = {"simulator": {"fail_after_chunks": 1}}
    broken = sdk.images.generate(
        model="img", prompt="a red fox", size="64x64", stream=True, partial_images=2, extra_body=cut
    )
    assert [e.type for e in broken] == ["image_generation.partial_image"]  # the engine died after it
    rows = gw.records(3)
    assert [(r.endpoint, r.stream, r.units, r.status, r.error_type) for r in rows] == [
        ("images.generations", True, 1, 200, None),
        ("audio.transcriptions", True, 2, 200, None),
        ("images.generations", True, 0, 200, "upstream_error"),  # no image came: none billed
    ]
    assert rows[0].cost == Decimal("0.040003000") and rows[0].ttft_ms is not None
