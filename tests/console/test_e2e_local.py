"""The console's promise, end to end in Chromium on one machine: deploy a model to the `local` region,
watch its badge go from starting to ready (engine processes supervised by the portal, the simulator
standing in for vLLM), and "Try it" answers in the chat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.local_portal import Portal, local_portal

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
)


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    with local_portal(tmp_path, demo=True) as running:
        yield running


def test_deploy_to_the_local_region_watch_it_become_ready_and_try_it(portal: Portal) -> None:
    expect = playwright_api.expect
    made = httpx.post(
        f"{portal.url}/api/users/demo/tokens",
        json={"name": "e2e-local"},
        headers={"Authorization": f"Bearer {portal.admin}"},
    )
    assert made.status_code == 201, made.text
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            user = browser.new_page()
            user.on("pageerror", lambda e: errors.append(str(e)))
            user.goto(f"{portal.url}/console/")
            user.fill("input[name=token]", made.json()["token"])
            user.click("button[type=submit]")
            user.goto(f"{portal.url}/console/keys")  # a key for this tab, as Try it needs one
            user.fill("[data-testid=key-name]", "e2e-local")
            user.click("[data-testid=key-create]")
            expect(user.locator("#secret-value")).to_contain_text("sk-")
            user.click("#secret-dialog button[value=ok]")
            expect(user.locator("tr[data-key]").filter(has_text="e2e-local")).to_be_visible()
            user.wait_for_load_state("networkidle")

            user.goto(f"{portal.url}/console/deploy?model=qwen2.5-7b-instruct")
            user.select_option("[data-pool-select]", "local-gpu")
            user.fill("[data-testid=serving-name]", "e2e-local")
            # The model's id is already an offering of this workspace: the serving takes a name of its own.
            user.fill("input[name=public_model_name]", "e2e-local-chat")
            result = user.locator("[data-testid=preflight-result]")
            try:
                expect(result).to_have_text("passes", timeout=30_000)
            except AssertionError:
                raise AssertionError(user.locator("#preflight-panel").inner_text()) from None
            user.click("[data-deploy-submit]")
            expect(user.locator("[data-testid=open-service]")).to_be_visible(timeout=30_000)
            user.click("[data-testid=open-service]")
            state = user.locator("#service-badge .state")
            try:
                expect(state).to_have_text("ready", timeout=90_000)  # moved by the status stream
            except AssertionError:
                seen = portal.placements("e2e-local")
                raise AssertionError(
                    [(p.state, p.message, [(r.state, r.message) for r in p.replicas]) for p in seen]
                ) from None
            user.click("[data-testid=try-it]")
            # The tab's key is shown by the page's script, which binds Enter in the same step.
            expect(user.locator("[data-key-current]")).to_contain_text("e2e-local")
            user.fill("[data-testid=chat-input]", "Hello from the local region.")
            user.press("[data-testid=chat-input]", "Enter")
            expect(user.locator("[data-testid=answer-meta]")).to_contain_text("tokens", timeout=30_000)
            assert user.locator("[data-testid=assistant-message] .msg-text").inner_text().strip()
        finally:
            browser.close()
    assert errors == []
