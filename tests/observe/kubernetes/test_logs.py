"""Pod logs for the API: the last lines, a previous run's, a followed stream, and clear refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from portal.observe.kubernetes.logs import LogsUnavailable, follow_pod_logs, log_params, pod_logs
from portal.observe.kubernetes.logsource import PodLogs
from portal.observe.logs import LogMissing
from portal.observe.logs import LogsUnavailable as ObservedLogsUnavailable
from store.models import ServingPlacement, ServingReplica
from tests.observe.kubernetes.support import api_server, cluster_for


def test_tail_previous_follow_and_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server() as server:
            region = cluster_for(server, tmp_path)
            server.logs[("p", "engine", False)] = "".join(f"line {i}\n" for i in range(10))
            server.logs[("p", "engine", True)] = "Traceback\nRuntimeError: boom\n"
            assert await pod_logs(region, "p", "engine", tail_lines=2) == "line 8\nline 9\n"
            assert await pod_logs(region, "p", "engine", previous=True) == "Traceback\nRuntimeError: boom\n"
            followed = [line async for line in follow_pod_logs(region, "p", "engine", tail_lines=3)]
            assert followed == ["line 7", "line 8", "line 9"]
            assert server.requests[-1][1] == {"container": "engine", "tailLines": "3", "follow": "true"}
            with pytest.raises(LogsUnavailable) as refused:
                await pod_logs(region, "q", "engine")
            assert refused.value.status == 400
            assert (
                refused.value.message
                == 'container "engine" in pod "q" is waiting to start: ContainerCreating'
            )

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("../etc", None, 10, False), "pod: '../etc' is not a pod name"),
        (("p", "Engine!", 10, False), "container: 'Engine!' is not a container name"),
        (("p", None, 0, False), "tail_lines: 0 is not between 1 and 10000"),
    ],
)
def test_bad_arguments_name_the_argument(args: tuple[str, str | None, int, bool], error: str) -> None:
    with pytest.raises(ValueError) as bad:
        log_params(*args)
    assert str(bad.value) == error


def test_the_api_reads_a_replicas_pod_log_through_the_kubernetes_log_source(tmp_path: Path) -> None:
    """What `GET …/logs` asks the kubernetes runtime: the replica's pod (a group's leader), a tail or the
    previous run's, an unstarted container as an empty log with the cluster's words."""
    placement = ServingPlacement(stack="demo", serving="qwen", region="cn-east", pool="east-h100")
    replica = ServingReplica(name="qwen-0", details={"pod": "p"})

    async def scenario() -> None:
        async with api_server() as server:
            region = cluster_for(server, tmp_path)
            source = PodLogs(lambda: {"demo/cn-east": region})
            server.logs[("p", "engine", False)] = "".join(f"line {i}\n" for i in range(10))
            server.logs[("p", "engine", True)] = "Traceback\nRuntimeError: boom\n"
            assert await asyncio.to_thread(source.tail, placement, replica, 2, False) == ["line 8", "line 9"]
            previous = await asyncio.to_thread(source.tail, placement, replica, 5, True)
            assert previous == ["Traceback", "RuntimeError: boom"]
            with pytest.raises(LogMissing, match="waiting to start"):
                await asyncio.to_thread(
                    source.tail, placement, ServingReplica(name="q", details={}), 5, False
                )
            followed = [line async for line in source.follow(placement, replica, 3)]
            assert followed == ["line 7", "line 8", "line 9"]
            elsewhere = ServingPlacement(stack="demo", serving="qwen", region="cn-north", pool="north-c500")
            with pytest.raises(ObservedLogsUnavailable, match="no access to region 'cn-north'"):
                await asyncio.to_thread(source.tail, elsewhere, replica, 5, False)

    asyncio.run(scenario())
