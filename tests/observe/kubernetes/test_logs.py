"""Pod logs for the API: the last lines, a previous run's, a followed stream, and clear refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from portal.observe.kubernetes.logs import LogsUnavailable, follow_pod_logs, log_params, pod_logs
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
