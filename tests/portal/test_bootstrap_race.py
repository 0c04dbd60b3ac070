"""The bootstrap on start: gateway replicas and the portal all run `build_services`, which creates the
bootstrap admin and its token, so several may run it at once on one fresh PostgreSQL database. Every
start succeeds and there is exactly one admin, with one bootstrap token."""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from portal.app import build_services
from portal.bootstrap import ADMIN, BOOTSTRAP_TOKEN
from portal.settings import Settings
from store.db import make_engine
from store.models import User, UserToken
from store.security import USER_TOKEN_PREFIX, issue

STARTS = 6  # replicas starting at once


@pytest.fixture
def database_url(fresh_database_url: str) -> str:
    """These tests start on an empty database: the schema is what they make."""
    return fresh_database_url


def _slow_admin_insert(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    """Widens the race to every start: each one looks for the admin before any has committed it
    (without the lock; a real start loses it about every other time)."""
    if statement.lstrip().upper().startswith("INSERT INTO USERS"):
        time.sleep(0.5)


def _start(database_url: str, data_dir: Path, admin_token: str | None, together: Barrier) -> None:
    settings = Settings(
        data_dir=data_dir,  # each replica its own disk, one database
        database_url=database_url,
        admin_token=admin_token,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        worker_enabled=False,
    )
    event.listen(Engine, "before_cursor_execute", _slow_admin_insert)
    together.wait()
    build_services(settings).engine.dispose()


@pytest.mark.parametrize("configured", [True, False], ids=["admin token set", "admin token made"])
def test_replicas_starting_at_once_on_a_fresh_database_make_one_admin(
    database_url: str, tmp_path: Path, configured: bool
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database; SQLite is one process's embedded database")
    token = issue(USER_TOKEN_PREFIX).value if configured else None  # MODELFLEET_ADMIN_TOKEN, or none
    spawn = multiprocessing.get_context("spawn")
    together = spawn.Barrier(STARTS)
    starts = [
        spawn.Process(target=_start, args=(database_url, tmp_path / f"replica-{i}", token, together))
        for i in range(STARTS)
    ]
    for p in starts:
        p.start()
    for p in starts:
        p.join(120)
    assert [p.exitcode for p in starts] == [0] * STARTS  # a failed start printed its traceback
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            admins = connection.scalars(select(User.id).where(User.username == ADMIN)).all()
            assert len(admins) == 1
            tokens = select(func.count()).where(
                UserToken.user_id == admins[0], UserToken.name == BOOTSTRAP_TOKEN
            )
            assert connection.scalar(tokens) == 1
    finally:
        engine.dispose()
