"""Which upstream target serves a request, and in what order the others are tried if it fails.

A `Router` holds the targets of one MaaS model and answers `candidates(region)`: an ordered list, first
choice first, for retries and failover. It never returns a target that is

- drained (weight 0: in-flight requests finish, no new ones arrive),
- marked unhealthy (by the gateway's health checks),
- saturated (`in_flight >= max_in_flight`: a hard cap, so the gateway answers 503/429 instead of
  overloading an engine), or
- behind an open circuit (`BreakerBoard.available` is False).

Candidates come tier by tier (`priority`, lowest first: fallbacks such as an external API sit in a
higher tier); inside a tier the strategy orders them:

- `round_robin`: the ring, starting one past the last first choice;
- `random`: weighted random (weights honoured; equal weights are uniform), the failover order a
  weighted sample without replacement (Efraimidis–Spirakis keys);
- `weighted`: nginx's *smooth* weighted round robin: exact shares over every sum-of-weights picks,
  no bursts (weights 5,1,1 give a,a,b,a,c,a,a); failover by who the next round favours;
- `least_outstanding`: fewest in-flight requests per unit of weight, ties broken round robin;
- `locality`: the caller's region first (smooth weighted inside it), spilling over to the other
  regions when the local targets are drained, unhealthy, saturated or open-circuit.

Pure (no I/O) and not thread-safe: a router lives in one event loop. `attempts(region)` drives a
retry/failover loop: it claims each target's breaker permit lazily, counts the attempt in flight (for
least_outstanding and saturation) and takes the verdict back to the breaker.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from gateway.breaker import BreakerBoard, Permit


class Strategy(StrEnum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    WEIGHTED = "weighted"
    LEAST_OUTSTANDING = "least_outstanding"
    LOCALITY = "locality"


@dataclass(eq=False, slots=True)
class Target:
    """One upstream (a serving's endpoint or an external API). Identity is the object; name is unique."""

    name: str
    url: str = ""
    weight: int = 1
    region: str | None = None
    priority: int = 0  # lower tiers are tried first
    healthy: bool = True
    max_in_flight: int | None = None  # None: no cap
    in_flight: int = 0
    # smooth weighted round robin state (nginx `current_weight`)
    current_weight: int = 0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"target {self.name!r}: weight must be >= 0")

    @property
    def saturated(self) -> bool:
        return self.max_in_flight is not None and self.in_flight >= self.max_in_flight


