"""The kubernetes observer as a background part of the portal (`portal.app.STARTERS`).

It starts only when ops gave the portal access to some cluster (`MODELFLEET_KUBECONFIGS__<name>`);
the demo and `make run` have none, so nothing starts and nothing is logged. Then, in a thread of its
own running an event loop, it looks every minute for the `kubernetes` regions of every stack whose
access is configured, and for each runs `lead_region`: take the region's leadership (one watcher per
region across all portal replicas), watch while leading, step down when the lock is lost, stop
cleanly with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from portal.observe import logs
from portal.observe.kubernetes.access import AccessError, RegionCluster, region_cluster
from portal.observe.kubernetes.leadership import Leadership
from portal.observe.kubernetes.logsource import PodLogs
from portal.observe.kubernetes.watcher import RegionWatcher
from portal.services import Services

log = logging.getLogger("modelfleet.observe.kubernetes")

RESCAN_SECONDS = 60.0
LEADERSHIP_POLL_SECONDS = 5.0
RETRY_SECONDS = (5.0, 300.0)  # a watcher that failed starts again after this back-off (doubling)


def kubernetes_observer_starter(services: Services) -> Callable[[], None] | None:
    """For the app's STARTERS: watch the regions the portal has access to; None when it has none."""
    if not services.settings.kubeconfigs:
        return None
    logs.register("kubernetes", PodLogs(lambda: reachable_regions(services)))
    return Observer(services).start()


def reachable_regions(services: Services, reported: set[str] | None = None) -> dict[str, RegionCluster]:
    """Every `kubernetes` region of every stack with access configured, by `stack/region`."""
    found: dict[str, RegionCluster] = {}
    kubeconfigs = services.settings.kubeconfigs
    for stack in services.repository.stacks():
        try:
            regions = services.repository.snapshot(stack).fleet.regions
        except Exception as exc:  # a stack that does not load is reported by its own views
            log.debug("regions of stack %s not read: %s", stack, exc)
            continue
        for region in regions.values():
            if getattr(region, "runtime", "kubernetes") != "kubernetes":
                continue
            try:
                cluster = region_cluster(kubeconfigs, stack, region)
            except AccessError as exc:
                _once(reported, f"{stack}/{region.name}: {exc}", logging.WARNING)
                continue
            if cluster is None:
                _once(
                    reported,
                    f"region {stack}/{region.name} is not watched: no access configured",
                    logging.INFO,
                )
                continue
            found[cluster.label] = cluster
    return found


def _once(reported: set[str] | None, message: str, level: int) -> None:
    if reported is None or message not in reported:
        log.log(level, "%s", message)
        if reported is not None:
            reported.add(message)


async def lead_region(
    services: Services,
    cluster: RegionCluster,
    *,
    poll: float = LEADERSHIP_POLL_SECONDS,
    retry: tuple[float, float] = RETRY_SECONDS,
    watcher_options: dict[str, Any] | None = None,
) -> None:
    """Lead `cluster`'s region when nobody does, and watch it while leading (until cancelled)."""
    leadership = Leadership(services.engine, cluster.label)
    failures = 0
    try:
        while True:
            if not await asyncio.to_thread(leadership.acquire):
                await asyncio.sleep(poll)
                continue
            options = {"watch_seconds": services.settings.observer_watch_seconds, **(watcher_options or {})}
            watcher = RegionWatcher(services.sessions, cluster, **options)
            task = asyncio.create_task(watcher.run(), name=f"observe {cluster.label}")
            while not task.done():
                await asyncio.wait({task}, timeout=poll)
                if not task.done() and not await asyncio.to_thread(leadership.check):
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    break
            if task.done() and not task.cancelled() and task.exception() is not None:
                failures += 1
                delay = min(retry[1], retry[0] * 2 ** (failures - 1))
                log.error("watching %s failed (again in %.0fs): %s", cluster.label, delay, task.exception())
                await asyncio.sleep(delay)
    finally:
        await asyncio.to_thread(leadership.release)


class Observer:
    """The regions this portal can reach, one `lead_region` task each, in a thread of its own."""

    def __init__(
        self,
        services: Services,
        *,
        rescan: float = RESCAN_SECONDS,
        poll: float = LEADERSHIP_POLL_SECONDS,
        watcher_options: dict[str, Any] | None = None,
    ) -> None:
        self.services = services
        self.rescan = rescan
        self.poll = poll
        self.watcher_options = watcher_options
        self.tasks: dict[str, tuple[RegionCluster, asyncio.Task[None]]] = {}
        self._reported: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def start(self) -> Callable[[], None]:
        started = threading.Event()

        def main() -> None:
            async def run() -> None:
                self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
                started.set()
                await self.run(self._stopping)

            asyncio.run(run())

        thread = threading.Thread(target=main, name="modelfleet-kubernetes-observer", daemon=True)
        thread.start()
        started.wait(10)

        def stop() -> None:
            if self._loop is not None and self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)
            thread.join(30)

        return stop

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                wanted = await asyncio.to_thread(reachable_regions, self.services, self._reported)
                self._follow(wanted)
                with contextlib.suppress(TimeoutError):  # a rescan every `rescan` seconds
                    await asyncio.wait_for(stopping.wait(), self.rescan)
        finally:
            tasks = [task for _, task in self.tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.tasks.clear()

    def _follow(self, wanted: dict[str, RegionCluster]) -> None:
        """Start a task per new region, stop those of regions gone or whose access changed."""
        for label, (cluster, task) in list(self.tasks.items()):
            if wanted.get(label) != cluster or task.done():
                task.cancel()
                del self.tasks[label]
        for label, cluster in wanted.items():
            if label not in self.tasks:
                log.info("observing region %s (namespace %s)", label, cluster.namespace)
                task = asyncio.create_task(
                    lead_region(self.services, cluster, poll=self.poll, watcher_options=self.watcher_options),
                    name=f"lead {label}",
                )
                self.tasks[label] = (cluster, task)
