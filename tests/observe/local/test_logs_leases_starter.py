"""Replica logs (tail, follow across a restart, names refused), region leases on PostgreSQL, and the
starter the portal runs."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from portal.observe.local import supervisor as supervision
from portal.observe.local.leases import Leases
from portal.observe.local.logs import LogNotFound, follow, replica_log, tail
from portal.observe.local.starter import local_runtime_starter
from portal.services import Services
from store.db import make_engine
from tests.observe.local.conftest import alive, change, observed, pids
from tests.portal.conftest import PG_ADMIN_URL, PG_SKIP


def test_tail_gives_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(log, 3) == ["line 47", "line 48", "line 49"]
    assert tail(tmp_path / "none.log", 3) == []


def test_follow_goes_on_in_the_new_file_after_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_text("old 1\nold 2\n")

    async def run() -> list[str]:
        got: list[str] = []
        stream = follow(log, lines=1, poll_seconds=0.02)
        got.append(await anext(stream))
        with log.open("a") as f:
            f.write("new 3\npart")
        got.append(await anext(stream))
        log.replace(tmp_path / "r.previous.log")  # the replica restarted: a new log begins
        log.write_text("second run\n")
        got.append(await anext(stream))
        await stream.aclose()
        return got

    assert asyncio.run(asyncio.wait_for(run(), 5)) == ["old 2", "new 3", "second run"]


@pytest.mark.parametrize(
    ("stack", "replica"), [("..", "r-0"), ("demo", "../../etc/passwd"), ("demo", "R/0"), ("demo", "a..b")]
)
def test_replica_log_refuses_anything_but_names(tmp_path: Path, stack: str, replica: str) -> None:
    with pytest.raises(LogNotFound, match="is not a name"):
        replica_log(tmp_path, stack, "s", "local", "pool", replica)


def test_replica_log_says_when_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(LogNotFound, match="no log of its previous run"):
        replica_log(tmp_path, "demo", "s", "local", "pool", "s-pool-0", previous=True)


@pytest.mark.skipif(PG_SKIP is not None, reason=PG_SKIP or "")
def test_one_process_leads_a_region_on_postgresql() -> None:
    name = f"mf_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    one = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    two = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    first, second = Leases(one), Leases(two)
    try:
        assert first.hold("local") and first.hold("local")  # held: asked again, still held
        assert not second.hold("local")
        assert second.hold("other-machine")  # regions are leased one by one
        first.release()  # a stopped (or killed) portal's connection goes, and its locks with it
        assert second.hold("local")
    finally:
        first.release()
        second.release()
        one.dispose()
        two.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_starter_runs_the_demo_local_region_and_leaves_engines_for_the_next_start(
    services: Services, make_supervisor: object
) -> None:
    assert local_runtime_starter(services) is None  # local_runtime_enabled is off in this fixture
    services.settings = services.settings.model_copy(update={"local_runtime_enabled": True})
    stop = local_runtime_starter(services)
    assert stop is not None
    try:
        deadline = time.monotonic() + 20
        while (seen := observed(services)).state != "ready":  # the demo's 2 replicas, as published
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
    finally:
        stop()
    running = pids(seen)
    assert len(running) == 2 and all(alive(p) for p in running)  # stopping the portal keeps them
    runtime = services.extras["local_runtime"]
    assert isinstance(runtime, supervision.Supervisor)
    runtime.stop_all(grace=1)
    assert not any(alive(p) for p in running)
    change(services, desired_replicas=0)
    assert os.path.isdir(services.settings.data_dir / "runtime")
