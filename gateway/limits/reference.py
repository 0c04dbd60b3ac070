"""The reference model: the limiter's semantics written the plainest way, for property tests.

Exact rational time (Fraction µs), virtual time passed in, rules matched by brute force, one dict per
kind of state. No precomputation, no integer tricks, no locks: if the limiters agree with this on random
workloads, their optimisations changed nothing. Semantics (docs/gateway/limits.md):

- rate bucket: T = period/limit, tolerance = burst*T; a request costing c (1 request or its reserved
  tokens) passes iff max(TAT, now) + c*T - tolerance <= now; admission moves TAT there.
- a request is admitted iff every bucket passes; otherwise nothing changes.
- lease bucket: at most `limit` unexpired leases (expiry <= now is expired).
- settle (first call per reservation only): leases dropped; token buckets get (actual - reserved)*T,
  TAT = max(TAT, now) + delta*T, never past now + cap (ceil(tolerance) + 10 periods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from gateway.limits.rules import MAX_DEBT_PERIODS, MAX_TOKENS, PERIOD_US, Demand, Rule, Scope, Unit

_SPECIFIC_FIRST = [Scope.API_KEY, Scope.WORKSPACE, Scope.MODEL, Scope.GLOBAL]
_UNITS = [Unit.RPS, Unit.RPM, Unit.TPM, Unit.TPD, Unit.UPM, Unit.UPD, Unit.CONCURRENCY]


@dataclass(frozen=True)
class RefBucket:
    id: str
    rule: Rule
    sort: tuple[int, int, int]


@dataclass(frozen=True)
class RefQuota:
    limit: int
    remaining: int
    reset_us: int
    scope: str


@dataclass(frozen=True)
class RefDecision:
    admitted: bool
    refusal: (
        tuple[str, str, str, int, int | None] | None
    )  # scope, unit, bucket, limit, retry µs (None: never)
    requests: RefQuota | None
    tokens: RefQuota | None


def buckets_for(rules: list[Rule], demand: Demand) -> list[RefBucket]:
    """Every bucket the demand is charged in, specific first."""
    best: dict[str, tuple[tuple[bool, bool, int, int, bool], Rule, tuple[int, int, int]]] = {}
    for rule in rules:
        if rule.model is not None and rule.model != demand.model:
            continue
        if rule.scope is Scope.GLOBAL:
            family, subject, model = Scope.GLOBAL, None, None
        elif rule.scope is Scope.MODEL:
            family, subject, model = Scope.MODEL, None, demand.model
        else:
            family = Scope.WORKSPACE if rule.scope is Scope.WORKSPACE else Scope.API_KEY
            subject = demand.workspace if family is Scope.WORKSPACE else demand.api_key
            if subject is None or rule.subject not in (None, subject):
                continue
            per_model = rule.scope is Scope.API_KEY_MODEL or rule.model is not None
            model = demand.model if per_model else None
        name = f"{rule.unit.value}:{family.value}"
        if subject is not None:
            name += ":" + subject.replace("%", "%25").replace(":", "%3A")
        if model is not None:
            name += f":model={model}"
        pooled = 1 if model is None and family in (Scope.API_KEY, Scope.WORKSPACE) else 0
        sort = (_SPECIFIC_FIRST.index(family), pooled, _UNITS.index(rule.unit))
        # Ties (an api_key rule for one model and an api_key_model rule, alike) go to the narrower
        # scope, whatever order the rules came in, so every limiter reports the same one.
        rank = (
            rule.subject is not None,
            rule.model is not None,
            -rule.limit,
            -rule.effective_burst,
            rule.scope is Scope.API_KEY_MODEL,
        )
        if name not in best or rank > best[name][0]:
            best[name] = (rank, rule, sort)
    return sorted(
        (RefBucket(name, rule, sort) for name, (_, rule, sort) in best.items()), key=lambda b: b.sort
    )


class ReferenceLimiter:
    def __init__(
        self, rules: list[Rule], *, lease_ttl_us: int, pending_ttl_us: int, concurrency_retry_us: int
    ):
        self.rules = rules
        self.lease_ttl_us = lease_ttl_us
        self.pending_ttl_us = pending_ttl_us
        self.concurrency_retry_us = concurrency_retry_us
        self.tat: dict[str, Fraction] = {}
        self.leases: dict[str, dict[str, int]] = {}
        self.pending: dict[str, tuple[int, int, list[RefBucket]]] = {}  # rid -> expiry, tokens, buckets

    @staticmethod
    def interval(rule: Rule) -> Fraction:
        return Fraction(PERIOD_US[rule.unit], rule.limit)

    def acquire(self, demand: Demand, now: int, rid: str) -> RefDecision:
        buckets = buckets_for(self.rules, demand)
        passes = True
        refusals: list[tuple[bool, int, int, RefBucket]] = []  # never, retry, order, bucket
        requests: list[tuple[int, int, RefBucket]] = []
        tokens: list[tuple[int, int, RefBucket]] = []
        new_tat: dict[str, Fraction] = {}
        for order, bucket in enumerate(buckets):
            rule = bucket.rule
            if rule.unit is Unit.CONCURRENCY:
                held = self.leases.setdefault(bucket.id, {})
                for expired in [r for r, e in held.items() if e <= now]:
                    del held[expired]  # looking at a lease set drops its expired leases
                live = list(held.values())
                if len(live) >= rule.limit:
                    passes = False
                    refusals.append((False, min(min(live) - now, self.concurrency_retry_us), order, bucket))
                continue
            t = self.interval(rule)
            cost = demand.tokens if rule.unit in (Unit.TPM, Unit.TPD) else 1
            if rule.unit in (Unit.UPM, Unit.UPD):
                cost = demand.units
            start = max(self.tat.get(bucket.id, Fraction(0)), Fraction(now))
            new_tat[bucket.id] = start + cost * t
            if cost > rule.effective_burst or cost > MAX_TOKENS:
                passes = False
                refusals.append((True, 0, order, bucket))
            elif start + cost * t - rule.effective_burst * t > now:
                passes = False
                refusals.append(
                    (False, math.ceil(start + cost * t - rule.effective_burst * t - now), order, bucket)
                )
        if passes:
            self.tat.update(new_tat)
            for bucket in buckets:
                if bucket.rule.unit is Unit.CONCURRENCY:
                    self.leases.setdefault(bucket.id, {})[rid] = now + self.lease_ttl_us
            token_buckets = [b for b in buckets if b.rule.unit in (Unit.TPM, Unit.TPD)]
            if token_buckets:
                self.pending[rid] = (now + self.pending_ttl_us, demand.tokens, token_buckets)
        for bucket in buckets:
            if bucket.rule.unit in (Unit.CONCURRENCY, Unit.UPM, Unit.UPD):
                continue
            rule = bucket.rule
            debt = max(self.tat.get(bucket.id, Fraction(0)) - now, Fraction(0))
            remaining = max(0, rule.effective_burst - math.ceil(debt / self.interval(rule)))
            target = tokens if rule.unit in (Unit.TPM, Unit.TPD) else requests
            target.append((remaining, math.ceil(debt), bucket))
        refusal = None
        if not passes:
            never, retry, _, bucket = min(refusals, key=lambda r: (not r[0], -r[1], r[2]))
            rule = bucket.rule
            refusal = (rule.scope.value, rule.unit.value, bucket.id, rule.limit, None if never else retry)
        return RefDecision(passes, refusal, _binding(requests), _binding(tokens))

    def settle(self, rid: str, actual: int, now: int) -> bool:
        freed = False
        for held in self.leases.values():
            if held.pop(rid, None) is not None:
                freed = True
        entry = self.pending.pop(rid, None)
        if entry is None or entry[0] <= now:
            return freed
        _, reserved, buckets = entry
        delta = min(actual, MAX_TOKENS) - reserved
        for bucket in buckets:
            rule = bucket.rule
            start = max(self.tat.get(bucket.id, Fraction(0)), Fraction(now))
            tat = start + delta * self.interval(rule)
            cap = (
                now
                + math.ceil(rule.effective_burst * self.interval(rule))
                + MAX_DEBT_PERIODS * PERIOD_US[rule.unit]
            )
            self.tat[bucket.id] = min(tat, Fraction(cap))
        return True

    def renew(self, rid: str, buckets: list[RefBucket], has_tokens: bool, now: int) -> bool:
        renewed = True
        for bucket in buckets:
            if bucket.rule.unit is not Unit.CONCURRENCY:
                continue
            held = self.leases.get(bucket.id, {})
            if held.get(rid, now) > now:
                held[rid] = now + self.lease_ttl_us
            else:
                held.pop(rid, None)
                renewed = False
        if has_tokens:
            entry = self.pending.get(rid)
            if entry is None or entry[0] <= now:
                renewed = False
            else:
                self.pending[rid] = (now + self.pending_ttl_us, entry[1], entry[2])
        return renewed


def _binding(quotas: list[tuple[int, int, RefBucket]]) -> RefQuota | None:
    if not quotas:
        return None
    remaining, reset, bucket = min(quotas, key=lambda q: (q[0], -q[1], q[2].sort))
    return RefQuota(bucket.rule.limit, remaining, reset, bucket.rule.scope.value)
