"""The portal's fixtures (`services`, `client`, ... on SQLite and PostgreSQL) for the gateway's
database-backed tests."""

from tests.portal.conftest import (  # noqa: F401
    _migrated_postgres,
    _migrated_sqlite,
    admin_token,
    client,
    database_url,
    demo_repo_settings,
    services,
    settings,
)
