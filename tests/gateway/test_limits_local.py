"""The in-process limiter against the reference model in virtual time, and under real concurrency."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.limits import Demand, LocalLimiter, Rule, Scope, Unit
from gateway.limits.reference import ReferenceLimiter
from tests.gateway.test_limits_helpers import BASE_US, STEP, Step, normalised, replay, rules

LEASE_US = 30_000_000
PENDING_US = 10 * 86_400_000_000
RETRY_US = 1_000_000


def virtual(rule_set: list[Rule], now: list[int]) -> tuple[LocalLimiter, ReferenceLimiter]:
    limiter = LocalLimiter(
        rule_set,
        clock=lambda: now[0],
        lease_ttl_s=LEASE_US / 1e6,
        pending_ttl_s=PENDING_US / 1e6,
        concurrency_retry_s=RETRY_US / 1e6,
    )
    reference = ReferenceLimiter(
        rule_set, lease_ttl_us=LEASE_US, pending_ttl_us=PENDING_US, concurrency_retry_us=RETRY_US
    )
    return limiter, reference


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_set=rules(), steps=st.lists(STEP, max_size=60))
def test_local_limiter_answers_exactly_like_the_reference(rule_set: list[Rule], steps: list[Step]) -> None:
    """Same admissions, same refusing bucket and retry-after (µs), same headers, same settlements."""
    now = [BASE_US]
    limiter, reference = virtual(rule_set, now)
    asyncio.run(replay(limiter, reference, rule_set, steps, now))


def test_alike_rules_sharing_a_bucket_are_reported_by_the_narrower_scope_in_any_order() -> None:
    """An api_key rule for one model and an api_key_model rule name the same bucket; which one a
    refusal reports must not depend on the order the rules came in (hypothesis found the limiter and
    the reference disagreeing)."""
    alike = [
        Rule(Scope.API_KEY, Unit.UPM, 1, model="m1"),
        Rule(Scope.API_KEY_MODEL, Unit.UPM, 1, model="m1"),
    ]
    for rule_set in (alike, alike[::-1]):
        now = [BASE_US]
        limiter, reference = virtual(rule_set, now)
        demand = Demand("m1", "w1", "k1", 0, 2)  # two units against a bucket of one: never admitted
        decision = asyncio.run(limiter.acquire(demand))
        assert decision.refusal is not None and decision.refusal.scope is Scope.API_KEY_MODEL
        assert normalised(decision) == reference.acquire(demand, now[0], "")


def test_a_burst_of_a_thousand_threads_admits_exactly_the_limit() -> None:
    """1,000 concurrent requests against 100 per minute: 100 admitted, 900 refused, 50 times over.
    The clock stands still so the count is exact however slowly a loaded machine runs the threads
    (with a real clock a burst spanning 0.6 s would rightly earn a 101st cell)."""

    def call(limiter: LocalLimiter, start: threading.Barrier, number: int) -> bool:
        if number < 16:
            start.wait()
        return limiter.try_acquire(Demand("m", "w", "k")).admitted

    for _ in range(50):
        limiter = LocalLimiter([Rule(Scope.API_KEY, Unit.RPM, 100, subject="k")], clock=lambda: BASE_US)
        start = threading.Barrier(16)
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(partial(call, limiter, start), range(1000)))
        assert results.count(True) == 100


def test_asyncio_burst_admits_exactly_the_limit_and_refusals_say_when() -> None:
    rule_set = [Rule(Scope.WORKSPACE, Unit.RPM, 100, subject="w"), Rule(Scope.GLOBAL, Unit.RPS, 10_000)]
    now = [BASE_US]
    limiter = LocalLimiter(rule_set, clock=lambda: now[0])

    async def burst() -> list[bool]:
        decisions = await asyncio.gather(*(limiter.acquire(Demand("m", "w", f"k{i}")) for i in range(1000)))
        refused = [d for d in decisions if not d.admitted]
        assert {d.refusal.bucket for d in refused if d.refusal} == {"rpm:workspace:w"}
        assert {d.retry_after for d in refused} == {0.6}  # one cell of 100/min
        assert refused[0].headers()["retry-after"] == "1"
        assert refused[0].headers()["retry-after-ms"] == "600"
        return [d.admitted for d in decisions]

    assert asyncio.run(burst()).count(True) == 100
    now[0] += 599_999
    assert not limiter.try_acquire(Demand("m", "w", "k")).admitted
    now[0] += 1
    assert limiter.try_acquire(Demand("m", "w", "k")).admitted


def test_every_scope_must_admit_and_a_refusal_changes_nothing() -> None:
    """The key has room, the workspace has none: refused, and the key's bucket was not charged."""
    now = [BASE_US]
    limiter = LocalLimiter(
        [Rule(Scope.API_KEY, Unit.RPM, 5, subject="k1"), Rule(Scope.WORKSPACE, Unit.RPM, 3, subject="w")],
        clock=lambda: now[0],
    )
    for key in ("k2", "k2", "k2"):
        assert limiter.try_acquire(Demand("m", "w", key)).admitted
    refused = limiter.try_acquire(Demand("m", "w", "k1"))
    assert refused.refusal is not None and refused.refusal.scope is Scope.WORKSPACE
    assert refused.requests is not None and refused.requests.scope is Scope.WORKSPACE  # the binding one
    # k1 still has its full 5: only the workspace (3 per minute) limits it once that refills.
    now[0] += 60_000_000
    admitted = [limiter.try_acquire(Demand("m", "w", "k1")) for _ in range(5)]
    assert [d.admitted for d in admitted] == [True, True, True, False, False]
    assert admitted[2].requests is not None and admitted[2].requests.remaining == 0


