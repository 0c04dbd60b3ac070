"""Rate limiting for the gateway: every scope of a request checked at once, all or nothing.

GCRA for request and token rates (tokens reserved before the upstream call, reconciled after), leases
for concurrency. `LocalLimiter` keeps state in process (the embedded default); `RedisLimiter` shares it
between replicas with one script call per request. Both answer a `Decision` whose `headers()` are the
OpenAI `x-ratelimit-*` set. See docs/gateway/limits.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from gateway.limits.decision import Decision, Quota, Refusal, Reservation, go_duration
from gateway.limits.local import LocalLimiter
from gateway.limits.redis_limiter import FailurePolicy, LimiterUnavailable, OnFailure, RedisLimiter
from gateway.limits.rules import MAX_TOKENS, Demand, Rule, RuleRow, Scope, Unit, rules_from_rows


class Limiter(Protocol):
    """What the gateway calls: acquire before the upstream call, reconcile or release after it."""

    async def acquire(self, demand: Demand) -> Decision: ...

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> bool: ...

    async def release(self, reservation: Reservation) -> bool: ...

    async def renew(self, reservation: Reservation) -> bool: ...

    async def cancel(self, reservation: Reservation) -> None: ...

    def update_rules(self, rules: Iterable[Rule]) -> None: ...

    async def aclose(self) -> None: ...


def build_limiter(rules: Iterable[Rule], redis_url: str | None = None, **options: Any) -> Limiter:
    """The Redis limiter when a URL is configured, else the in-process one."""
    if redis_url:
        return RedisLimiter.from_url(redis_url, rules, **options)
    return LocalLimiter(rules, **options)


__all__ = [
    "MAX_TOKENS",
    "Decision",
    "Demand",
    "FailurePolicy",
    "Limiter",
    "LimiterUnavailable",
    "LocalLimiter",
    "OnFailure",
    "Quota",
    "RedisLimiter",
    "Refusal",
    "Reservation",
    "Rule",
    "RuleRow",
    "Scope",
    "Unit",
    "build_limiter",
    "go_duration",
    "rules_from_rows",
]
