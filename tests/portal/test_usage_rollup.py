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
from portal.models import UsageRecord, UsageRollup
from portal.services import Services
from portal.usage.background import start_rollups
from portal.usage.report import UsageQuery, usage_report
from portal.usage.rollup import rollup_once
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
