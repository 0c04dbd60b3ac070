"""`python -m gateway` stands alone: it refuses a database at a schema revision it does not know, and
against a migrated one it serves without loading the control plane, the console, Alembic or git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import text

from benchmarks.processes import free_port, server
from store.db import make_engine
from store.migrate import head_revision, migrate
from store.schema import REVISION
from store.security import load_or_create_pepper

ROOT = Path(__file__).resolve().parents[2]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    return {**env, "MODELFLEET_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}


def _database(data_dir: Path, revision: str | None = None) -> None:
    engine = make_engine(f"sqlite:///{data_dir / 'modelfleet.db'}")
    migrate(engine)
    if revision is not None:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()
    load_or_create_pepper(None, data_dir)


def test_a_database_at_an_unknown_revision_is_refused_with_the_revision_needed(tmp_path: Path) -> None:
    _database(tmp_path, revision="9999")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", str(free_port())],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"is at schema revision 9999; this gateway needs revision {REVISION}" in done.stderr
    assert "python -m portal migrate" in done.stderr


def test_a_database_never_migrated_is_refused(tmp_path: Path) -> None:
    load_or_create_pepper(None, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", str(free_port())],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "has never been migrated" in done.stderr


def test_against_a_migrated_database_it_serves_with_the_data_plane_alone(tmp_path: Path) -> None:
    _database(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "gateway", "--port", str(port)]
    with server(command, _env(tmp_path), f"http://127.0.0.1:{port}/healthz", "gateway", tmp_path / "gw.log"):
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        assert answer.status_code == 401  # it serves: keys are checked (there are none)
        assert answer.json()["error"]["code"] == "invalid_api_key"
    # What the same start-up loads: the app built from the environment and one request through it.
    probe = (
        "import json, sys\n"
        "from starlette.testclient import TestClient\n"
        "from gateway.__main__ import app_from_env\n"
        "with TestClient(app_from_env()) as client:\n"
        "    assert client.get('/v1/models').status_code == 401\n"
        "print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    loaded = {m.split(".")[0] for m in modules}
    assert not loaded & {"portal", "console", "alembic", "git", "fastapi", "pulumi", "boto3"}
    assert not [m for m in modules if m.startswith("store.migrat")]
    assert not [m for m in modules if m.startswith("opentelemetry.sdk")]
    assert {"gateway", "store", "starlette", "sqlalchemy"} <= loaded


def test_the_revision_the_gateway_needs_is_the_migrations_head() -> None:
    assert head_revision() == REVISION
