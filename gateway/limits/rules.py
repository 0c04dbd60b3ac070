"""Rules, one request's demand, and the buckets a demand charges (resolved once per request shape).

A rule is (scope, unit, limit[, burst]) plus what it selects: a subject (workspace slug or API key id)
and a model. A request is charged in every bucket of every applicable rule, all or nothing. Buckets
are named like the portal's `RateLimitRule.bucket()`: `unit:scope[:subject][:model=M]`.

| scope         | subject None              | model None                        | model M              |
|---------------|---------------------------|-----------------------------------|----------------------|
| global        | must be None              | all traffic, one bucket           | not allowed          |
| model         | must be None              | each model its own bucket         | traffic to M         |
| workspace     | each workspace its own    | the workspace's traffic, pooled   | its traffic to M     |
| api_key       | each key its own          | the key's traffic, pooled         | its traffic to M     |
| api_key_model | each key its own          | each (key, model) its own bucket  | the key's traffic to M |

When two rules land on the same bucket and unit, the more specific one wins (a named subject beats
"each subject", a named model beats "each model"), so ops can override a default for one tenant; equally
specific duplicates resolve to the smaller limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Scope(StrEnum):
    GLOBAL = "global"
    MODEL = "model"
    WORKSPACE = "workspace"
    API_KEY = "api_key"
    API_KEY_MODEL = "api_key_model"


class Unit(StrEnum):
    RPS = "rps"
    RPM = "rpm"
    TPM = "tpm"
    TPD = "tpd"
    UPM = "upm"  # units per minute where tokens are not the unit: images, audio seconds, … (gateway/units.py)
    UPD = "upd"
    CONCURRENCY = "concurrency"


PERIOD_US: dict[Unit, int] = {
    Unit.RPS: 1_000_000,
    Unit.RPM: 60_000_000,
    Unit.TPM: 60_000_000,
    Unit.TPD: 86_400_000_000,
    Unit.UPM: 60_000_000,
    Unit.UPD: 86_400_000_000,
}
REQUEST_UNITS = frozenset({Unit.RPS, Unit.RPM})
TOKEN_UNITS = frozenset({Unit.TPM, Unit.TPD})
# Charged the request's modality units, exactly, at admission (never reconciled: the gateway counts
# them from the request — images asked, documents sent, characters to speak, seconds of audio heard).
UNIT_UNITS = frozenset({Unit.UPM, Unit.UPD})

# Bounds that keep the Redis script's integer arithmetic exact in Lua's doubles (2**53): a charge of
# c cells adds c*b to a remainder below the limit, so c * limit must stay under 2**53.
MAX_LIMIT = 2**31 - 1
MAX_TOKENS = 4_000_000  # a bigger estimate is refused as too large; bigger actual usage is clamped
MAX_TOLERANCE_US = 30 * 86_400_000_000  # burst / rate may not exceed 30 days of refill
MAX_DEBT_PERIODS = 10  # usage beyond the reservation can push a bucket at most this many periods behind

# Order in which buckets are listed, and in which equal refusals are attributed: specific first.
_FAMILY_RANK = {Scope.API_KEY: 0, Scope.WORKSPACE: 1, Scope.MODEL: 2, Scope.GLOBAL: 3}
_UNIT_RANK = {
    Unit.RPS: 0,
    Unit.RPM: 1,
    Unit.TPM: 2,
    Unit.TPD: 3,
    Unit.UPM: 4,
    Unit.UPD: 5,
    Unit.CONCURRENCY: 6,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit. `burst` (rates only) is the bucket size; None means `limit`."""

    scope: Scope
    unit: Unit
    limit: int
    subject: str | None = None
    model: str | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", Scope(self.scope))
        object.__setattr__(self, "unit", Unit(self.unit))
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.scope in (Scope.GLOBAL, Scope.MODEL) and self.subject is not None:
            raise ValueError(f"scope {self.scope!r} takes no subject")
        if self.scope is Scope.GLOBAL and self.model is not None:
            raise ValueError("a global rule names no model; use scope 'model'")
        if self.burst is not None:
            if self.unit is Unit.CONCURRENCY:
                raise ValueError("burst applies to rates, not to concurrency")
            if not 1 <= self.burst <= MAX_LIMIT:
                raise ValueError(f"burst must be between 1 and {MAX_LIMIT}, got {self.burst}")
            if self.burst * PERIOD_US[self.unit] > MAX_TOLERANCE_US * self.limit:
                raise ValueError("burst too large for the rate: the bucket would take over 30 days to refill")

    @property
    def effective_burst(self) -> int:
        return self.limit if self.burst is None else self.burst


