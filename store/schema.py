"""The schema revision this code reads and writes, checked by processes that never migrate.

The gateway starts against a database the control plane migrated. It must not guess at a schema it
does not know: an older one lacks columns it reads, a newer one may mean a roll-out in progress whose
data it would misread. So it reads `alembic_version` (one query, no Alembic import) and refuses to
start unless the revision is exactly `REVISION`. A test keeps `REVISION` equal to the migrations' head.
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

REVISION = "0007"


class SchemaMismatch(RuntimeError):
    """The database is not at the revision this code needs; the message says how to fix it."""


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None when it was never migrated."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None  # no alembic_version table: an empty (or foreign) database


def check_revision(engine: Engine, needed: str = REVISION) -> None:
    found = current_revision(engine)
    if found == needed:
        return
    where = engine.url.render_as_string(hide_password=True)
    state = "has never been migrated" if found is None else f"is at schema revision {found}"
    raise SchemaMismatch(
        f"the database {where} {state}; this gateway needs revision {needed}. "
        "Migrate it with the control plane of the same release (`python -m portal migrate`, "
        "or start the portal once), then start the gateway again."
    )
