"""Routing: shares per strategy, drains, failover order, circuit breakers, locality and priority tiers."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.breaker import BreakerBoard, BreakerConfig
from gateway.routing import Router, Strategy, Target

# chi-square critical value, 2 degrees of freedom, p = 0.001: a fair sampler fails 1 run in 1000;
# the RNG is seeded, so the test is deterministic anyway.
CHI2_DF2_P001 = 13.816


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def targets_70_25_5() -> list[Target]:
    return [Target("a", weight=70), Target("b", weight=25), Target("c", weight=5)]


def shares(router: Router, picks: int, region: str | None = None) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        target = router.pick(region)
        assert target is not None
        counts[target.name] += 1
    return counts


def test_smooth_weighted_gives_exact_shares_in_every_cycle() -> None:
    router = Router(targets_70_25_5(), Strategy.WEIGHTED)
    sequence = [router.pick() for _ in range(100_000)]
    assert Counter(t.name for t in sequence if t) == {"a": 70_000, "b": 25_000, "c": 5_000}
    for start in range(0, 100_000, 100):  # every cycle of sum(weights) picks, not just the total
        cycle = Counter(t.name for t in sequence[start : start + 100] if t)
        assert cycle == {"a": 70, "b": 25, "c": 5}


def test_smooth_weighted_interleaves_like_nginx() -> None:
    router = Router([Target("a", weight=5), Target("b", weight=1), Target("c", weight=1)], "weighted")
    assert [t.name for t in (router.pick() for _ in range(7)) if t] == ["a", "a", "b", "a", "c", "a", "a"]


def test_smooth_weighted_has_no_bursts_for_the_small_target() -> None:
    """new-api #835: several requests in a row landing on the same small channel."""
    router = Router(targets_70_25_5(), Strategy.WEIGHTED)
    names = [t.name for t in (router.pick() for _ in range(10_000)) if t]
    longest_b_run = max(len(run) for run in "".join(n[0] for n in names).split("a") if run)
    assert longest_b_run <= 1  # a (70 %) separates every other pick


def test_weighted_random_matches_weights_within_statistical_bounds() -> None:
    router = Router(targets_70_25_5(), Strategy.RANDOM, rng=random.Random(7))
    counts = shares(router, 100_000)
    expected = {"a": 70_000, "b": 25_000, "c": 5_000}
    chi2 = sum((counts[k] - e) ** 2 / e for k, e in expected.items())
    assert chi2 < CHI2_DF2_P001, counts


def test_random_with_equal_weights_is_uniform() -> None:
    router = Router([Target(n) for n in "abcd"], Strategy.RANDOM, rng=random.Random(3))
    counts = shares(router, 40_000)
    chi2 = sum((counts[k] - 10_000) ** 2 / 10_000 for k in "abcd")
    assert chi2 < 16.27  # df = 3, p = 0.001


@pytest.mark.parametrize("strategy", list(Strategy))
def test_weight_zero_is_never_picked_nor_offered_for_failover(strategy: Strategy) -> None:
    targets = [
        Target("a", weight=3, region="eu"),
        Target("drained", weight=0, region="eu"),
        Target("b", weight=1),
    ]
    router = Router(targets, strategy, rng=random.Random(1))
    for _ in range(2_000):
        names = [t.name for t in router.candidates("eu")]
        assert "drained" not in names
        assert sorted(names) == ["a", "b"]


def test_shares_do_not_depend_on_the_order_of_targets() -> None:
    """LiteLLM #33329: weights ignored when the first deployment had none."""
    forward = shares(Router(targets_70_25_5(), "weighted"), 1_000)
    backward = shares(Router(list(reversed(targets_70_25_5())), "weighted"), 1_000)
    assert forward == backward == {"a": 700, "b": 250, "c": 50}


