"""End to end through a real gateway: an OpenAI SDK call becomes a usage row, the row shows in the
statistics (from the raw tail, then from the rollups), and the request shows in `/metrics` on the
stand-alone gateway and on the portal; the gateway's `/healthz` answers for the Kubernetes probes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from portal.services import Services
from portal.usage.rollup import rollup_once
from simulator.app import ModelProfile, Simulator, serve_in_thread
from tests.gateway.gateway_support import harness

MESSAGES = [{"role": "user", "content": "count me"}]
FAMILIES = (
    "modelfleet_gateway_requests",
    "modelfleet_gateway_request_duration_seconds",
    "modelfleet_gateway_tokens",
    "modelfleet_gateway_in_flight_requests",
)


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    simulator = Simulator({"m": ModelProfile(completion_tokens=6)}, accept_any_model=True)
    with serve_in_thread(simulator.app) as url:
        yield url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests_of(text: str, model: str) -> float:
    return sum(
        value
        for (name, labels), value in samples(text).items()
        if name == "modelfleet_gateway_requests_total"
        and ("model", model) in labels
        and ("status", "200") in labels
    )


def test_a_gateway_request_reaches_statistics_and_metrics(
    client: TestClient, services: Services, engine_url: str
) -> None:
    with harness(client, services) as gw:
        gw.workspace("team-a")
        gw.model(
            "metered-chat", [{"kind": "external", "base_url": f"{engine_url}/v1", "upstream_model": "m"}]
        )
        gw.key("main", "team-a")
        health = httpx.get(f"{gw.url}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        before = requests_of(httpx.get(f"{gw.url}/metrics").text, "metered-chat")

        reply = gw.sdk().chat.completions.create(model="metered-chat", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.usage is not None
        (row,) = gw.records(1)

        exposition = httpx.get(f"{gw.url}/metrics")
        assert exposition.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert requests_of(exposition.text, "metered-chat") == before + 1
        names = {family.name for family in text_string_to_metric_families(exposition.text)}
        assert set(FAMILIES) <= names
        # The portal process exposes the same registry (it serves the gateway under /v1 too).
        assert requests_of(client.get("/metrics").text, "metered-chat") == before + 1
        openmetrics = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")

    span = {"since": f"{row.at:%Y-%m-%dT%H}:00Z", "group_by": ["api_key", "model"]}
    tail = client.get("/api/workspaces/team-a/usage", params=span).json()
    rollup_once(services.sessions)
    rolled = client.get("/api/workspaces/team-a/usage", params=span).json()
    assert (tail["raw_rows"], rolled["raw_rows"]) == (1, 0)
    for report in (tail, rolled):
        (line,) = report["items"]
        assert (line["api_key"], line["model"], line["requests"]) == (gw.key_ids["main"], "metered-chat", 1)
        assert line["api_key_name"] == "main"
        assert line["prompt_tokens"] == reply.usage.prompt_tokens
        assert line["completion_tokens"] == reply.usage.completion_tokens == 6
        assert line["cost"] == format(row.cost, "f")
