"""Running a scenario against the fake API server: start it, point a region's kubeconfig at it,
wait for conditions with a bounded poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from portal.observe.kubernetes.access import RegionCluster
from tests.observe.kubernetes.apiserver import FakeApiServer
from tests.observe.kubernetes.factories import NS


@asynccontextmanager
async def api_server() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def cluster_for(
    server: FakeApiServer, tmp_path: Path, region: str = "cn-east", stack: str = "demo"
) -> RegionCluster:
    kubeconfig = server.kubeconfig(tmp_path / f"kubeconfig-{region}.json")
    return RegionCluster(stack, region, NS, f"kubeconfig-{region}", str(kubeconfig))


async def eventually(check: Callable[[], object], *, seconds: float = 15.0, what: str = "") -> None:
    """Poll `check` every 20 ms until it is truthy; fail after `seconds` (generous: it returns as soon
    as the check holds, and a CI machine under load once needed more than 5 s for a relist)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if await asyncio.to_thread(check):  # checks may read the database: off the loop
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds}s: {what or check}")
        await asyncio.sleep(0.02)
