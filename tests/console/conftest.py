"""Console fixtures: the portal API fixtures (SQLite and PostgreSQL) plus a signed-in console client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from console.session import COOKIE
from portal.settings import Settings
from tests.portal import conftest as portal

# The portal's fixtures (SQLite and PostgreSQL databases, services, the admin's client), shared.
_migrated_sqlite = portal._migrated_sqlite
_migrated_postgres = portal._migrated_postgres
database_url = portal.database_url
admin_token = portal.admin_token
demo_repo_settings = portal.demo_repo_settings
services = portal.services
client = portal.client


@pytest.fixture
def settings(demo_repo_settings: Settings) -> Settings:
    """The demo data (plaza, templates, workspace `demo`, MaaS models answered by the simulator) over the
    demo stack in a repository of the test's own, so pages have something to show."""
    return demo_repo_settings.model_copy(update={"demo": True})


def sign_in(client: TestClient, token: str) -> str:
    """Sign the test client in like a browser would; returns the session cookie."""
    response = client.post(
        "/console/login", data={"token": token, "next": "/console/plaza"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return str(response.cookies[COOKIE])


@pytest.fixture
def browser_client(client: TestClient, admin_token: str) -> Iterator[TestClient]:
    """The admin's client without its Authorization header, signed in to the console (cookie only)."""
    saved = client.headers.pop("Authorization")
    sign_in(client, admin_token)
    yield client
    client.headers["Authorization"] = saved
    client.cookies.clear()
