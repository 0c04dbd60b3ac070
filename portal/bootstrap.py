"""First-start set-up: the bootstrap admin and its token, and with `--demo` the demo workspace."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, select, text

from portal import audit
from portal.services import Services
from store.db import transaction
from store.models import User, UserToken
from store.security import USER_TOKEN_PREFIX, issue, split

log = logging.getLogger("modelfleet.portal")
ADMIN = "admin"
BOOTSTRAP_TOKEN = "bootstrap"
# The key of the PostgreSQL advisory lock every start takes around its bootstrap: any fixed 64-bit
# number, the same in every process, other than `store.migrate.MIGRATION_LOCK` ("mfbootst" in ASCII).
BOOTSTRAP_LOCK = 0x6D66_626F_6F74_7374


@contextmanager
def one_start_at_a_time(engine: Engine) -> Iterator[None]:
    """Hold the bootstrap lock while the body runs.

    Gateway replicas and the portal may start at once on one fresh database. Each one's bootstrap
    looks for the `admin` user and creates it when missing: without the lock two starts both find none,
    both insert it, and the later one dies on `users.username`'s unique key. With it, the others wait
    for the first one's bootstrap, then find the admin (and its token) there. The lock is taken like
    `store.migrate.migrate`'s: transaction-level, on a connection of its own kept open around the body, so a
    start that dies mid-bootstrap never leaves it held. SQLite needs none: the bootstrap's transaction
    begins with `BEGIN IMMEDIATE`, which already admits one writer at a time.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BOOTSTRAP_LOCK})
        yield


def _admin_token(services: Services) -> None:
    configured = services.settings.admin_token.get_secret_value() if services.settings.admin_token else None
    with transaction(services.sessions) as session:
        admin = session.scalar(select(User).where(User.username == ADMIN))
        if admin is None:
            admin = User(
                username=ADMIN, display_name="Bootstrap admin", is_platform_admin=True, memberships=[]
            )
            session.add(admin)
            session.flush()
            audit.record(
                session,
                actor="system",
                action="CreateUser",
                resource_type="User",
                resource_id=admin.id,
                after={"username": ADMIN, "is_platform_admin": True},
            )
        existing = session.scalar(
            select(UserToken).where(UserToken.user_id == admin.id, UserToken.name == BOOTSTRAP_TOKEN)
        )
        if configured is not None:
            parts = split(configured, USER_TOKEN_PREFIX)
            if parts is None:
                raise SystemExit(
                    "MODELFLEET_ADMIN_TOKEN must look like mf_ followed by 52 letters or digits; "
                    "make one with: python -m portal token"
                )
            if existing is not None and existing.public_id == parts[0]:
                existing.secret_hash = services.hasher.digest(parts[1])
                return
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(
                UserToken(
                    public_id=parts[0],
                    secret_hash=services.hasher.digest(parts[1]),
                    user_id=admin.id,
                    name=BOOTSTRAP_TOKEN,
                )
            )
            return
        if existing is None:
            token = issue(USER_TOKEN_PREFIX)
            session.add(
                UserToken(
                    public_id=token.public_id,
                    secret_hash=services.hasher.digest(token.secret),
                    user_id=admin.id,
                    name=BOOTSTRAP_TOKEN,
                )
            )
            # Printed once: only its hash is kept. Set MODELFLEET_ADMIN_TOKEN to choose your own.
            print(
                f"modelfleet: bootstrap admin token (shown once): {token.value}", file=sys.stderr, flush=True
            )


DEMO_STACKS = Path(__file__).resolve().parent.parent / "stacks"


def run(services: Services) -> None:
    _admin_token(services)
    # A fresh embedded install starts from the demo stacks with --demo, from an empty repository otherwise.
    services.repository.ensure(DEMO_STACKS if services.settings.demo else None)
    if services.settings.demo:
        from portal.demo import load_demo  # the demo pulls in the API layer; plain starts skip it

        load_demo(services)