class Router:
    def __init__(
        self,
        targets: Iterable[Target],
        strategy: Strategy | str = Strategy.WEIGHTED,
        *,
        breakers: BreakerBoard | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.strategy = Strategy(strategy)
        self.breakers = breakers
        self.rng = rng or random.Random()
        self._ring = 0  # round robin position / least_outstanding tie-break offset
        self.targets: list[Target] = []
        self.set_targets(targets)

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the target list (after an edit); counters and WRR state carry over by name."""
        old = {t.name: t for t in self.targets}
        fresh = list(targets)
        names = [t.name for t in fresh]
        if len(set(names)) != len(names):
            raise ValueError("target names must be unique")
        for target in fresh:
            previous = old.get(target.name)
            if previous is not None and previous is not target:
                target.in_flight = previous.in_flight
                target.current_weight = previous.current_weight
        self.targets = fresh

    # -- picking ---------------------------------------------------------------------------------
    def pick(self, region: str | None = None) -> Target | None:
        """The first choice alone (advances the strategy's state like `candidates`)."""
        ordered = self.candidates(region)
        return ordered[0] if ordered else None

    def candidates(self, region: str | None = None) -> list[Target]:
        """Every eligible target, first choice first, then the failover order.

        Only the tier (and, for locality, the region group) that supplies the first choice advances
        the strategy's state, so failover orders never disturb the long-run shares.
        """
        groups = self._groups(self._eligible(), region)
        ordered: list[Target] = []
        for i, group in enumerate(groups):
            ordered.extend(self._order(group, advance=i == 0))
        return ordered

    def _eligible(self) -> list[Target]:
        breakers = self.breakers
        return [
            t
            for t in self.targets
            if t.weight > 0
            and t.healthy
            and not t.saturated
            and (breakers is None or breakers.available(t.name))
        ]

    def _groups(self, eligible: list[Target], region: str | None) -> list[list[Target]]:
        """Priority tiers, lowest first; with locality each tier splits into local, then remote."""
        by_tier: dict[int, list[Target]] = {}
        for target in eligible:
            by_tier.setdefault(target.priority, []).append(target)
        groups: list[list[Target]] = []
        for tier in sorted(by_tier):
            members = by_tier[tier]
            if self.strategy is Strategy.LOCALITY and region is not None:
                local = [t for t in members if t.region == region]
                remote = [t for t in members if t.region != region]
                groups.extend(g for g in (local, remote) if g)
            else:
                groups.append(members)
        return groups

    def _order(self, group: list[Target], *, advance: bool) -> list[Target]:
        strategy = self.strategy
        if strategy is Strategy.ROUND_ROBIN:
            return self._round_robin(group, advance)
        if strategy is Strategy.RANDOM:
            return self._weighted_random(group)
        if strategy is Strategy.LEAST_OUTSTANDING:
            return self._least_outstanding(group, advance)
        return self._smooth_weighted(group, advance)  # WEIGHTED, and LOCALITY inside a region group

    def _round_robin(self, group: list[Target], advance: bool) -> list[Target]:
        start = self._ring % len(group)
        if advance:
            self._ring = start + 1
        return group[start:] + group[:start]

    def _weighted_random(self, group: list[Target]) -> list[Target]:
        if len(group) == 1:
            return group
        rand = self.rng.random
        # key = u ** (1/w): the largest key is target i with probability w_i / sum(w)
        keyed = sorted(((rand() ** (1.0 / t.weight), i) for i, t in enumerate(group)), reverse=True)
        return [group[i] for _, i in keyed]

    def _least_outstanding(self, group: list[Target], advance: bool) -> list[Target]:
        n = len(group)
        offset = self._ring % n
        if advance:
            self._ring = offset + 1
        ranked = sorted(
            range(n), key=lambda i: ((group[i].in_flight + 1) / group[i].weight, (i - offset) % n)
        )
        return [group[i] for i in ranked]

    def _smooth_weighted(self, group: list[Target], advance: bool) -> list[Target]:
        if not advance:
            return sorted(group, key=lambda t: (-(t.current_weight + t.weight), -t.weight))
        total = 0
        best = group[0]
        for target in group:
            target.current_weight += target.weight
            total += target.weight
            if target.current_weight > best.current_weight:
                best = target
        best.current_weight -= total
        rest = sorted(
            (t for t in group if t is not best), key=lambda t: (-(t.current_weight + t.weight), -t.weight)
        )
        return [best, *rest]

    def attempts(self, region: str | None = None) -> Iterator[Attempt]:
        """The candidates as attempts, for a retry/failover loop. Each target's breaker permit is
        claimed only when the loop reaches it (a half-open target whose single probe is taken by then
        is skipped) and the attempt counts in flight until it is closed."""
        for target in self.candidates(region):
            permit = None
            if self.breakers is not None:
                permit = self.breakers[target.name].try_acquire()
                if permit is None:
                    continue
            yield Attempt(self, target, permit)

    # -- in-flight accounting --------------------------------------------------------------------
    def start(self, target: Target) -> None:
        target.in_flight += 1

    def finish(self, target: Target) -> None:
        target.in_flight = max(0, target.in_flight - 1)

    @contextmanager
    def attempt(self, target: Target) -> Iterator[Target]:
        """`with router.attempt(t):` counts the request in flight on `t` until the block exits."""
        self.start(target)
        try:
            yield target
        finally:
            self.finish(target)


class Attempt:
    """One try of one target: report a verdict for its circuit breaker, then close it.

    `succeeded()` once the target answered well (for a stream: the 200 and its headers arrived),
    `failed(retry_after)` on a transport error, a timeout or a status `is_failure_status` accepts.
    Closing without a verdict (the client went away first) frees a half-open probe without judging
    the target. `with attempt:` closes it at the end of the block; closing twice is harmless.
    """

    __slots__ = ("_closed", "_verdict", "permit", "router", "target")

    def __init__(self, router: Router, target: Target, permit: Permit | None) -> None:
        self.router, self.target, self.permit = router, target, permit
        self._verdict = False
        self._closed = False
        router.start(target)

    def succeeded(self) -> None:
        if not self._verdict:
            self._verdict = True
            if self.permit is not None and self.router.breakers is not None:
                self.router.breakers[self.target.name].record_success(self.permit)

    def failed(self, retry_after: float | None = None) -> None:
        if not self._verdict:
            self._verdict = True
            if self.permit is not None and self.router.breakers is not None:
                self.router.breakers[self.target.name].record_failure(self.permit, retry_after)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._verdict and self.permit is not None and self.router.breakers is not None:
            self.router.breakers[self.target.name].release(self.permit)
        self.router.finish(self.target)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
