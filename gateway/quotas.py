"""Token quotas per API key and per workspace, with refresh cycles, reserved before the call.

A quota is "at most Q tokens per period" (UTC calendar day, ISO week from Monday, or month; or the key's
lifetime when it has no refresh cycle). Checking "used < Q" and charging after the response lets N
concurrent requests overshoot by N × their size (the budget complaint of every peer, LiteLLM #34732), so
the gateway treats a quota like its token limits:

1. **reserve** the request's estimate (prompt estimate + `max_tokens`, or the default reservation)
   against the key's and the workspace's quota together, all or nothing: admitted only if
   `used + in flight + estimate <= Q` for both;
2. **settle** once with the metered usage: the reservation is replaced by what was really used.

`used` is what the database says (`used_tokens` of the period, written by the usage writer in atomic
increments), plus what this process has charged but not yet written. Without Redis that is exact for
one gateway process; replicas see each other's usage when it reaches the database (the next full
snapshot reload). With Redis (`RedisQuotas`), one counter per subject and period holds used + in-flight
for every replica, seeded from the database the first time it is needed in a period, so concurrent
replicas cannot overshoot either.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.limits import LimiterUnavailable, OnFailure, lua
from gateway.limits.link import RedisLink

log = logging.getLogger("modelfleet.gateway")

Kind = Literal["api_key", "workspace"]
Counter = tuple[str, str, datetime | None]  # kind, id, period start (None: lifetime)


@dataclass(frozen=True, slots=True)
class QuotaSubject:
    """One quota a request is charged to, as of the request's time."""

    kind: Kind
    id: str
    limit: int
    period: datetime | None
    period_end: datetime | None

    @property
    def counter(self) -> Counter:
        return (self.kind, self.id, self.period)


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    kind: Kind
    id: str
    limit: int
    used: int
    requested: int
    retry_after: float | None  # seconds until the quota refreshes; None: it never does

    def message(self) -> str:
        what = "API key" if self.kind == "api_key" else "workspace"
        head = (
            f"You exceeded the token quota of {what} {self.id}: {self.used} of {self.limit} tokens used, "
            f"this request reserves {self.requested}."
        )
        if self.retry_after is None:
            return f"{head} Ask your workspace admin to raise it."
        return f"{head} The quota refreshes in {int(self.retry_after) + 1} s."

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {"x-should-retry": "false"}
        return {"retry-after": str(max(1, int(self.retry_after) + 1)), "x-should-retry": "false"}


@dataclass(slots=True, eq=False)
class QuotaHold:
    """Tokens reserved against some quotas; settle it exactly once."""

    counters: tuple[Counter, ...]
    tokens: int
    backend: Literal["local", "redis", "none"]
    settled: bool = False


NO_HOLD = QuotaHold((), 0, "none", True)


