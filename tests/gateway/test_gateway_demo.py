"""`python -m portal --demo`: the demo stack's public models are served through the portal's `/v1` by
the engine simulator, with a demo API key printed once; chat and compare work with the OpenAI SDK."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import func, select

from portal.app import build_services, create_app
from portal.demo import load_demo
from portal.demo_maas import DEMO_MEDIA
from portal.plaza.examples import AUDIO_FILE, KEY_ENV, api_examples
from portal.services import Services
from portal.settings import Settings
from simulator import media
from store.models import ApiKey, MaasModel, UsageRecord
from tests.gateway.gateway_support import serve

DEMO_MODELS = [
    "deepseek-r1",
    "qwen2.5-72b-instruct",
    "qwen2.5-7b-instruct",
    "qwen2.5-7b-instruct-local",  # the local region's serving (the simulator stands in there too)
    "qwen3-32b",
    *DEMO_MEDIA,  # embeddings, rerank, images, speech and speech to text, answered by the simulator
]


@pytest.fixture
def demo(
    database_url: str, tmp_path: Path, admin_token: str, capfd: pytest.CaptureFixture[str]
) -> Iterator[tuple[Services, str]]:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        admin_token=admin_token,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        demo=True,
        worker_enabled=False,
    )
    services = build_services(settings)
    printed = re.findall(r"demo API key \(shown once\): (sk-\S+)", capfd.readouterr().err)
    assert len(printed) == 1
    yield services, printed[0]
    services.engine.dispose()


def test_the_demo_serves_its_models_from_the_simulator(
    demo: tuple[Services, str], capfd: pytest.CaptureFixture[str]
) -> None:
    services, key = demo
    with (
        serve(create_app(services=services)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as sdk,
    ):
        # The offerings, and the demo workspace's own servings (callable by its keys under their names).
        own = {
            s.served_name
            for s in services.repository.snapshot("demo").fleet.servings
            if s.workspace == "demo"
        }
        assert [m.id for m in sdk.models.list()] == sorted({*DEMO_MODELS, *own})
        reply = sdk.chat.completions.create(
            model="qwen2.5-7b-instruct",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        body = {"models": ["qwen2.5-7b-instruct", "qwen3-32b"], "prompt": "hi", "max_tokens": 3}
        with httpx.stream(
            "POST", f"{url}/v1/compare", json=body, headers={"authorization": f"Bearer {key}"}, timeout=10
        ) as response:
            done = [
                json.loads(line[6:])
                for line in response.iter_lines()
                if line.startswith("data: {") and '"type":"done"' in line
            ]
        assert sorted(d["model"] for d in done) == ["qwen2.5-7b-instruct", "qwen3-32b"]
        assert all(d["status"] == "completed" and d["usage"]["completion_tokens"] == 3 for d in done)
    # loading the demo again adds nothing and prints no key
    load_demo(services)
    assert "demo API key" not in capfd.readouterr().err
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(MaasModel)) == len(DEMO_MODELS)
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 1
        stored = session.scalar(select(ApiKey.secret_hash))
    assert stored == services.hasher.digest(key[3 + 12 :]) and key not in str(stored)


def test_every_modality_of_the_demo_runs_its_plaza_example(
    demo: tuple[Services, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, key = demo
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / AUDIO_FILE).write_bytes(media.wav(1.5, 2))
    with serve(create_app(services=services)) as url:
        for model, (capabilities, _, _) in DEMO_MEDIA.items():
            exec(compile(api_examples(url, model, capabilities).python, f"{model}.py", "exec"), {})
        deadline = time.monotonic() + 10
        while True:
            with services.sessions() as session:
                rows = list(session.scalars(select(UsageRecord).order_by(UsageRecord.id)))
            if len(rows) >= len(DEMO_MEDIA) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert [(r.model, r.status) for r in rows] == [(m, 200) for m in DEMO_MEDIA]
    assert [r.modality for r in rows] == ["embedding", "rerank", "image", "speech", "transcription"]
