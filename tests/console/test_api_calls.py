"""A page's in-process API calls: made at once, all awaited, none left holding a database session."""

from __future__ import annotations

import asyncio
import gc

import pytest
from fastapi.testclient import TestClient

from console.client import ApiError, all_of
from portal.services import Services


def test_all_of_waits_for_every_call_before_raising_the_first_failure() -> None:
    finished: list[str] = []

    async def fails() -> None:
        raise ApiError(422, "invalid", "capability: no such capability")

    async def slow() -> str:
        await asyncio.sleep(0.05)
        finished.append("slow")
        return "ok"

    async def main() -> None:
        with pytest.raises(ApiError, match="capability"):
            await all_of(fails(), slow())
        assert finished == ["slow"]  # not orphaned: done before the failure was raised
        assert await all_of(slow(), slow()) == ["ok", "ok"]

    asyncio.run(main())


def test_a_page_whose_api_call_fails_leaves_no_session_open(
    browser_client: TestClient, services: Services
) -> None:
    """`/console/plaza?capability=…` makes two API calls at once and one fails (422). With a bare
    `asyncio.gather`, about every second render left the other call's session (and its pooled
    connection) open until the garbage collector ran, so it is kept from running here."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            page = browser_client.get("/console/plaza?capability=telepathy")
            assert page.status_code == 422 and "capability" in page.text
            assert services.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        gc.enable()
