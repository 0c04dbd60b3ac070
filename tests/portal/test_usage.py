"""Usage statistics over hand-inserted usage rows, on SQLite and PostgreSQL: exact sums, Decimal cost,
period boundaries, rollups that never count twice, the raw tail, CSV, and who sees what."""

from __future__ import annotations

import csv
import io
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from portal.services import Services
from portal.usage.rollup import rollup_once, watermark
from store.models import UsageRollup
from tests.portal.helpers import as_user, make_member
from tests.portal.usage_support import Row, expected, figures, insert

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
D = timedelta(days=1)
# Costs that a float cannot hold exactly, with every one of the 9 decimals significant.
COSTS = ["0.000000001", "0.123456789", "98765.432109876", "0.000003333", "12.000000007"]


def _mixed_rows() -> list[Row]:
    """Rows over three days, two keys, two models, with errors, streams, estimates and odd costs."""
    rows = []
    for i in range(40):
        rows.append(
            Row(
                at=T0 + i * timedelta(minutes=97) + timedelta(seconds=i, microseconds=i),
                api_key=("key-a", "key-b")[i % 2],
                model=("chat-m", "embed-m")[i % 3 == 0],
                status=(200, 200, 200, 429, 502)[i % 5],
                prompt=100 + i,
                completion=0 if i % 5 == 3 else 7 * i,
                cached=i % 4,
                reasoning=i % 3,
                estimated=i % 7 == 0,
                ttft_ms=None if i % 2 else 10.5 + i,
                latency_ms=200.25 + i,
                cost=COSTS[i % len(COSTS)],
            )
        )
    return rows


