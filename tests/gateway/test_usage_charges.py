"""The usage writer's quota charges against a key's or workspace's CURRENT refresh cycle: requests in
flight while the cycle changes, rows written late, and the order rows are locked in (SQLite and
PostgreSQL, through `UsageWriter.write` on the real schema)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, update

from gateway.quotas import Counter
from gateway.usage import CHARGES, UsageWriter
from portal.keys import mint_api_key
from portal.services import Services
from store.models import ApiKey, UsageRecord, Workspace
from store.periods import period_bounds
from tests.portal.usage_support import Row


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Request:
    """A request as the gateway queues it: when it arrived, the cycle its counters were made under
    (the one the gateway knew when it admitted it), and the tokens it used."""

    at: str
    admitted_under: str | None
    tokens: int


def queued(request: Request, key: str, workspace: str, cycle_of: str = "api_key") -> dict[str, Any]:
    at = utc(request.at)
    record = Row(at=at, api_key=key, workspace=workspace, prompt=request.tokens, completion=0).record()
    row: dict[str, Any] = {c.name: getattr(record, c.name) for c in UsageRecord.__table__.columns}
    del row["id"]
    period = period_bounds(request.admitted_under, at)[0]
    other = period_bounds("month", at)[0]  # the other subject's counter: a plain monthly one
    charges: tuple[Counter, ...] = (
        ("api_key", key, period if cycle_of == "api_key" else other),
        ("workspace", workspace, period if cycle_of == "workspace" else other),
    )
    row[CHARGES] = charges
    return row


@pytest.fixture
def key_id(services: Services) -> str:
    with services.sessions() as session, session.begin():
        workspace = Workspace(slug="team-a", name="A")
        session.add(workspace)
        session.flush()
        key, _ = mint_api_key(session, services.hasher, workspace, name="k", created_by="t")
        return key.public_id


def stored(services: Services, model: Any, where: Any) -> tuple[str | None, str | None, int]:
    with services.sessions() as session:
        row = session.scalars(select(model).where(where)).one()
        start = row.quota_period_start
        day = start.replace(tzinfo=UTC).date().isoformat() if start else None
        return row.quota_refresh, day, row.used_tokens


# Each case: the row as a cycle change left it (cycle, period start, count, as `set_quota_refresh`
# recounts it), then batches of requests written after it, and the row the charges must leave.
CASES = {
    # day -> month on Wed 19 March at 15:00: the month had 120 tokens. A request admitted under the
    # daily cycle (its counter: the 19th) and written after the change belongs to the month. It used
    # to restart the month's count at 7, and the monthly charges after it were then dropped as older.
    "day to month: in flight counts in the month": (
        ("month", "2025-03-01", 120),
        [[Request("2025-03-19T14:59", "day", 7)], [Request("2025-03-19T15:01", "month", 5)]],
        ("month", "2025-03-01", 132),
    ),
    "day to month, in one batch": (
        ("month", "2025-03-01", 120),
        [[Request("2025-03-19T14:59", "day", 7), Request("2025-03-19T15:01", "month", 5)]],
        ("month", "2025-03-01", 132),
    ),
    "day to week": (
        ("week", "2025-03-17", 18),
        [[Request("2025-03-19T14:59", "day", 7)]],
        ("week", "2025-03-17", 25),
    ),
    # A week that began in February: its counter (Monday 24 Feb) is older than the month, but the
    # request arrived in March and counts in March.
    "week to month across the month's start": (
        ("month", "2025-03-01", 120),
        [[Request("2025-03-03T09:00", "week", 7)]],
        ("month", "2025-03-01", 127),
    ),
    # month -> day: the monthly counter (the 1st) is older than today, but the request arrived today.
    "month to day: in flight counts today": (
        ("day", "2025-03-19", 5),
        [[Request("2025-03-19T14:59", "month", 7)]],
        ("day", "2025-03-19", 12),
    ),
    "month to day: yesterday's request written late does not count today": (
        ("day", "2025-03-19", 5),
        [[Request("2025-03-18T23:59", "month", 7)]],
        ("day", "2025-03-19", 5),
    ),
    # day -> lifetime: the count is the key's whole life; a daily counter must not restart it.
    "day to lifetime": (
        (None, None, 1121),
        [[Request("2025-03-19T14:59", "day", 7)]],
        (None, None, 1128),
    ),
    "lifetime to week": (
        ("week", "2025-03-17", 18),
        [[Request("2025-03-19T14:59", None, 7)]],
        ("week", "2025-03-17", 25),
    ),
    # Unchanged behaviour within one cycle: a new period restarts the count, an old one is not charged.
    "a new day restarts the count": (
        ("day", "2025-03-18", 100),
        [[Request("2025-03-19T00:01", "day", 7)], [Request("2025-03-18T23:59", "day", 3)]],
        ("day", "2025-03-19", 7),
    ),
    "a month never charged yet starts at its first request": (
        ("month", None, 0),
        [[Request("2025-03-19T10:00", "month", 7), Request("2025-03-19T11:00", "month", 4)]],
        ("month", "2025-03-01", 11),
    ),
}


@pytest.mark.parametrize(
    ("kind", "before", "batches", "after"),
    [
        pytest.param(kind, *case, id=f"{name}-{kind}")
        for name, case in CASES.items()
        for kind in ("api_key", "workspace")
        if kind == "api_key" or case[0][0] is not None  # a workspace quota always has a cycle
    ],
)
def test_charges_count_in_the_current_cycles_period_of_the_arrival(
    services: Services,
    key_id: str,
    kind: str,
    before: tuple[str | None, str | None, int],
    batches: list[list[Request]],
    after: tuple[str | None, str | None, int],
) -> None:
    model: Any = ApiKey if kind == "api_key" else Workspace
    where = ApiKey.public_id == key_id if kind == "api_key" else Workspace.slug == "team-a"
    cycle, start, used = before
    with services.sessions() as session, session.begin():
        session.execute(
            update(model)
            .where(where)
            .values(quota_refresh=cycle, quota_period_start=utc(start) if start else None, used_tokens=used)
        )
    writer = UsageWriter(services.engine)
    for batch in batches:
        assert writer.write([queued(r, key_id, "team-a", cycle_of=kind) for r in batch]) == len(batch)
    assert stored(services, model, where) == after


def test_the_other_subject_is_charged_in_its_own_cycle(services: Services, key_id: str) -> None:
    """One request charges a daily key and a monthly workspace, each in its own period."""
    with services.sessions() as session, session.begin():
        session.execute(update(ApiKey).values(quota_refresh="day", quota_period_start=utc("2025-03-18")))
        session.execute(
            update(Workspace).values(
                quota_refresh="month", quota_period_start=utc("2025-03-01"), used_tokens=50
            )
        )
    UsageWriter(services.engine).write([queued(Request("2025-03-19T10:00", "day", 7), key_id, "team-a")])
    assert stored(services, ApiKey, ApiKey.public_id == key_id) == ("day", "2025-03-19", 7)
    assert stored(services, Workspace, Workspace.slug == "team-a") == ("month", "2025-03-01", 57)


@pytest.fixture
def slow_updates(services: Services) -> Iterator[list[Any]]:
    """Engines on the test's database whose every UPDATE waits 0.3 s before it runs: two writers at
    once then interleave their row locks, one statement each in turn."""
    engines: list[Any] = []

    def make() -> Any:
        engine = create_engine(services.engine.url)

        @event.listens_for(engine, "before_cursor_execute")
        def _wait(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE"):
                time.sleep(0.3)

        engines.append(engine)
        return engine

    yield [make, engines]
    for engine in engines:
        engine.dispose()


def test_concurrent_writers_lock_rows_in_one_order(
    services: Services, key_id: str, slow_updates: Any
) -> None:
    """Two gateway replicas write batches touching the same keys and workspace at once. Locked in
    the order the rows came (key A, team-a, key B against key B, team-a), they deadlocked and
    PostgreSQL aborted one batch; keys first, each sorted, then workspaces, they wait in turn."""
    if services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row locks to order")
    with services.sessions() as session, session.begin():
        workspace = session.scalars(select(Workspace)).one()
        other, _ = mint_api_key(session, services.hasher, workspace, name="b", created_by="t")
        other_id = other.public_id
    first, second = sorted([key_id, other_id])
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "")
    make, _ = slow_updates
    batches = [
        [
            queued(Request(now, "month", 3), first, "team-a"),
            queued(Request(now, "month", 4), second, "team-a"),
        ],
        [queued(Request(now, "month", 5), second, "team-a")],
    ]
    errors: list[BaseException] = []

    def write(rows: list[dict[str, Any]], delay: float) -> None:
        writer = UsageWriter(make())
        time.sleep(delay)
        try:
            writer.write(rows)
        except BaseException as exc:  # a deadlock victim
            errors.append(exc)

    # The second starts half a step later, so the first takes team-a before it (in the old order, the
    # first then waits for key B, which the second holds while it waits for team-a).
    threads = [threading.Thread(target=write, args=(batch, 0.15 * i)) for i, batch in enumerate(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert stored(services, Workspace, Workspace.slug == "team-a")[2] == 12
    assert stored(services, ApiKey, ApiKey.public_id == second)[2] == 9
