"""PostgreSQL connections terminated under writes (`pg_terminate_backend` from another connection, as
an operator's failover or a DBA would): no request is answered 500, nor cut; a write that lost its
connection is a 503 with Retry-After (nothing half-done: its transaction died with the connection),
and every write answered 201 is there afterwards."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from portal.app import create_app
from portal.services import Services
from store.models import Workspace
from tests.gateway.gateway_support import serve

WRITES = 120


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_terminated_connections_under_writes_are_never_a_500(services: Services, admin_token: str) -> None:
    killer = create_engine(services.settings.resolved_database_url, isolation_level="AUTOCOMMIT")
    stop = threading.Event()
    terminated = 0

    def terminate() -> None:
        nonlocal terminated
        with killer.connect() as c:
            while not stop.is_set():
                terminated += len(
                    c.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).all()
                )
                time.sleep(0.15)  # a write takes ~10-50 ms: some die mid-way, most do not

    statuses: dict[int, int] = {}
    created: list[str] = []
    retry_after: set[str] = set()
    with serve(create_app(services=services)) as url:
        thread = threading.Thread(target=terminate, daemon=True)
        thread.start()
        try:
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin_token}"}) as client:
                for i in range(WRITES):
                    r = client.post("/api/workspaces", json={"slug": f"ws-{i}", "name": f"W {i}"})
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 201:
                        created.append(f"ws-{i}")
                    elif r.status_code == 503:
                        retry_after.add(r.headers.get("retry-after", ""))
                        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
                    else:
                        assert r.status_code in (201, 503), r.text
        finally:
            stop.set()
            thread.join()
            killer.dispose()
    assert terminated > 0 and statuses.get(201, 0) > 0, statuses
    assert retry_after <= {"1"}
    with services.sessions() as session:
        present = set(session.scalars(select(Workspace.slug)))
    assert set(created) <= present  # nothing answered 201 was lost
