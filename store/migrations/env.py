"""Alembic environment: the engine comes from the caller (`store.migrate.migrate`), never from a file.

`migrate` passes its own connection, already inside the transaction that holds the migration lock
(PostgreSQL); the upgrade runs in that transaction and commits it. Without one (autogenerate in
`regenerate.py`), a connection of the engine is used.
"""

from __future__ import annotations

from contextlib import nullcontext

from alembic import context
from sqlalchemy import Connection

import store.models  # noqa: F401  (registers every table on Base.metadata)
from store.db import Base

given: Connection | None = context.config.attributes.get("connection")
with nullcontext(given) if given is not None else context.config.attributes["engine"].connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
