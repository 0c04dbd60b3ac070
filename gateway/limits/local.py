"""The in-process limiter: the embedded default (no Redis), and the `local` fallback when Redis fails.

Same semantics as the Redis script, with Python's exact integers. One lock guards all state because a
request must pass every bucket at once; the critical section is a few dict operations and never awaits,
so calling it from the event loop is cheaper than handing it to a thread. Time comes from an injected
clock in µs (monotonic by default), which is how tests drive it through virtual time.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable

from gateway.limits.decision import Decision, LeaseState, Reservation, conclude
from gateway.limits.rules import MAX_TOKENS, Bucket, Demand, Plan, Rule, RuleBook

Clock = Callable[[], int]


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


def id_factory() -> Callable[[], str]:
    """Reservation ids unique across processes: a random per-process prefix and a counter."""
    prefix = os.urandom(6).hex()
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):x}"


class LocalLimiter:
    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        clock: Clock = monotonic_us,
        lease_ttl_s: float = 300.0,
        pending_ttl_s: float = 3600.0,
        concurrency_retry_s: float = 1.0,
        start_used_up: bool = False,
        leases_elsewhere: Callable[[str], int | None] | None = None,
        lease_slots: Callable[[str], int] | None = None,
    ) -> None:
        """`start_used_up`: a bucket this limiter has no state for starts with no credit (its TAT one
        full burst ahead), as the Redis limiter's fallback needs: it cannot know what the other
        replicas took, so it assumes the shared bucket is spent and admits only what refills.
        `leases_elsewhere`: per lease bucket id, leases this process holds outside this limiter (the
        fallback's: in Redis), counted against the same limit.
        `lease_slots`: per lease bucket id, how many leases this process may hold, instead of the
        rule's limit (the fallback's: the leases it held in Redis when Redis went away)."""
        self._book = RuleBook(rules)
        self._start_used_up = start_used_up
        self._leases_elsewhere = leases_elsewhere
        self._lease_slots = lease_slots
        self._clock = clock
        self._lease_us = int(lease_ttl_s * 1_000_000)
        self._pending_us = int(pending_ttl_s * 1_000_000)
        self._concurrency_retry_us = int(concurrency_retry_s * 1_000_000)
        self._new_id = id_factory()
        self._lock = threading.Lock()
        self._tat: dict[str, tuple[int, int]] = {}  # bucket id -> (TAT in ticks, ticks per µs)
        self._leases: dict[str, dict[str, int]] = {}  # bucket id -> reservation id -> expiry µs
        self._pending: dict[str, int] = {}  # reservations with reserved tokens -> expiry µs
        self._sweep_at = 10_000

    def update_rules(self, rules: Iterable[Rule]) -> None:
        """New rules apply to the next request; bucket state is kept (it is keyed by bucket, not rule)."""
        self._book = RuleBook(rules)

    def plan(self, demand: Demand) -> Plan:
        return self._book.plan(demand)

    async def acquire(self, demand: Demand) -> Decision:
        return self.try_acquire(demand)

    async def reconcile(self, reservation: Reservation, actual_tokens: int) -> bool:
        return self.settle(reservation, actual_tokens)

    async def release(self, reservation: Reservation) -> bool:
        return self.settle(reservation, 0)

    async def renew(self, reservation: Reservation) -> bool:
        return self.try_renew(reservation)

    async def cancel(self, reservation: Reservation) -> None:
        self.try_cancel(reservation)

    async def aclose(self) -> None:
        return None

    def try_acquire(self, demand: Demand) -> Decision:
        """Admit `demand` in every bucket or in none (thread-safe, never blocks beyond the lock)."""
        plan = self._book.plan(demand)
        if plan.empty:
            return Decision(
                True, Reservation("", plan, demand.tokens, "local", demand.units), None, None, None
            )
        tokens, units = demand.tokens, demand.units
        rid = self._new_id() if plan.needs_id else ""
        debts: list[int] = []
        leases: list[LeaseState] = []
        tat = self._tat
        # The critical section, inlined: read every bucket, decide, write every bucket or none.
        with self._lock:
            now = self._clock()
            ok = not plan.too_large(tokens)
            for bucket in plan.rates:
                stored = tat.get(bucket.id)
                debt = 0
                if stored is None and self._start_used_up:
                    debt = bucket.tol_ticks
                    tat[bucket.id] = (now * bucket.d + debt, bucket.d)
                elif stored is not None:
                    ticks, d = stored
                    if d != bucket.d:  # stored under another rate: round up to the µs, convert
                        ticks = -(-ticks // d) * bucket.d
                    debt = ticks - now * bucket.d
                    if debt < 0:
                        debt = 0
                debts.append(debt)
                if debt + bucket.cost(tokens, units) * bucket.p > bucket.tol_ticks:
                    ok = False
            for bucket in plan.leases:
                held = self._live_leases(bucket, now)
                count = len(held) if held else 0
                if self._leases_elsewhere is not None:
                    count += self._leases_elsewhere(bucket.id) or 0
                limit = bucket.limit if self._lease_slots is None else self._lease_slots(bucket.id)
                if count >= limit:
                    ok = False
                    # Out of slots reads as full, as the calm-down after an emptied Redis does.
                    leases.append((max(count, bucket.limit), min(held.values()) - now if held else 0))
                else:
                    leases.append((count, 0))
            if ok:
                for bucket, debt in zip(plan.rates, debts, strict=True):
                    cost = bucket.cost(tokens, units)
                    if debt or cost:
                        tat[bucket.id] = (now * bucket.d + debt + cost * bucket.p, bucket.d)
                for bucket in plan.leases:
                    self._leases.setdefault(bucket.id, {})[rid] = now + self._lease_us
                if plan.has_tokens:
                    self._pending[rid] = now + self._pending_us
                if len(tat) + len(self._pending) >= self._sweep_at:
                    self._sweep(now)
        reservation = Reservation(rid, plan, tokens, "local", units) if ok else None
        return conclude(plan, tokens, debts, leases, ok, reservation, self._concurrency_retry_us, units)

    def settle(self, reservation: Reservation, actual_tokens: int) -> bool:
        """Charge the real usage instead of the estimate and free the leases; only the first call counts."""
        plan, rid = reservation.plan, reservation.id
        if not rid:
            return False
        applied = False
        with self._lock:
            now = self._clock()
            for bucket in plan.leases:
                held = self._leases.get(bucket.id)
                if held is not None and held.pop(rid, None) is not None:
                    applied = True
                    if not held:
                        del self._leases[bucket.id]
            expiry = self._pending.pop(rid, None) if plan.has_tokens else None
            if expiry is not None and expiry > now:
                applied = True
                delta = min(actual_tokens, MAX_TOKENS) - reservation.tokens
                if delta:
                    for bucket in plan.token_rates:
                        self._charge(bucket, delta, now)
        return applied

    def forget_rates(self) -> None:
        """Drop every rate bucket's state (leases and pending reservations stay until settled)."""
        with self._lock:
            self._tat = {}

    def try_cancel(self, reservation: Reservation) -> None:
        """Undo an admission that never ran (all-or-nothing across several demands, e.g. a model
        comparison whose other leg was refused): release it, and give back its request cells
        (TAT - T per rps/rpm bucket, never below now). Call it once, instead of `release`."""
        self.settle(reservation, 0)
        with self._lock:
            now = self._clock()
            for bucket in reservation.plan.rates:
                if not bucket.is_tokens:
                    self._charge(bucket, -bucket.cost(0, reservation.units), now)

    def try_renew(self, reservation: Reservation) -> bool:
        """Extend the leases (and the token reservation) of a long request; False if any had expired."""
        if not reservation.id:
            return True  # it holds nothing that could expire
        renewed = True
        with self._lock:
            now = self._clock()
            for bucket in reservation.plan.leases:
                held = self._leases.get(bucket.id)
                expiry = held.get(reservation.id) if held else None
                if held is None or expiry is None or expiry <= now:
                    if held is not None:
                        held.pop(reservation.id, None)
                    renewed = False
                else:
                    held[reservation.id] = now + self._lease_us
            if reservation.plan.has_tokens:
                expiry = self._pending.get(reservation.id)
                if expiry is None or expiry <= now:
                    renewed = False
                else:
                    self._pending[reservation.id] = now + self._pending_us
        return renewed

    # -- state, under the lock -------------------------------------------------------------------

    def _tat_ticks(self, bucket: Bucket, now: int) -> int:
        """max(TAT, now) in this bucket's ticks; a TAT stored under another rate is rounded up to the µs."""
        stored = self._tat.get(bucket.id)
        floor = now * bucket.d
        if stored is None:
            return floor
        tat, d = stored
        if d != bucket.d:
            tat = -(-tat // d) * bucket.d
        return tat if tat > floor else floor

    def _charge(self, bucket: Bucket, delta: int, now: int) -> None:
        """Add `delta` cells (negative: refund), never below now and never past the debt cap."""
        tat = self._tat_ticks(bucket, now) + delta * bucket.p
        if delta > 0:
            tat = min(tat, (now + bucket.cap_us) * bucket.d)
        if tat > now * bucket.d:
            self._tat[bucket.id] = (tat, bucket.d)
        else:
            self._tat.pop(bucket.id, None)

    def _live_leases(self, bucket: Bucket, now: int) -> dict[str, int] | None:
        held = self._leases.get(bucket.id)
        if held:
            for rid in [rid for rid, expiry in held.items() if expiry <= now]:
                del held[rid]
        return held

    def _sweep(self, now: int) -> None:
        """Forget drained buckets and expired reservations; amortised O(1) by doubling the threshold."""
        self._tat = {k: v for k, v in self._tat.items() if v[0] > now * v[1]}
        self._pending = {k: v for k, v in self._pending.items() if v > now}
        for bucket_id in [k for k, held in self._leases.items() if all(e <= now for e in held.values())]:
            del self._leases[bucket_id]
        self._sweep_at = max(10_000, 2 * (len(self._tat) + len(self._pending)))
