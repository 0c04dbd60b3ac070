"""The gateway's engine: one per process (per event loop). It owns the parts a request goes through and
keeps them current:

- the snapshot of keys, workspaces, models, limit rules and routable targets (`current()`), reloaded when
  this process committed a change, when another process's edits show in the fingerprint poll, and as a
  periodic safety net;
- `admitter` (gateway/admission.py): rate limits and quotas, all or nothing;
- `relay` (gateway/relay.py): routers, failover, the upstream client;
- `recorder` (gateway/records.py): usage rows and metrics.

`identify()` is the one key check every endpoint starts with. The HTTP layer (app.py, compare.py,
streaming.py) calls these parts in order; none of them returns an HTTP response: refusals are
`Refusal`s, answered by one table (gateway/errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time

from gateway.access import authenticate
from gateway.admission import Admitter
from gateway.breaker import BreakerBoard, BreakerConfig
from gateway.feed import FeedListener, listen_url
from gateway.health import check_once
from gateway.inflight import InflightLedger
from gateway.limits import FailurePolicy, Limiter, OnFailure, RedisLimiter, build_limiter
from gateway.quotas import Counter, LocalQuotas, Quotas, RedisQuotas
from gateway.reaper import reap
from gateway.records import Recorder
from gateway.refusal import Refusal
from gateway.relay import Relay
from gateway.resources import Backing
from gateway.routing import Router
from gateway.shared_admission import SharedAdmission
from gateway.snapshot import KeyEntry, Loader, ModelEntry, Snapshot, install_change_hook
from gateway.upstream import UpstreamClient
from gateway.usage import UsageWriter
from store.db import utcnow

log = logging.getLogger("modelfleet.gateway")

_ID_PREFIX = f"req_{secrets.token_hex(6)}"
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique across processes: a random per-process prefix and a counter (os.urandom per request
    costs tens of µs under load)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


class Gateway:
    def __init__(
        self,
        services: Backing,
        *,
        simulator_url: str | None = None,
        limiter: Limiter | None = None,
        breaker_config: BreakerConfig | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.version = install_change_hook(services)
        self.loader = Loader(services, simulator_url)
        self.snapshot = Snapshot(version=-1)
        self.admitter = Admitter(self.settings, limiter)
        self.relay = Relay(breaker_config, self.settings.gateway_region, self.settings.gateway_max_attempts)
        self.writer = UsageWriter(
            services.engine,
            batch_size=self.settings.usage_batch_size,
            flush_seconds=self.settings.usage_flush_seconds,
            lock=self.loader.lock,
            on_flushed=self.admitter.local_quotas.flushed,
        )
        self.recorder = Recorder(self.writer, self.admitter.local_quotas)
        inflight = self.settings.usage_inflight
        if inflight is None:
            inflight = services.engine.dialect.name == "postgresql"
        self.inflight: InflightLedger | None = None  # in-flight markers and this replica's heartbeat
        if inflight:
            self.inflight = InflightLedger(
                services.engine,
                heartbeat_s=self.settings.usage_heartbeat_seconds,
                wait_s=self.settings.usage_inflight_wait_seconds,
            )
        self._limiter_given = limiter
        self._reload: asyncio.Future[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._full_reload_at = 0.0
        self._exits: contextlib.ExitStack | None = None
        self._changed: asyncio.Event | None = None  # set by the change feed: reload now
        self._feed: FeedListener | None = None
        self._checker: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None

    # The parts' state, for operators' introspection and tests.
    @property
    def limiter(self) -> Limiter:
        return self.admitter.limiter

    @property
    def quotas(self) -> Quotas:
        return self.admitter.quotas

    @property
    def local_quotas(self) -> LocalQuotas:
        return self.admitter.local_quotas

    @property
    def shared(self) -> SharedAdmission | None:
        return self.admitter.shared

    @property
    def breakers(self) -> BreakerBoard:
        return self.relay.breakers

    @property
    def routers(self) -> dict[str, Router]:
        return self.relay.routers

    # -- lifecycle -----------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.start()

    async def start(self) -> None:
        s = self.settings
        self.relay.upstream = UpstreamClient(
            max_connections=s.gateway_max_connections,
            connect_timeout_s=s.gateway_connect_timeout_seconds,
            read_timeout_s=s.gateway_read_timeout_seconds,
        )
        if self._limiter_given is None and s.redis_url:
            policy = FailurePolicy(
                requests=OnFailure(s.gateway_on_redis_failure_requests),
                tokens=OnFailure(s.gateway_on_redis_failure_tokens),
                concurrency=OnFailure(s.gateway_on_redis_failure_concurrency),
            )
            self.admitter.limiter = build_limiter(
                [],
                redis_url=s.redis_url,
                prefix=f"{s.gateway_redis_prefix}:rl",
                failure=policy,
                local_share=s.gateway_replicas,
                lease_ttl_s=s.gateway_lease_seconds,
                retry_interval_s=s.gateway_redis_probe_seconds,
            )
            limiter = self.admitter.limiter
            assert isinstance(limiter, RedisLimiter)
            # The quotas go through the limiter's pool and link: one down state, one probe.
            shared_quotas = RedisQuotas(
                limiter.client,
                self.admitter.local_quotas,
                prefix=s.gateway_redis_prefix,
                on_failure=OnFailure(s.gateway_on_redis_failure_tokens),
                retry_interval_s=s.gateway_redis_probe_seconds,
                link=limiter.link,
            )
            self.admitter.quotas = Quotas(self.admitter.local_quotas, shared_quotas)
            self.admitter.shared = SharedAdmission(limiter, shared_quotas)
        simulate = s.gateway_simulate_servings if s.gateway_simulate_servings is not None else s.demo
        if simulate and self.loader.simulator_url is None:
            from gateway.demo import start_simulator

            self._exits = contextlib.ExitStack()
            self.loader.simulator_url = await asyncio.to_thread(start_simulator, self._exits)
            log.info(
                "gateway: serving targets answered by the engine SIMULATOR at %s", self.loader.simulator_url
            )
        self.writer.start()
        if self.inflight is not None:
            self.inflight.start()
        await self.reload()
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        if s.gateway_feed and self.services.engine.dialect.name == "postgresql":
            changed = self._changed

            def wake() -> None:  # called from the listener's thread
                loop.call_soon_threadsafe(changed.set)

            self._feed = FeedListener(listen_url(self.services.engine.url), wake)
            self._feed.start()
        self._poller = loop.create_task(self._poll())
        if s.gateway_health_check_seconds > 0:
            self._checker = loop.create_task(self._check_health())
        self._heartbeat = loop.create_task(self._beat())
        if self.inflight is not None:
            self._reaper = loop.create_task(self._reap())
        self._started = True

    async def stop(self) -> None:
        for task in (self._poller, self._checker, self._heartbeat, self._reaper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._checker = self._heartbeat = self._reaper = None
        if self._feed is not None:
            await asyncio.to_thread(self._feed.stop)
            self._feed = None
        if self.inflight is not None:  # queued markers first: the usage rows written next delete them
            await self.inflight.aclose()
        await asyncio.to_thread(self.writer.stop)
        if self.relay.upstream is not None:
            await self.relay.upstream.aclose()
            self.relay.upstream = None
        if self._limiter_given is None:
            await self.admitter.limiter.aclose()
        self.admitter.shared = None
        if self._exits is not None:
            await asyncio.to_thread(self._exits.close)
            self._exits = None
            self.loader.simulator_url = None
        self._started = False

    # -- snapshot ------------------------------------------------------------------------------
    async def current(self) -> Snapshot:
        """The snapshot for this request: reloaded first when this process committed a change."""
        if self.version.value != self.snapshot.version:
            await self.reload()
        return self.snapshot

    async def reload(self, *, fresh: bool = False) -> None:
        """Load a fresh snapshot in a worker thread; concurrent callers share one load. `fresh`: a
        load already under way may have read before the change that asked for this one (the change
        feed's case), so load again after it."""
        while self._reload is not None:
            await asyncio.shield(self._reload)
            if not fresh and self.version.value == self.snapshot.version:
                return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._reload = future
        try:
            version = self.version.value
            snapshot = await asyncio.to_thread(self._load, version)
            self._apply(snapshot)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else logs it as unhandled
            raise
        finally:
            self._reload = None

    def _load(self, version: int) -> Snapshot:
        with self.loader.lock:  # the usage writer commits under it: base usage and flushes pair up
            snapshot = self.loader.load(version)
            self.admitter.local_quotas.load_bases(_usage_bases(snapshot))
        return snapshot

    def _apply(self, snapshot: Snapshot) -> None:
        if snapshot.rules != self.snapshot.rules:
            self.admitter.update_rules(snapshot.rules)
        self.relay.apply(routable(snapshot))
        self.snapshot = snapshot
        self._full_reload_at = time.monotonic()

    async def _poll(self) -> None:
        """Other processes' edits: a cheap fingerprint every poll interval, a full reload as a net."""
        interval = self.settings.gateway_snapshot_poll_seconds
        full = self.settings.gateway_snapshot_reload_seconds
        assert self._changed is not None
        while True:
            # The feed, or the poll interval. Not `asyncio.wait_for`: on 3.11 a cancel that lands as the
            # event is set is swallowed (python/cpython#86296), and `stop` then awaited this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._changed.wait()
            fed = self._changed.is_set()
            self._changed.clear()
            try:
                if fed:
                    await self.reload(fresh=True)
                    continue
                stale = time.monotonic() - self._full_reload_at >= full
                if not stale:
                    stale = await asyncio.to_thread(self.loader.fingerprint) != self.snapshot.fingerprint
                if stale or self.version.value != self.snapshot.version:
                    await self.reload()
            except Exception:
                log.exception("gateway: snapshot refresh failed; serving the previous one")

    async def _check_health(self) -> None:
        """Ask every ready serving endpoint's health path on a schedule (gateway/health.py)."""
        s = self.settings
        while True:
            await asyncio.sleep(s.gateway_health_check_seconds)
            upstream = self.relay.upstream
            if upstream is None:
                continue
            specs = [spec for entry in routable(self.snapshot).values() for spec in entry.targets]
            try:
                await check_once(
                    specs,
                    upstream,
                    self.relay.breakers,
                    s.gateway_health_check_timeout_seconds,
                    s.gateway_health_check_seconds,
                )
            except Exception:
                log.exception("gateway: health checks failed; trying again next round")

    async def _beat(self) -> None:
        """The heartbeat: renew every in-flight request's leases three times per lease lifetime."""
        interval = self.settings.gateway_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.admitter.heartbeat()
            except Exception:
                log.exception("gateway: renewing the leases in flight failed; trying again next beat")

    async def _reap(self) -> None:
        """Settle the requests of dead replicas (gateway/reaper.py), twice per `usage_reap_after_seconds`."""
        s = self.settings
        while True:
            await asyncio.sleep(s.usage_reap_after_seconds / 2)
            try:
                await asyncio.to_thread(
                    reap,
                    self.services.engine,
                    dead_after_s=s.usage_reap_after_seconds,
                    bill_prompt_without_output=s.gateway_bill_prompt_without_output,
                )
            except Exception:
                log.exception("gateway: reaping dead replicas' requests failed; trying again next round")

    # -- who ------------------------------------------------------------------------------------
    async def identify(self, authorization: str | None) -> tuple[Snapshot, KeyEntry] | Refusal:
        """The one key check: the current snapshot and the caller's key, or why not."""
        await self.ensure_started()
        snapshot = await self.current()
        key = authenticate(snapshot, self.services.hasher, authorization, utcnow())
        if isinstance(key, Refusal):
            return key
        return snapshot, key


def routable(snapshot: Snapshot) -> dict[str, ModelEntry]:
    """Every model a router serves, by its route key: the offerings and each workspace's own servings."""
    out = {m.route_key: m for m in snapshot.models.values()}
    for own in snapshot.own.values():
        out.update((m.route_key, m) for m in own.values())
    return out


def _usage_bases(snapshot: Snapshot) -> list[tuple[Counter, int]]:
    """The database's usage per quota counter (the period it was counted in)."""
    out: list[tuple[Counter, int]] = []
    for key in snapshot.keys.values():
        period = key.quota_period_start if key.quota_refresh is not None else None
        out.append((("api_key", key.public_id, period), key.used_tokens))
    for ws in snapshot.workspaces.values():
        period = ws.quota_period_start if ws.quota_refresh is not None else None
        out.append((("workspace", ws.slug, period), ws.used_tokens))
    return out
