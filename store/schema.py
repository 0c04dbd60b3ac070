"""The schema revision this code reads and writes, checked before a process touches the database.

The gateway starts against a database the control plane migrated. It must not guess at a schema it
does not know: an older one lacks columns it reads, a newer one may mean a roll-out in progress whose
data it would misread. So it reads `alembic_version` (one query, no Alembic import) and refuses to
start unless the revision is exactly `REVISION`, and says what to do: an older revision of its own
release is migrated forward by the control plane; one it does not know was most likely written by a
newer release, whose gateway is the one to run (nothing migrates a database down). The control
plane, which migrates, refuses such a database too (`refuse_a_newer_schema`, before Alembic would fail
on it). A test keeps `REVISIONS` equal to the migrations' chain.
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
        reason = " ".join(str(exc.orig).split())  # the driver's own words, on one line
        raise DatabaseUnreachable(f"cannot reach the database {named(engine)}: {reason}") from None
    with connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None  # no alembic_version table: an empty (or foreign) database


def refuse_a_newer_schema(engine: Engine) -> None:
    """A database at a revision this release does not know was migrated by a newer one: say so, where
    Alembic would fail with "Can't locate revision" (nothing migrates a database down)."""
    found = current_revision(engine)
    if found is None or found in REVISIONS:
        return
    raise SchemaMismatch(
        f"the database {named(engine)} is at schema revision {found}, which this release does not know (its "
        f"newest is {REVISION}); a newer release migrated it. Run that release, or restore the "
        "database from before its upgrade: nothing migrates a database down."
    )


def check_revision(engine: Engine, needed: str = REVISION) -> None:
    found = current_revision(engine)
    if found == needed:
        return
    where = named(engine)
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


def named(engine: Engine) -> str:
    """The database's URL as messages show it: without its password."""
    return engine.url.render_as_string(hide_password=True)
