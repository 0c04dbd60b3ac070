"""The gateway routes only to what was observed ready: each ready replica of a local placement, the
in-cluster endpoint of a kubernetes placement with ready replicas; with nothing ready, a 503 that says
what each placement is doing and since when. Observations reach this process's gateway on the next
request (the change hook), other processes through the change feed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from gateway.breaker import State as BreakerState
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation, State
from portal.services import Services
from portal.settings import Settings
from simulator.app import Simulator, serve_in_thread
from store.db import session_factory, transaction
from store.models import ServingPlacement
from tests.gateway.gateway_support import Harness, harness, observe

MESSAGES = [{"role": "user", "content": "hello"}]
QWEN = {"kind": "serving", "stack": "demo", "serving": "qwen25-7b", "region": "cn-east"}


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    # No simulator standing in: only observed endpoints are called. Health checks often; the fingerprint
    # poll rarely, so a change seen at once came by this process's change hook or by the feed.
    return demo_repo_settings.model_copy(
        update={"gateway_health_check_seconds": 0.2, "gateway_snapshot_poll_seconds": 30}
    )


@pytest.fixture
def gw(client: TestClient, services: Services) -> Iterator[Harness]:
    with harness(client, services) as h:
        h.workspace("team-a")
        h.key("main", "team-a")
        h.model("qwen", [QWEN])
        yield h


def local_replicas(h: Harness, *urls: str) -> list[ReplicaObservation]:
    """Make qwen25-7b's cn-east placement a local one with these ready replicas."""
    with transaction(h.services.sessions) as session:
        session.execute(
            update(ServingPlacement)
            .where(ServingPlacement.serving == "qwen25-7b", ServingPlacement.region == "cn-east")
            .values(runtime="local", desired_replicas=len(urls))
        )
    ready = [ReplicaObservation(f"r{i}", State.READY, url=url) for i, url in enumerate(urls)]
    observe(h.services, "qwen25-7b", "cn-east", *ready)
    return ready


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
        ready = local_replicas(gw, *urls)
        assert [call(gw).status_code for _ in range(8)] == [200] * 8
        assert [e.stats.requests.get("chat", 0) for e in engines] == [4, 4]
        targets = Counter(r.target for r in gw.records(8))
        assert set(targets) == {"demo/qwen25-7b/cn-east/east-h100/r0", "demo/qwen25-7b/cn-east/east-h100/r1"}

        observe(gw.services, "qwen25-7b", "cn-east", ready[0], ReplicaObservation("r1", State.STOPPED))
        assert [call(gw).status_code for _ in range(4)] == [200] * 4
        assert [e.stats.requests.get("chat", 0) for e in engines] == [8, 4]


def test_an_endpoint_failing_its_health_check_leaves_the_routing_before_a_request_finds_out(
    gw: Harness,
) -> None:
    engine = Simulator(accept_any_model=True)
    with ExitStack() as stack:
        healthy = stack.enter_context(serve_in_thread(engine.app))
        with ExitStack() as doomed:
            dead = doomed.enter_context(serve_in_thread(Simulator(accept_any_model=True).app))
            local_replicas(gw, healthy, dead)
            assert call(gw).status_code == 200  # the gateway started, its checks run
        # `dead` stopped answering: its breaker opens from a health check alone.
        name = "demo/qwen25-7b/cn-east/east-h100/r1"
        deadline = time.monotonic() + 5
        while gw.gateway.breakers.states().get(name) != BreakerState.OPEN:
            assert time.monotonic() < deadline, gw.gateway.breakers.states()
            time.sleep(0.05)
        before = engine.stats.requests.get("chat", 0)
        assert [call(gw).status_code for _ in range(4)] == [200] * 4
        assert engine.stats.requests.get("chat", 0) == before + 4
        assert all(r.target != name for r in gw.records(5)[-4:])


def test_the_change_feed_reaches_a_gateway_at_once(gw: Harness, database_url: str) -> None:
    """Another process's observation (a session factory without this process's change hook) reaches
    the gateway through PostgreSQL NOTIFY, long before its 30 s poll."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the change feed is PostgreSQL's NOTIFY; SQLite (one machine) relies on the poll")
    with ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(Simulator(accept_any_model=True).app))
        local_replicas(gw, url)
        assert call(gw).status_code == 200
        feed = gw.gateway._feed
        assert feed is not None and feed.listening.wait(5)
        # Another process's sessions: no change hook (only the feed can tell), the same audit keys.
        elsewhere = session_factory(gw.services.engine)
        elsewhere.configure(info=dict(gw.services.sessions.kw.get("info") or {}))
        with transaction(elsewhere) as session:
            placement = session.scalars(
                select(ServingPlacement).where(
                    ServingPlacement.serving == "qwen25-7b", ServingPlacement.region == "cn-east"
                )
            ).one()
            record(session, placement, [ReplicaObservation("r0", State.FAILED, "Error", "exit 1")])
        changed_at = time.monotonic()
        while gw.gateway.snapshot.models["qwen"].targets:
            assert time.monotonic() - changed_at < 1.0, "the feed did not reach the gateway within 1 s"
            time.sleep(0.01)
        answer = call(gw)
        assert answer.status_code == 503
        assert "qwen25-7b has failed: 0 of 1 replicas ready" in answer.json()["error"]["message"]