def test_reserve_then_reconcile_conserves_tokens_and_settles_once() -> None:
    """With time frozen, the bucket ends holding exactly the real usage; duplicates change nothing."""
    now = [BASE_US]
    rule = Rule(Scope.API_KEY, Unit.TPM, 10_000, subject="k")
    limiter = LocalLimiter([rule], clock=lambda: now[0])
    usage = [120, 0, 950, 3000, 1]  # below, far below, above, far above and at the estimate
    reservations = []
    for _ in usage:
        decision = limiter.try_acquire(Demand("m", "w", "k", tokens=1000))
        assert decision.admitted and decision.reservation
        reservations.append(decision.reservation)
    assert limiter.try_acquire(Demand("m", "w", "k", tokens=5001)).refusal is not None  # 5000 left
    for reservation, actual in zip(reservations, usage, strict=True):
        assert limiter.settle(reservation, actual)
        assert not limiter.settle(reservation, actual)  # the duplicate callback
        assert not limiter.settle(reservation, 0)  # a late release after the reconcile
    probe = limiter.try_acquire(Demand("m", "w", "k", tokens=0))
    assert probe.tokens is not None and probe.tokens.remaining == 10_000 - sum(usage)


def test_extra_usage_is_debt_that_later_requests_wait_for() -> None:
    now = [BASE_US]
    limiter = LocalLimiter([Rule(Scope.API_KEY, Unit.TPM, 600, subject="k")], clock=lambda: now[0])
    decision = limiter.try_acquire(Demand("m", "w", "k", tokens=100))
    assert decision.reservation and limiter.settle(decision.reservation, 1800)  # 3 minutes of tokens
    refused = limiter.try_acquire(Demand("m", "w", "k", tokens=0))
    # 1800 tokens at 10/s: the bucket is 1200 tokens (2 minutes) past full; a free request waits for that.
    assert refused.refusal is not None and refused.refusal.retry_after == 120.0
    assert refused.tokens is not None and (refused.tokens.remaining, refused.tokens.reset_us) == (
        0,
        180_000_000,
    )
    now[0] += 120_000_000
    assert limiter.try_acquire(Demand("m", "w", "k", tokens=0)).admitted


