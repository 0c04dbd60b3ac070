"""The portal's database fixtures (SQLite, and PostgreSQL where it answers) with the demo stack's
placements published (`portal.placements.publish_all` at start)."""

from __future__ import annotations

import pytest

from portal.settings import Settings
from tests.portal.conftest import (
    _migrated_postgres,
    _migrated_sqlite,
    admin_token,
    database_url,
    demo_repo_settings,
    services,
)

__all__ = [
    "_migrated_postgres",
    "_migrated_sqlite",
    "admin_token",
    "database_url",
    "demo_repo_settings",
    "services",
]


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    return demo_repo_settings
