"""A region's watcher: watch its namespace, derive each touched placement's replicas, record them.

Four list/watches (Deployments, LeaderWorkerSets, pods, pod events) feed one `Inventory`. Each change
marks the placements it touched; once every kind has been listed, a flush waits a short moment
(`debounce`) so a burst of changes — a rollout, a relist, a thousand events — becomes one
transaction, then derives the marked placements' replicas and records them into their
`serving_placements` rows (matched by stack, region, serving and pool; the stack is the one whose
config declares this region). After a (re)list every placement of the region is derived again, and
rows whose objects are gone get their replicas cleared. `record` writes only differences, so a new
watcher (after a restart, on another replica) writes no history for states that did not change.

Crashed containers' last log lines are fetched once per crash (pod, container, restart count) from
the pod log endpoint (`previous=true&tailLines=N`), so a crash loop's message says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx2
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from portal.observe.kubernetes.access import RegionCluster
from portal.observe.kubernetes.inventory import Inventory, Key
from portal.observe.kubernetes.kinds import WATCHED, Kind
from portal.observe.kubernetes.listwatch import WATCH_SECONDS, Changed, ListWatch, Relisted
from portal.observe.kubernetes.logs import LogsUnavailable, pod_logs
from portal.observe.kubernetes.objects import Obj, name, uid
from portal.observe.kubernetes.replicas import observe_placement
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation
from store.db import transaction
from store.models import ServingPlacement

log = logging.getLogger("modelfleet.observe.kubernetes")

DEBOUNCE_SECONDS = 0.15
LOG_LINES = 20
CrashKey = tuple[str, str, int, bool]  # pod uid, container, restart count, previous run


class RegionWatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        cluster: RegionCluster,
        *,
        debounce: float = DEBOUNCE_SECONDS,
        watch_seconds: int = WATCH_SECONDS,
        log_lines: int = LOG_LINES,
        page_size: int = 500,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.sessions = sessions
        self.cluster = cluster
        self.debounce = debounce
        self.watch_seconds = watch_seconds
        self.log_lines = log_lines
        self.page_size = page_size
        self.backoff = backoff
        self.inventory = Inventory()
        self.listed: set[str] = set()
        self.dirty: set[Key] = set()
        self.everything = False  # after a (re)list: derive every placement of the region
        self.wake = asyncio.Event()
        self.crash_logs: dict[CrashKey, str | None] = {}
        self.flushes = 0
        self.watches: list[ListWatch] = []

    async def run(self) -> None:
        async with self.cluster.client(read_seconds=self.watch_seconds + 30.0) as http:
            self.watches = [
                ListWatch(
                    http,
                    kind,
                    self.cluster.namespace,
                    self.cluster.region,
                    page_size=self.page_size,
                    watch_seconds=self.watch_seconds,
                    backoff=self.backoff,
                )
                for kind in WATCHED
            ]
            async with asyncio.TaskGroup() as tasks:
                for watch in self.watches:
                    tasks.create_task(watch.run(self.take))
                tasks.create_task(self._flush_forever(http))

    def take(self, kind: Kind, change: Relisted | Changed) -> None:
        """A watch's news (called on the loop, never blocking)."""
        self.dirty |= self.inventory.take(kind, change)
        if isinstance(change, Relisted):
            self.listed.add(kind.plural)
            self.everything = True
        self.wake.set()

    async def _flush_forever(self, http: httpx2.AsyncClient) -> None:
        while True:
            await self.wake.wait()
            if len(self.listed) < len(WATCHED):  # half a picture would record wrong states
                self.wake.clear()
                continue
            await asyncio.sleep(self.debounce)  # let the burst arrive
            self.wake.clear()
            await self.flush(http)

    async def flush(self, http: httpx2.AsyncClient) -> None:
        dirty, everything = self.dirty, self.everything
        self.dirty, self.everything = set(), False
        keys = self.inventory.keys() if everything else dirty
        logs = await self._crash_logs(http, keys)
        observed: dict[Key, list[ReplicaObservation]] = {}
        present: set[Key] = set()
        for key in keys:
            objects = self.inventory.placement(key)
            if objects.workload is None and not objects.pods:
                continue
            present.add(key)
            observed[key] = observe_placement(replace(objects, logs=logs))
        gone = dirty - present
        try:
            await asyncio.to_thread(self._record, observed, gone, everything)
        except Exception:
            # The database blinked: keep the marks, so the next change (or relist) writes them.
            self.dirty |= set(observed) | gone
            self.everything |= everything
            log.exception("recording region %s failed", self.cluster.label)
            return
        self.flushes += 1

    def _record(
        self, observed: Mapping[Key, list[ReplicaObservation]], gone: set[Key], everything: bool
    ) -> None:
        """In one transaction: the observed placements, and placements whose objects are gone."""
        with transaction(self.sessions) as session:
            query = (
                select(ServingPlacement)
                .where(
                    ServingPlacement.stack == self.cluster.stack,
                    ServingPlacement.region == self.cluster.region,
                    ServingPlacement.runtime == "kubernetes",
                )
                .options(selectinload(ServingPlacement.replicas))
            )
            if not everything:
                servings = {serving for serving, _ in (*observed, *gone)}
                if not servings:
                    return
                query = query.where(ServingPlacement.serving.in_(servings))
            for row in session.scalars(query):
                key = (row.serving, row.pool)
                if key in observed:
                    record(session, row, observed[key])
                elif (everything or key in gone) and row.replicas:
                    record(session, row, [])  # its pods and workload are gone from the cluster

    # -- crash logs -------------------------------------------------------------------------------

    async def _crash_logs(self, http: httpx2.AsyncClient, keys: set[Key]) -> dict[tuple[str, str], str]:
        """(pod, container) → last log lines of each crashed container of these placements."""
        wanted = [crash for pod in self.inventory.pods(keys) for crash in _crashes(pod)]
        missing = [(pod_name, key) for pod_name, key in wanted if key not in self.crash_logs]
        if missing:
            fetched = await asyncio.gather(*(self._tail(http, pod_name, key) for pod_name, key in missing))
            for (_, key), text in zip(missing, fetched, strict=True):
                self.crash_logs[key] = text
        live = {uid(pod) or name(pod) for pod in self.inventory.objects["pods"].values()}
        for key in [k for k in self.crash_logs if k[0] not in live]:
            del self.crash_logs[key]
        return {(pod_name, key[1]): text for pod_name, key in wanted if (text := self.crash_logs.get(key))}

    async def _tail(self, http: httpx2.AsyncClient, pod: str, key: CrashKey) -> str | None:
        _, container, _, previous = key
        try:
            text = await pod_logs(
                self.cluster, pod, container, self.log_lines, previous=previous, client=http
            )
        except (LogsUnavailable, httpx2.HTTPError) as exc:
            log.debug("logs of %s/%s not read: %s", pod, container, exc)
            return None
        return text.strip() or None


def _crashes(pod: Obj) -> list[tuple[str, CrashKey]]:
    """(pod name, crash key) of each container of `pod` whose last run failed."""
    status: Mapping[str, Any] = pod.get("status") or {}
    pod_uid = uid(pod) or name(pod)
    found = []
    for container in (*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())):
        state = container.get("state") or {}
        restarts = int(container.get("restartCount") or 0)
        if (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            found.append((name(pod), (pod_uid, str(container.get("name")), restarts, True)))
        elif (state.get("terminated") or {}).get("exitCode") not in (None, 0):
            found.append((name(pod), (pod_uid, str(container.get("name")), restarts, False)))
    return found
