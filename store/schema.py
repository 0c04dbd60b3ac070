"""The schema revision this code reads and writes, checked by processes that never migrate.

The gateway starts against a database the control plane migrated. It must not guess at a schema it
does not know: an older one lacks columns it reads, a newer one may mean a roll-out in progress whose
data it would misread. So it reads `alembic_version` (one query, no Alembic import) and refuses to
start unless the revision is exactly `REVISION`, and says what to do: an older revision of its own
release is migrated forward by the control plane; one it does not know was most likely written by a
newer release, whose gateway is the one to run (nothing migrates a database down). A test keeps
`REVISIONS` equal to the migrations' chain.
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")  # this release's, oldest first
REVISION = REVISIONS[-1]


class SchemaMismatch(RuntimeError):
    """The database is not at the revision this code needs; the message says how to fix it."""


class DatabaseUnreachable(RuntimeError):
    """No connection to the database; the message names it (without its password) and says why."""


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None when it was never migrated. Raises `DatabaseUnreachable`."""
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = " ".join(str(exc.orig).split())  # the driver's own words, on one line
        raise DatabaseUnreachable(f"cannot reach the database {where}: {reason}") from None
    with connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None  # no alembic_version table: an empty (or foreign) database


def check_revision(engine: Engine, needed: str = REVISION) -> None:
    found = current_revision(engine)
    if found == needed:
        return
    where = engine.url.render_as_string(hide_password=True)
    migrate = (
        "Migrate it with the control plane of the same release (`python -m portal migrate`, "
        "or start the portal once), then start the gateway again."
    )
    if found is None:
        raise SchemaMismatch(f"the database {where} has never been migrated; {_needs(needed)} {migrate}")
    if found in REVISIONS:
        older = f"the database {where} is at schema revision {found}, older than this gateway's"
        raise SchemaMismatch(f"{older}; {_needs(needed)} {migrate}")
    raise SchemaMismatch(
        f"the database {where} is at schema revision {found}, which this gateway does not know; "
        f"{_needs(needed)} A newer release's control plane most likely migrated it: run the gateway "
        "of that release (a gateway never migrates, and nothing migrates a database down)."
    )


def _needs(revision: str) -> str:
    return f"this gateway needs revision {revision}."