class RuleRow(Protocol):
    """What `rules_from_rows` reads: the portal's `RateLimitRule` satisfies it."""

    scope: str
    unit: str
    limit: int
    subject: str | None
    model: str | None
    enabled: bool


def rules_from_rows(rows: Iterable[RuleRow]) -> list[Rule]:
    """Enabled table rows as rules (a row may lack `burst`: older tables have none)."""
    return [
        Rule(
            scope=Scope(row.scope),
            unit=Unit(row.unit),
            limit=row.limit,
            subject=row.subject,
            model=row.model,
            burst=getattr(row, "burst", None),
        )
        for row in rows
        if row.enabled
    ]


@dataclass(frozen=True, slots=True)
class Demand:
    """One request: who asks for which model, the tokens to reserve (prompt estimate + max output) and
    its modality units (images, seconds, …; 0 for token-priced requests)."""

    model: str
    workspace: str | None = None
    api_key: str | None = None
    tokens: int = 0
    units: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 0 or self.units < 0:
            raise ValueError("a token estimate or a unit count cannot be negative")


@dataclass(frozen=True, slots=True, eq=False)
class Bucket:
    """A rule applied to one subject/model: its counter id and the GCRA constants, all exact integers.

    Rates keep a theoretical arrival time (TAT). With the emission interval T = period/limit = p/d µs
    (reduced fraction), time is counted in ticks of 1/d µs, so T = p ticks and every quantity is an
    integer. A request costing c is admitted iff max(TAT, now) + c*T - burst*T <= now.
    """

    id: str
    scope: Scope
    unit: Unit
    limit: int
    burst: int
    subject: str | None
    model: str | None
    order: int
    period_us: int = 0
    p: int = 0
    d: int = 1
    tol_ticks: int = 0  # burst * T in ticks
    cap_us: int = 0  # the furthest a settlement may push TAT ahead of now
    is_rate: bool = field(init=False)
    is_tokens: bool = field(init=False)  # charged the token estimate, not one request
    is_units: bool = field(init=False)  # charged the request's modality units

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_rate", self.unit is not Unit.CONCURRENCY)
        object.__setattr__(self, "is_tokens", self.unit in TOKEN_UNITS)
        object.__setattr__(self, "is_units", self.unit in UNIT_UNITS)

    def cost(self, tokens: int, units: int) -> int:
        """The cells one request takes from this bucket."""
        return tokens if self.is_tokens else units if self.is_units else 1