class LocalQuotas:
    """The in-process ledger (also the base every backend reads: the database's usage per period)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base: dict[Counter, int] = {}  # written to the database (as last read + flushed since)
        self._pending: dict[Counter, int] = {}  # charged here, not yet written
        self._reserved: dict[Counter, int] = {}  # in flight

    # -- what the database says ------------------------------------------------------------------
    def load_bases(self, usage: Iterable[tuple[Counter, int]]) -> None:
        """Replace the database part with fresh figures (called with the usage writer's lock held)."""
        fresh = dict(usage)
        with self._lock:
            self._base = fresh

    def flushed(self, counter: Counter, tokens: int) -> None:
        """The usage writer committed `tokens` of this process's charges (writer's lock held)."""
        with self._lock:
            self._base[counter] = self._base.get(counter, 0) + tokens
            left = self._pending.get(counter, 0) - tokens
            if left > 0:
                self._pending[counter] = left
            else:
                self._pending.pop(counter, None)

    def base(self, counter: Counter) -> int:
        return self._base.get(counter, 0)

    def used(self, counter: Counter) -> int:
        """Used (written or charged) plus reserved, now."""
        with self._lock:
            return self._used(counter)

    def _used(self, counter: Counter) -> int:
        return self._base.get(counter, 0) + self._pending.get(counter, 0) + self._reserved.get(counter, 0)

    def charge(self, counter: Counter, tokens: int) -> None:
        """Usage this process metered; the writer will report it `flushed`."""
        if tokens:
            with self._lock:
                self._pending[counter] = self._pending.get(counter, 0) + tokens

    # -- admission ---------------------------------------------------------------------------------
    def reserve(
        self, subjects: Sequence[QuotaSubject], tokens: int, now: datetime
    ) -> QuotaHold | QuotaRefusal:
        if not subjects:
            return NO_HOLD
        with self._lock:
            for subject in subjects:
                used = self._used(subject.counter)
                if used + tokens > subject.limit:
                    return _refusal(subject, used, tokens, now)
            for subject in subjects:
                c = subject.counter
                self._reserved[c] = self._reserved.get(c, 0) + tokens
        return QuotaHold(tuple(s.counter for s in subjects), tokens, "local")

    def settle(self, hold: QuotaHold, actual: int) -> bool:
        """Replace the reservation with the usage, once. The usage itself is charged by `charge` when
        the record is queued for the database."""
        if hold.settled or hold.backend != "local":
            return False
        hold.settled = True
        with self._lock:
            for c in hold.counters:
                left = self._reserved.get(c, 0) - hold.tokens
                if left > 0:
                    self._reserved[c] = left
                else:
                    self._reserved.pop(c, None)
        return True


def _refusal(subject: QuotaSubject, used: int, tokens: int, now: datetime) -> QuotaRefusal:
    retry = None if subject.period_end is None else (subject.period_end - now).total_seconds()
    return QuotaRefusal(subject.kind, subject.id, subject.limit, used, tokens, retry)


class RedisQuotas:
    """Quota counters shared by every replica: one script call to reserve, one to settle."""

    def __init__(
        self,
        client: aioredis.Redis,
        local: LocalQuotas,
        *,
        prefix: str = "mf",
        on_failure: OnFailure = OnFailure.FAIL_CLOSED,
        retry_interval_s: float = 0.25,
        link: RedisLink | None = None,
    ) -> None:
        """`link`: share the limiter's (one down state for both); by default one of their own."""
        self._client = client
        self.local = local
        self._prefix = prefix
        self._on_failure = on_failure
        self._retry_interval_s = retry_interval_s
        self.link = link or RedisLink(client, probe_interval_s=retry_interval_s, what="quotas")
        self._reserve = client.register_script(lua.QUOTA_RESERVE)
        self._settle = client.register_script(lua.QUOTA_SETTLE)

    def key(self, counter: Counter) -> str:
        kind, ident, period = counter
        stamp = "all" if period is None else str(int(period.timestamp()))
        return f"{self._prefix}:quota:{kind}:{ident}:{stamp}"

    async def reserve(
        self, subjects: Sequence[QuotaSubject], tokens: int, now: datetime
    ) -> QuotaHold | QuotaRefusal:
        if not subjects:
            return NO_HOLD
        if not self.available():
            return self.degraded(subjects, tokens, now, "recently failed")
        keys, args = self.reserve_call(subjects, tokens, now)
        try:
            reply = await self.link.call(self._reserve, keys, args)
        except (RedisError, OSError) as exc:
            return self.reserve_failed(subjects, tokens, now, exc)
        if reply[0] == 1:
            return self.held(subjects, tokens)
        return _refusal(subjects[int(reply[1]) - 1], int(reply[2]), tokens, now)

    # The steps of `reserve`, public for the one-call admission (gateway/shared_admission.py).
    def available(self) -> bool:
        return self.link.up

    def reserve_call(
        self, subjects: Sequence[QuotaSubject], tokens: int, now: datetime
    ) -> tuple[list[str], list[int]]:
        """Keys and arguments of lua.QUOTA_RESERVE (and of the quota part of lua.ADMIT_WITH_QUOTAS)."""
        args: list[int] = [tokens]
        for s in subjects:
            ttl = 0 if s.period_end is None else int((s.period_end - now).total_seconds() * 1000) + 86_400_000
            args += [s.limit, self.local.base(s.counter), ttl]
        return [self.key(s.counter) for s in subjects], args

    def reserve_failed(
        self, subjects: Sequence[QuotaSubject], tokens: int, now: datetime, exc: BaseException
    ) -> QuotaHold | QuotaRefusal:
        return self.degraded(subjects, tokens, now, str(exc))

    def mark_down(self, exc: BaseException) -> None:
        """Leave Redis alone until it answers: an outage must not add a timeout to every request."""
        self.link.mark_down(exc)

    @staticmethod
    def held(subjects: Sequence[QuotaSubject], tokens: int) -> QuotaHold:
        return QuotaHold(tuple(s.counter for s in subjects), tokens, "redis")

    @staticmethod
    def refusal(subject: QuotaSubject, used: int, tokens: int, now: datetime) -> QuotaRefusal:
        return _refusal(subject, used, tokens, now)

    def degraded(
        self, subjects: Sequence[QuotaSubject], tokens: int, now: datetime, cause: str
    ) -> QuotaHold | QuotaRefusal:
        if self._on_failure is OnFailure.FAIL_CLOSED:
            raise LimiterUnavailable(f"quota store unavailable: {cause}", self._retry_interval_s)
        if self._on_failure is OnFailure.LOCAL:
            return self.local.reserve(subjects, tokens, now)
        return NO_HOLD

    async def settle(self, hold: QuotaHold, actual: int) -> bool:
        if hold.backend == "local":
            return self.local.settle(hold, actual)
        if hold.settled or hold.backend != "redis":
            return False
        call = self.settle_call(hold, actual)
        if call is None:
            return True  # used exactly what it reserved
        try:
            await self.link.call(self._settle, call[0], [call[1]])
        except (RedisError, OSError) as exc:
            self.settle_failed(exc)
            return False
        return True

    def settle_call(self, hold: QuotaHold, actual: int) -> tuple[list[str], int] | None:
        """Marks a Redis hold settled; the counters and the delta to add, or None when there is
        nothing to send (settled already, not a Redis hold, or used exactly what it reserved)."""
        if hold.settled or hold.backend != "redis":
            return None
        hold.settled = True
        delta = actual - hold.tokens
        if not delta:
            return None
        return [self.key(c) for c in hold.counters], delta

    @staticmethod
    def settle_failed(exc: BaseException) -> None:
        log.warning("quotas: Redis settle failed (the reservation stays charged): %s", exc)


class Quotas:
    """The gateway's facade: the local ledger always (it tracks what the writer has not written yet),
    Redis counters on top when configured."""

    def __init__(self, local: LocalQuotas, shared: RedisQuotas | None = None) -> None:
        self.local = local
        self.shared = shared

    async def reserve(
        self, subjects: Sequence[QuotaSubject], tokens: int, now: datetime
    ) -> QuotaHold | QuotaRefusal:
        if self.shared is not None:
            return await self.shared.reserve(subjects, tokens, now)
        return self.local.reserve(subjects, tokens, now)

    async def settle(self, hold: QuotaHold, actual: int) -> bool:
        if self.shared is not None:
            return await self.shared.settle(hold, actual)
        return self.local.settle(hold, actual)