def test_round_robin_cycles_and_failover_follows_the_ring() -> None:
    router = Router([Target("a"), Target("b"), Target("c")], Strategy.ROUND_ROBIN)
    orders = [[t.name for t in router.candidates()] for _ in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_least_outstanding_prefers_the_least_loaded_per_weight_and_rotates_ties() -> None:
    a, b, c = Target("a", weight=2), Target("b"), Target("c")
    router = Router([a, b, c], Strategy.LEAST_OUTSTANDING)
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2  # load per weight: a (3+1)/2 = 2, b 2, c 3
    assert [t.name for t in router.candidates()][2] == "c"
    a.in_flight = b.in_flight = c.in_flight = 0
    firsts = [router.pick() for _ in range(6)]
    # ties (a: 0.5 < b = c: 1) -> a always first while all idle
    assert {t.name for t in firsts if t} == {"a"}
    a.in_flight = 1  # now a: 1.0 ties with b and c: the tie-break rotates
    firsts = [router.pick() for _ in range(6)]
    assert Counter(t.name for t in firsts if t) == {"a": 2, "b": 2, "c": 2}


def test_least_outstanding_spreads_concurrent_requests() -> None:
    router = Router([Target("a"), Target("b"), Target("c")], Strategy.LEAST_OUTSTANDING)
    held = []
    for _ in range(9):
        target = router.pick()
        assert target is not None
        router.start(target)
        held.append(target)
    assert {t.name: t.in_flight for t in router.targets} == {"a": 3, "b": 3, "c": 3}
    for target in held:
        router.finish(target)
    assert all(t.in_flight == 0 for t in router.targets)


def test_failover_skips_an_open_circuit_immediately() -> None:
    """Portkey #1289: with the circuit open, the request must go to the next target at once."""
    clock = VirtualClock()
    board = BreakerBoard(BreakerConfig(consecutive_failures=2, cooldown_seconds=10), clock)
    router = Router(targets_70_25_5(), Strategy.WEIGHTED, breakers=board)
    for _ in range(2):
        permit = board["a"].try_acquire()
        assert permit is not None
        board["a"].record_failure(permit)
    for _ in range(300):
        assert next(t.name for t in router.candidates()) != "a"
        assert "a" not in [t.name for t in router.candidates()]
    assert shares(router, 300) == {"b": 250, "c": 50}  # the shares of the rest stay exact
    clock.now += 10  # cool-down over: a is offered again, for a single probe at a time
    assert "a" in [t.name for t in router.candidates()]
    probe = board["a"].try_acquire()
    assert probe is not None and probe.probe
    assert "a" not in [t.name for t in router.candidates()]  # the probe is out
    board["a"].record_success(probe)
    assert "a" in [t.name for t in router.candidates()]


def test_unhealthy_and_saturated_targets_are_skipped() -> None:
    a, b = Target("a", weight=9, max_in_flight=2), Target("b", weight=1)
    router = Router([a, b], Strategy.WEIGHTED)
    a.healthy = False
    assert [t.name for t in router.candidates()] == ["b"]
    a.healthy = True
    a.in_flight = 2
    assert [t.name for t in router.candidates()] == ["b"]
    a.in_flight = 1
    assert "a" in [t.name for t in router.candidates()]
    b.healthy = False
    a.in_flight = 2
    assert router.candidates() == []
    assert router.pick() is None


def test_locality_prefers_the_callers_region_and_spills_over() -> None:
    clock = VirtualClock()
    board = BreakerBoard(
        BreakerConfig(consecutive_failures=1, cooldown_seconds=5, trip_on_retry_after=False), clock
    )
    eu1 = Target("eu1", region="eu", weight=1, max_in_flight=1)
    eu2 = Target("eu2", region="eu", weight=1)
    us1 = Target("us1", region="us", weight=5)
    router = Router([us1, eu1, eu2], Strategy.LOCALITY, breakers=board)
    assert shares(router, 100, region="eu") == {"eu1": 50, "eu2": 50}
    assert [t.name for t in router.candidates("eu")][2] == "us1"  # remote last, for failover
    assert shares(router, 10, region="us") == {"us1": 10}
    assert Counter(shares(router, 70, region=None)) == {
        "us1": 50,
        "eu1": 10,
        "eu2": 10,
    }  # no region: weighted

    eu1.in_flight = 1  # saturated
    permit = board["eu2"].try_acquire()
    assert permit is not None
    board["eu2"].record_failure(permit)  # open
    assert [t.name for t in router.candidates("eu")] == ["us1"]  # spill-over
    eu1.in_flight = 0
    assert [t.name for t in router.candidates("eu")] == ["eu1", "us1"]
    eu1.healthy = False
    assert [t.name for t in router.candidates("eu")] == ["us1"]
    eu1.healthy = True
    clock.now += 5
    assert [t.name for t in router.candidates("eu")][:2] in (["eu1", "eu2"], ["eu2", "eu1"])


def test_priority_tiers_come_first_to_last() -> None:
    primary = [Target("p1", weight=1), Target("p2", weight=1)]
    fallback = Target("external", weight=100, priority=1)
    router = Router([fallback, *primary], Strategy.WEIGHTED)
    assert shares(router, 10) == {"p1": 5, "p2": 5}  # the big weight of a fallback tier does not count
    assert [t.name for t in router.candidates()][-1] == "external"
    primary[0].healthy = primary[1].healthy = False
    assert [t.name for t in router.candidates()] == ["external"]


def test_set_targets_keeps_counters_by_name_and_rejects_duplicates() -> None:
    router = Router([Target("a", weight=1), Target("b", weight=1)], Strategy.WEIGHTED)
    a = router.targets[0]
    router.start(a)
    router.set_targets([Target("a", weight=0), Target("b", weight=1)])  # drain a: in-flight stays
    assert router.targets[0].in_flight == 1
    assert shares(router, 5) == {"b": 5}
    with pytest.raises(ValueError, match="unique"):
        router.set_targets([Target("a"), Target("a")])
    with pytest.raises(ValueError, match="weight"):
        Target("x", weight=-1)


def test_finish_never_goes_below_zero() -> None:
    router = Router([Target("a")])
    with router.attempt(router.targets[0]) as target:
        assert target.in_flight == 1
    router.finish(router.targets[0])
    assert router.targets[0].in_flight == 0


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8))
def test_smooth_weighted_is_exact_over_every_cycle_for_any_weights(weights: list[int]) -> None:
    router = Router([Target(f"t{i}", weight=w) for i, w in enumerate(weights)], Strategy.WEIGHTED)
    total = sum(weights)
    if total == 0:
        assert router.pick() is None
        return
    for _ in range(3):
        counts = shares(router, total)
        assert counts == {f"t{i}": w for i, w in enumerate(weights) if w}


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=6),
    strategy=st.sampled_from(list(Strategy)),
    seed=st.integers(0, 1000),
)
def test_candidates_are_each_eligible_target_once(weights: list[int], strategy: Strategy, seed: int) -> None:
    rng = random.Random(seed)
    targets = [
        Target(f"t{i}", weight=w, region=rng.choice(["eu", "us", None]), priority=rng.choice([0, 1]))
        for i, w in enumerate(weights)
    ]
    for target in targets:
        target.healthy = rng.random() > 0.2
    router = Router(targets, strategy, rng=rng)
    eligible = {t.name for t in targets if t.weight > 0 and t.healthy}
    for _ in range(5):
        ordered = router.candidates(rng.choice(["eu", "us", None]))
        assert len(ordered) == len(eligible)
        assert {t.name for t in ordered} == eligible
        tiers = [t.priority for t in ordered]
        assert tiers == sorted(tiers)


