"""The reaper settles a dead replica's requests once: interrupted, estimated, charged to the quotas;
a row its replica already wrote is kept; live replicas are left alone; reapers racing write once."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from gateway.reaper import reap
from portal.services import Services
from store.db import utcnow
from store.models import ApiKey, GatewayReplica, UsageInflight, UsageRecord, Workspace

KEY = {"id": ""}


def _marker(request_id: str, replica: str, completion: int, **extra: object) -> dict[str, object]:
    return {
        "request_id": request_id,
        "replica": replica,
        "at": utcnow() - timedelta(seconds=30),
        "api_key": KEY["id"],
        "workspace": "team",
        "model": "chat",
        "endpoint": "chat.completions",
        "stream": True,
        "prompt_tokens": 12,
        "completion_tokens": completion,
        "price_input_per_m": Decimal("1"),
        "price_output_per_m": Decimal("2"),
        "price_cached_per_m": Decimal("1"),
        **extra,
    }


def test_dead_replicas_requests_are_settled_once_and_live_ones_left_alone(
    services: Services, client: TestClient
) -> None:
    assert client.post("/api/workspaces", json={"slug": "team", "name": "Team"}).status_code == 201
    created = client.post("/api/workspaces/team/api-keys", json={"name": "k"})
    assert created.status_code == 201, created.text
    KEY["id"] = created.json()["id"]
    now = utcnow()
    with services.engine.begin() as conn:
        for replica, seen in (("dead", now - timedelta(seconds=60)), ("alive", now)):
            conn.execute(
                insert(GatewayReplica).values(id=replica, host="h", pid=1, started_at=now, seen_at=seen)
            )
        conn.execute(
            insert(UsageInflight),
            [
                _marker("r-streamed", "dead", 40),
                _marker("r-silent", "dead", 0, stream=False),
                _marker("r-recorded", "dead", 5),  # its row was written before the replica died
                _marker("r-live", "alive", 7),
                _marker("r-orphan", "gone-long-ago", 3),  # a replica no longer listed
            ],
        )
    with services.engine.begin() as conn:
        row = _marker("r-recorded", "dead", 5)
        conn.execute(
            insert(UsageRecord).values(
                at=row["at"],
                request_id="r-recorded",
                api_key=KEY["id"],
                workspace="team",
                model="chat",
                endpoint="chat.completions",
                status=200,
                stream=True,
                prompt_tokens=12,
                completion_tokens=99,
                latency_ms=1.0,
                price_input_per_m=Decimal("1"),
                price_output_per_m=Decimal("2"),
                price_cached_per_m=Decimal("1"),
                cost=Decimal("0"),
            )
        )

    # Two reapers at once (threads, own connections): the rows are written once.
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(reap(services.engine, dead_after_s=15)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 3]  # one reaper wrote the three new rows, the other found none
    assert reap(services.engine, dead_after_s=15) == 0  # nothing left for the next round

    with services.sessions() as session:
        rows = {r.request_id: r for r in session.scalars(select(UsageRecord))}
        left = {m.request_id for m in session.scalars(select(UsageInflight))}
        replicas = {r.id for r in session.scalars(select(GatewayReplica))}
        key = session.scalars(select(ApiKey).where(ApiKey.public_id == KEY["id"])).one()
        workspace = session.scalars(select(Workspace).where(Workspace.slug == "team")).one()
    assert set(rows) == {"r-streamed", "r-silent", "r-recorded", "r-orphan"}
    streamed = rows["r-streamed"]
    assert (streamed.error_type, streamed.estimated, streamed.status) == ("interrupted", True, 200)
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (12, 40)
    assert streamed.cost == Decimal("0.000092")  # 12 × 1/M + 40 × 2/M
    silent = rows["r-silent"]
    assert (silent.status, silent.completion_tokens, silent.prompt_tokens) == (502, 0, 12)
    assert rows["r-recorded"].completion_tokens == 99 and rows["r-recorded"].error_type is None  # kept
    assert left == {"r-live"} and replicas == {"alive"}
    # Charged like any other row (the row already written is not charged again): 52 + 12 + 15.
    assert key.used_tokens == workspace.used_tokens == 79
