"""Which portal process supervises a local region: only one may, or replicas would start twice.

On SQLite there is one portal process. On PostgreSQL each region is a session-level advisory lock held
on one connection of the supervising process; the lock goes with the connection (a killed portal
releases it), and another replica takes the region over on its next pass, adopting its processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("modelfleet.portal.local")


def lock_key(region: str) -> int:
    digest = hashlib.sha256(f"modelfleet:local-runtime:{region}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leases:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.exclusive = engine.url.get_backend_name() == "sqlite"  # one process: always the leader
        self.connection: Connection | None = None
        self.held: set[str] = set()

    def hold(self, region: str) -> bool:
        """Whether this process supervises `region` (taking it when nobody does)."""
        if self.exclusive:
            return True
        try:
            if self.connection is None:
                self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                self.held.clear()
            if region in self.held:
                return True
            got = self.connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(region)})
            if got.scalar():
                self.held.add(region)
                log.info("supervising local region %s", region)
                return True
            return False
        except DBAPIError as exc:  # the connection (and with it every lock) is gone
            log.warning("local region leases lost: %s", exc)
            self.release()
            return False

    def check(self) -> None:
        """Once a pass: a broken connection means the locks are gone (another process may have them)."""
        if self.connection is None:
            return
        try:
            self.connection.execute(text("SELECT 1"))
        except DBAPIError:
            self.release()

    def release(self) -> None:
        connection, self.connection = self.connection, None
        self.held.clear()
        if connection is not None:
            # Closing would return the connection to the pool, locks and all: unlock, and end it
            # (the server ends a closed session's locks too, but a moment later).
            with contextlib.suppress(DBAPIError):
                connection.execute(text("SELECT pg_advisory_unlock_all()"))
            with contextlib.suppress(DBAPIError):
                connection.invalidate()
                connection.close()
