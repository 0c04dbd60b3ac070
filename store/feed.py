"""The change feed: how every gateway replica learns within a second that what it may route to changed.

The control plane calls `announce(session)` in the transaction that changed routable state (a replica
became ready, failed, stopped; a placement was scaled). On PostgreSQL that is `NOTIFY`, which the
server delivers to every listening connection when (and only if) the transaction commits; gateways
`LISTEN` on `CHANNEL` and reload at once. SQLite is one machine's embedded database and has no
notifications: there the gateway's one-second fingerprint poll is the feed (and, everywhere, the
periodic full reload stays as the safety net).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

CHANNEL = "modelfleet_routes"


def announce(session: Session, what: str = "") -> None:
    """Tell every listener, at commit, that routable state changed (a no-op without notifications)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": what[:200]}
        )
