"""Retention of raw usage rows, on SQLite and PostgreSQL: only rows that are old and already in the
rollups go, statistics read the same before and after, the settings, the background pass and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select
from typer.testing import CliRunner

from portal.cli import app as cli
from portal.keys import set_quota_refresh, set_workspace_quota_refresh
from portal.services import Services
from portal.settings import Settings
from portal.usage.background import rollup_starter, start_rollups
from portal.usage.measures import Sums
from portal.usage.report import UsageQuery, usage_report
from portal.usage.retention import prune_usage
from portal.usage.rollup import rollup_once, watermark
from portal.usage.totals import key_tokens
from store.models import ApiKey, UsageRecord, Workspace
from tests.portal.usage_support import Row, expected, figures, insert

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
D = timedelta(days=1)
RANGE = {"since": "2026-02-01T00:00Z", "until": "2026-04-01T00:00Z"}
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _rows(start: datetime, n: int, **overrides: Any) -> list[Row]:
    """`n` rows from `start`, one every 97 minutes (so they cross hours and days), with varied figures."""
    rows = [
        Row(
            at=start + i * timedelta(minutes=97),
            api_key=("key-a", "key-b")[i % 2],
            model=("chat-m", "embed-m")[i % 3 == 0],
            status=(200, 200, 429)[i % 3],
            prompt=100 + i,
            completion=7 * i,
            ttft_ms=None if i % 2 else 10.0 + i,
            latency_ms=200.0 + i,
            cost=f"0.{i:09d}",
        )
        for i in range(n)
    ]
    return [dataclasses.replace(row, **overrides) for row in rows]


def _everything(services: Services) -> Sums:
    """The report's totals over all time."""
    with services.sessions() as session:
        return usage_report(session, UsageQuery(since=EVER[0], until=EVER[1], group_by=())).totals


def _stored(services: Services) -> list[datetime]:
    """Arrival times of the raw rows still stored, oldest first, as aware UTC."""
    with services.sessions() as session:
        times = session.scalars(select(UsageRecord.at).order_by(UsageRecord.at)).all()
    return [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times]


def _count(services: Services) -> int:
    with services.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(UsageRecord)) or 0)


