"""The gateway routes only to what was observed ready: each ready replica of a local placement, the
in-cluster endpoint of a kubernetes placement with ready replicas; with nothing ready, a 503 that says
what each placement is doing and since when. Observations reach this process's gateway on the next
request (the change hook), other processes through the change feed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from portal.observe.states import ReplicaObservation, State
from portal.services import Services
from portal.settings import Settings
from simulator.app import Simulator, serve_in_thread
from store.db import transaction
from store.models import ServingPlacement
from tests.gateway.gateway_support import Harness, harness, observe

MESSAGES = [{"role": "user", "content": "hello"}]
QWEN = {"kind": "serving", "stack": "demo", "serving": "qwen25-7b", "region": "cn-east"}


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings  # no simulator standing in: only observed endpoints are called


@pytest.fixture
def gw(client: TestClient, services: Services) -> Iterator[Harness]:
    with harness(client, services) as h:
        h.workspace("team-a")
        h.key("main", "team-a")
        h.model("qwen", [QWEN])
        yield h


def call(h: Harness) -> httpx.Response:
    return httpx.post(
        f"{h.url}/v1/chat/completions",
        json={"model": "qwen", "messages": MESSAGES},
        headers={"authorization": f"Bearer {h.keys['main']}"},
        timeout=10,
    )


def test_nothing_ready_is_a_503_saying_what_each_placement_does(gw: Harness) -> None:
    observe(
        gw.services,
        "qwen25-7b",
        "cn-east",
        ReplicaObservation("qwen-0", State.LOADING, "StartupProbe", "the engine is loading weights"),
    )
    answer = call(gw)
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "model_not_ready"
    assert "qwen25-7b is loading: 0 of 2 replicas ready, for " in error["message"]
    assert int(answer.headers["retry-after"]) >= 1
    assert gw.records(1)[0].error_type == "model_not_ready"


def test_local_replicas_are_each_a_target_and_leave_the_routing_when_they_stop(gw: Harness) -> None:
    with ExitStack() as stack:
        engines = [Simulator(accept_any_model=True) for _ in range(2)]
        urls = [stack.enter_context(serve_in_thread(e.app)) for e in engines]
        with transaction(gw.services.sessions) as session:
            session.execute(
                update(ServingPlacement)
                .where(ServingPlacement.serving == "qwen25-7b", ServingPlacement.region == "cn-east")
                .values(runtime="local", desired_replicas=2)
            )
        ready = [ReplicaObservation(f"r{i}", State.READY, url=url) for i, url in enumerate(urls)]
        observe(gw.services, "qwen25-7b", "cn-east", *ready)
        assert [call(gw).status_code for _ in range(8)] == [200] * 8
        assert [e.stats.requests.get("chat", 0) for e in engines] == [4, 4]
        targets = Counter(r.target for r in gw.records(8))
        assert set(targets) == {"demo/qwen25-7b/cn-east/east-h100/r0", "demo/qwen25-7b/cn-east/east-h100/r1"}

        observe(gw.services, "qwen25-7b", "cn-east", ready[0], ReplicaObservation("r1", State.STOPPED))
        assert [call(gw).status_code for _ in range(4)] == [200] * 4
        assert [e.stats.requests.get("chat", 0) for e in engines] == [8, 4]