def test_attempts_fail_over_feed_the_breakers_and_count_in_flight() -> None:
    clock = VirtualClock()
    board = BreakerBoard(BreakerConfig(consecutive_failures=1, cooldown_seconds=5), clock)
    router = Router([Target("a", weight=2), Target("b", weight=1)], Strategy.WEIGHTED, breakers=board)
    tried = []
    for attempt in router.attempts():
        with attempt:
            tried.append(attempt.target.name)
            assert attempt.target.in_flight == 1
            if attempt.target.name == "a":
                attempt.failed(retry_after=8)  # e.g. a 429 with retry-after: 8
                continue
            attempt.succeeded()
            break
    assert tried == ["a", "b"]
    assert all(t.in_flight == 0 for t in router.targets)
    assert board["a"].retry_in() == 8
    assert attempt_names(router) == ["b"]
    assert all(t.in_flight == 0 for t in router.targets)


def test_attempts_skip_a_half_open_target_whose_probe_is_out_and_closing_without_verdict_frees_it() -> None:
    clock = VirtualClock()
    board = BreakerBoard(BreakerConfig(consecutive_failures=1, cooldown_seconds=5), clock)
    router = Router([Target("a", weight=5), Target("b", weight=1)], Strategy.WEIGHTED, breakers=board)
    board["a"].record_failure(board["a"].try_acquire() or pytest.fail("closed breaker refused"))
    clock.now += 5
    first = router.attempts()
    probe = next(first)
    assert probe.target.name == "a" and probe.permit is not None and probe.permit.probe
    assert attempt_names(router) == ["b"]  # the probe is out
    probe.close()  # the client went away: no verdict, the slot is free again
    probe.close()
    assert [t.in_flight for t in router.targets] == [0, 0]
    assert attempt_names(router)[0] == "a"


def attempt_names(router: Router) -> list[str]:
    names = []
    for attempt in router.attempts():
        with attempt:
            names.append(attempt.target.name)
    return names
