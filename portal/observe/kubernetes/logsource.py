"""The kubernetes runtime's log source for the API (portal/observe/logs.py): a replica's pod log read
through the region's API server (`pods/log`: a tail, the previous container's, or followed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from portal.observe import logs
from portal.observe.kubernetes.access import RegionCluster
from portal.observe.kubernetes.logs import LogsUnavailable as ClusterRefused
from portal.observe.kubernetes.logs import follow_pod_logs, pod_logs
from store.models import ServingPlacement, ServingReplica


class PodLogs:
    def __init__(self, regions: Callable[[], dict[str, RegionCluster]]) -> None:
        self.regions = regions  # the regions the portal can reach, by `stack/region`

    def _region(self, placement: ServingPlacement) -> RegionCluster:
        region = self.regions().get(f"{placement.stack}/{placement.region}")
        if region is None:
            raise logs.LogsUnavailable(f"the portal has no access to region {placement.region!r}")
        return region

    @staticmethod
    def _pod(replica: ServingReplica) -> str:
        return str((replica.details or {}).get("pod") or replica.name)  # a group's logs are its leader's

    def tail(
        self, placement: ServingPlacement, replica: ServingReplica, lines: int, previous: bool
    ) -> list[str]:
        region = self._region(placement)
        try:
            text = asyncio.run(pod_logs(region, self._pod(replica), tail_lines=lines, previous=previous))
        except ClusterRefused as exc:
            if exc.status in (400, 404):  # no such container (run): an empty log, and the cluster's why
                raise logs.LogMissing(exc.message) from None
            raise logs.LogsUnavailable(exc.message) from None
        return text.splitlines()[-lines:] if lines else []

    async def follow(
        self, placement: ServingPlacement, replica: ServingReplica, lines: int
    ) -> AsyncIterator[str]:
        region = self._region(placement)
        try:
            async for line in follow_pod_logs(region, self._pod(replica), tail_lines=lines):
                yield line
        except ClusterRefused as exc:
            raise logs.LogsUnavailable(exc.message) from None