def _wait_until_one_row_is_left(services: Services, timeout: float = 10) -> None:
    """Until the background pass has pruned all but the newest row (or `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while _count(services) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def team(client: TestClient) -> None:
    assert client.post("/api/workspaces", json={"slug": "team-a", "name": "team-a"}).status_code == 201


def test_only_old_rows_behind_the_watermark_go(services: Services) -> None:
    old = _rows(T0, 10)  # days before the cutoff, rolled up below
    fresh = _rows(T0 + 40 * D, 4)  # after the cutoff, rolled up below
    insert(services, old + fresh)
    assert rollup_once(services.sessions).rows == 14
    late = _rows(T0 + 3 * H, 3)  # as old as `old`, but written after the pass: not in the rollups yet
    newer = _rows(T0 + 41 * D, 1)
    insert(services, late + newer)
    cutoff = T0 + 30 * D

    assert prune_usage(services.sessions, cutoff) == 10
    assert _stored(services) == sorted(r.at for r in late + fresh + newer)
    assert prune_usage(services.sessions, cutoff) == 0  # nothing more to do

    # Once rolled up, the late rows may go too.
    assert rollup_once(services.sessions).rows == 4
    assert prune_usage(services.sessions, cutoff) == 3
    assert _stored(services) == [r.at for r in fresh + newer]
    totals = _everything(services)
    assert (totals.requests, totals.cost) == (18, sum(Decimal(r.cost) for r in old + fresh + late + newer))


def test_chunks_delete_a_backlog_in_several_transactions(services: Services) -> None:
    insert(services, _rows(T0, 25) + _rows(T0 + 40 * D, 1))
    rollup_once(services.sessions)
    assert prune_usage(services.sessions, T0 + 30 * D, chunk=4) == 25  # 7 transactions of at most 4
    assert _count(services) == 1


def test_the_newest_row_is_kept_so_ids_are_never_reused(services: Services) -> None:
    """SQLite numbers a new row max(id) + 1: were every row deleted, the next one would get an id
    below the watermark, never be rolled up and be missing from every report."""
    rows = _rows(T0, 5)
    insert(services, rows)
    rollup_once(services.sessions)
    assert prune_usage(services.sessions, T0 + 30 * D) == 4  # all old and rolled up, but one stays
    assert _stored(services) == [rows[-1].at]

    newcomer = Row(at=T0 + 41 * D, cost="0.5")
    insert(services, [newcomer])
    with services.sessions() as session:
        assert session.scalar(select(func.max(UsageRecord.id))) > watermark(session)
    assert rollup_once(services.sessions).rows == 1
    assert _everything(services).requests == 6


def test_reports_read_the_same_before_and_after_pruning(
    client: TestClient, services: Services, team: None
) -> None:
    rows = _rows(T0, 40) + _rows(T0 + 25 * D, 6)
    insert(services, rows)
    rollup_once(services.sessions)
    tail = _rows(T0 + 5 * H, 3, model="late-m")  # old but not rolled up: read raw, must stay
    insert(services, tail)
    queries: list[dict[str, Any]] = [
        {},
        {"group_by": ["period", "api_key", "model"], "period": "day"},
        {"group_by": "period", "period": "week"},
        {"group_by": "period", "period": "month"},
        {"group_by": "model", "since": "2026-03-02T14:00Z", "until": "2026-03-04T13:00Z"},  # ragged hours
        {"group_by": "period", "period": "hour", "since": "2026-03-02T00:00Z", "until": "2026-03-06T00:00Z"},
    ]
    path = "/api/workspaces/team-a/usage"

    def read() -> list[Any]:
        out: list[Any] = []
        for params in queries:
            params = {**RANGE, **params}
            body = client.get(path, params=params).json()
            out.append((body["totals"], body["items"]))
            out.append(client.get(f"{path}/export.csv", params=params).text)
        return out

    before = read()
    assert figures(before[0][0]) == expected(rows + tail)

    assert prune_usage(services.sessions, T0 + 20 * D) == 40
    assert _count(services) == 9
    assert read() == before
    again = client.get(path, params=RANGE).json()
    assert again["raw_rows"] == 3  # the tail is still read raw

    # The rows of the tail are in the CSV's model column: pruning did not touch them.
    by_model = client.get(f"{path}/export.csv", params={**RANGE, "group_by": "model"}).text
    models = {line[0]: line[1] for line in list(csv.reader(io.StringIO(by_model)))[1:]}
    assert models["late-m"] == "3"


def test_the_background_pass_rolls_up_then_prunes(services: Services) -> None:
    now = datetime.now(UTC)
    old = _rows(now - 40 * D, 6)
    recent = _rows(now - 2 * H, 1)
    insert(services, old + recent)
    stop = start_rollups(services, interval_seconds=0.05, retention_days=30)
    try:
        _wait_until_one_row_is_left(services)
    finally:
        stop()
    assert _stored(services) == [recent[0].at]
    totals = _everything(services)
    assert (totals.requests, totals.total_tokens) == (7, sum(r.prompt + r.completion for r in old + recent))


def test_the_starter_takes_interval_and_retention_from_the_settings(services: Services) -> None:
    now = datetime.now(UTC)
    insert(services, _rows(now - 10 * D, 3) + _rows(now - H, 1))
    tuned = services.settings.model_copy(
        update={"usage_rollup_interval_seconds": 0.05, "usage_retention_days": 7}
    )
    stop = rollup_starter(dataclasses.replace(services, settings=tuned))
    assert stop is not None
    try:
        _wait_until_one_row_is_left(services)
    finally:
        stop()
    assert _count(services) == 1


def test_without_retention_the_background_pass_keeps_every_row(services: Services) -> None:
    insert(services, _rows(datetime.now(UTC) - 400 * D, 3))
    assert services.settings.usage_retention_days is None  # the default: keep forever
    stop = start_rollups(services, interval_seconds=0.02)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with services.sessions() as session:
                if watermark(session) > 0:
                    break
            time.sleep(0.02)
        time.sleep(0.1)  # a few more rounds, where a pruning pass would have run
    finally:
        stop()
    assert _count(services) == 3


def test_settings_defaults_and_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELFLEET_USAGE_ROLLUP_INTERVAL_SECONDS", "MODELFLEET_USAGE_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()
    assert defaults.usage_rollup_interval_seconds == 60
    assert defaults.usage_retention_days is None

    monkeypatch.setenv("MODELFLEET_USAGE_RETENTION_DAYS", "90")
    monkeypatch.setenv("MODELFLEET_USAGE_ROLLUP_INTERVAL_SECONDS", "15")
    tuned = Settings()
    assert (tuned.usage_retention_days, tuned.usage_rollup_interval_seconds) == (90, 15)

    for field, bad in [
        ("usage_retention_days", "0"),
        ("usage_retention_days", "-3"),
        ("usage_retention_days", "a week"),
        ("usage_rollup_interval_seconds", "0"),
        ("usage_rollup_interval_seconds", "-1"),
    ]:
        monkeypatch.setenv("MODELFLEET_USAGE_RETENTION_DAYS", "90")
        monkeypatch.setenv("MODELFLEET_USAGE_ROLLUP_INTERVAL_SECONDS", "15")
        monkeypatch.setenv(f"MODELFLEET_{field.upper()}", bad)
        with pytest.raises(ValidationError) as caught:
            Settings()
        assert [error["loc"] for error in caught.value.errors()] == [(field,)], (field, bad)
        assert field in str(caught.value)


def _cli_env(services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_DATABASE_URL", services.settings.resolved_database_url)
    monkeypatch.setenv("MODELFLEET_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.delenv("MODELFLEET_USAGE_RETENTION_DAYS", raising=False)


def test_cli_prune_usage_rolls_up_first_then_deletes(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    old, recent = _rows(now - 40 * D, 5), _rows(now - D, 2)
    insert(services, old + recent)  # none rolled up yet
    _cli_env(services, tmp_path, monkeypatch)

    result = CliRunner().invoke(cli, ["prune-usage", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert "deleted 5 usage rows from before" in result.output
    assert _stored(services) == [r.at for r in recent]
    assert _everything(services).requests == 7


def test_cli_prune_usage_needs_a_number_of_days(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(services, _rows(datetime.now(UTC) - 40 * D, 3))
    _cli_env(services, tmp_path, monkeypatch)
    missing = CliRunner().invoke(cli, ["prune-usage"])
    assert missing.exit_code == 2
    assert "--days" in missing.output and "MODELFLEET_USAGE_RETENTION_DAYS" in missing.output
    zero = CliRunner().invoke(cli, ["prune-usage", "--days", "0"])
    assert zero.exit_code == 2 and "--days" in zero.output
    assert _count(services) == 3

    monkeypatch.setenv("MODELFLEET_USAGE_RETENTION_DAYS", "30")
    from_setting = CliRunner().invoke(cli, ["prune-usage"])
    assert from_setting.exit_code == 0, from_setting.output
    assert "deleted 2 usage rows" in from_setting.output  # the newest row always stays


def test_key_tokens_stay_exact_after_pruning_where_raw_sums_do_not(services: Services) -> None:
    """What a quota recount needs: a key's tokens since a period start, old rows pruned or not."""
    rows = _rows(T0 - 20 * D, 30) + _rows(T0, 30) + _rows(T0 + 20 * D, 5)
    insert(services, rows)
    rollup_once(services.sessions)
    insert(services, _rows(T0 - 19 * D, 2))  # old, not rolled up yet: read raw
    rows += _rows(T0 - 19 * D, 2)

    def want(since: datetime | None) -> int:
        return sum(
            r.prompt + r.completion for r in rows if r.api_key == "key-a" and (since is None or r.at >= since)
        )

    def raw(since: datetime) -> int:
        with services.sessions() as session:
            tokens = UsageRecord.prompt_tokens + UsageRecord.completion_tokens
            query = select(func.sum(tokens)).where(UsageRecord.api_key == "key-a", UsageRecord.at >= since)
            return int(session.scalar(query) or 0)

    starts = [None, datetime(2026, 2, 1, tzinfo=UTC), T0.replace(hour=0), T0 + 20 * D - 9 * H]
    with services.sessions() as session:
        before = [key_tokens(session, "key-a", since) for since in starts]
    assert before == [want(since) for since in starts]
    month = datetime(2026, 2, 1, tzinfo=UTC)
    assert raw(month) == want(month)

    assert prune_usage(services.sessions, T0 + 10 * D) == 60
    with services.sessions() as session:
        assert [key_tokens(session, "key-a", since) for since in starts] == before
        with pytest.raises(ValueError, match="whole UTC hour"):
            key_tokens(session, "key-a", T0 + timedelta(minutes=1))
    assert raw(month) < want(month)  # a SUM over the raw rows misses the pruned ones


