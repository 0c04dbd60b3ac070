"""The gateway's engine: snapshot, admission (limits + quotas), upstream failover, relay, usage rows.

One `Gateway` per process (per event loop). `app.py` and `compare.py` turn HTTP requests into calls of:

- `current()`: the snapshot to use (reloaded first if the portal changed something in this process);
- `authenticate()` / `resolve_model()`: key and model checks against that snapshot (no I/O);
- `admit()`: every rate limit and both quotas, all or nothing; the `Admission` it returns must be
  settled exactly once (`settle(actual_tokens)`), which the callers do in `finally`;
- `connect()`: the router's attempts in order, failing over on transport errors, timeouts and failure
  statuses (408, 429, 5xx) before any byte went to the client;
- `pump()`: an upstream SSE stream through the `StreamMeter` to a sink, noticing disconnects;
- `record()`: the usage row (to the batch writer) and the Prometheus figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import anyio
import redis.asyncio as aioredis
from starlette.responses import Response

from gateway import metrics
from gateway.breaker import BreakerBoard, BreakerConfig, is_failure_status, parse_retry_after
from gateway.errors import invalid_api_key, invalid_request, model_not_found, openai_error
from gateway.limits import (
    Decision,
    Demand,
    FailurePolicy,
    Limiter,
    LimiterUnavailable,
    OnFailure,
    RedisLimiter,
    build_limiter,
)
from gateway.limits.rules import TOKEN_UNITS
from gateway.metering import Metered, Outcome, StreamMeter, Usage, cost
from gateway.quotas import (
    NO_HOLD,
    Counter,
    LocalQuotas,
    QuotaHold,
    QuotaRefusal,
    Quotas,
    QuotaSubject,
    RedisQuotas,
)
from gateway.resources import Backing
from gateway.routing import Attempt, Router, Target
from gateway.shared_admission import SharedAdmission
from gateway.snapshot import (
    KeyEntry,
    Loader,
    ModelEntry,
    Snapshot,
    TargetSpec,
    install_change_hook,
)
from gateway.tokens import estimate_prompt_tokens
from gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse, UpstreamTimeout
from gateway.usage import CHARGES, UsageWriter
from store.db import utcnow
from store.periods import period_bounds
from store.security import API_KEY_PREFIX, split

log = logging.getLogger("modelfleet.gateway")

_UNKNOWN_DIGEST = "0" * 64
LEASE_RENEW_SECONDS = 60.0


_ID_PREFIX = f"req_{secrets.token_hex(6)}"
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique across processes: a random per-process prefix and a counter (os.urandom per request
    costs tens of µs under load)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


# -- admission -----------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Admission:
    """What an admitted request holds: the limiter's reservation and the quota hold. Settle once."""

    gateway: Gateway
    decision: Decision
    hold: QuotaHold
    charges: tuple[Counter, ...]
    tokens: int
    settled: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return self.decision.headers()

    async def cancel(self) -> None:
        """Undo the admission of a request that never ran (a sibling was refused): leases, reserved
        tokens and request cells all come back. Counts as the settlement."""
        if self.settled:
            return
        self.settled = True
        if self.decision.reservation is not None:
            await self.gateway.limiter.cancel(self.decision.reservation)
        if self.hold is not NO_HOLD:
            await self.gateway.quotas.settle(self.hold, 0)

    async def settle(self, actual_tokens: int) -> None:
        """Replace every reservation with the real usage (0: release). Only the first call counts."""
        if self.settled:
            return
        self.settled = True
        reservation = self.decision.reservation
        shared = self.gateway.shared
        if shared is not None and self.hold is not NO_HOLD:
            await shared.settle(reservation, self.hold, actual_tokens)
            return
        if reservation is not None and reservation.id:
            await self.gateway.limiter.reconcile(reservation, actual_tokens)
        if self.hold is not NO_HOLD:
            await self.gateway.quotas.settle(self.hold, actual_tokens)


@dataclass(frozen=True, slots=True)
class Refused:
    """A request not admitted: the response to send, and what to record."""

    response: Response
    error_type: str


# -- upstream --------------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Connected:
    attempt: Attempt
    spec: TargetSpec
    response: UpstreamResponse
    started: float  # perf_counter when the request arrived


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    status: int
    code: str
    message: str
    retry_after: float | None = None
    target: TargetSpec | None = None

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        merged = dict(headers or {})
        if self.retry_after is not None:
            merged["retry-after"] = str(max(1, int(self.retry_after + 0.999)))
        type_ = "service_unavailable" if self.status == 503 else "upstream_error"
        return openai_error(self.status, self.message, type_, self.code, headers=merged)


