"""A region's watcher against the fake API server, recording into a migrated database with the demo
stack's placements: each case's rows in serving_placements, serving_replicas and serving_events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from portal.observe.kubernetes.access import RegionCluster
from portal.observe.kubernetes.watcher import RegionWatcher
from portal.services import Services
from store.models import AuditEvent, ServingEvent, ServingPlacement
from tests.observe.kubernetes import factories as k
from tests.observe.kubernetes.support import api_server, cluster_for, eventually

ASCEND = (
    "0/4 nodes are available: 4 Insufficient huawei.com/ascend-1980. preemption: 0/4 nodes are "
    "available: 4 No preemption victims found for incoming pod."
)
REFUSED = (
    'Startup probe failed: Get "http://10.1.2.3:8000/health": dial tcp 10.1.2.3:8000: '
    "connect: connection refused"
)
KV_CACHE = (
    "ValueError: To serve at least one request with the model's max seq len (131072), (16.0 GiB KV "
    "cache is needed, which is larger than the available KV cache memory (9.1 GiB)."
)


def placement(services: Services, serving: str, pool: str) -> dict[str, Any]:
    with services.sessions() as session:
        row = session.scalars(
            select(ServingPlacement).where(ServingPlacement.serving == serving, ServingPlacement.pool == pool)
        ).one()
        return {
            "state": row.state,
            "ready": row.ready_replicas,
            "reason": row.reason,
            "message": row.message,
            "replicas": {
                r.name: {
                    "state": r.state,
                    "reason": r.reason,
                    "message": r.message,
                    "restarts": r.restarts,
                    "exit_code": r.exit_code,
                    "details": r.details,
                }
                for r in row.replicas
            },
        }


def history(services: Services, serving: str, replica: str | None = None) -> list[tuple[str | None, str]]:
    with services.sessions() as session:
        query = select(ServingEvent).where(ServingEvent.serving == serving).order_by(ServingEvent.id)
        return [
            (e.replica, e.state) for e in session.scalars(query) if replica is None or e.replica == replica
        ]


def event_count(services: Services) -> int:
    with services.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(ServingEvent)) or 0)


@asynccontextmanager
async def watching(services: Services, cluster: RegionCluster) -> AsyncIterator[RegionWatcher]:
    watcher = RegionWatcher(services.sessions, cluster, debounce=0.05, backoff=(0.01, 0.05))
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def state_is(services: Services, serving: str, pool: str, state: str) -> Any:
    return lambda: placement(services, serving, pool)["state"] == state


def test_unschedulable_with_the_schedulers_message(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            pod = k.pod(
                "llama31-8b-ascend-south-910b-5d8-x1",
                serving="llama31-8b-ascend",
                pool="south-910b",
                region="cn-south",
                node=None,
                conditions=k.unschedulable(ASCEND),
            )
            server.put(
                k.deployment("llama31-8b-ascend", "south-910b", region="cn-south"),
                pod,
                k.event(pod["metadata"]["name"], "FailedScheduling", ASCEND, type="Warning"),
            )
            async with watching(services, cluster_for(server, tmp_path, "cn-south")):
                await eventually(state_is(services, "llama31-8b-ascend", "south-910b", "pending"))
            seen = placement(services, "llama31-8b-ascend", "south-910b")
            assert (seen["reason"], seen["message"]) == ("Unschedulable", ASCEND)
            replica = seen["replicas"][pod["metadata"]["name"]]
            assert (replica["state"], replica["reason"], replica["message"]) == (
                "pending",
                "Unschedulable",
                ASCEND,
            )
            assert history(services, "llama31-8b-ascend")[-2:] == [
                (pod["metadata"]["name"], "pending"),
                (None, "pending"),
            ]
            # The other placements of the region are not applied: they stay as committed.
            assert placement(services, "qwen25-72b-mindie", "south-910b")["state"] == "committed"

    asyncio.run(scenario())


def test_image_pull_failure_names_the_image_and_is_audited(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            image = "lmsysorg/sglang:v0.5.23-cu129"
            pull = f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": not found'
            pod = k.pod(
                "qwen3-32b-sglang-east-h100-6f-a",
                serving="qwen3-32b-sglang",
                init=k.FETCH_DONE,
                engine=k.status("engine", k.waiting("ErrImagePull", pull)),
                engine_image=image,
            )
            server.put(k.deployment("qwen3-32b-sglang"), pod)
            async with watching(services, cluster_for(server, tmp_path)):
                await eventually(state_is(services, "qwen3-32b-sglang", "east-h100", "failed"))
            seen = placement(services, "qwen3-32b-sglang", "east-h100")
            assert seen["reason"] == "ErrImagePull"
            assert f'image "{image}" of container engine cannot be pulled' in seen["message"]
            with services.sessions() as session:
                audited = session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "ServingFailed")
                ).all()
            assert {a.resource_id for a in audited} >= {"demo/qwen3-32b-sglang/cn-east/east-h100"}

    asyncio.run(scenario())


def test_crash_loop_with_exit_code_restarts_and_the_last_log_lines(
    services: Services, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            name = "qwen25-7b-east-h100-7c-a"
            engine = k.status(
                "engine", k.waiting("CrashLoopBackOff", "back-off 5m0s"), restarts=5, last=k.terminated(1)
            )
            server.put(
                k.deployment("qwen25-7b", replicas=2),
                k.pod(name, serving="qwen25-7b", phase="Running", init=k.FETCH_DONE, engine=engine),
            )
            lines = [f"INFO line {i}" for i in range(100)] + [KV_CACHE]
            server.logs[(name, "engine", True)] = "\n".join(lines) + "\n"
            async with watching(services, cluster_for(server, tmp_path)):
                await eventually(state_is(services, "qwen25-7b", "east-h100", "failed"))
            replica = placement(services, "qwen25-7b", "east-h100")["replicas"][name]
            assert (replica["reason"], replica["exit_code"], replica["restarts"]) == (
                "CrashLoopBackOff",
                1,
                5,
            )
            crashed = "container engine exited with code 1 (Error); restarted 5 times"
            assert replica["message"].startswith(f"{crashed}; last log lines:\nINFO line 81\n")
            assert replica["message"].endswith("larger than the available KV cache memory (9.1 GiB).")
            asked = [q for p, q in server.requests if p.endswith("/log")]
            assert asked == [{"container": "engine", "tailLines": "20", "previous": "true"}]

    asyncio.run(scenario())


def test_oom_killed(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            engine = k.status(
                "engine", k.waiting("CrashLoopBackOff"), restarts=3, last=k.terminated(137, "OOMKilled")
            )
            server.put(
                k.deployment("qwen3-8b-shared", "east-l20-shared"),
                k.pod(
                    "qwen3-8b-shared-east-l20-shared-1",
                    serving="qwen3-8b-shared",
                    pool="east-l20-shared",
                    phase="Running",
                    init=k.FETCH_DONE,
                    engine=engine,
                ),
            )
            async with watching(services, cluster_for(server, tmp_path)):
                await eventually(state_is(services, "qwen3-8b-shared", "east-l20-shared", "failed"))
            seen = placement(services, "qwen3-8b-shared", "east-l20-shared")
            replica = seen["replicas"]["qwen3-8b-shared-east-l20-shared-1"]
            assert (seen["reason"], replica["exit_code"], replica["restarts"]) == ("OOMKilled", 137, 3)

    asyncio.run(scenario())


def test_slow_model_load_downloading_loading_ready(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            names = ["qwen25-7b-east-h100-7c-a", "qwen25-7b-east-h100-7c-b"]
            server.put(k.deployment("qwen25-7b", replicas=2))
            server.put(
                *(k.pod(n, serving="qwen25-7b", init=k.status("model-fetch", k.running())) for n in names)
            )
            async with watching(services, cluster_for(server, tmp_path)):
                await eventually(state_is(services, "qwen25-7b", "east-h100", "downloading"))
                refused = REFUSED
                for n in names:
                    server.put(
                        k.pod(
                            n,
                            serving="qwen25-7b",
                            phase="Running",
                            init=k.FETCH_DONE,
                            engine=k.status("engine", k.running(k.at(60)), started=False),
                        ),
                        k.event(n, "Unhealthy", refused, type="Warning", container="engine", when=k.at(70)),
                    )
                await eventually(state_is(services, "qwen25-7b", "east-h100", "loading"))
                assert refused in placement(services, "qwen25-7b", "east-h100")["message"]
                server.put(k.ready_pod(names[0], serving="qwen25-7b"))
                await eventually(state_is(services, "qwen25-7b", "east-h100", "degraded"))
                server.put(k.ready_pod(names[1], serving="qwen25-7b"))
                await eventually(state_is(services, "qwen25-7b", "east-h100", "ready"))
            assert placement(services, "qwen25-7b", "east-h100")["ready"] == 2
            assert history(services, "qwen25-7b", names[0]) == [
                (names[0], s) for s in ("downloading", "loading", "ready")
            ]
            placement_history = [s for replica, s in history(services, "qwen25-7b") if replica is None]
            assert placement_history[-4:] == ["downloading", "loading", "degraded", "ready"]

    asyncio.run(scenario())


def test_a_leader_worker_set_group_is_ready_only_when_whole(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:

            def member(worker: int, ready: bool) -> dict[str, Any]:
                if ready:
                    return k.lws_pod(
                        "deepseek-r1",
                        "east-h100",
                        0,
                        worker,
                        region="cn-east",
                        phase="Running",
                        init=k.FETCH_DONE,
                        engine=k.status("engine", k.running(), ready=True, started=True),
                    )
                return k.lws_pod(
                    "deepseek-r1",
                    "east-h100",
                    0,
                    worker,
                    region="cn-east",
                    init=k.status("model-fetch", k.running()),
                )

            server.put(
                k.leader_worker_set("deepseek-r1", "east-h100", region="cn-east", size=2),
                member(0, True),
                member(1, False),
            )
            async with watching(services, cluster_for(server, tmp_path)):
                await eventually(state_is(services, "deepseek-r1", "east-h100", "downloading"))
                seen = placement(services, "deepseek-r1", "east-h100")
                group = seen["replicas"]["deepseek-r1-east-h100-0"]
                assert (
                    group["message"]
                    == "1 of 2 pods ready; deepseek-r1-east-h100-0-1: fetching the model weights"
                )
                assert group["details"]["pods"] == {
                    "deepseek-r1-east-h100-0": "ready",
                    "deepseek-r1-east-h100-0-1": "downloading",
                }
                assert seen["ready"] == 0
                server.put(member(1, True))
                await eventually(state_is(services, "deepseek-r1", "east-h100", "ready"))
            assert list(placement(services, "deepseek-r1", "east-h100")["replicas"]) == [
                "deepseek-r1-east-h100-0"
            ]

    asyncio.run(scenario())


def test_a_watch_ended_by_410_relists_and_sees_what_was_missed(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            names = ["qwen25-7b-east-h100-7c-a", "qwen25-7b-east-h100-7c-b"]
            server.put(
                k.deployment("qwen25-7b", replicas=2), *(k.ready_pod(n, serving="qwen25-7b") for n in names)
            )
            async with watching(services, cluster_for(server, tmp_path)) as watcher:
                await eventually(state_is(services, "qwen25-7b", "east-h100", "ready"))
                await eventually(lambda: server.open_watches == 4)
                server.end_watches()
                # Between two watch requests: a pod goes, and the history with it.
                await eventually(lambda: server.open_watches == 0 or len(server.watch_requests("pods")) > 1)
                server.delete("Pod", names[1])
                server.expire_open_watches()
                await eventually(state_is(services, "qwen25-7b", "east-h100", "degraded"))
                assert all(w.lists >= 2 for w in watcher.watches if w.kind.plural == "pods")
            assert list(placement(services, "qwen25-7b", "east-h100")["replicas"]) == [names[0]]

    asyncio.run(scenario())


def test_a_restarted_watcher_writes_no_duplicate_history(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            crashed = k.status("engine", k.waiting("CrashLoopBackOff"), restarts=2, last=k.terminated(1))
            server.put(
                k.deployment("qwen25-7b", replicas=2),
                k.ready_pod("qwen25-7b-east-h100-7c-a", serving="qwen25-7b"),
                k.pod(
                    "qwen25-7b-east-h100-7c-b",
                    serving="qwen25-7b",
                    phase="Running",
                    init=k.FETCH_DONE,
                    engine=crashed,
                ),
            )
            server.logs[("qwen25-7b-east-h100-7c-b", "engine", True)] = "Traceback …\nRuntimeError: boom\n"
            cluster = cluster_for(server, tmp_path)
            async with watching(services, cluster):
                await eventually(state_is(services, "qwen25-7b", "east-h100", "degraded"))
            before, rows = event_count(services), placement(services, "qwen25-7b", "east-h100")
            async with watching(services, cluster) as second:  # the process died; a new one starts
                await eventually(lambda: second.flushes >= 1, what="the new watcher's first flush")
                assert event_count(services) == before
                assert placement(services, "qwen25-7b", "east-h100") == rows
                server.put(k.ready_pod("qwen25-7b-east-h100-7c-b", serving="qwen25-7b"))
                await eventually(state_is(services, "qwen25-7b", "east-h100", "ready"))
            assert event_count(services) == before + 2  # the replica's and the placement's transitions

    asyncio.run(scenario())


def test_a_burst_of_changes_becomes_a_few_transactions(services: Services, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            name = "qwen3-32b-sglang-east-h100-6f-a"
            server.put(
                k.deployment("qwen3-32b-sglang"),
                k.pod(name, serving="qwen3-32b-sglang", init=k.status("model-fetch", k.running())),
            )
            async with watching(services, cluster_for(server, tmp_path)) as watcher:
                await eventually(state_is(services, "qwen3-32b-sglang", "east-h100", "downloading"))
                flushes = watcher.flushes
                for i in range(300):
                    engine = k.status("engine", k.running(k.at(60)), started=False, restarts=0)
                    server.put(
                        k.pod(
                            name,
                            serving="qwen3-32b-sglang",
                            phase="Running",
                            init=k.FETCH_DONE,
                            engine=engine,
                            rv=str(i),
                        )
                    )
                server.put(k.ready_pod(name, serving="qwen3-32b-sglang"))
                await eventually(state_is(services, "qwen3-32b-sglang", "east-h100", "ready"))
                assert watcher.flushes - flushes <= 5
            # 300 identical "loading" observations are one transition at most (when a flush fell
            # inside the burst), never 300.
            states = [state for _, state in history(services, "qwen3-32b-sglang", name)]
            assert states in (["downloading", "ready"], ["downloading", "loading", "ready"])

    asyncio.run(scenario())


def test_scaled_to_zero_is_stopped(services: Services, tmp_path: Path) -> None:
    """The demo's qwen3-32b-sglang row wants one replica; once pods go and the Deployment is gone the
    replica rows are cleared (the placement shows that none is there)."""

    async def scenario() -> None:
        async with api_server() as server:
            name = "qwen3-32b-sglang-east-h100-6f-a"
            server.put(k.deployment("qwen3-32b-sglang"), k.ready_pod(name, serving="qwen3-32b-sglang"))
            async with watching(services, cluster_for(server, tmp_path)):
                await eventually(state_is(services, "qwen3-32b-sglang", "east-h100", "ready"))
                server.put(k.ready_pod(name, serving="qwen3-32b-sglang", deleting=True))
                await eventually(
                    lambda: (
                        placement(services, "qwen3-32b-sglang", "east-h100")["replicas"][name]["state"]
                        == "stopped"
                    )
                )
                server.delete("Pod", name)
                server.delete("Deployment", "qwen3-32b-sglang-east-h100")
                await eventually(
                    lambda: placement(services, "qwen3-32b-sglang", "east-h100")["replicas"] == {}
                )
            seen = placement(services, "qwen3-32b-sglang", "east-h100")
            assert (seen["state"], seen["reason"]) == ("pending", "NoReplicas")

    asyncio.run(scenario())
