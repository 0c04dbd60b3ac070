"""The console end to end, in headless Chromium (Debian's `chromium`, driven by Playwright), against a
real portal on the embedded defaults: SQLite, the git stack backend with its worker, the demo data, and
the gateway answered by the engine simulator.

An ops user creates and publishes a plaza model, offers it as a MaaS model with a rate limit; a
workspace user creates an API key, deploys a serving and follows the stack update to its end, chats,
compares three models, and sees the usage chart grow; the ops user then finds all of it in the audit log.

`UPDATE_SCREENSHOTS=1` also saves the main pages to docs/screenshots/ (committed; CI leaves them alone).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from portal.app import create_app
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation, State
from portal.services import Services
from portal.settings import Settings
from store.models import ServingPlacement
from store.security import USER_TOKEN_PREFIX, issue

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium (/usr/bin/chromium) is not installed: apt install chromium",
)
TIMEOUT_MS = 15_000
INDEX = """
models:
  - {id: e2e-imported, name: E2E Imported, provider: qwen, capabilities: [text-generation], params_b: 1.5}
  - {id: qwen3-8b, name: Qwen3-8B again, provider: qwen, capabilities: [text-generation]}
"""


class Portal:
    def __init__(self, url: str, admin_token: str, user_token: str, services: Services) -> None:
        self.url, self.admin_token, self.user_token = url, admin_token, user_token
        self.services = services  # to report what a region observer would


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """`python -m portal --demo` in a thread (lifespan on: the stack worker and the rollups run)."""
    data = tmp_path_factory.mktemp("e2e")
    admin = issue(USER_TOKEN_PREFIX).value
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        data_dir=data / "var",
        admin_token=admin,  # type: ignore[arg-type]
        pepper="e2e-pepper",  # type: ignore[arg-type]
        demo=True,
        worker_poll_seconds=0.1,
        gateway_snapshot_poll_seconds=0.2,
        gateway_base_url=url,
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the portal did not start"
        time.sleep(0.02)
    made = httpx.post(
        f"{url}/api/users/demo/tokens", json={"name": "e2e"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert made.status_code == 201, made.text
    try:
        yield Portal(url, admin, made.json()["token"], app.state.services)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def shot(page: object, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def signed_in(browser: object, portal: Portal, token: str, errors: list[str]) -> object:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")  # type: ignore[attr-defined]
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.goto(f"{portal.url}/console/")
    assert "/console/login" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/plaza")
    return page


def test_ops_and_user_journeys(portal: Portal, browser: object) -> None:
    errors: list[str] = []
    expect = playwright_api.expect
    ops = signed_in(browser, portal, portal.admin_token, errors)
    url = portal.url

    # -- ops: a new plaza model, published --------------------------------------------------------------
    ops.goto(f"{url}/console/ops/plaza/new")
    ops.fill("[data-testid=model-id]", "e2e-chat-7b")
    ops.fill("[data-testid=model-name]", "E2E Chat 7B")
    ops.select_option("[data-testid=model-provider]", "qwen")
    ops.click('label.chip:has(input[value="text-generation"])')
    ops.fill("input[name=tags]", "chat, e2e")
    ops.fill("input[name=context_length]", "32768")
    ops.fill("input[name=params_b]", "7.62")
    ops.fill("input[name=source_uri]", "hf://Qwen/Qwen2.5-7B-Instruct")
    ops.fill("textarea[name=description]", "A chat model added by the console's end-to-end test.")
    ops.fill("textarea[name=readme]", "# E2E Chat 7B\n\n- **fast**: answered by the simulator\n")
    ops.click("[data-testid=model-save]")
    ops.wait_for_url("**/console/ops/plaza/e2e-chat-7b")
    ops.click("[data-testid=publish]")
    expect(ops.locator(".page-head .badge-ok")).to_have_text("published")

    # -- ops: offered as a MaaS model on the demo stack's 7B serving, with a rate limit ------------------
    ops.goto(f"{url}/console/ops/maas/new")
    ops.fill("[data-testid=maas-public-id]", "e2e-chat")
    ops.select_option("[data-testid=maas-plaza-model]", "e2e-chat-7b")
    ops.select_option("[data-testid=maas-strategy]", "weighted")
    ops.fill("[data-testid=target-serving]", "qwen25-7b")
    ops.fill("[data-testid=price-input]", "0.5")
    ops.fill("[data-testid=price-output]", "1.5")
    ops.check("[data-testid=maas-enabled]")
    ops.select_option("select[name=visibility]", "all")  # offered to no workspace until ops choose
    shot(ops, "ops-maas-model")
    ops.click("[data-testid=maas-save]")
    ops.wait_for_url(re.compile(r".*/console/ops/maas/\d+$"))
    expect(ops.locator(".page-head .state")).to_have_text("enabled")
    rule = ops.locator("form[data-api='POST /api/rate-limits']")
    rule.locator("select[name=scope]").select_option("model")
    rule.locator("select[name=unit]").select_option("rpm")
    rule.locator("input[name=limit]").fill("6000")
    rule.locator("button[type=submit]").click()
    expect(ops.locator("table").first).to_contain_text("6,000")
    # -- ops: import from an index, previewed first (imported models start unpublished) ---------------
    ops.goto(f"{url}/console/ops/import")
    ops.fill("textarea[name=content]", INDEX)
    ops.click("#import-form button[type=submit]")
    rows = ops.locator("#import-preview [data-rows] tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("already in the plaza")
    assert not rows.nth(1).locator("input").is_enabled()
    ops.click("[data-import-run]")
    ops.wait_for_url("**/console/ops/plaza?published=false")
    expect(ops.locator("tr[data-model=e2e-imported]")).to_contain_text("unpublished")
    ops.goto(f"{url}/console/ops/plaza")
    shot(ops, "ops-plaza")
    ops.goto(f"{url}/console/ops/regions")
    expect(ops.locator("[data-region=cn-east]")).to_be_visible()
    shot(ops, "ops-regions")

    # -- user: the plaza, the model page ------------------------------------------------------------------
    user = signed_in(browser, portal, portal.user_token, errors)
    shot(user, "plaza")
    user.fill("input[name=q]", "e2e")
    user.press("input[name=q]", "Enter")
    user.click("[data-model=e2e-chat-7b]")
    expect(user.locator("[data-testid=try-button]")).to_be_visible()
    expect(user.locator("#example-curl")).to_contain_text('"model": "e2e-chat"')
    user.goto(f"{url}/console/usage")
    before = int(user.locator("#chart-tokens").get_attribute("data-total") or "0")

    # -- user: an API key, shown once, kept for this tab ----------------------------------------------
    user.goto(f"{url}/console/keys")
    user.fill("[data-testid=key-name]", "e2e-app")
    user.fill("[data-testid=key-form] input[name=token_quota]", "1000000")
    user.select_option("[data-testid=key-refresh]", "month")
    user.click("[data-testid=key-create]")
    secret = user.locator("#secret-value")
    expect(secret).to_contain_text("sk-")
    assert user.locator("#secret-dialog input[data-slot=use]").is_checked()
    user.click("#secret-dialog button[value=ok]")
    key_row = user.locator("tr[data-key]").filter(has_text="e2e-app")
    expect(key_row).to_contain_text("1,000,000 left · refreshes")
    expect(key_row.locator("select[name=quota_refresh]")).to_have_value("month")
    shot(user, "api-keys")
    with user.expect_navigation():  # the row's quota form: another cycle, saved, and the page reloads
        key_row.locator("select[name=quota_refresh]").select_option("week")
        key_row.locator("button[type=submit]").click()
    expect(key_row.locator("select[name=quota_refresh]")).to_have_value("week")
    key_id = key_row.get_attribute("data-key")
    saved = httpx.get(
        f"{url}/api/workspaces/demo/api-keys/{key_id}",
        headers={"Authorization": f"Bearer {portal.user_token}"},
    ).json()
    assert (saved["quota_refresh"], saved["token_quota"]) == ("week", 1_000_000)

    # -- user: deploy, preflight and preview first, then follow the stack update to its end ---------------
    user.goto(f"{url}/console/deploy?model=qwen3-8b")
    # A taken name: preflight refuses it, once, next to the name field; fixing the name clears it.
    user.fill("[data-testid=serving-name]", "qwen25-7b")
    # The preflight is a round trip to the portal (and its model stores): slow on a loaded machine.
    expect(user.locator("[data-testid=preflight-result]")).to_have_text("refused", timeout=20_000)
    name_error = user.locator("#deploy-form .field-error")
    expect(name_error).to_have_count(1)
    expect(name_error).to_contain_text("already exists")
    expect(user.get_by_text("already exists")).to_have_count(1)
    expect(user.locator("[data-deploy-submit]")).to_be_disabled()
    user.fill("[data-testid=serving-name]", "e2e-qwen3")
    expect(name_error).to_have_count(0)
    expect(user.locator("[data-testid=preflight-result]")).to_have_text("passes")
    expect(user.locator("[data-diff]")).to_contain_text("+kind: Deployment")
    expect(user.locator("[data-deploy-submit]")).to_be_enabled()
    shot(user, "deploy")
    user.click("[data-deploy-submit]")
    # Deploy runs the preflight again (its model stores included) before the stack update.
    expect(user.locator("[data-testid=open-service]")).to_be_visible(timeout=30_000)
    expect(user.locator("#follow-panel [data-log]")).to_contain_text("succeeded")
    shot(user, "deploy-done")
    user.click("[data-testid=open-service]")
    # No observer runs in this portal: the service is committed, never shown running.
    expect(user.locator(".page-head .state")).to_have_text("committed")
    expect(user.locator("#svc-name")).to_have_text("qwen3-8b")
    shot(user, "service")
    user.goto(f"{url}/console/services")
    expect(user.locator("tr[data-serving=e2e-qwen3]")).to_contain_text("committed")
    # The job's log, opened after the fact, shows each event's own time, not the page's.
    job_page = user.locator("tr[data-serving=e2e-qwen3] a[href*=jobs]").get_attribute("href")
    user.goto(f"{url}{job_page}")
    first = user.locator("[data-job-log] div[data-at]").first
    expect(first).to_be_visible()
    stamp = user.evaluate("(at) => new Date(at).toLocaleTimeString()", first.get_attribute("data-at"))
    assert (first.inner_text() or "").startswith(stamp)
    shot(user, "services")

    # -- user: stop it, then delete it by typing its name ---------------------------------------------
    user.goto(f"{url}/console/services/e2e-qwen3")
    user.click("[data-testid=stop]")
    user.click("#confirm-dialog button[value=ok]")
    # A stack update like the deploy above: as long to wait for on a loaded machine.
    expect(user.locator(".page-head .state")).to_have_text("stopped", timeout=30_000)
    user.click("[data-testid=delete]")
    confirm = user.locator("#confirm-dialog button[value=ok]")
    expect(confirm).to_be_disabled()
    user.fill("#confirm-dialog input[name=typed]", "e2e-qwen")
    expect(confirm).to_be_disabled()
    user.fill("#confirm-dialog input[name=typed]", "e2e-qwen3")
    confirm.click()
    user.wait_for_url("**/console/services")  # followed the stack update, then back to the list
    expect(user.locator("#flash")).to_contain_text("finished")
    expect(user.locator("tr[data-serving=e2e-qwen3]")).to_have_count(0)

    # -- user: a streamed chat with the new MaaS model -------------------------------------------------------
    user.goto(f"{url}/console/chat?model=e2e-chat")
    expect(user.locator("[data-key-current]")).to_contain_text("e2e-app")
    user.fill("[data-testid=chat-input]", "Say hello to the end-to-end test.")
    user.press("[data-testid=chat-input]", "Enter")
    meta = user.locator("[data-testid=answer-meta]")
    expect(meta).to_contain_text("tokens")
    expect(meta).to_contain_text("first token")
    assert user.locator("[data-testid=assistant-message] .msg-text").inner_text().strip()
    shot(user, "chat")

    # -- user: three models side by side, streamed together ---------------------------------------------
    user.goto(f"{url}/console/compare?model=e2e-chat&model=qwen2.5-7b-instruct&model=qwen3-32b")
    user.fill("[data-testid=compare-prompt]", "Which of you is fastest?")
    user.fill("input[data-param=max_tokens]", "24")
    user.click("[data-testid=compare-run]")
    for i in range(3):
        expect(user.locator(f"[data-testid=compare-col-{i}]")).to_have_attribute("data-done", "completed")
        expect(user.locator(f"[data-testid=compare-col-{i}] [data-metrics]")).to_contain_text("ms")
    shot(user, "compare")

    # -- user: the usage chart has grown ------------------------------------------------------------------
    deadline = time.monotonic() + 10
    after = before
    while after <= before and time.monotonic() < deadline:  # usage rows are written in batches
        user.goto(f"{url}/console/usage")
        after = int(user.locator("#chart-tokens").get_attribute("data-total") or "0")
    assert after > before
    expect(user.locator("#chart-tokens rect").first).to_be_visible()
    shot(user, "usage")

    # -- ops: all of it is in the audit log -----------------------------------------------------------------
    for actor, actions in (
        (
            "admin",
            ["CreateModel", "PublishModel", "CreateMAASModel", "CreateRateLimitRule", "BatchCreateModels"],
        ),
        (
            "demo",
            ["CreateWSAPIKey", "CreateWSModelServing", "DoModelWSServingAction", "DeleteWSModelServing"],
        ),
        ("modelfleet-worker", ["ApplyStackUpdate"]),
    ):
        ops.goto(f"{url}/console/ops/audit?actor={actor}")
        for action in actions:
            expect(ops.locator(f"tr[data-action={action}]").first).to_be_visible()
    ops.goto(f"{url}/console/ops/audit?workspace=demo")
    shot(ops, "ops-audit")
    ops.goto(f"{url}/console/ops/jobs")
    ops.locator("tr[data-job] a").first.click()
    expect(ops.locator("[data-job-log]")).to_contain_text("succeeded")
    shot(ops, "ops-job")
    ops.goto(f"{url}/console/plaza?lang=zh")
    expect(ops.locator("h1")).to_have_text("模型广场")
    shot(ops, "plaza-zh")
    assert errors == []


def _observe(services: Services, *replicas: ReplicaObservation) -> None:
    """What the local supervisor would report of qwen25-7b's replicas on east-h100."""
    with services.sessions() as session, session.begin():
        placement = session.scalar(
            select(ServingPlacement).where(
                ServingPlacement.serving == "qwen25-7b", ServingPlacement.pool == "east-h100"
            )
        )
        assert placement is not None
        placement.runtime = "local"
        record(session, placement, replicas)


