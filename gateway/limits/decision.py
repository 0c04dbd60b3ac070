"""What a limiter answers: admitted or refused (which bucket, until when), and the rate-limit headers.

Both limiters read the same per-bucket state (a rate's debt in ticks, a lease set's size) and hand it to
`conclude`, so the in-process and the Redis limiter cannot disagree on retry-after, remaining or reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.limits.rules import MAX_TOKENS, TOKEN_UNITS, UNIT_UNITS, Bucket, Plan, Scope, Unit

Backend = Literal["redis", "local", "none"]


def go_duration(us: int) -> str:
    """A duration as Go prints it (`12ms`, `1.5s`, `6m0s`, `1h0m0s`), rounded up to the millisecond.

    OpenAI's `x-ratelimit-reset-*` headers use this format; rounding up keeps "fully replenished after
    this long" true.
    """
    ms = -(-us // 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


@dataclass(frozen=True, slots=True)
class Quota:
    """The binding (least remaining) bucket of one unit class, as the headers report it."""

    limit: int
    remaining: int
    reset_us: int  # until the bucket is full again
    scope: Scope
    bucket: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused: the bucket that binds longest, and when the request would pass."""

    scope: Scope
    unit: Unit
    bucket: str
    limit: int
    requested: int
    used: int  # cells in use now (requests, tokens or leases)
    retry_after_us: int | None  # None: never (the request is larger than the bucket)

    @property
    def retryable(self) -> bool:
        return self.retry_after_us is not None

    @property
    def retry_after(self) -> float | None:
        """Seconds until this request would be admitted (absent other traffic)."""
        return None if self.retry_after_us is None else self.retry_after_us / 1_000_000

    @property
    def error_type(self) -> str:
        """OpenAI's `error.type` for a 429: requests, tokens or concurrency (and units, ours)."""
        if self.unit in TOKEN_UNITS:
            return "tokens"
        if self.unit in UNIT_UNITS:
            return "units"  # images, audio seconds, characters or documents (gateway/units.py)
        return "concurrency" if self.unit is Unit.CONCURRENCY else "requests"

    def message(self, model: str) -> str:
        """The OpenAI-style 429 message."""
        what = {
            Unit.RPS: "requests per second (RPS)",
            Unit.RPM: "requests per min (RPM)",
            Unit.TPM: "tokens per min (TPM)",
            Unit.TPD: "tokens per day (TPD)",
            Unit.UPM: "units per min (UPM: images, audio seconds, characters or documents)",
            Unit.UPD: "units per day (UPD: images, audio seconds, characters or documents)",
            Unit.CONCURRENCY: "concurrent requests",
        }[self.unit]
        head = f"for {model} on {self.scope.value} {what}: Limit {self.limit}"
        if self.retry_after_us is None:
            return (
                f"Request too large {head}, Requested {self.requested}. "
                "The input or output tokens must be reduced in order to run successfully."
            )
        return (
            f"Rate limit reached {head}, Used {self.used}, Requested {self.requested}. "
            f"Please try again in {go_duration(self.retry_after_us)}."
        )


