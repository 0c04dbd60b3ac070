"""Migrations on start: gateway replicas and the portal all run `migrate(engine)` when they start, so
several may run it at once on one fresh database. One upgrades, the others wait for it and then find
the schema current (PostgreSQL: an advisory lock; SQLite: its single writer)."""

from __future__ import annotations

import multiprocessing
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import uvicorn
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, inspect, text
from typer.testing import CliRunner

from portal.cli import app as cli
from store.db import Base, make_engine
from store.migrate import alembic_config, migrate
from store.schema import REVISION, SchemaMismatch, current_revision

STARTS = 6  # processes starting at once


@pytest.fixture
def database_url(fresh_database_url: str) -> str:
    """These tests start on an empty database: the schema is what they make."""
    return fresh_database_url


def _assert_at_head(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_heads() == (head,)
            tables = set(inspect(connection).get_table_names())
        assert set(Base.metadata.tables) <= tables
        migrate(engine)  # and a later start finds nothing to do
    finally:
        engine.dispose()


def _start(database_url: str, together: Barrier) -> None:
    engine = make_engine(database_url)
    try:
        together.wait()
        migrate(engine)
    finally:
        engine.dispose()


def test_processes_starting_at_once_on_a_fresh_database_all_migrate(database_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    together = spawn.Barrier(STARTS)
    starts = [spawn.Process(target=_start, args=(database_url, together)) for _ in range(STARTS)]
    for p in starts:
        p.start()
    for p in starts:
        p.join(120)
    assert [p.exitcode for p in starts] == [0] * STARTS  # a failed start printed its traceback
    _assert_at_head(database_url)


def test_threads_starting_at_once_all_migrate(database_url: str) -> None:
    """Several engines of one process (a portal serving the gateway in-process, tests) at once."""
    engines = [make_engine(database_url) for _ in range(STARTS)]
    together = threading.Barrier(STARTS)

    def start(engine: Engine) -> None:
        together.wait()
        migrate(engine)

    try:
        with ThreadPoolExecutor(STARTS) as pool:
            for future in [pool.submit(start, engine) for engine in engines]:
                future.result()  # raises what a start raised
    finally:
        for engine in engines:
            engine.dispose()
    _assert_at_head(database_url)


def test_the_whole_upgrade_is_one_transaction(database_url: str) -> None:
    """All migrations commit together. Were each committed on its own (Alembic's way on SQLite), a
    start that planned its steps before another start's commits would re-run applied migrations: a
    CI run saw exactly that, a duplicate `audit_head` seed row, one time in many."""
    engine = make_engine(database_url)
    commits: list[None] = []

    @event.listens_for(engine, "commit")
    def _count(_connection: Connection) -> None:
        commits.append(None)

    try:
        head = ScriptDirectory.from_config(alembic_config(engine))
        assert len(list(head.walk_revisions())) > 1  # else one commit would prove nothing
        migrate(engine)
        assert len(commits) == 1
    finally:
        engine.dispose()


def _never_served(*_: object, **__: object) -> None:
    """uvicorn.run in the refusal tests: a portal that served anyway fails the test, instead of
    serving for ever."""
    raise AssertionError("the portal served where it should have refused to start")


def _newer_release_database(tmp_path: Path) -> str:
    """A database a newer release migrated: at a revision this one does not know."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    engine = make_engine(url)
    try:
        migrate(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9001'"))
    finally:
        engine.dispose()
    return url


def test_a_database_a_newer_release_migrated_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    url = _newer_release_database(tmp_path)
    engine = make_engine(url)
    try:
        with pytest.raises(SchemaMismatch) as refused:
            migrate(engine)
        assert current_revision(engine) == "9001"
    finally:
        engine.dispose()
    said = str(refused.value)
    assert f"is at schema revision 9001, which this release does not know (its newest is {REVISION})" in said
    assert "nothing migrates a database down" in said


@pytest.mark.parametrize(("command", "doing"), [(["migrate"], "migrate"), ([], "start")])
def test_the_portal_refuses_it_in_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], doing: str
) -> None:
    monkeypatch.setenv("MODELFLEET_DATABASE_URL", _newer_release_database(tmp_path))
    monkeypatch.setenv("MODELFLEET_DATA_DIR", str(tmp_path / "data"))

    monkeypatch.setattr(uvicorn, "run", _never_served)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"portal: cannot {doing}: the database sqlite:///")
    assert "schema revision 9001, which this release does not know" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_setting_or_a_database_the_portal_cannot_use_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uvicorn, "run", _never_served)
    monkeypatch.setenv("MODELFLEET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELFLEET_USAGE_RETENTION_DAYS", "soon-secret-42")
    refused = CliRunner().invoke(cli, [])
    assert refused.exit_code == 2, refused.output
    said = "MODELFLEET_USAGE_RETENTION_DAYS: Input should be a valid integer"
    assert refused.output.startswith(f"portal: cannot start: {said}")
    assert "secret-42" not in refused.output
    monkeypatch.delenv("MODELFLEET_USAGE_RETENTION_DAYS")

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nothing listens on
    port = closed.getsockname()[1]
    monkeypatch.setenv("MODELFLEET_DATABASE_URL", f"postgresql+psycopg://mf:hunter2@127.0.0.1:{port}/mf")
    for command, doing in ((["migrate"], "migrate"), ([], "start")):
        refused = CliRunner().invoke(cli, command)
        assert refused.exit_code == 2, refused.output
        where = f"postgresql+psycopg://mf:***@127.0.0.1:{port}/mf"
        assert refused.output.startswith(f"portal: cannot {doing}: cannot reach the database {where}: ")
        assert "hunter2" not in refused.output
    closed.close()
