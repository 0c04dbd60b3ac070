"""Server time of the web console's main pages on the demo data (target: p95 < 300 ms).

The portal is built as `python -m portal --demo` builds it (SQLite, the demo stack, plaza, workspace,
MaaS models answered by the engine simulator), some traffic goes through the gateway so the usage page
has something to draw, and each page is fetched through Starlette's TestClient with the console's
session cookie: the time is the portal's own (the page handler, its in-process API calls, Jinja),
without a browser.

    python -m benchmarks.console_pages
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from portal.app import create_app
from portal.settings import Settings
from store.security import USER_TOKEN_PREFIX, issue

RUNS = 40
USER_PAGES = {
    "plaza": "/console/plaza",
    "model": "/console/plaza/qwen2.5-7b-instruct",
    "deploy": "/console/deploy?model=qwen3-8b",
    "services": "/console/services",
    "service": "/console/services/qwen25-7b",
    "chat": "/console/chat",
    "compare": "/console/compare",
    "keys": "/console/keys",
    "usage": "/console/usage",
}
OPS_PAGES = {
    "ops_plaza": "/console/ops/plaza",
    "ops_maas": "/console/ops/maas",
    "ops_regions": "/console/ops/regions",
    "ops_jobs": "/console/ops/jobs",
    "ops_audit": "/console/ops/audit",
}


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def measure(client: TestClient, pages: dict[str, str]) -> None:
    for name, path in pages.items():
        assert client.get(path).status_code == 200, path  # warm: templates compiled, caches filled
        samples = []
        for _ in range(RUNS):
            start = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        print(f"BENCH console_{name}_p95 {p95(samples):.1f} ms", flush=True)
        print(f"BENCH console_{name}_p50 {statistics.median(samples):.1f} ms", flush=True)


def sign_in(client: TestClient, token: str) -> None:
    client.cookies.clear()
    response = client.post("/console/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text


def main() -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        admin = issue(USER_TOKEN_PREFIX).value
        settings = Settings(
            data_dir=Path(tmp) / "var",
            admin_token=admin,
            demo=True,
            worker_enabled=False,  # type: ignore[arg-type]
        )
        with TestClient(create_app(settings)) as client:
            auth = {"Authorization": f"Bearer {admin}"}
            user = client.post("/api/users/demo/tokens", json={"name": "bench"}, headers=auth).json()["token"]
            key = client.post(
                "/api/workspaces/demo/api-keys",
                json={"name": "bench"},
                headers={"Authorization": f"Bearer {user}"},
            ).json()["secret_key"]
            for i in range(20):  # traffic for the usage page
                chat = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "qwen2.5-7b-instruct",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": f"hi {i}"}],
                    },
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert chat.status_code == 200, chat.text
            sign_in(client, user)
            measure(client, USER_PAGES)
            sign_in(client, admin)
            measure(client, OPS_PAGES)


if __name__ == "__main__":
    main()
