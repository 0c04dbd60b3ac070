"""The console's playground and the chat's image attach in headless Chromium, against a real portal
(embedded defaults, the demo data) whose MaaS models are answered by the engine simulator: an image is
drawn, text spoken and played, the audio transcribed, documents ranked, texts embedded, and a picture
sent to a vision model, with no error in the browser."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from portal.app import create_app
from portal.settings import Settings
from simulator import media
from simulator.app import Simulator, serve_in_thread
from store.security import USER_TOKEN_PREFIX, issue
from tests.console.test_e2e import CHROMIUM, TIMEOUT_MS

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

MODELS = {
    "e2e-image": ["image-generation"],
    "e2e-asr": ["speech-to-text"],
    "e2e-tts": ["text-to-speech"],
    "e2e-rerank": ["rerank"],
    "e2e-embed": ["embedding"],
    "e2e-vision": ["text-generation", "vision"],
}


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A demo portal whose MaaS models call a simulator on this machine; (url, the demo user's token)."""
    data = tmp_path_factory.mktemp("e2e-try")
    admin = issue(USER_TOKEN_PREFIX).value
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        data_dir=data / "var",
        admin_token=admin,  # type: ignore[arg-type]
        pepper="e2e-pepper",  # type: ignore[arg-type]
        demo=True,
        gateway_snapshot_poll_seconds=0.2,
        gateway_base_url=url,
        allow_private_urls=True,  # the simulator listens on loopback
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    with serve_in_thread(Simulator(accept_any_model=True).app) as engine:
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the portal did not start"
            time.sleep(0.02)
        admin_headers = {"Authorization": f"Bearer {admin}"}
        for model, capabilities in MODELS.items():
            body = {
                "public_id": model,
                "targets": [{"kind": "external", "base_url": f"{engine}/v1", "upstream_model": model}],
                "enabled": True,
                "visibility": "all",
                "capabilities": capabilities,
            }
            made = httpx.post(f"{url}/api/maas-models", json=body, headers=admin_headers)
            assert made.status_code == 201, made.text
        token = httpx.post(f"{url}/api/users/demo/tokens", json={"name": "e2e"}, headers=admin_headers)
        assert token.status_code == 201, token.text
        try:
            yield url, token.json()["token"]
        finally:
            server.should_exit = True
            thread.join(15)
            sock.close()


def test_every_modality_is_tried_from_the_console(portal: tuple[str, str], tmp_path: Path) -> None:
    expect = playwright_api.expect
    url, token = portal
    errors: list[str] = []
    wav = tmp_path / "hello.wav"
    wav.write_bytes(media.wav(2.0, 3))
    picture = tmp_path / "fox.png"
    picture.write_bytes(media.png(8, 8, 5))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{url}/console/login")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url("**/console/plaza")

        page.goto(f"{url}/console/try?tab=images")
        page.click("[data-testid=create-console-key]")  # a key for this tab, shown once
        page.click("#secret-dialog button[value=ok]")
        expect(page.locator("[data-key-current]")).to_contain_text("console")
        # Only models that draw are offered: this test's and the demo's own image model.
        assert sorted(page.locator("[data-testid=try-model] option").all_inner_texts()) == [
            "e2e-image",
            "sim-image",
        ]
        page.select_option("[data-testid=try-model]", label="e2e-image")
        page.fill("textarea[name=prompt]", "a red fox")
        page.fill("input[name=size]", "64x64")
        page.click("[data-testid=try-run]")
        expect(page.locator("[data-testid=try-image]")).to_have_count(1)
        assert page.locator("[data-testid=try-image]").evaluate("img => img.naturalWidth") == 64

        page.goto(f"{url}/console/try?tab=speech")
        page.fill("textarea[name=input]", "one two three")
        page.click("[data-testid=try-run]")
        expect(page.locator("[data-testid=try-audio]")).to_have_count(1)
        expect(page.locator("[data-testid=try-meta]")).to_contain_text("13 characters")

        page.goto(f"{url}/console/try?tab=transcription")
        page.set_input_files("[data-testid=try-file]", str(wav))
        page.click("[data-testid=try-run]")
        expect(page.locator("[data-testid=try-transcript]")).not_to_be_empty()
        expect(page.locator("[data-testid=try-meta]")).to_contain_text("2 s of audio")

        page.goto(f"{url}/console/try?tab=rerank")
        page.fill("input[name=query]", "big cat")
        page.fill("textarea[name=documents]", "a dog\nthe big cat")
        page.click("[data-testid=try-run]")
        expect(page.locator("[data-testid=try-ranking] tbody tr")).to_have_count(2)
        expect(page.locator("[data-testid=try-ranking] tbody tr").first).to_contain_text("the big cat")

        page.goto(f"{url}/console/try?tab=embeddings")
        page.fill("textarea[name=input]", "one\ntwo")
        page.fill("input[name=dimensions]", "8")
        page.click("[data-testid=try-run]")
        expect(page.locator("[data-testid=try-vectors] li")).to_have_count(2)
        expect(page.locator("[data-testid=try-vectors] li").first).to_contain_text("8 ×")

        page.goto(f"{url}/console/chat?model=e2e-vision")
        expect(page.locator("[data-key-current]")).to_contain_text("sk-")  # the script has bound Enter
        page.set_input_files("[data-testid=chat-attach]", str(picture))
        page.fill("[data-testid=chat-input]", "What is in this picture?")
        page.press("[data-testid=chat-input]", "Enter")
        expect(page.locator("[data-testid=answer-meta]")).to_contain_text("tokens")
        expect(page.locator(".msg-user img")).to_have_count(1)
        browser.close()
    assert errors == []