@dataclass(slots=True)
class Sample:
    """What `record()` needs to know about one served (or refused) request."""

    request_id: str
    at: datetime
    started: float
    key: KeyEntry
    model: ModelEntry
    endpoint: str
    stream: bool
    status: int
    error_type: str | None = None
    target: TargetSpec | None = None
    metered: Metered | None = None
    charges: tuple[Counter, ...] = ()


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
        self.breakers = BreakerBoard(breaker_config or BreakerConfig())
        self.routers: dict[str, Router] = {}
        self.targets: dict[str, Target] = {}  # by name, reused across reloads (in-flight counts)
        self.specs: dict[str, TargetSpec] = {}
        self.region = self.settings.gateway_region
        self._limiter_given = limiter
        self.limiter: Limiter = limiter or build_limiter([])
        self.local_quotas = LocalQuotas()
        self.quotas = Quotas(self.local_quotas)
        self.shared: SharedAdmission | None = None  # limits and quotas in one Redis call (both in Redis)
        self.writer = UsageWriter(
            services.engine,
            batch_size=self.settings.usage_batch_size,
            flush_seconds=self.settings.usage_flush_seconds,
            lock=self.loader.lock,
            on_flushed=self.local_quotas.flushed,
        )
        self.upstream: UpstreamClient | None = None
        self._redis: aioredis.Redis | None = None
        self._reload: asyncio.Future[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._full_reload_at = 0.0
        self._has_token_rules = False
        self._exits: contextlib.ExitStack | None = None

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
        self.upstream = UpstreamClient(
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
            self.limiter = build_limiter(
                [],
                redis_url=s.redis_url,
                prefix=f"{s.gateway_redis_prefix}:rl",
                failure=policy,
                local_share=s.gateway_replicas,
            )
            # Like the limiter's: a bounded pool requests wait for (up to 1 s) instead of failing.
            pool = aioredis.BlockingConnectionPool.from_url(
                s.redis_url, max_connections=64, timeout=1.0, socket_timeout=0.25, socket_connect_timeout=0.25
            )
            self._redis = aioredis.Redis(connection_pool=pool)
            shared_quotas = RedisQuotas(
                self._redis,
                self.local_quotas,
                prefix=s.gateway_redis_prefix,
                on_failure=OnFailure(s.gateway_on_redis_failure_tokens),
            )
            self.quotas = Quotas(self.local_quotas, shared_quotas)
            if isinstance(self.limiter, RedisLimiter):
                self.shared = SharedAdmission(self.limiter, shared_quotas)
        simulate = s.gateway_simulate_servings if s.gateway_simulate_servings is not None else s.demo
        if simulate and self.loader.simulator_url is None:
            from gateway.demo import start_simulator

            self._exits = contextlib.ExitStack()
            self.loader.simulator_url = await asyncio.to_thread(start_simulator, self._exits)
            log.info(
                "gateway: serving targets answered by the engine SIMULATOR at %s", self.loader.simulator_url
            )
        self.writer.start()
        await self.reload()
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        self._started = True

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await asyncio.to_thread(self.writer.stop)
        if self.upstream is not None:
            await self.upstream.aclose()
            self.upstream = None
        if self._limiter_given is None:
            await self.limiter.aclose()
        self.shared = None
        if self._redis is not None:
            await self._redis.aclose()
            await self._redis.connection_pool.disconnect()
            self._redis = None
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

    async def reload(self) -> None:
        """Load a fresh snapshot in a worker thread; concurrent callers share one load."""
        if self._reload is not None:
            await asyncio.shield(self._reload)
            if self.version.value == self.snapshot.version:
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
            self.local_quotas.load_bases(_usage_bases(snapshot))
        return snapshot

    def _apply(self, snapshot: Snapshot) -> None:
        if snapshot.rules != self.snapshot.rules:
            self.limiter.update_rules(snapshot.rules)
            self._has_token_rules = any(r.unit in TOKEN_UNITS for r in snapshot.rules)
        for entry in snapshot.models.values():
            targets = [self._target(spec) for spec in entry.targets]
            router = self.routers.get(entry.public_id)
            if router is None:
                self.routers[entry.public_id] = Router(targets, entry.strategy, breakers=self.breakers)
            else:
                router.strategy = entry.strategy
                router.set_targets(targets)
            for spec in entry.targets:
                self.specs[spec.name] = spec
        for gone in set(self.routers) - set(snapshot.models):
            del self.routers[gone]
        self.snapshot = snapshot
        self._full_reload_at = time.monotonic()

    def _target(self, spec: TargetSpec) -> Target:
        """The router's target for a spec; the same object across reloads, so in-flight counts and
        the weighted round robin's state stay with it."""
        target = self.targets.get(spec.name)
        if target is None:
            target = self.targets[spec.name] = Target(spec.name)
        target.url, target.weight, target.region = spec.url, spec.weight, spec.region
        target.priority, target.healthy = spec.priority, spec.healthy
        return target

    async def _poll(self) -> None:
        """Other processes' edits: a cheap fingerprint every poll interval, a full reload as a net."""
        interval = self.settings.gateway_snapshot_poll_seconds
        full = self.settings.gateway_snapshot_reload_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                stale = time.monotonic() - self._full_reload_at >= full
                if not stale:
                    stale = await asyncio.to_thread(self.loader.fingerprint) != self.snapshot.fingerprint
                if stale or self.version.value != self.snapshot.version:
                    await self.reload()
            except Exception:
                log.exception("gateway: snapshot refresh failed; serving the previous one")

    # -- who and what ----------------------------------------------------------------------------
    def authenticate(self, snapshot: Snapshot, authorization: str | None) -> KeyEntry | Response:
        if not authorization:
            return invalid_api_key(
                "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'."
            )
        scheme, _, value = authorization.partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else authorization.strip()
        parts = split(presented, API_KEY_PREFIX)
        entry = snapshot.keys.get(parts[0]) if parts is not None else None
        digest = self.services.hasher.digest(parts[1] if parts is not None else "x")
        stored = entry.secret_hash if entry is not None else _UNKNOWN_DIGEST
        if not hmac.compare_digest(digest, stored) or entry is None:
            shown = f"{presented[:6]}...{presented[-4:]}" if len(presented) > 12 else "***"
            return invalid_api_key(f"Incorrect API key provided: {shown}.")
        if not entry.enabled:
            return invalid_api_key("This API key is disabled.")
        if entry.expires_at is not None and entry.expires_at <= utcnow():
            return invalid_api_key("This API key has expired.")
        return entry

    def resolve_model(self, snapshot: Snapshot, key: KeyEntry, model: Any) -> ModelEntry | Response:
        if model is None or model == "":
            return openai_error(
                400, "you must provide a model parameter", "invalid_request_error", None, "model"
            )
        if not isinstance(model, str):
            return invalid_request("Invalid value for `model`: expected a string (a model id).", "model")
        entry = snapshot.models.get(model)
        if entry is None or not entry.enabled or not entry.visible_to(key.workspace):
            return model_not_found(model)
        if key.allowed_models is not None and model not in key.allowed_models:
            return model_not_found(model, 403)
        return entry

    def usable_models(self, snapshot: Snapshot, key: KeyEntry) -> list[ModelEntry]:
        return [
            m
            for m in snapshot.models.values()
            if m.enabled
            and m.visible_to(key.workspace)
            and (key.allowed_models is None or m.public_id in key.allowed_models)
        ]

    # -- admission -----------------------------------------------------------------------------
    def reservation(self, snapshot: Snapshot, key: KeyEntry, body: Mapping[str, Any], endpoint: str) -> int:
        """Tokens to reserve: prompt estimate + the output cap (or the default). Skipped (0) when no
        token limit and no quota could use it: estimating a long prompt is the costliest step."""
        workspace = snapshot.workspaces.get(key.workspace)
        if (
            not self._has_token_rules
            and key.token_quota is None
            and (workspace is None or workspace.token_quota is None)
        ):
            return 0
        prompt = estimate_prompt_tokens(body)
        if endpoint == "embeddings":
            return prompt
        output = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(output, int) or isinstance(output, bool) or output <= 0:
            output = self.settings.gateway_default_max_tokens
        n = body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1
        return prompt + output * choices

    def charges(self, snapshot: Snapshot, key: KeyEntry, now: datetime) -> tuple[Counter, ...]:
        """The quota counters a request's usage is charged to: its key's and its workspace's."""
        key_period, _ = period_bounds(key.quota_refresh, now)
        workspace = snapshot.workspaces.get(key.workspace)
        out: list[Counter] = [("api_key", key.public_id, key_period)]
        if workspace is not None:
            out.append(("workspace", workspace.slug, period_bounds(workspace.quota_refresh, now)[0]))
        return tuple(out)

    def quota_subjects(self, snapshot: Snapshot, key: KeyEntry, now: datetime) -> list[QuotaSubject]:
        subjects: list[QuotaSubject] = []
        if key.token_quota is not None:
            start, end = period_bounds(key.quota_refresh, now)
            subjects.append(QuotaSubject("api_key", key.public_id, key.token_quota, start, end))
        workspace = snapshot.workspaces.get(key.workspace)
        if workspace is not None and workspace.token_quota is not None:
            start, end = period_bounds(workspace.quota_refresh, now)
            subjects.append(QuotaSubject("workspace", workspace.slug, workspace.token_quota, start, end))
        return subjects

    async def admit(
        self, snapshot: Snapshot, key: KeyEntry, model: ModelEntry, tokens: int, now: datetime
    ) -> Admission | Refused:
        """Every applicable rate limit and both quotas, all or nothing (a limit refusal is reported
        first). With both in Redis it is one script call (`SharedAdmission`)."""
        demand = Demand(model.public_id, key.workspace, key.public_id, tokens)
        subjects = self.quota_subjects(snapshot, key, now)
        hold: QuotaHold | QuotaRefusal | None = None
        try:
            if self.shared is not None and subjects:
                decision, hold = await self.shared.admit(demand, subjects, tokens, now)
            else:
                decision = await self.limiter.acquire(demand)
        except LimiterUnavailable as exc:
            return Refused(self._unavailable(str(exc), exc.retry_after), "limiter_unavailable")
        if not decision.admitted:
            refusal = decision.refusal
            assert refusal is not None
            metrics.observe_refusal(refusal.scope.value, refusal.unit.value)
            response = openai_error(
                429,
                refusal.message(model.public_id),
                refusal.error_type,
                "rate_limit_exceeded",
                headers=decision.headers(),
            )
            return Refused(response, "rate_limit_exceeded")
        if hold is None:
            hold = NO_HOLD
            if subjects:
                try:
                    hold = await self.quotas.reserve(subjects, tokens, now)
                except LimiterUnavailable as exc:
                    await self._release(decision)
                    return Refused(self._unavailable(str(exc), exc.retry_after), "limiter_unavailable")
        if isinstance(hold, QuotaRefusal):
            await self._release(decision)
            metrics.observe_refusal(hold.kind, "quota")
            headers = {**decision.headers(), **hold.headers()}
            response = openai_error(
                429, hold.message(), "insufficient_quota", "insufficient_quota", headers=headers
            )
            return Refused(response, "insufficient_quota")
        return Admission(self, decision, hold, self.charges(snapshot, key, now), tokens)

    async def _release(self, decision: Decision) -> None:
        """A quota refused what the limits admitted: the request never happened, so its request
        cells come back too (not only reserved tokens and leases)."""
        if decision.reservation is not None:
            await self.limiter.cancel(decision.reservation)

    @staticmethod
    def _unavailable(message: str, retry_after: float) -> Response:
        return openai_error(
            503,
            f"The gateway cannot check limits right now ({message}); retry shortly.",
            "service_unavailable",
            "limiter_unavailable",
            headers={"retry-after": str(max(1, int(retry_after + 0.999)))},
        )

    # -- upstream ------------------------------------------------------------------------------
    async def connect(
        self,
        model: ModelEntry,
        path: str,
        body_for: Callable[[TargetSpec], bytes],
        request_id: str,
        started: float,
    ) -> Connected | UpstreamFailure:
        """Try the router's candidates in order until one answers with a non-failure status."""
        upstream = self.upstream
        assert upstream is not None
        router = self.routers.get(model.public_id)
        if router is None:
            return UpstreamFailure(503, "no_upstream_available", f"model {model.public_id} has no upstream")
        failure: UpstreamFailure | None = None
        for tries, attempt in enumerate(router.attempts(self.region), start=1):
            spec = self.specs[attempt.target.name]
            headers = [("content-type", "application/json"), ("x-request-id", request_id), *spec.headers]
            try:
                response = await upstream.post(spec.url + path, body_for(spec), headers)
            except UpstreamTimeout:
                attempt.failed()
                attempt.close()
                metrics.UPSTREAM_ATTEMPTS.labels(target=spec.name, outcome="timeout").inc()
                failure = UpstreamFailure(
                    504, "upstream_timeout", "The upstream did not answer in time.", None, spec
                )
            except UpstreamError as exc:
                attempt.failed()
                attempt.close()
                metrics.UPSTREAM_ATTEMPTS.labels(target=spec.name, outcome="transport_error").inc()
                failure = UpstreamFailure(
                    502,
                    "upstream_unreachable",
                    f"The upstream could not be reached ({exc.cause}).",
                    None,
                    spec,
                )
            except BaseException:
                attempt.close()
                raise
            else:
                status = response.status_code
                if is_failure_status(status):
                    retry_after = parse_retry_after(response.headers)
                    attempt.failed(retry_after)
                    detail = await _error_message(response)
                    attempt.close()
                    metrics.UPSTREAM_ATTEMPTS.labels(target=spec.name, outcome="failure").inc()
                    if status in (429, 503):
                        failure = UpstreamFailure(
                            503,
                            "upstream_overloaded",
                            f"The upstream is overloaded: {detail}",
                            retry_after,
                            spec,
                        )
                    elif status in (408, 504):
                        failure = UpstreamFailure(
                            504, "upstream_timeout", f"The upstream timed out: {detail}", None, spec
                        )
                    else:
                        failure = UpstreamFailure(
                            502, "upstream_error", f"The upstream failed: {detail}", None, spec
                        )
                else:
                    attempt.succeeded()
                    metrics.UPSTREAM_ATTEMPTS.labels(target=spec.name, outcome="ok").inc()
                    return Connected(attempt, spec, response, started)
            if tries >= self.settings.gateway_max_attempts:
                break
        if failure is not None:
            return failure
        waits = [self.breakers[t.name].retry_in() for t in router.targets if t.weight > 0]
        retry = min((w for w in waits if w > 0), default=None)
        return UpstreamFailure(
            503, "no_upstream_available", f"No upstream of model {model.public_id} is available now.", retry
        )

    async def pump(
        self,
        connected: Connected,
        meter: StreamMeter,
        emit: Callable[[bytes], Awaitable[None]],
    ) -> Outcome | None:
        """Relay the upstream stream through the meter to `emit`. Returns the outcome when the caller
        cannot read it from the stream (an upstream that broke off); raises on cancellation."""
        try:
            async for piece in connected.response.aiter_raw():
                forward = meter.feed(piece)
                if forward:
                    await emit(forward)
            tail = meter.close()
            if tail:
                await emit(tail)
        except UpstreamError:
            return Outcome.UPSTREAM_ERROR
        return None

    async def renew_leases(self, admission: Admission) -> None:
        """Keep a long stream's concurrency leases and token reservation alive."""
        reservation = admission.decision.reservation
        if reservation is None or not reservation.id:
            return
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            await self.limiter.renew(reservation)

    # -- records ---------------------------------------------------------------------------------
    def record(self, sample: Sample) -> Usage:
        """Queue the usage row and count the metrics. Synchronous on purpose: it runs in `finally`
        blocks of cancelled tasks, where an await would raise again."""
        metered = sample.metered
        usage = metered.usage if metered is not None else Usage()
        prices = sample.model.prices
        cached_price = prices.cached_input_per_million
        amount = cost(usage, prices) if metered is not None else Decimal(0)
        latency = time.perf_counter() - sample.started
        ttft = metered.ttft_seconds if metered is not None else None
        row: dict[str, Any] = {
            "at": sample.at,
            "request_id": sample.request_id,
            "api_key": sample.key.public_id,
            "workspace": sample.key.workspace,
            "model": sample.model.public_id,
            "endpoint": sample.endpoint,
            "target": sample.target.name[:255] if sample.target is not None else None,
            "region": sample.target.region if sample.target is not None else None,
            "status": sample.status,
            "error_type": sample.error_type,
            "stream": sample.stream,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "estimated": usage.estimated,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "latency_ms": round(latency * 1000, 3),
            "price_input_per_m": prices.input_per_million,
            "price_output_per_m": prices.output_per_million,
            "price_cached_per_m": prices.input_per_million if cached_price is None else cached_price,
            "cost": amount,
            CHARGES: sample.charges,
        }
        tokens = usage.total_tokens
        if tokens:
            for counter in sample.charges:
                self.local_quotas.charge(counter, tokens)
        self.writer.put(row)
        model = sample.model.public_id
        metrics.observe_request(model, sample.endpoint, sample.status, latency)
        if ttft is not None:
            metrics.TTFT.labels(model=model).observe(ttft)
        if tokens:
            metrics.observe_tokens(
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens,
            )
        return usage

    async def close_upstream(self, connected: Connected) -> None:
        """Close the upstream response and the attempt, even inside a cancelled task."""
        connected.attempt.close()
        with anyio.CancelScope(shield=True):
            await connected.response.aclose()


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


async def _error_message(response: UpstreamResponse) -> str:
    """The upstream's error message, from a small body; never fails."""
    try:
        raw = await response.aread()
    except UpstreamError:
        return f"status {response.status_code}"
    try:
        error = json.loads(raw).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return f"status {response.status_code}: {str(message)[:300]}"
    except (ValueError, AttributeError):
        pass
    return f"status {response.status_code}"


__all__ = ["Admission", "Connected", "Gateway", "Refused", "Sample", "UpstreamFailure"]
