"""The circuit breaker on virtual time: opening rules, cool-downs, retry-after, half-open probes."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.breaker import (
    BreakerBoard,
    BreakerConfig,
    CircuitBreaker,
    State,
    is_failure_status,
    parse_retry_after,
)


class VirtualClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def breaker(**config: float | int | bool) -> tuple[CircuitBreaker, VirtualClock]:
    clock = VirtualClock()
    return CircuitBreaker(BreakerConfig(**config), clock), clock  # type: ignore[arg-type]


def fail(b: CircuitBreaker, retry_after: float | None = None) -> None:
    permit = b.try_acquire()
    assert permit is not None
    b.record_failure(permit, retry_after)


def succeed(b: CircuitBreaker) -> None:
    permit = b.try_acquire()
    assert permit is not None
    b.record_success(permit)


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_run() -> None:
    b, _ = breaker(consecutive_failures=3, failure_rate=0)
    fail(b), fail(b), succeed(b), fail(b), fail(b)
    assert b.state is State.CLOSED
    fail(b)
    assert b.state is State.OPEN
    assert b.try_acquire() is None
    assert not b.available()
    assert b.opened_count == 1


def test_opens_on_failure_rate_only_with_minimum_volume() -> None:
    b, clock = breaker(consecutive_failures=0, failure_rate=0.5, min_requests=10, window_seconds=10)
    for _ in range(4):  # 4 of 8 failed: 50 %, but below the volume
        fail(b), succeed(b)
        clock.now += 0.5
    assert b.state is State.CLOSED
    succeed(b)  # 4 of 9
    fail(b)  # 5 of 10 = 50 % with volume 10
    assert b.state is State.OPEN


def test_failure_rate_window_slides() -> None:
    b, clock = breaker(consecutive_failures=0, failure_rate=0.5, min_requests=4, window_seconds=10)
    fail(b), fail(b), fail(b)
    clock.now += 11  # those three leave the window
    succeed(b), succeed(b), succeed(b)
    fail(b)  # 1 of 4 in the window
    assert b.state is State.CLOSED
    fail(b), fail(b)  # 3 of 6 = 50 %
    assert b.state is State.OPEN


def test_cool_down_then_half_open_allows_one_probe_and_success_closes() -> None:
    b, clock = breaker(consecutive_failures=1, cooldown_seconds=5)
    fail(b)
    clock.now += 4.999
    assert b.state is State.OPEN and b.try_acquire() is None
    assert b.retry_in() == pytest.approx(0.001)
    clock.now += 0.001
    assert b.state is State.HALF_OPEN and b.available()
    probe = b.try_acquire()
    assert probe is not None and probe.probe
    assert b.try_acquire() is None  # one probe at a time
    assert not b.available()
    b.record_success(probe)
    assert b.state is State.CLOSED
    assert all(b.try_acquire() is not None for _ in range(10))


def test_probe_failure_reopens_with_backoff_up_to_the_cap() -> None:
    b, clock = breaker(consecutive_failures=1, cooldown_seconds=5, backoff=2, max_cooldown_seconds=15)
    fail(b)
    waits = []
    for _ in range(4):
        waits.append(b.retry_in())
        clock.now += b.retry_in()
        probe = b.try_acquire()
        assert probe is not None and probe.probe
        b.record_failure(probe)
        assert b.state is State.OPEN
    assert waits == [5, 10, 15, 15]
    clock.now += 15
    succeed(b)  # the probe closes it; the next opening starts from the base cool-down again
    fail(b)
    assert b.retry_in() == 5


def test_retry_after_longer_than_the_cool_down_is_honoured_and_capped() -> None:
    b, _ = breaker(consecutive_failures=1, cooldown_seconds=5, max_cooldown_seconds=60)
    fail(b, retry_after=30)
    assert b.retry_in() == 30
    b2, _ = breaker(consecutive_failures=1, cooldown_seconds=5)
    fail(b2, retry_after=2)  # shorter: the cool-down wins
    assert b2.retry_in() == 5
    b3, _ = breaker(consecutive_failures=1, cooldown_seconds=5, max_cooldown_seconds=60)
    fail(b3, retry_after=3600)  # a hostile or broken upstream cannot ban itself for an hour
    assert b3.retry_in() == 60


def test_a_failure_with_retry_after_trips_at_once_unless_disabled() -> None:
    b, _ = breaker(consecutive_failures=5)
    fail(b, retry_after=1)
    assert b.state is State.OPEN
    b2, _ = breaker(consecutive_failures=5, trip_on_retry_after=False)
    fail(b2, retry_after=1)
    assert b2.state is State.CLOSED


def test_results_of_requests_started_before_a_transition_are_ignored() -> None:
    b, clock = breaker(consecutive_failures=2, cooldown_seconds=5)
    early = [b.try_acquire() for _ in range(3)]
    fail(b), fail(b)
    assert b.state is State.OPEN
    assert early[0] is not None
    b.record_success(early[0])  # a slow success from before the opening does not close it
    assert b.state is State.OPEN
    clock.now += 5
    probe = b.try_acquire()
    assert probe is not None
    assert early[1] is not None and early[2] is not None
    b.record_failure(early[1])  # nor does a stale failure re-open the half-open circuit
    assert b.state is State.HALF_OPEN
    b.record_success(early[2])  # nor a stale success close it
    assert b.state is State.HALF_OPEN
    b.record_success(probe)
    assert b.state is State.CLOSED


def test_release_frees_the_probe_and_a_lost_probe_times_out() -> None:
    b, clock = breaker(consecutive_failures=1, cooldown_seconds=1, probe_timeout_seconds=30)
    fail(b)
    clock.now += 1
    probe = b.try_acquire()
    assert probe is not None
    b.release(probe)  # the client went away before the probe's verdict
    assert b.state is State.HALF_OPEN
    lost = b.try_acquire()
    assert lost is not None and lost.probe
    assert b.try_acquire() is None
    clock.now += 30  # never reported: another probe may go
    assert b.try_acquire() is not None


def test_board_makes_one_breaker_per_target_sharing_config_and_clock() -> None:
    clock = VirtualClock()
    board = BreakerBoard(BreakerConfig(consecutive_failures=1), clock)
    assert board.available("never-used")
    fail(board["a"])
    assert board["a"] is board["a"]
    assert board.states() == {"a": State.OPEN}
    assert board.available("b") and not board.available("a")


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (200, False),
        (400, False),
        (401, False),
        (404, False),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
def test_failure_statuses(status: int, failure: bool) -> None:
    assert is_failure_status(status) is failure


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # the precise one wins
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=lambda: 1_000_000.0) == 30
    assert parse_retry_after({"retry-after": "-3"}) == 0


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate=1.5)
    with pytest.raises(ValueError):
        BreakerConfig(window_seconds=0)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.sampled_from("afsrt"), st.floats(0, 3)), max_size=80), seed=st.integers(0, 99)
)
def test_invariants_under_random_histories(steps: list[tuple[str, float]], seed: int) -> None:
    """Never two probes out at once; never a permit while open; a closed breaker always admits."""
    b, clock = breaker(
        consecutive_failures=3,
        failure_rate=0.5,
        min_requests=4,
        cooldown_seconds=2,
        probe_timeout_seconds=1e9,
    )
    rng = random.Random(seed)
    held = []
    for action, dt in steps:
        clock.now += dt
        if action == "a":
            state = b.state
            permit = b.try_acquire()
            if state is State.OPEN:
                assert permit is None
            if state is State.CLOSED:
                assert permit is not None and not permit.probe
            if permit is not None:
                held.append(permit)
        elif action == "t":
            continue  # time passes
        elif held:
            permit = held.pop(rng.randrange(len(held)))
            if action == "f":
                b.record_failure(permit)
            elif action == "s":
                b.record_success(permit)
            else:
                b.release(permit)
        probes_out = [p for p in held if p.probe and p.epoch == b._epoch]
        assert len(probes_out) <= 1