def _report(client: TestClient, path: str = "/api/workspaces/team-a/usage", **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def team(client: TestClient) -> None:
    for slug in ("team-a", "team-b"):
        assert client.post("/api/workspaces", json={"slug": slug, "name": slug}).status_code == 201


RANGE = {"since": "2026-03-01T00:00Z", "until": "2026-03-10T00:00Z"}


def test_totals_are_exact_before_and_after_rollup(client: TestClient, services: Services, team: None) -> None:
    rows = _mixed_rows()
    insert(services, rows)
    want = expected(rows)
    assert Decimal(want["cost"]) == sum(Decimal(r.cost) for r in rows)  # the oracle itself is exact

    raw = _report(client, **RANGE)
    assert figures(raw["totals"]) == want
    assert raw["raw_rows"] == len(rows)  # nothing rolled up yet: all from the tail

    run = rollup_once(services.sessions)
    assert run.rows == len(rows)
    rolled = _report(client, **RANGE)
    assert figures(rolled["totals"]) == want
    assert rolled["raw_rows"] == 0  # everything from the rollups now
    assert rolled["items"] == raw["items"]

    # New rows after the pass are in the tail; the figures include them at once.
    later = [Row(at=T0 + 5 * H, cost="0.000000007"), Row(at=T0 + 50 * H, status=500, cost="1.5")]
    insert(services, later)
    current = _report(client, **RANGE)
    assert current["raw_rows"] == 2
    assert figures(current["totals"]) == expected(rows + later)


def test_rollup_is_idempotent_and_chunking_changes_nothing(services: Services) -> None:
    rows = _mixed_rows()
    insert(services, rows)
    first = rollup_once(services.sessions, chunk=7)  # several transactions
    assert first.rows == len(rows)
    with services.sessions() as session:
        snapshot = sorted(
            tuple(r)
            for r in session.execute(select(UsageRollup).with_only_columns(*UsageRollup.__table__.c)).all()
        )
        mark = watermark(session)
    again = rollup_once(services.sessions)
    assert (again.rows, again.buckets, again.last_id) == (0, 0, mark)
    with services.sessions() as session:
        assert sorted(tuple(r) for r in session.execute(select(*UsageRollup.__table__.c)).all()) == snapshot
        # Hour and day rollups each hold every row once.
        for period in ("hour", "day"):
            n, nanos = session.execute(
                select(func.sum(UsageRollup.requests), func.sum(UsageRollup.cost_nanos)).where(
                    UsageRollup.period == period
                )
            ).one()
            assert int(n) == len(rows)
            assert Decimal(int(nanos)).scaleb(-9) == sum(Decimal(r.cost) for r in rows)


def test_concurrent_rollups_never_double_count(services: Services) -> None:
    rows = _mixed_rows()
    insert(services, rows)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rollup_once(services.sessions, chunk=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with services.sessions() as session:
        total = session.scalar(select(func.sum(UsageRollup.requests)).where(UsageRollup.period == "day"))
    assert int(total or 0) == len(rows)


def test_group_by_key_and_model_with_names(client: TestClient, services: Services, team: None) -> None:
    key = client.post("/api/workspaces/team-a/api-keys", json={"name": "prod app"}).json()["id"]
    rows = [
        Row(at=T0, api_key=key, model="chat-m", cost="0.1"),
        Row(at=T0 + 3 * D, api_key=key, model="embed-m", cost="0.2"),
        Row(at=T0 + H, api_key="gone-key", model="chat-m", cost="0.3"),  # a deleted key's usage stays
        Row(at=T0, workspace="team-b", api_key=key, cost="9"),  # another workspace: never counted here
    ]
    insert(services, rows)
    rollup_once(services.sessions)
    insert(services, [Row(at=T0 + 2 * H, api_key=key, model="chat-m", cost="0.4")])  # tail
    report = _report(client, group_by=["api_key", "model"], **RANGE)
    lines = {(i["api_key"], i["model"]): i for i in report["items"]}
    assert set(lines) == {("gone-key", "chat-m"), (key, "chat-m"), (key, "embed-m")}
    assert lines[(key, "chat-m")]["cost"] == "0.500000000" and lines[(key, "chat-m")]["requests"] == 2
    assert lines[(key, "chat-m")]["api_key_name"] == "prod app"
    assert lines[("gone-key", "chat-m")]["api_key_name"] is None
    assert all(i["bucket"] is None for i in report["items"])
    assert report["totals"]["cost"] == "1.000000000"
    only = _report(client, api_key=key, model="embed-m", **RANGE)
    assert only["totals"]["requests"] == 1 and only["totals"]["cost"] == "0.200000000"


@pytest.mark.parametrize("rolled_up", [False, True])
def test_week_and_month_buckets_split_at_utc_boundaries(
    client: TestClient, services: Services, team: None, rolled_up: bool
) -> None:
    edge = datetime(2026, 2, 1, tzinfo=UTC)  # a Sunday, and the first of a month
    eps = timedelta(microseconds=1)
    rows = [
        Row(at=edge - eps, cost="1"),  # Sat 31 Jan 23:59:59.999999: January, week of Mon 26 Jan
        Row(at=edge, cost="2"),  # Sun 1 Feb 00:00: February, still week of Mon 26 Jan
        Row(at=edge + D - eps, cost="4"),  # Sun 1 Feb 23:59:59.999999: same week
        Row(at=edge + D, cost="8"),  # Mon 2 Feb 00:00: a new week
        Row(at=datetime(2026, 3, 1, tzinfo=UTC) - eps, cost="16"),  # last instant of February
        Row(at=datetime(2026, 3, 1, tzinfo=UTC), cost="32"),  # March
    ]
    insert(services, rows)
    if rolled_up:
        rollup_once(services.sessions)
    span = {"since": "2026-01-01", "until": "2026-04-01"}
    weeks = _report(client, group_by="period", period="week", **span)["items"]
    assert [(w["bucket"], w["requests"], w["cost"]) for w in weeks] == [
        ("2026-01-26T00:00:00Z", 3, "7.000000000"),
        ("2026-02-02T00:00:00Z", 1, "8.000000000"),
        ("2026-02-23T00:00:00Z", 2, "48.000000000"),  # Sat 28 Feb and Sun 1 Mar: one ISO week
    ]
    months = _report(client, group_by="period", period="month", **span)["items"]
    assert [(m["bucket"], m["requests"], m["cost"]) for m in months] == [
        ("2026-01-01T00:00:00Z", 1, "1.000000000"),
        ("2026-02-01T00:00:00Z", 4, "30.000000000"),
        ("2026-03-01T00:00:00Z", 1, "32.000000000"),
    ]
    days = _report(client, group_by="period", period="day", since="2026-01-31", until="2026-02-03")["items"]
    assert [(d["bucket"], d["cost"]) for d in days] == [
        ("2026-01-31T00:00:00Z", "1.000000000"),
        ("2026-02-01T00:00:00Z", "6.000000000"),
        ("2026-02-02T00:00:00Z", "8.000000000"),
    ]


@pytest.mark.parametrize("rolled_up", [False, True])
def test_ranges_with_ragged_hours_take_exactly_the_rows_inside(
    client: TestClient, services: Services, team: None, rolled_up: bool
) -> None:
    """A range that starts and ends mid-day reads hour rollups at both edges and day rollups between."""
    rows = [Row(at=T0 + i * H + timedelta(minutes=30), cost=f"0.00000000{i % 9 + 1}") for i in range(72)]
    insert(services, rows)
    if rolled_up:
        rollup_once(services.sessions)
    since, until = T0 + 5 * H, T0 + 53 * H  # 14:00 on day 1 .. 14:00 on day 3
    inside = [r for r in rows if since <= r.at < until]
    report = _report(client, since=since.isoformat(), until=until.isoformat())
    assert figures(report["totals"]) == expected(inside)
    hourly = _report(
        client, group_by="period", period="hour", since=since.isoformat(), until=until.isoformat()
    )
    assert len(hourly["items"]) == 48 and all(i["requests"] == 1 for i in hourly["items"])
    assert hourly["items"][0]["bucket"] == "2026-03-02T14:00:00Z"
    daily = _report(client, group_by="period", period="day", since=since.isoformat(), until=until.isoformat())
    assert [d["requests"] for d in daily["items"]] == [10, 24, 14]


def test_csv_export_matches_the_report(client: TestClient, services: Services, team: None) -> None:
    key = client.post("/api/workspaces/team-a/api-keys", json={"name": "=cmd|' /C calc'!A0"}).json()["id"]
    rows = [
        Row(at=T0, api_key=key, cost="0.000000001", ttft_ms=12.5),
        Row(at=T0 + 30 * H, api_key=key, model="embed-m", status=429, cost="0"),
    ]
    insert(services, rows)
    response = client.get(
        "/api/workspaces/team-a/usage/export.csv",
        params={"group_by": ["period", "api_key", "model"], **RANGE},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="usage-team-a-20260301T00Z-20260310T00Z.csv"'
    )
    name = "'=cmd|' /C calc'!A0"  # a formula-looking cell is quoted for spreadsheets
    assert list(csv.reader(io.StringIO(response.text))) == [
        [
            "period",
            "bucket_start",
            "api_key",
            "api_key_name",
            "model",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "total_tokens",
            "estimated_requests",
            "cost",
            "avg_latency_ms",
            "avg_ttft_ms",
            "units",
        ],
        [
            "day",
            "2026-03-02T00:00:00Z",
            key,
            name,
            "chat-m",
            *["1", "0", "10", "5", "0", "0", "15", "0", "0.000000001", "100.0", "12.5", "0"],
        ],
        [
            "day",
            "2026-03-03T00:00:00Z",
            key,
            name,
            "embed-m",
            *["1", "1", "10", "5", "0", "0", "15", "0", "0.000000000", "100.0"],
            "",
            "0",
        ],
    ]
    assert response.text.endswith("\r\n")


def test_platform_report_groups_by_workspace(client: TestClient, services: Services, team: None) -> None:
    insert(services, [Row(at=T0, cost="1"), Row(at=T0, workspace="team-b", cost="2"), Row(at=T0, cost="4")])
    report = _report(client, "/api/usage", group_by="workspace", **RANGE)
    assert [(i["workspace"], i["cost"]) for i in report["items"]] == [
        ("team-a", "5.000000000"),
        ("team-b", "2.000000000"),
    ]
    assert report["totals"]["requests"] == 3
    only_b = _report(client, "/api/usage", workspace="team-b", **RANGE)
    assert only_b["totals"]["cost"] == "2.000000000"
    assert client.get("/api/usage", params={"workspace": "nope"}).status_code == 404
    exported = client.get("/api/usage/export.csv", params={"group_by": "workspace", **RANGE})
    assert [line[:2] for line in csv.reader(io.StringIO(exported.text))][1:] == [
        ["team-a", "2"],
        ["team-b", "1"],
    ]
    assert "usage-all-" in exported.headers["content-disposition"]


def test_who_sees_what(client: TestClient, services: Services, team: None) -> None:
    alice = make_member(client, "alice", "team-a", "member")
    amir = make_member(client, "amir", "team-a", "member")
    anna = make_member(client, "anna", "team-a", "admin")
    with as_user(client, alice):
        alice_key = client.post("/api/workspaces/team-a/api-keys", json={"name": "a"}).json()["id"]
    with as_user(client, amir):
        amir_key = client.post("/api/workspaces/team-a/api-keys", json={"name": "m"}).json()["id"]
    insert(
        services,
        [
            Row(at=T0, api_key=alice_key, cost="1"),
            Row(at=T0, api_key=amir_key, cost="2"),
            Row(at=T0, api_key="bkey", workspace="team-b", cost="4"),
        ],
    )
    with as_user(client, alice):
        mine = _report(client, group_by="api_key", **RANGE)
        assert [(i["api_key"], i["cost"]) for i in mine["items"]] == [(alice_key, "1.000000000")]
        assert (
            client.get("/api/workspaces/team-a/usage", params={"api_key": amir_key, **RANGE}).status_code
            == 404
        )
        for path in ("/api/workspaces/team-b/usage", "/api/workspaces/team-b/usage/export.csv"):
            assert client.get(path).status_code == 404  # another workspace: not found, not forbidden
        for path in ("/api/usage", "/api/usage/export.csv"):
            assert client.get(path).status_code == 403
        exported = client.get(
            "/api/workspaces/team-a/usage/export.csv", params={"group_by": "api_key", **RANGE}
        )
        assert amir_key not in exported.text and alice_key in exported.text
    with as_user(client, anna):
        everyone = _report(client, group_by="api_key", **RANGE)
        assert {i["api_key"] for i in everyone["items"]} == {alice_key, amir_key}
        assert everyone["totals"]["cost"] == "3.000000000"


def test_bad_parameters_name_the_field(client: TestClient, team: None) -> None:
    path = "/api/workspaces/team-a/usage"
    cases = [
        ({"since": "2026-03-01T10:30Z"}, "since"),
        ({"until": "2026-03-01T10:00:01Z"}, "until"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "until"),
        ({"group_by": "period", "period": "hour", "since": "2026-01-01", "until": "2026-03-01"}, "since"),
        ({"group_by": "workspace"}, "group_by[0]"),
        ({"period": "fortnight"}, "period"),
        ({"since": "1500-01-01"}, "since"),
    ]
    for params, field in cases:
        response = client.get(path, params=params)
        assert response.status_code == 422, (params, response.text)
        assert [f["field"] for f in response.json()["error"]["fields"]] == [field], params


def test_default_range_is_recent_and_includes_the_current_hour(
    client: TestClient, services: Services, team: None
) -> None:
    now = datetime.now(UTC)
    insert(services, [Row(at=now, cost="0.5"), Row(at=now - timedelta(days=40), cost="7")])
    report = _report(client)
    assert report["period"] == "day" and report["totals"]["cost"] == "0.500000000"
    until = datetime.fromisoformat(report["until"].replace("Z", "+00:00"))
    assert timedelta(0) < until - now <= H
    hourly = _report(client, group_by="period", period="hour")
    assert len(hourly["items"]) == 1 and hourly["items"][0]["requests"] == 1
