"""How fast a readiness change reaches every gateway replica: `python -m benchmarks.readiness_feed`.

Two stand-alone gateways (`python -m gateway`) on one PostgreSQL database serve a workspace's own
serving whose one replica (an engine simulator) the benchmark marks ready, then stopped, then ready…
through the observed-state recorder, as a region runtime does. After each commit both gateways are
called every few milliseconds until both route by the new state (200 when ready, 503 `model_not_ready`
when stopped); the delay of a change is the slower gateway's. Lines: the delay's p50/p99 with the change
feed (PostgreSQL NOTIFY), and beside it the same change with the feed off, where the fingerprint poll
(every `MODELFLEET_GATEWAY_SNAPSHOT_POLL_SECONDS`, 1 s) is what finds it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text

from benchmarks.processes import free_port, server
from benchmarks.report import bench
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation, State
from store.db import make_engine, session_factory, transaction
from store.migrate import migrate
from store.models import ApiKey, ServingPlacement, Workspace
from store.security import API_KEY_PREFIX, Hasher, issue

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("MODELFLEET_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHANGES = int(os.environ.get("MODELFLEET_BENCH_FEED_CHANGES", "40"))
MODEL = "feed-model"


@contextmanager
def database() -> Iterator[str]:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"mf_feed_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(url: str, pepper: bytes, engine_url: str) -> str:
    """A workspace, its key and its serving's placement (local, one replica at `engine_url`)."""
    engine = make_engine(url)
    migrate(engine)
    minted = issue(API_KEY_PREFIX)
    with transaction(session_factory(engine)) as session:
        ws = Workspace(slug="team", name="Team")
        session.add(ws)
        session.flush()
        session.add(
            ApiKey(
                public_id=minted.public_id,
                secret_hash=Hasher(pepper).digest(minted.secret),
                last4=minted.secret[-4:],
                workspace_id=ws.id,
                name="bench",
                created_by="bench",
            )
        )
        session.add(
            ServingPlacement(
                stack="bench", serving="feed", workspace="team", region="local", pool="cpu",
                runtime="local", public_name=MODEL, endpoint="", desired_replicas=1,
            )
        )  # fmt: skip
    engine.dispose()
    return minted.value


def flip(sessions: object, ready: bool, engine_url: str) -> None:
    with transaction(sessions) as session:  # type: ignore[arg-type]
        placement = session.scalars(select(ServingPlacement)).one()
        state = State.READY if ready else State.STOPPED
        record(session, placement, [ReplicaObservation("r0", state, url=engine_url if ready else None)])


def routes(client: httpx.Client, port: int, key: str) -> int:
    answer = client.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        headers={"authorization": f"Bearer {key}"},
    )
    return answer.status_code


def delays(url: str, ports: list[int], key: str, engine_url: str, changes: int) -> list[float]:
    engine = make_engine(url)
    sessions = session_factory(engine)
    out: list[float] = []
    with httpx.Client(timeout=5) as client:
        ready = routes(client, ports[0], key) == 200
        for _ in range(changes):
            ready = not ready
            want = 200 if ready else 503
            flip(sessions, ready, engine_url)
            changed = time.perf_counter()
            pending = set(ports)
            while pending:
                pending = {p for p in pending if routes(client, p, key) != want}
                if time.perf_counter() - changed > 10:
                    raise RuntimeError("a gateway did not follow the change within 10 s")
            out.append((time.perf_counter() - changed) * 1000)
    engine.dispose()
    return sorted(out)


def main() -> None:
    try:
        probe = create_engine(PG_URL)
        with probe.connect() as c:
            c.execute(text("SELECT 1"))
        probe.dispose()
    except Exception:
        print("# readiness_feed: skipped: no PostgreSQL at MODELFLEET_BENCH_PG (the feed is NOTIFY)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="modelfleet-feed-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim_port = free_port()
    sim = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--any-model", "--ttft-ms", "0"]
    try:
        with (
            database() as url,
            server(sim, env, f"http://127.0.0.1:{sim_port}/health", "simulator", tmp / "sim.log"),
        ):
            pepper = secrets.token_hex(16)
            engine_url = f"http://127.0.0.1:{sim_port}"
            key = seed(url, pepper.encode(), engine_url)
            for feed, poll, changes in ((True, "30", CHANGES), (False, "1", max(10, CHANGES // 4))):
                gw_env = {
                    **env,
                    "MODELFLEET_DATABASE_URL": url,
                    "MODELFLEET_PEPPER": pepper,
                    "MODELFLEET_DATA_DIR": str(tmp),
                    "MODELFLEET_GATEWAY_SNAPSHOT_POLL_SECONDS": poll,
                    "MODELFLEET_GATEWAY_HEALTH_CHECK_SECONDS": "0",
                }
                if not feed:  # the baseline: only the fingerprint poll finds the change
                    gw_env["MODELFLEET_GATEWAY_FEED"] = "false"
                ports = [free_port(), free_port()]
                with ExitStack() as stack:
                    for i, port in enumerate(ports):
                        command = [sys.executable, "-m", "gateway", "--port", str(port)]
                        health = f"http://127.0.0.1:{port}/healthz"
                        stack.enter_context(server(command, gw_env, health, "gateway", tmp / f"gw{i}.log"))
                    measured = delays(url, ports, key, engine_url, changes)
                tag = "readiness_to_every_gateway" if feed else "readiness_to_every_gateway_polled"
                bench(f"{tag}_p50", measured[len(measured) // 2], "ms")
                bench(f"{tag}_p99", measured[min(len(measured) - 1, int(len(measured) * 0.99))], "ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
