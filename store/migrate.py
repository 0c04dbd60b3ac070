"""Schema migrations (Alembic) and the revision check of processes that never migrate.

The control plane migrates on every start (`migrate`); the data plane only reads the revision
(`store.schema.check_revision`) and so never imports Alembic.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from store.schema import refuse_a_newer_schema

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


# The key of the PostgreSQL advisory lock every start takes around its upgrade: any fixed 64-bit
# number, the same in every process ("mfmigrat" in ASCII).
MIGRATION_LOCK = 0x6D66_6D69_6772_6174
# Alembic's `context` (store/migrations/env.py) is a process-wide proxy: two upgrades in one process
# at once would run on each other's configuration.
_one_upgrade_per_process = threading.Lock()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (run on every start; a no-op when current).

    Gateway replicas and the portal may start at once on one database. On PostgreSQL the upgrade runs
    in one transaction that first takes a transaction-level advisory lock: the first start upgrades,
    the others wait for its commit, then read the new revision and find nothing to do (without it, each
    would create the tables and all but one would fail). The lock goes with the commit or rollback, so
    a start that dies mid-upgrade never leaves it held. SQLite needs no lock: the transaction begins
    with `BEGIN IMMEDIATE`, which already admits one writer at a time.

    The transaction is begun here, before Alembic sees the connection, so Alembic treats it as the
    caller's and runs every migration inside it. Left to itself Alembic commits each migration on its
    own on SQLite (it counts SQLite's DDL as non-transactional): a start that planned its steps before
    another start's commits would then re-run migrations that had already been applied.
    """
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    refuse_a_newer_schema(engine)
    config = alembic_config(engine)
    with _one_upgrade_per_process, engine.connect() as connection:
        connection.begin()  # committed by env.py when the upgrade is done
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection  # env.py upgrades in this transaction
        command.upgrade(config, "head")


def head_revision() -> str:
    """The newest revision the migrations know (what `migrate` brings a database to)."""
    head = ScriptDirectory.from_config(alembic_config(None)).get_current_head()
    assert head is not None
    return head
