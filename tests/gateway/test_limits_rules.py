"""Rules and buckets: validation, the portal table's rows, the same selection as the portal, headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.limits import Demand, LocalLimiter, Rule, Scope, Unit, go_duration, rules_from_rows
from gateway.limits.rules import RuleBook
from store.models.gateway import RateLimitRule, applicable


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (12_000, "12ms"),
        (999_001, "1s"),
        (1_000_000, "1s"),
        (1_574_000, "1.574s"),
        (1_500_000, "1.5s"),
        (59_999_999, "1m0s"),
        (360_000_000, "6m0s"),
        (90_250_000, "1m30.25s"),
        (3_600_000_000, "1h0m0s"),
        (86_400_000_000, "24h0m0s"),
    ],
)
def test_resets_print_like_go_durations_rounded_up(us: int, text: str) -> None:
    assert go_duration(us) == text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": "global", "unit": "rps", "limit": 0}, "limit must be between"),
        ({"scope": "global", "unit": "rps", "limit": 2**31}, "limit must be between"),
        ({"scope": "global", "unit": "rps", "limit": 1, "subject": "w"}, "takes no subject"),
        ({"scope": "model", "unit": "rps", "limit": 1, "subject": "w"}, "takes no subject"),
        ({"scope": "global", "unit": "rps", "limit": 1, "model": "m"}, "use scope 'model'"),
        ({"scope": "global", "unit": "concurrency", "limit": 1, "burst": 2}, "not to concurrency"),
        ({"scope": "global", "unit": "tpd", "limit": 1, "burst": 31}, "over 30 days"),
        ({"scope": "tenant", "unit": "rps", "limit": 1}, "'tenant' is not a valid Scope"),
        ({"scope": "global", "unit": "rpd", "limit": 1}, "'rpd' is not a valid Unit"),
    ],
)
def test_invalid_rules_say_why(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rule(**kwargs)  # type: ignore[arg-type]


def test_table_rows_become_rules() -> None:
    rows = [
        RateLimitRule(scope="workspace", subject="w", unit="rpm", limit=10, burst=20, enabled=True),
        RateLimitRule(scope="global", unit="rps", limit=5, enabled=False),
        RateLimitRule(scope="api_key", subject="k", model="m", unit="tpm", limit=1000, enabled=True),
    ]
    assert rules_from_rows(rows) == [
        Rule(Scope.WORKSPACE, Unit.RPM, 10, subject="w", burst=20),
        Rule(Scope.API_KEY, Unit.TPM, 1000, subject="k", model="m"),
    ]


TABLE_RULES = st.lists(
    st.one_of(
        st.builds(lambda u: ("global", None, None, u), st.sampled_from(["rps", "rpm", "tpm", "concurrency"])),
        st.tuples(
            st.just("model"), st.sampled_from([None, "m1", "m2"]), st.none(), st.sampled_from(["rps", "tpm"])
        ),
        st.tuples(
            st.just("workspace"),
            st.sampled_from([None, "m1"]),
            st.sampled_from(["w1", "w2"]),
            st.sampled_from(["rpm", "tpm", "concurrency"]),
        ),
        st.tuples(
            st.just("api_key"),
            st.sampled_from([None, "m1"]),
            st.sampled_from(["k1", "k2"]),
            st.sampled_from(["rps", "tpm", "concurrency"]),
        ),
    ),
    max_size=12,
    unique=True,  # the table allows one rule per bucket and unit
)


@settings(max_examples=200)
@given(
    table=TABLE_RULES, model=st.sampled_from(["m1", "m2"]), limits=st.lists(st.integers(1, 99), min_size=12)
)
def test_buckets_are_the_ones_the_portal_selects(
    table: list[tuple[str, str | None, str | None, str]], model: str, limits: list[int]
) -> None:
    """For the portal's table, the limiter charges exactly `applicable(...)`'s rules, in their buckets."""
    rows = [
        RateLimitRule(scope=s, model=m, subject=sub, unit=u, limit=limit, enabled=True)
        for (s, m, sub, u), limit in zip(table, limits, strict=False)
    ]
    expected = {
        (r.bucket(model), r.limit) for r in applicable(rows, workspace="w1", api_key="k1", model=model)
    }
    plan = RuleBook(rules_from_rows(rows)).plan(Demand(model, "w1", "k1"))
    assert {(b.id, b.limit) for b in (*plan.rates, *plan.leases)} == expected


def test_a_named_subject_overrides_the_default_for_every_subject() -> None:
    book = RuleBook(
        [
            Rule(Scope.API_KEY, Unit.RPM, 60),  # every key: 60/min
            Rule(Scope.API_KEY, Unit.RPM, 600, subject="vip"),
            Rule(Scope.API_KEY_MODEL, Unit.TPM, 1000),  # every key, every model
            Rule(Scope.API_KEY_MODEL, Unit.TPM, 50, model="big"),
        ]
    )
    plan = book.plan(Demand("big", "w", "vip"))
    assert [(b.id, b.limit) for b in plan.rates] == [
        ("tpm:api_key:vip:model=big", 50),
        ("rpm:api_key:vip", 600),
    ]
    plan = book.plan(Demand("small", "w", "anyone"))
    assert [(b.id, b.limit) for b in plan.rates] == [
        ("tpm:api_key:anyone:model=small", 1000),
        ("rpm:api_key:anyone", 60),
    ]
    assert book.plan(Demand("small", "w", "anyone")) is plan  # resolved once per request shape


def test_headers_report_the_binding_scope_per_unit_and_the_real_wait() -> None:
    now = [1_000_000_000]
    limiter = LocalLimiter(
        [
            Rule(Scope.GLOBAL, Unit.RPS, 1000),
            Rule(Scope.API_KEY, Unit.RPM, 2, subject="k"),
            Rule(Scope.WORKSPACE, Unit.TPM, 10_000, subject="w"),
            Rule(Scope.MODEL, Unit.TPD, 1_000_000, model="m"),
        ],
        clock=lambda: now[0],
    )
    first = limiter.try_acquire(Demand("m", "w", "k", tokens=4000))
    assert first.headers() == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-scope-requests": "api_key",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "6000",
        "x-ratelimit-reset-tokens": "24s",
        "x-ratelimit-scope-tokens": "workspace",
    }
    limiter.try_acquire(Demand("m", "w", "k", tokens=4000))
    now[0] += 1_574_000
    refused = limiter.try_acquire(Demand("m", "w", "k", tokens=4000))
    assert refused.refusal is not None
    # Both the key (2/min: 28.426 s more) and the workspace (4000 tokens: 10.426 s more) refuse; the
    # request passes when both do, so the longer wait is the answer.
    assert (refused.refusal.scope, refused.refusal.unit, refused.refusal.retry_after) == (
        Scope.API_KEY,
        Unit.RPM,
        28.426,
    )
    assert refused.refusal.message("m") == (
        "Rate limit reached for m on api_key requests per min (RPM): Limit 2, Used 2, Requested 1. "
        "Please try again in 28.426s."
    )
    assert refused.headers()["retry-after"] == "29"
    assert refused.headers()["retry-after-ms"] == "28426"
    assert refused.headers()["x-ratelimit-remaining-tokens"] == "2262"
