"""`python -m gateway` stands alone: it refuses a database at a schema revision it does not know, and
against a migrated one it serves without loading the control plane, the console, Alembic or git;
with `--workers` every worker takes its share of the connections."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from benchmarks.processes import free_port, server, tcp_sockets, wait_listening
from store.db import make_engine
from store.migrate import alembic_config, head_revision, migrate
from store.schema import REVISION, REVISIONS, SchemaMismatch, check_revision
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
    unknown = "is at schema revision 9999, which this gateway does not know"
    assert f"{unknown}; this gateway needs revision {REVISION}." in done.stderr
    assert "run the gateway of that release" in done.stderr
    assert "python -m portal migrate" not in done.stderr  # migrating would not help: it is newer


def _refused(data_dir: Path, *args: str, **env: str) -> str:
    """Start the gateway expecting a refusal: exit status 2 and one line (after argparse's usage line),
    no traceback; the line."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", str(free_port()), *args],
        env={**_env(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("usage: ")), lines
    return lines[-1]


def test_settings_it_cannot_use_are_refused_by_their_variable_never_echoing_a_value(tmp_path: Path) -> None:
    _database(tmp_path)
    line = _refused(
        tmp_path,
        MODELFLEET_GATEWAY_MAX_CONNECTIONS="many-secret-1234",
        MODELFLEET_GATEWAY_ON_REDIS_FAILURE_TOKENS="maybe",
    )
    assert line.startswith("gateway: cannot start: ")
    assert "MODELFLEET_GATEWAY_MAX_CONNECTIONS: Input should be a valid integer" in line
    assert (
        "MODELFLEET_GATEWAY_ON_REDIS_FAILURE_TOKENS: Input should be 'fail_closed', 'local' or 'fail_open'"
        in line
    )
    assert "secret-1234" not in line
    url = _refused(tmp_path, MODELFLEET_DATABASE_URL="not a url")
    assert url == "gateway: cannot start: MODELFLEET_DATABASE_URL: not a database URL " + (
        "(e.g. postgresql+psycopg://user@host/db or sqlite:///path)"
    )


def test_a_database_it_cannot_reach_is_named_without_its_password(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    line = _refused(
        tmp_path, MODELFLEET_DATABASE_URL=f"postgresql+psycopg://mf:hunter2@127.0.0.1:{closed}/mf"
    )
    where = f"postgresql+psycopg://mf:***@127.0.0.1:{closed}/mf"
    assert line.startswith(f"gateway: cannot start: cannot reach the database {where}: ")
    assert "Connection refused" in line and "hunter2" not in line


def test_a_number_of_workers_below_one_is_refused(tmp_path: Path) -> None:
    assert _refused(tmp_path, "--workers", "0").endswith("argument --workers: must be at least 1, not 0")
    assert _refused(tmp_path, "--workers", "two").endswith("argument --workers: not a whole number: 'two'")


def test_a_database_at_an_older_revision_of_the_release_is_to_be_migrated(tmp_path: Path) -> None:
    _database(tmp_path, revision=REVISIONS[-2])
    engine = make_engine(f"sqlite:///{tmp_path / 'modelfleet.db'}")
    try:
        with pytest.raises(SchemaMismatch) as refused:
            check_revision(engine)
    finally:
        engine.dispose()
    said = str(refused.value)
    older = f"is at schema revision {REVISIONS[-2]}, older than this gateway's"
    assert f"{older}; this gateway needs revision {REVISION}." in said
    assert "python -m portal migrate" in said


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
    assert not loaded & {"portal", "console", "alembic", "git", "fastapi", "pulumi", "boto3", "aiohttp"}
    assert not [m for m in modules if m.startswith("store.migrat")]
    assert not [m for m in modules if m.startswith("opentelemetry.sdk")]
    assert {"gateway", "store", "starlette", "sqlalchemy"} <= loaded


def test_the_revisions_the_gateway_knows_are_the_migrations_chain() -> None:
    chain = [r.revision for r in ScriptDirectory.from_config(alembic_config(None)).walk_revisions()]
    assert tuple(reversed(chain)) == REVISIONS and head_revision() == REVISION


def _connections_by_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to `port` each process holds (from /proc)."""
    established = tcp_sockets(port, "01")
    counts = {}
    for pid in pids:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        counts[pid] = len(inodes & established)
    return counts


def test_every_worker_takes_a_share_of_the_connections(tmp_path: Path) -> None:
    # uvicorn's workers share one socket and the first awake takes every waiting connection; the
    # gateway's each bind their own (SO_REUSEPORT) and the kernel spreads connections over them.
    _database(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "gateway", "--port", str(port), "--workers", "2"]
    health = f"http://127.0.0.1:{port}/healthz"
    with server(command, _env(tmp_path), health, "gateway", tmp_path / "gw.log") as parent:
        wait_listening(port, 2)  # one worker answers health; both must listen
        # All at once, as a burst of clients would: they wait in the accept queue together.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            request = f"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()
            for client in clients:
                client.sendall(request)
            for client in clients:
                assert client.recv(65536).startswith(b"HTTP/1.1 401")
            children = [int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
            counts = _connections_by_process(children, port)
        finally:
            for client in clients:
                client.close()
    served = sorted(n for n in counts.values() if n)
    assert len(served) == 2, counts  # both workers (the third child, if any, is multiprocessing's tracker)
    assert sum(served) == 32 and served[0] >= 4, counts  # a 4-in-32 split or worse: odds of ~1e-5


def test_workers_on_a_port_in_use_are_one_clear_error(tmp_path: Path) -> None:
    _database(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "--port", str(port), "--workers", "2"],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert "gateway: cannot start:" in done.stderr and "in use" in done.stderr
