"""Serving targets: a MaaS model routed to a serving of the demo stack resolves to one upstream per
placement (region, pool), weighted by target × placement weight, and sends the serving's model name.
Without a cluster the in-process engine SIMULATOR answers for the in-cluster endpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.core import Gateway
from gateway.snapshot import Loader
from portal.observe.states import ReplicaObservation, State
from portal.services import Services
from portal.settings import Settings
from tests.gateway.gateway_support import Harness, harness, observe

MESSAGES = [{"role": "user", "content": "hello"}]
QWEN = {"kind": "serving", "stack": "demo", "serving": "qwen25-7b"}  # cn-east (weight 75), cn-north (25)


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings.model_copy(update={"gateway_simulate_servings": True})


@pytest.fixture
def gw(client: TestClient, services: Services) -> Iterator[Harness]:
    with harness(client, services) as h:
        h.workspace("team-a")
        h.key("main", "team-a")
        yield h


def test_a_serving_target_is_one_upstream_per_placement(gw: Harness) -> None:
    gw.model("qwen", [QWEN], strategy="weighted")
    replies = [gw.sdk().chat.completions.create(model="qwen", messages=MESSAGES) for _ in range(8)]  # type: ignore[arg-type]
    assert {r.model for r in replies} == {"qwen2.5-7b-instruct"}  # the serving's served name
    rows = gw.records(8)
    assert Counter(r.region for r in rows) == {"cn-east": 6, "cn-north": 2}  # smooth 3:1, exact
    assert {r.target for r in rows} == {
        "demo/qwen25-7b/cn-east/east-h100",
        "demo/qwen25-7b/cn-north/north-c500",
    }
    weights = {t.name: t.weight for t in gw.gateway.routers["qwen"].targets}
    assert weights == {"demo/qwen25-7b/cn-east/east-h100": 7500, "demo/qwen25-7b/cn-north/north-c500": 2500}


def test_latency_strategy_prefers_the_gateways_region(client: TestClient, services: Services) -> None:
    services.settings = services.settings.model_copy(update={"gateway_region": "cn-north"})
    with harness(client, services, Gateway(services)) as h:
        h.workspace("team-a")
        h.key("main", "team-a")
        h.model("qwen", [QWEN], strategy="latency")
        for _ in range(4):
            h.sdk().chat.completions.create(model="qwen", messages=MESSAGES)  # type: ignore[arg-type]
        assert {r.region for r in h.records(4)} == {"cn-north"}


def test_without_the_simulator_only_observed_ready_placements_are_targets(gw: Harness) -> None:
    gw.model("qwen", [{**QWEN, "region": "cn-east", "weight": 10}])
    snapshot = Loader(gw.services).load(0)
    assert snapshot.models["qwen"].targets == ()  # committed to git, never observed: nothing to call
    (waiting,) = snapshot.models["qwen"].waiting
    assert (waiting.serving, waiting.state, waiting.ready, waiting.desired) == (
        "qwen25-7b",
        "committed",
        0,
        2,
    )

    observe(gw.services, "qwen25-7b", "cn-east", ReplicaObservation("qwen-0", State.READY))
    (target,) = Loader(gw.services).load(0).models["qwen"].targets
    assert target.url.endswith(".svc.cluster.local:8000/v1") and target.url.startswith("http://")
    assert (target.region, target.weight, target.upstream_model) == (
        "cn-east",
        10 * 75,
        "qwen2.5-7b-instruct",
    )