def test_a_quota_cycle_change_recounts_exactly_after_pruning(services: Services) -> None:
    """Switching a key's or a workspace's refresh cycle recounts its use in the new period from the
    rollups and the raw tail, so rows pruned by retention still count."""
    rows = _rows(T0 - 20 * D, 30) + _rows(T0, 30)
    insert(services, rows)
    rollup_once(services.sessions)
    assert prune_usage(services.sessions, T0 - 5 * D) > 0
    now = T0 + 2 * D
    month = datetime(2026, 3, 1, tzinfo=UTC)

    def want(api_key: str | None, since: datetime | None) -> int:
        return sum(
            r.prompt + r.completion
            for r in rows
            if (api_key is None or r.api_key == api_key) and (since is None or r.at >= since)
        )

    with services.sessions() as session:
        key = ApiKey(public_id="key-a", quota_refresh="day")
        set_quota_refresh(session, key, None, now)  # lifetime: everything, the pruned rows included
        assert key.used_tokens == want("key-a", None) and key.quota_period_start is None
        set_quota_refresh(session, key, "month", now)
        assert key.used_tokens == want("key-a", month) and key.quota_period_start == month
        workspace = Workspace(slug="team-a", quota_refresh="day")
        set_workspace_quota_refresh(session, workspace, "month", now)
        assert workspace.used_tokens == want(None, month)
        set_workspace_quota_refresh(session, workspace, "week", now)
        assert workspace.used_tokens == want(None, T0.replace(hour=0))  # T0 is a Monday
