"""In-flight markers (gateway/inflight.py): written before `begin` returns, deleted by `discard` after
the insert queued before it, drained by `aclose`; with the database gone, requests stop waiting for
them and they are written once it is back. On SQLite and on PostgreSQL (its own asynchronous sink)."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from gateway.inflight import InflightLedger
from portal.app import Services
from store.models import UsageInflight

BODY = {"model": "m", "messages": [{"role": "user", "content": "how many tokens is this?"}]}


def sample(request_id: str) -> Any:
    prices = SimpleNamespace(input_per_million=1.5, output_per_million=2.0, cached_input_per_million=None)
    return SimpleNamespace(
        request_id=request_id,
        at=datetime.now(UTC).replace(tzinfo=None),
        key=SimpleNamespace(public_id="key1", workspace="ws"),
        model=SimpleNamespace(public_id="m", prices=prices),
        endpoint="chat.completions",
        stream=False,
        inflight=False,
    )


def markers(services: Services) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return {row.request_id: row for row in conn.execute(select(UsageInflight))}


def test_a_marker_is_committed_before_begin_returns_and_discard_deletes_it(services: Services) -> None:
    ledger = InflightLedger(services.engine)

    async def run() -> None:
        one, many = sample("r-one"), [sample(f"r-{n}") for n in range(20)]
        await ledger.begin(one, BODY)
        row = markers(services)["r-one"]  # read by another connection: committed
        assert one.inflight and row.replica == ledger.replica and row.prompt_tokens > 0
        assert (row.api_key, row.workspace, row.model, row.stream) == ("key1", "ws", "m", False)
        assert Decimal(row.price_cached_per_m) == Decimal("1.5")  # no cached price: the input price
        await asyncio.gather(*(ledger.begin(s, BODY) for s in many))  # written together
        assert set(markers(services)) == {"r-one", *(f"r-{n}" for n in range(20))}
        # A request dropped right after its begin: the delete goes after the insert queued before it.
        late = sample("r-late")
        begun = asyncio.ensure_future(ledger.begin(late, BODY))
        await asyncio.sleep(0)
        ledger.discard(late)
        ledger.discard(one)
        await begun
        await ledger.aclose()
        assert set(markers(services)) == {f"r-{n}" for n in range(20)}
        assert not late.inflight and not one.inflight

    asyncio.run(run())


def test_more_markers_at_once_than_a_statement_takes_and_a_marker_sent_twice(services: Services) -> None:
    ledger = InflightLedger(services.engine, wait_s=30)

    async def run() -> None:
        await asyncio.gather(*(ledger.begin(sample(f"b-{n}"), BODY) for n in range(1_200)))
        await ledger.begin(sample("b-7"), BODY)  # again (a reply lost after its commit): no failure
        assert not ledger._failing
        dropped = [sample(f"b-{n}") for n in range(1_100)]
        for each in dropped:
            each.inflight = True
            ledger.discard(each)
        await ledger.aclose()

    asyncio.run(run())
    assert set(markers(services)) == {f"b-{n}" for n in range(1_100, 1_200)}


def test_aclose_writes_what_is_queued(services: Services) -> None:
    ledger = InflightLedger(services.engine, wait_s=5)

    async def run() -> None:
        tasks = [asyncio.ensure_future(ledger.begin(sample(f"q-{n}"), BODY)) for n in range(5)]
        await asyncio.sleep(0)  # queued, maybe not yet written
        await ledger.aclose()
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert set(markers(services)) == {f"q-{n}" for n in range(5)}


def test_without_a_database_requests_stop_waiting(services: Services) -> None:
    if services.engine.dialect.name != "postgresql":
        pytest.skip("a SQLite file cannot go away; the PostgreSQL parametrisation runs this")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    gone = create_engine(services.engine.url.set(port=port))
    ledger = InflightLedger(gone, wait_s=0.5)

    async def run() -> None:
        started = time.monotonic()
        await ledger.begin(sample("d-1"), BODY)  # waits its wait_s at most
        assert time.monotonic() - started < 1.5
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await ledger.begin(sample("d-2"), BODY)  # the last write failed: no wait at all
        assert time.monotonic() - started < 0.05
        await ledger.aclose()  # one more try, and it gives up

    try:
        asyncio.run(run())
    finally:
        gone.dispose()


def test_a_marker_connection_killed_by_the_server_is_opened_again(services: Services) -> None:
    if services.engine.dialect.name != "postgresql":
        pytest.skip("no server to terminate a connection on SQLite; the PostgreSQL parametrisation runs this")
    ledger = InflightLedger(services.engine, wait_s=5)
    killer = create_engine(services.engine.url, isolation_level="AUTOCOMMIT")

    async def run() -> None:
        await ledger.begin(sample("k-1"), BODY)
        with killer.connect() as c:  # as a failover or a DBA would
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        await ledger.begin(sample("k-2"), BODY)  # its first try fails; the retry writes it
        assert set(markers(services)) == {"k-1", "k-2"}
        await ledger.aclose()

    try:
        asyncio.run(run())
    finally:
        killer.dispose()
