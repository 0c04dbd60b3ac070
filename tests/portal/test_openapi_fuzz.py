"""Schemathesis over the portal's own OpenAPI document: whatever it generates, no 5xx.

Runs against the in-process ASGI app (SQLite, the demo stacks and catalog) as the platform admin, so
every operation is reachable and the fuzzer explores bodies, not just 401s.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error

from portal.app import build_services, create_app
from portal.settings import Settings
from store.security import USER_TOKEN_PREFIX, issue

TOKEN = issue(USER_TOKEN_PREFIX).value


def _app() -> Any:
    """Built at import: schemathesis needs the schema to generate one test per operation."""
    data_dir = Path(tempfile.mkdtemp(prefix="modelfleet-fuzz-"))
    atexit.register(shutil.rmtree, data_dir, True)
    settings = Settings(
        data_dir=data_dir,
        admin_token=TOKEN,  # type: ignore[arg-type]
        pepper="fuzz-pepper",  # type: ignore[arg-type]
        demo=True,
        worker_enabled=False,
    )
    return create_app(services=build_services(settings))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=[not_a_server_error])