@dataclass(frozen=True, slots=True, eq=False)
class Reservation:
    """What an admitted request holds until it is settled: request cells, reserved tokens, leases."""

    id: str
    plan: Plan
    tokens: int
    backend: Backend
    units: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    admitted: bool
    reservation: Reservation | None
    refusal: Refusal | None
    requests: Quota | None
    tokens: Quota | None
    degraded: bool = False  # decided without the shared store (Redis failure policy fail_open / local)

    @property
    def retry_after(self) -> float | None:
        return None if self.refusal is None else self.refusal.retry_after

    def headers(self) -> dict[str, str]:
        """Response headers: OpenAI's six `x-ratelimit-*` plus the binding scopes; on 429 the retry hints."""
        headers: dict[str, str] = {}
        for name, quota in (("requests", self.requests), ("tokens", self.tokens)):
            if quota is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(quota.limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(quota.remaining)
                headers[f"x-ratelimit-reset-{name}"] = go_duration(quota.reset_us)
                headers[f"x-ratelimit-scope-{name}"] = quota.scope.value
        if self.refusal is not None:
            if self.refusal.retry_after_us is None:
                headers["x-should-retry"] = "false"
            else:
                us = self.refusal.retry_after_us
                headers["retry-after"] = str(max(1, -(-us // 1_000_000)))
                headers["retry-after-ms"] = str(max(1, -(-us // 1000)))
        return headers


LeaseState = tuple[int, int]  # leases held, µs until the earliest expires (0 unless the set is full)


def _quota(best: tuple[int, int, Bucket] | None) -> Quota | None:
    if best is None:
        return None
    remaining, reset_us, bucket = best
    return Quota(bucket.limit, remaining, reset_us, bucket.scope, bucket.id)


def conclude(
    plan: Plan,
    tokens: int,
    debts: Sequence[int],
    leases: Sequence[LeaseState],
    admitted: bool,
    reservation: Reservation | None,
    concurrency_retry_us: int,
    units: int = 0,
) -> Decision:
    """The decision from the state each bucket had before this request (debts in ticks, leases held).

    Per unit class the binding bucket is the one with the least remaining, then the longest reset,
    then the first in canonical order.
    """
    binding: list[tuple[int, int, Bucket] | None] = [None, None]  # requests, tokens
    refusal: tuple[bool, int, Bucket, int, int] | None = None  # never?, retry µs, bucket, used, requested
    for bucket, debt in zip(plan.rates, debts, strict=True):
        cost = bucket.cost(tokens, units)
        after = debt + cost * bucket.p if admitted else debt
        remaining = bucket.burst + (after // -bucket.p)  # burst - ceil(after / p)
        if remaining < 0:
            remaining = 0
        reset_us = -(after // -bucket.d)
        best = binding[bucket.is_tokens]
        # Units buckets (upm/upd) have no OpenAI header: they only speak when they refuse.
        if not bucket.is_units and (
            best is None or remaining < best[0] or (remaining == best[0] and reset_us > best[1])
        ):
            binding[bucket.is_tokens] = (remaining, reset_us, bucket)
        if admitted:
            continue
        used = min(bucket.burst, -(debt // -bucket.p))
        if cost > bucket.burst or cost > MAX_TOKENS:
            candidate = (True, 0, bucket, used, cost)
        else:
            need = debt + cost * bucket.p - bucket.tol_ticks
            if need <= 0:
                continue
            candidate = (False, -(need // -bucket.d), bucket, used, cost)
        refusal = _worse(refusal, candidate)
    requests, token_quota = _quota(binding[0]), _quota(binding[1])
    if admitted:
        return Decision(True, reservation, None, requests, token_quota)
    for bucket, (held, first_expiry_us) in zip(plan.leases, leases, strict=True):
        if held >= bucket.limit:
            refusal = _worse(refusal, (False, min(first_expiry_us, concurrency_retry_us), bucket, held, 1))
    if refusal is None:
        raise RuntimeError("limiter refused a request that every bucket admits: state and script disagree")
    never, retry_us, bucket, used, requested = refusal
    return Decision(
        False,
        None,
        Refusal(
            bucket.scope, bucket.unit, bucket.id, bucket.limit, requested, used, None if never else retry_us
        ),
        requests,
        token_quota,
    )


def _worse(
    current: tuple[bool, int, Bucket, int, int] | None, candidate: tuple[bool, int, Bucket, int, int]
) -> tuple[bool, int, Bucket, int, int]:
    """A never-admissible refusal beats a retryable one; then the longer wait; then canonical order."""
    if current is None:
        return candidate
    if candidate[0] != current[0]:
        return candidate if candidate[0] else current
    if candidate[1] != current[1]:
        return candidate if candidate[1] > current[1] else current
    return candidate if candidate[2].order < current[2].order else current
