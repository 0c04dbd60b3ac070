"""A circuit breaker per upstream target: stop sending to a target that keeps failing, probe it back.

closed ──(N consecutive failures, or failure rate ≥ threshold over a sliding window with enough volume,
          or a failure carrying `retry-after`)──► open ──(cool-down elapsed)──► half-open
half-open: one probe at a time; its success closes the circuit, its failure re-opens it with a longer
cool-down (×`backoff` up to `max_cooldown`). A cool-down is never shorter than the upstream's
`retry-after`. The clock is injected so tests run on virtual time.

Results are reported against the `Permit` the attempt was given, so a late result of a request that
started before the last transition cannot close or re-open the circuit (only the probe's result
decides in half-open). Not thread-safe by design: one breaker lives in one event loop.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

Clock = Callable[[], float]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    consecutive_failures: int = 5  # open after this many failures in a row (0: rule off)
    failure_rate: float = 0.5  # open when failures / requests in the window reach this (0: rule off)
    window_seconds: float = 30.0
    min_requests: int = 20  # the failure-rate rule needs this many results in the window
    cooldown_seconds: float = 5.0  # the first open period
    backoff: float = 2.0  # each failed probe multiplies the cool-down ...
    max_cooldown_seconds: float = 60.0  # ... up to this; also caps an upstream's retry-after
    trip_on_retry_after: bool = True  # a failure with retry-after (429/503) opens at once
    probe_timeout_seconds: float = 60.0  # a probe that never reports frees its slot after this
    bucket_seconds: float = 1.0  # the sliding window's resolution

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.bucket_seconds <= 0 or self.cooldown_seconds < 0:
            raise ValueError("window, bucket and cool-down must be positive")
        if not 0 <= self.failure_rate <= 1:
            raise ValueError("failure_rate is a fraction in [0, 1]")


@dataclass(frozen=True, slots=True)
class Permit:
    """What `try_acquire` hands out; report the attempt's result with it exactly once."""

    epoch: int
    probe: bool


@dataclass(slots=True)
class _Bucket:
    index: int
    requests: int = 0
    failures: int = 0


@dataclass
class CircuitBreaker:
    config: BreakerConfig = field(default_factory=BreakerConfig)
    clock: Clock = time.monotonic
    _state: State = State.CLOSED
    _epoch: int = 0
    _consecutive: int = 0
    _buckets: deque[_Bucket] = field(default_factory=deque)
    _window_requests: int = 0
    _window_failures: int = 0
    _open_until: float = 0.0
    _cooldown: float = 0.0
    _probe_started: float | None = None
    opened_count: int = 0  # how often the circuit opened (for metrics)

    # -- queries ---------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The state as of now: an open circuit whose cool-down has passed reads as half-open."""
        if self._state is State.OPEN and self.clock() >= self._open_until:
            return State.HALF_OPEN
        return self._state

    def available(self) -> bool:
        """Would `try_acquire` succeed now? (No side effect: routers use it to order candidates.)"""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.OPEN:
            return False
        return not self._probe_in_flight()

    def retry_in(self) -> float:
        """Seconds until an open circuit accepts a probe (0 when it would accept a request now)."""
        if self._state is State.OPEN:
            return max(0.0, self._open_until - self.clock())
        return 0.0

    # -- attempts --------------------------------------------------------------------------------
    def try_acquire(self) -> Permit | None:
        """A permit to send one request, or None while open (or while the half-open probe is out)."""
        now = self.clock()
        if self._state is State.OPEN and now >= self._open_until:
            self._transition(State.HALF_OPEN)
        if self._state is State.CLOSED:
            return Permit(self._epoch, probe=False)
        if self._state is State.HALF_OPEN and not self._probe_in_flight():
            self._probe_started = now
            return Permit(self._epoch, probe=True)
        return None

    def record_success(self, permit: Permit) -> None:
        if permit.epoch != self._epoch:
            return  # started before the last transition: its result says nothing about now
        if permit.probe:
            if self._state is State.HALF_OPEN:
                self._cooldown = 0.0
                self._transition(State.CLOSED)
            return
        if self._state is State.CLOSED:
            self._consecutive = 0
            self._count(failed=False)

    def record_failure(self, permit: Permit, retry_after: float | None = None) -> None:
        """The attempt failed (5xx, 429, 408, connection error, timeout); `retry_after` in seconds."""
        if permit.epoch != self._epoch:
            return
        if permit.probe:
            if self._state is State.HALF_OPEN:
                self._open(retry_after, backoff=True)
            return
        if self._state is not State.CLOSED:
            return
        self._consecutive += 1
        self._count(failed=True)
        cfg = self.config
        if (
            (cfg.trip_on_retry_after and retry_after is not None)
            or (cfg.consecutive_failures and self._consecutive >= cfg.consecutive_failures)
            or (
                cfg.failure_rate
                and self._window_requests >= cfg.min_requests
                and self._window_failures >= cfg.failure_rate * self._window_requests
            )
        ):
            self._open(retry_after, backoff=False)

    def release(self, permit: Permit) -> None:
        """The attempt ended without a verdict (e.g. the client went away first): free a probe slot."""
        if permit.probe and permit.epoch == self._epoch:
            self._probe_started = None

    # -- internals -------------------------------------------------------------------------------
    def _probe_in_flight(self) -> bool:
        started = self._probe_started
        return started is not None and self.clock() - started < self.config.probe_timeout_seconds

    def _open(self, retry_after: float | None, *, backoff: bool) -> None:
        cfg = self.config
        base = self._cooldown * cfg.backoff if backoff and self._cooldown else cfg.cooldown_seconds
        self._cooldown = min(base, cfg.max_cooldown_seconds)
        wait = max(self._cooldown, min(retry_after or 0.0, cfg.max_cooldown_seconds))
        self._open_until = self.clock() + wait
        self.opened_count += 1
        self._transition(State.OPEN)

    def _transition(self, state: State) -> None:
        self._state = state
        self._epoch += 1
        self._probe_started = None
        if state is State.CLOSED:
            self._consecutive = 0
            self._buckets.clear()
            self._window_requests = self._window_failures = 0

    def _count(self, *, failed: bool) -> None:
        cfg = self.config
        index = math.floor(self.clock() / cfg.bucket_seconds)
        oldest = index - math.ceil(cfg.window_seconds / cfg.bucket_seconds) + 1
        buckets = self._buckets
        while buckets and buckets[0].index < oldest:
            gone = buckets.popleft()
            self._window_requests -= gone.requests
            self._window_failures -= gone.failures
        if not buckets or buckets[-1].index != index:
            buckets.append(_Bucket(index))
        bucket = buckets[-1]
        bucket.requests += 1
        self._window_requests += 1
        if failed:
            bucket.failures += 1
            self._window_failures += 1


class BreakerBoard:
    """One breaker per target name, created on first use with a shared config and clock."""

    def __init__(self, config: BreakerConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, target: str) -> CircuitBreaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = self._breakers[target] = CircuitBreaker(self.config, self.clock)
        return breaker

    def available(self, target: str) -> bool:
        breaker = self._breakers.get(target)
        return breaker is None or breaker.available()

    def states(self) -> dict[str, State]:
        return {name: breaker.state for name, breaker in self._breakers.items()}


def is_failure_status(status: int) -> bool:
    """Statuses that say the target (not the request) is in trouble: 408, 429 and 5xx.

    Other 4xx are the caller's fault and prove the target is up, so they count as successes.
    """
    return status >= 500 or status in (408, 429)


def parse_retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date); None if absent.

    `headers` must look names up case-insensitively (httpx and Starlette headers do).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())