def test_a_failed_service_live(portal: Portal, browser: object, tmp_path: Path) -> None:
    """The failure, its last log lines, the log followed live, and the badge moved by the status stream."""
    errors: list[str] = []
    expect = playwright_api.expect
    log = tmp_path / "east-0.log"
    log.write_text("loading weights\nCUDA error: out of memory\n")
    crash = ReplicaObservation("east-0", State.FAILED, reason="OOMKilled", details={"log": str(log)})
    _observe(portal.services, crash)
    user = signed_in(browser, portal, portal.user_token, errors)
    user.goto(f"{portal.url}/console/services/qwen25-7b")
    expect(user.locator("#service-badge .state")).to_have_text("failed")
    expect(user.locator("[data-testid=failure]")).to_contain_text("OOMKilled")
    # Slow on a loaded machine (the full suite on two cores missed 5 s once, and 20 s once).
    expect(user.locator("[data-testid=failure-log]")).to_contain_text(
        "CUDA error: out of memory", timeout=60_000
    )
    user.click("[data-show-log=east-0]")
    live = user.locator("[data-testid=live-log]")
    expect(live).to_contain_text("loading weights")
    expect(user.locator("[data-log-note]")).to_contain_text("Following")
    with log.open("a") as f:
        f.write("restarting the engine\n")
    expect(live).to_contain_text("restarting the engine")
    _observe(
        portal.services,
        ReplicaObservation("east-0", State.READY, url="http://127.0.0.1:9", details={"log": str(log)}),
    )
    expect(user.locator("#service-badge .state")).to_have_text("degraded")  # east ready, north not yet
    assert errors == []
