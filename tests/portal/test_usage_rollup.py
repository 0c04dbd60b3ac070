"""Rollup edge cases: writers committing out of id order (PostgreSQL), the CLI, the background starter."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from portal.cli import app as cli
from portal.services import Services
from portal.usage.background import start_rollups
from portal.usage.report import UsageQuery, usage_report
from portal.usage.rollup import rollup_once
from store.models import UsageRecord, UsageRollup
from tests.portal.usage_support import Row, insert

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _rolled_up_requests(services: Services) -> int:
    with services.sessions() as session:
        value = session.scalar(select(func.sum(UsageRollup.requests)).where(UsageRollup.period == "hour"))
    return int(value or 0)


def test_a_row_committed_after_a_higher_id_is_not_lost(services: Services) -> None:
    """PostgreSQL hands out ids before commit: id N may commit after N+1. The pass must wait for N
    rather than move its watermark past it (a row below the watermark would never be counted)."""
    if services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: ids commit in order")
    slow = services.sessions()
    slow.begin()
    slow.add(Row(at=T0, cost="1").record())
    slow.flush()  # id N taken, not committed
    insert(services, [Row(at=T0, cost="2")])  # id N+1 committed
    done = threading.Event()
    result: list[int] = []

    def run() -> None:
        result.append(rollup_once(services.sessions).rows)
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    assert not done.wait(0.3)  # the pass waits for the insert in flight...
    slow.commit()
    slow.close()
    worker.join(5)
    assert result == [2]  # ...and then counts both rows
    with services.sessions() as session:
        report = usage_report(session, UsageQuery(since=T0, until=T0.replace(hour=10)))
    assert report.totals.requests == 2 and report.raw_rows == 0


def test_cli_rollup(
    services: Services, settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(services, [Row(at=T0), Row(at=T0.replace(hour=12))])
    monkeypatch.setenv("MODELFLEET_DATABASE_URL", services.settings.resolved_database_url)
    monkeypatch.setenv("MODELFLEET_DATA_DIR", str(tmp_path / "cli"))
    first = CliRunner().invoke(cli, ["rollup"])
    assert first.exit_code == 0, first.output
    assert "rolled up 2 usage rows into 3 buckets" in first.output  # two hours, one day
    again = CliRunner().invoke(cli, ["rollup"])
    assert "rolled up 0 usage rows" in again.output
    assert _rolled_up_requests(services) == 2


def test_cli_commands_work_on_the_data_dir_given_before_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m portal --data-dir D rollup` rolls up D's database (the embedded default), not the
    one of MODELFLEET_DATA_DIR or ./var."""
    from portal.app import build_services
    from portal.settings import Settings

    monkeypatch.delenv("MODELFLEET_DATABASE_URL", raising=False)
    monkeypatch.setenv("MODELFLEET_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    given = tmp_path / "given"
    services = build_services(Settings(data_dir=given))
    try:
        insert(services, [Row(at=T0), Row(at=T0.replace(hour=12))])
    finally:
        services.engine.dispose()

    result = CliRunner().invoke(cli, ["--data-dir", str(given), "rollup"])
    assert result.exit_code == 0, result.output
    assert "rolled up 2 usage rows" in result.output
    audit = CliRunner().invoke(cli, ["--data-dir", str(given), "verify-audit"])
    assert audit.exit_code == 0 and "audit chain intact" in audit.output
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "var").exists()


def test_background_rollups_catch_up_and_stop(services: Services) -> None:
    stop = start_rollups(services, interval_seconds=0.05)
    try:
        insert(services, [Row(at=T0) for _ in range(3)])
        deadline = time.monotonic() + 10
        while _rolled_up_requests(services) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop()
    assert _rolled_up_requests(services) == 3
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(UsageRecord)) == 3
