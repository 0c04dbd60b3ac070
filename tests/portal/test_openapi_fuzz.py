"""Schemathesis over the portal's own OpenAPI document: whatever it generates, no 5xx.

Runs against the in-process ASGI app (the demo stacks and catalog) as the platform admin, so every
operation is reachable and the fuzzer explores bodies, not just 401s. The database is PostgreSQL when
one answers (as in CI: it is the stricter backend — 32-bit ids, no NUL bytes in text), else SQLite.

Time bound: `MAX_EXAMPLES` cases per operation (MODELFLEET_FUZZ_EXAMPLES overrides it for a longer
run by hand), derandomized, so a run's case count and length are the same every time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error
from sqlalchemy import create_engine, text

from portal.app import build_services, create_app
from portal.settings import Settings
from store.security import USER_TOKEN_PREFIX, issue
from tests.portal.conftest import PG_ADMIN_URL, PG_SKIP

TOKEN = issue(USER_TOKEN_PREFIX).value
MAX_EXAMPLES = int(os.environ.get("MODELFLEET_FUZZ_EXAMPLES", "15"))


def _postgres_database() -> str:
    """A fresh database for this run, dropped when the run ends."""
    name = f"mf_fuzz_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    atexit.register(drop)
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _app() -> Any:
    """Built at import: schemathesis needs the schema to generate one test per operation."""
    data_dir = Path(tempfile.mkdtemp(prefix="modelfleet-fuzz-"))
    atexit.register(shutil.rmtree, data_dir, True)
    settings = Settings(
        data_dir=data_dir,
        database_url=None if PG_SKIP else _postgres_database(),
        admin_token=TOKEN,  # type: ignore[arg-type]
        pepper="fuzz-pepper",  # type: ignore[arg-type]
        demo=True,
        worker_enabled=False,
    )
    return create_app(services=build_services(settings))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=[not_a_server_error])
