"""Portal fixtures: a fresh database per test on SQLite, and on PostgreSQL where one answers.

PostgreSQL runs at 127.0.0.1:5432 (trust auth, database `test`) in CI; each test gets its own
database created from a migrated template (a copied file on SQLite) so tests on both backends
stay independent without migrating each time.
"""

from __future__ import annotations

import gc
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from benchmarks.processes import free_port
from portal.app import build_services, create_app
from portal.repository import StackRepository
from portal.services import Services
from portal.settings import Settings
from store.db import make_engine
from store.migrate import migrate
from store.security import USER_TOKEN_PREFIX, issue

PROJECT_STACKS = Path(__file__).resolve().parents[2] / "stacks"
PG_ADMIN_URL = os.environ.get("MODELFLEET_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reason() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        engine.dispose()
    except OperationalError as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}"
    return None


PG_SKIP = _postgres_reason()


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest revision, migrated once per test process and copied per test."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _migrated_postgres() -> Iterator[str | None]:
    """A PostgreSQL database at the newest revision, migrated once per test process: each test's own
    database is created from it (a file copy, ~0.08 s, where migrating costs ~0.25 s a test). One per
    process because a template may have no other session while it is copied."""
    if PG_SKIP:
        yield None
        return
    with _postgres_database() as name:
        engine = make_engine(_database(name))
        migrate(engine)
        engine.dispose()
        yield name


def _database(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def _postgres_database(template: str | None = None) -> Iterator[str]:
    """The name of a database of its own, dropped after: empty, or a copy of `template`."""
    name = f"mf_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        try:
            yield name
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _migrated_sqlite: Path, _migrated_postgres: str | None
) -> Iterator[str]:
    """A database of the test's own at the newest revision (what every start's `migrate` then finds
    current); tests of migrating itself use `fresh_database_url`."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copyfile(_migrated_sqlite, path)
        yield f"sqlite:///{path}"
        return
    if _migrated_postgres is None:
        pytest.skip(PG_SKIP)
    with _postgres_database(_migrated_postgres) as name:
        yield _database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own (no schema yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if PG_SKIP:
        pytest.skip(PG_SKIP)
    with _postgres_database() as name:
        yield _database(name)


@pytest.fixture
def admin_token() -> str:
    return issue(USER_TOKEN_PREFIX).value


def _test_settings(database_url: str, tmp_path: Path, admin_token: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        admin_token=admin_token,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        worker_enabled=False,
        allow_private_urls=True,  # upstreams and indexes in tests are servers on 127.0.0.1
        maas_secrets_dir=tmp_path / "maas-secrets",
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path, admin_token: str) -> Settings:
    return _test_settings(database_url, tmp_path, admin_token)


@pytest.fixture
def demo_repo_settings(database_url: str, tmp_path: Path, admin_token: str) -> Settings:
    """Like `settings`, with a stacks repository of the test's own seeded from the project's stacks/.
    Use it by overriding `settings` in a test module: `def settings(demo_repo_settings): return …`."""
    base = _test_settings(database_url, tmp_path, admin_token)
    repo = tmp_path / "stacks-repo"
    StackRepository(repo, base.stacks_subdir, base.git_author).ensure(seed=PROJECT_STACKS)
    return base.model_copy(update={"stacks_repo": repo})


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = build_services(settings)
    yield services
    # A request orphaned or cancelled inside FastAPI's session dependency never exits it; the
    # suspended generator then waits in a reference cycle for the garbage collector (console pages
    # did this until `console.client.all_of`). Should one slip in again, collect now, while
    # this test's database exists: later, in another test and after the database was dropped, its
    # ROLLBACK fails there (a CI run failed so).
    gc.collect()
    services.engine.dispose()


@pytest.fixture
def client(services: Services, admin_token: str) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as c:
        c.headers["Authorization"] = f"Bearer {admin_token}"
        yield c


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's S3 in server mode on a free loopback port, one per test process (tests make buckets of
    their own names)."""
    from moto.server import ThreadedMotoServer  # heavy to import: only where S3 is wanted

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