def test_debt_is_capped_at_ten_periods() -> None:
    now = [BASE_US]
    limiter = LocalLimiter([Rule(Scope.API_KEY, Unit.TPM, 10, subject="k")], clock=lambda: now[0])
    decision = limiter.try_acquire(Demand("m", "w", "k", tokens=1))
    assert decision.reservation and limiter.settle(decision.reservation, 10**9)
    refused = limiter.try_acquire(Demand("m", "w", "k"))
    assert refused.refusal is not None and refused.refusal.retry_after == 600.0  # cap 11 min, burst 1 min


def test_a_request_larger_than_the_bucket_is_never_retryable() -> None:
    limiter = LocalLimiter([Rule(Scope.WORKSPACE, Unit.TPM, 30_000, subject="w")])
    decision = limiter.try_acquire(Demand("gpt", "w", "k", tokens=31_538))
    assert decision.refusal is not None and not decision.refusal.retryable
    assert decision.headers()["x-should-retry"] == "false"
    assert "retry-after" not in decision.headers()
    assert decision.refusal.message("gpt") == (
        "Request too large for gpt on workspace tokens per min (TPM): Limit 30000, Requested 31538. "
        "The input or output tokens must be reduced in order to run successfully."
    )
    assert decision.tokens is not None and decision.tokens.remaining == 30_000  # nothing was charged


def test_leases_cap_concurrency_expire_and_release_once() -> None:
    now = [BASE_US]
    limiter = LocalLimiter(
        [Rule(Scope.API_KEY, Unit.CONCURRENCY, 2, subject="k")], clock=lambda: now[0], lease_ttl_s=10
    )
    first, second = (limiter.try_acquire(Demand("m", "w", "k")) for _ in range(2))
    refused = limiter.try_acquire(Demand("m", "w", "k"))
    assert refused.refusal is not None and refused.refusal.error_type == "concurrency"
    assert refused.refusal.retry_after == 1.0  # a hint: a slot frees when any request ends
    assert first.reservation and limiter.settle(first.reservation, 0)
    assert not limiter.settle(first.reservation, 0)
    third = limiter.try_acquire(Demand("m", "w", "k"))
    assert third.admitted
    # The second request's replica "died": its lease expires after 10 s and frees the slot.
    now[0] += 5_000_000
    assert third.reservation and limiter.try_renew(third.reservation)
    now[0] += 5_000_000
    assert second.reservation and not limiter.try_renew(second.reservation)
    assert limiter.try_acquire(Demand("m", "w", "k")).admitted
    assert not limiter.try_acquire(Demand("m", "w", "k")).admitted  # the renewed lease still holds


def test_changing_a_limit_keeps_the_bucket() -> None:
    """A new rate reads the old TAT (rounded up to the µs), so a rule edit is not a free burst."""
    now = [BASE_US]
    limiter = LocalLimiter([Rule(Scope.API_KEY, Unit.RPM, 7, subject="k")], clock=lambda: now[0])
    assert all(limiter.try_acquire(Demand("m", "w", "k")).admitted for _ in range(7))
    limiter.update_rules([Rule(Scope.API_KEY, Unit.RPM, 14, subject="k")])
    # 7 cells of 60/7 s are 60 s of debt; at 14/min the bucket holds 60 s, so nothing fits yet.
    refused = limiter.try_acquire(Demand("m", "w", "k"))
    assert refused.refusal is not None and refused.refusal.retry_after == pytest.approx(60 / 14, abs=2e-6)


def test_requests_without_rules_pass_without_headers() -> None:
    limiter = LocalLimiter([Rule(Scope.API_KEY, Unit.RPM, 1, subject="other")])
    decision = limiter.try_acquire(Demand("m", "w", "k"))
    assert decision.admitted and decision.headers() == {}
    assert decision.reservation is not None and not limiter.settle(decision.reservation, 10)
