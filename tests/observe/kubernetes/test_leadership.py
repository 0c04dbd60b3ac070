"""One watcher per region across portal replicas (a PostgreSQL advisory lock), a standby taking over
when the leader dies; and the starter: nothing without access, a watched region with it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from portal.observe.kubernetes.leadership import Leadership
from portal.observe.kubernetes.starter import Observer, kubernetes_observer_starter, lead_region
from portal.services import Services
from tests.observe.kubernetes import factories as k
from tests.observe.kubernetes.support import api_server, cluster_for, eventually
from tests.observe.kubernetes.test_watcher import placement


def postgres_only(services: Services) -> None:
    if services.engine.dialect.name != "postgresql":
        pytest.skip("leadership across processes is a PostgreSQL lock; SQLite is one process")


def test_sqlite_is_one_process_which_leads(services: Services) -> None:
    if services.engine.dialect.name != "sqlite":
        pytest.skip("the SQLite case")
    first, second = Leadership(services.engine, "demo/cn-east"), Leadership(services.engine, "demo/cn-east")
    assert first.acquire() and second.acquire() and first.check()


def test_one_leader_and_a_standby_that_takes_over_when_it_dies(services: Services) -> None:
    postgres_only(services)
    leader, standby = Leadership(services.engine, "demo/cn-east"), Leadership(services.engine, "demo/cn-east")
    other_region = Leadership(services.engine, "demo/cn-south")
    try:
        assert leader.acquire()
        assert not standby.acquire()
        assert other_region.acquire()  # one lock per region
        assert leader.check()
        assert leader._connection is not None
        pid = leader._connection.scalar(text("SELECT pg_backend_pid()"))
        with services.engine.connect() as admin:  # the leader's process dies: its connection ends
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert not leader.check()
        assert standby.acquire()
        assert not leader.acquire()
    finally:
        for lease in (leader, standby, other_region):
            lease.release()


def test_two_replicas_watch_a_region_once_and_the_standby_takes_over(
    services: Services, tmp_path: Path
) -> None:
    postgres_only(services)

    async def scenario() -> None:
        async with api_server() as server:
            server.put(
                k.deployment("qwen3-32b-sglang"),
                k.ready_pod("qwen3-32b-sglang-east-h100-a", serving="qwen3-32b-sglang"),
            )
            cluster = cluster_for(server, tmp_path)
            options = {"debounce": 0.05, "backoff": (0.01, 0.05)}
            first = asyncio.create_task(lead_region(services, cluster, poll=0.05, watcher_options=options))
            await eventually(lambda: server.open_watches == 4)
            second = asyncio.create_task(lead_region(services, cluster, poll=0.05, watcher_options=options))
            await asyncio.sleep(0.3)
            assert server.open_watches == 4 and len(server.list_requests("pods")) == 1  # the standby waits
            assert placement(services, "qwen3-32b-sglang", "east-h100")["state"] == "ready"
            first.cancel()  # the leader goes away (its lock with it)
            await asyncio.gather(first, return_exceptions=True)
            await eventually(lambda: len(server.list_requests("pods")) == 2, what="the standby's list")
            server.put(k.pod("qwen3-32b-sglang-east-h100-a", serving="qwen3-32b-sglang", node=None))
            await eventually(
                lambda: placement(services, "qwen3-32b-sglang", "east-h100")["state"] == "pending"
            )
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)

    asyncio.run(scenario())


def test_without_access_nothing_starts_and_nothing_is_logged(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="modelfleet.observe"):
        assert kubernetes_observer_starter(services) is None
    assert caplog.records == []


def test_the_starter_watches_the_regions_it_can_reach(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            server.put(
                k.deployment("qwen3-32b-sglang"),
                k.ready_pod("qwen3-32b-sglang-east-h100-a", serving="qwen3-32b-sglang"),
            )
            kubeconfig = server.kubeconfig(tmp_path / "east.json")
            settings = services.settings.model_copy(
                update={"kubeconfigs": {"kubeconfig-cn-east": str(kubeconfig)}}
            )
            reaching = dataclasses.replace(services, settings=settings)
            observer = Observer(reaching, poll=0.05, watcher_options={"debounce": 0.05})
            stop = observer.start()
            try:
                await eventually(
                    lambda: placement(services, "qwen3-32b-sglang", "east-h100")["state"] == "ready"
                )
                assert sorted(observer.tasks) == ["demo/cn-east"]  # cn-south, cn-north: no access given
            finally:
                await asyncio.to_thread(stop)
            assert observer.tasks == {}

    asyncio.run(scenario())