def make_bucket(rule: Rule, subject: str | None, model: str | None, order: int) -> Bucket:
    family = Scope.API_KEY if rule.scope is Scope.API_KEY_MODEL else rule.scope
    parts = [rule.unit.value, family.value]
    if subject is not None:
        parts.append(subject.replace("%", "%25").replace(":", "%3A"))
    if model is not None:
        parts.append(f"model={model}")
    bucket_id = ":".join(parts)
    burst = rule.effective_burst
    if rule.unit is Unit.CONCURRENCY:
        return Bucket(bucket_id, rule.scope, rule.unit, rule.limit, burst, subject, model, order)
    period = PERIOD_US[rule.unit]
    g = math.gcd(period, rule.limit)
    p, d = period // g, rule.limit // g
    tol_ticks = burst * p
    cap_us = -(-tol_ticks // d) + MAX_DEBT_PERIODS * period
    return Bucket(
        bucket_id,
        rule.scope,
        rule.unit,
        rule.limit,
        burst,
        subject,
        model,
        order,
        period,
        p,
        d,
        tol_ticks,
        cap_us,
    )


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """The buckets one request shape charges: rates and leases, each in the canonical order."""

    rates: tuple[Bucket, ...]
    leases: tuple[Bucket, ...]
    token_rates: tuple[Bucket, ...] = field(init=False)
    has_tokens: bool = field(init=False)
    empty: bool = field(init=False)
    needs_id: bool = field(init=False)  # to hold leases or to settle reserved tokens
    max_tokens: int = field(init=False)  # the largest estimate every token bucket can ever admit

    def __post_init__(self) -> None:
        token_rates = tuple(b for b in self.rates if b.is_tokens)
        object.__setattr__(self, "token_rates", token_rates)
        object.__setattr__(self, "has_tokens", bool(token_rates))
        object.__setattr__(self, "empty", not self.rates and not self.leases)
        object.__setattr__(self, "needs_id", bool(self.leases or token_rates))
        object.__setattr__(self, "max_tokens", min([MAX_TOKENS, *(b.burst for b in token_rates)]))

    def too_large(self, tokens: int) -> bool:
        """True when some token bucket can never admit this estimate (refused, not retryable)."""
        return self.has_tokens and tokens > self.max_tokens


_Identity = tuple[Scope, str | None, str | None, Unit]  # family, subject, model (None: pooled), unit


class RuleBook:
    """Rules indexed by scope and subject; the plan of each (model, workspace, key) is computed once."""

    def __init__(self, rules: Iterable[Rule], cache_size: int = 65_536) -> None:
        self.rules = tuple(rules)
        self._cache_size = cache_size
        self._cache: dict[tuple[str, str | None, str | None], Plan] = {}
        self._global: list[Rule] = []
        self._by_model: dict[str | None, list[Rule]] = {}
        self._by_subject: dict[Scope, dict[str | None, list[Rule]]] = {
            Scope.WORKSPACE: {},
            Scope.API_KEY: {},
            Scope.API_KEY_MODEL: {},
        }
        for rule in self.rules:
            if rule.scope is Scope.GLOBAL:
                self._global.append(rule)
            elif rule.scope is Scope.MODEL:
                self._by_model.setdefault(rule.model, []).append(rule)
            else:
                self._by_subject[rule.scope].setdefault(rule.subject, []).append(rule)

    def plan(self, demand: Demand) -> Plan:
        key = (demand.model, demand.workspace, demand.api_key)
        plan = self._cache.get(key)
        if plan is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # crude but O(1) amortised; plans are cheap to rebuild
            plan = self._cache[key] = self._resolve(*key)
        return plan

    def _resolve(self, model: str, workspace: str | None, api_key: str | None) -> Plan:
        chosen: dict[_Identity, tuple[tuple[bool, bool, int, int, bool], Rule]] = {}

        def offer(rule: Rule, family: Scope, subject: str | None, bucket_model: str | None) -> None:
            identity = (family, subject, bucket_model, rule.unit)
            # Ties (an api_key rule for one model and an api_key_model rule, alike) go to the narrower
            # scope, whatever order the rules came in, so every limiter reports the same one.
            rank = (
                rule.subject is not None,
                rule.model is not None,
                -rule.limit,
                -rule.effective_burst,
                rule.scope is Scope.API_KEY_MODEL,
            )
            if identity not in chosen or rank > chosen[identity][0]:
                chosen[identity] = (rank, rule)

        for rule in self._global:
            offer(rule, Scope.GLOBAL, None, None)
        for rule in self._by_model.get(None, []) + self._by_model.get(model, []):
            offer(rule, Scope.MODEL, None, model)
        for scope, subject in (
            (Scope.WORKSPACE, workspace),
            (Scope.API_KEY, api_key),
            (Scope.API_KEY_MODEL, api_key),
        ):
            if subject is None:
                continue
            index = self._by_subject[scope]
            for rule in index.get(None, []) + index.get(subject, []):
                if rule.model not in (None, model):
                    continue
                per_model = scope is Scope.API_KEY_MODEL or rule.model is not None
                family = Scope.API_KEY if scope is Scope.API_KEY_MODEL else scope
                offer(rule, family, subject, model if per_model else None)

        def sort_key(identity: _Identity) -> tuple[int, int, int]:
            family, _, bucket_model, unit = identity
            pooled = 1 if bucket_model is None and family in (Scope.API_KEY, Scope.WORKSPACE) else 0
            return (_FAMILY_RANK[family], pooled, _UNIT_RANK[unit])

        ordered = sorted(chosen, key=sort_key)
        buckets = [make_bucket(chosen[i][1], i[1], i[2], order) for order, i in enumerate(ordered)]
        return Plan(
            rates=tuple(b for b in buckets if b.is_rate),
            leases=tuple(b for b in buckets if not b.is_rate),
        )
