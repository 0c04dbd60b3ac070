"""One watcher per region across every portal replica: a PostgreSQL advisory lock per region.

The lock is session-level and held on a connection of its own (not from the pool, so a pool reset
never drops it by surprise): as long as that connection lives, this process leads the region. When
the process dies its connection closes and PostgreSQL releases the lock; a standby, which tries the
lock every few seconds (`pg_try_advisory_lock` never waits), takes over. The leader checks its
connection as often, and steps down when it is gone (PostgreSQL restarted, network cut) — another
replica may hold the lock by then.

SQLite is the embedded database of one process: that process leads every region.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

log = logging.getLogger("modelfleet.observe.kubernetes")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (PostgreSQL's advisory lock keys are bigint)."""
    digest = hashlib.sha256(f"modelfleet-observer:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self.key = lock_key(name)
        self.single_process = engine.dialect.name != "postgresql"
        self._engine = None if self.single_process else create_engine(engine.url, poolclass=NullPool)
        self._connection: Connection | None = None

    @property
    def held(self) -> bool:
        return self.single_process or self._connection is not None

    def acquire(self) -> bool:
        """Lead if nobody does (never waits); True while this process leads."""
        if self.single_process:
            return True
        if self._connection is not None:
            return self.check()
        assert self._engine is not None
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            won = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
        except Exception:
            connection.close()
            raise
        if not won:
            connection.close()
            return False
        self._connection = connection
        log.info("observer leadership of %s taken", self.name)
        return True

    def check(self) -> bool:
        """Whether the lock is still ours (its connection answers); steps down when it is not."""
        if self.single_process:
            return True
        if self._connection is None:
            return False
        try:
            self._connection.scalar(text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("observer leadership of %s lost: %s", self.name, exc)
            self._drop()
            return False

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # the connection is gone: so is the lock
                self._connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._drop()
        if self._engine is not None:
            self._engine.dispose()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                log.debug("closing the leadership connection of %s failed", self.name, exc_info=True)
