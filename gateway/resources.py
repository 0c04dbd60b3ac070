"""What a gateway serves with: its settings, the database's engine and sessions, the key hasher.

`python -m gateway` opens its own (`open_resources`: no migrations, no git, no bootstrap; it refuses a
database at a schema revision it does not know). Inside the portal the gateway takes the portal's
services, which have the same parts (`Backing` names them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.settings import GatewaySettings
from store.db import make_engine, session_factory
from store.schema import check_revision
from store.security import Hasher, load_pepper


class Backing(Protocol):
    @property
    def settings(self) -> GatewaySettings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def sessions(self) -> sessionmaker[Session]: ...
    @property
    def hasher(self) -> Hasher: ...
    @property
    def extras(self) -> dict[str, Any]: ...


@dataclass
class Resources:
    settings: GatewaySettings
    engine: Engine
    sessions: sessionmaker[Session]
    hasher: Hasher
    extras: dict[str, Any] = field(default_factory=dict)  # caches with the process's lifetime


def open_resources(settings: GatewaySettings) -> Resources:
    """Connect to a database the control plane migrated (raises `SchemaMismatch` otherwise)."""
    engine = make_engine(settings.resolved_database_url)
    check_revision(engine)
    pepper = load_pepper(settings.pepper.get_secret_value() if settings.pepper else None, settings.data_dir)
    return Resources(settings, engine, session_factory(engine), Hasher(pepper))
